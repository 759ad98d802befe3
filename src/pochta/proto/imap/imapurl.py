"""IMAP URLs (RFC 5092) as CATENATE (RFC 4469) uses them: a message, or a section or a
byte range of it, in one of the user's mailboxes. Pure parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from pochta.proto.imap.parser import normalize_mailbox

_ABSOLUTE = re.compile(r"imap://[^/]*", re.IGNORECASE)
_SECTION = re.compile(r"((?:\d+\.)*\d+)?(?:\.?(HEADER|TEXT|MIME|HEADER\.FIELDS(?:\.NOT)?"
                      r"\s*\(.*\)))?\Z", re.IGNORECASE)


class BadUrl(ValueError):
    """Not an IMAP URL we can resolve."""


@dataclass(frozen=True, slots=True)
class MessageUrl:
    mailbox: str
    uidvalidity: int | None
    uid: int
    path: tuple[int, ...] = ()
    text: str = ""  # "", HEADER, TEXT, MIME
    partial: tuple[int, int | None] | None = None  # (offset, length)


def parse_message_url(url: str) -> MessageUrl:
    """``/INBOX;UIDVALIDITY=7/;UID=20/;SECTION=1.2/;PARTIAL=0.1024`` (or the same after
    ``imap://user@host``)."""
    rest = _ABSOLUTE.sub("", url, count=1)
    if not rest.startswith("/"):
        raise BadUrl("not an IMAP URL of this server")
    parts = rest[1:].split("/;")
    if len(parts) < 2 or not parts[0]:
        raise BadUrl("no mailbox or UID")
    box, _, params = parts[0].partition(";")
    uidvalidity = None
    if params:
        key, _, value = params.partition("=")
        if key.upper() != "UIDVALIDITY" or not value.isdigit():
            raise BadUrl("bad mailbox parameter")
        uidvalidity = int(value)
    uid = 0
    path: tuple[int, ...] = ()
    text = ""
    partial: tuple[int, int | None] | None = None
    for item in parts[1:]:
        key, _, value = item.partition("=")
        key = key.upper()
        value = unquote(value)
        if key == "UID" and value.isdigit() and int(value) > 0:
            uid = int(value)
        elif key == "SECTION" and uid:
            m = _SECTION.match(value)
            if m is None or not value or value.upper().startswith("HEADER.FIELDS"):
                raise BadUrl("unsupported section")
            path = tuple(int(n) for n in m.group(1).split(".")) if m.group(1) else ()
            text = (m.group(2) or "").upper()
            if text == "MIME" and not path:
                raise BadUrl("MIME needs a part number")
        elif key == "PARTIAL" and uid:
            off, _, length = value.partition(".")
            if not off.isdigit() or (length and not length.isdigit()):
                raise BadUrl("bad partial")
            partial = (int(off), int(length) if length else None)
        else:
            raise BadUrl(f"unknown URL part {key}")
    if not uid:
        raise BadUrl("no UID")
    return MessageUrl(normalize_mailbox(unquote(box)), uidvalidity, uid, path, text, partial)
