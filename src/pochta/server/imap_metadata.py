"""METADATA (RFC 5464): GETMETADATA and SETMETADATA for mailboxes and the server (mailbox
name ""), entries kept by the store (storage/interfaces_imap.py)."""

from __future__ import annotations

import re

from ..proto.imap.errors import BadCommand, ImapError, Nonexistent
from ..proto.imap.parser import ParseError, Reader
from ..proto.imap.response import astring, nstring
from .imap_session import ImapSession

MAX_ENTRIES = 100  # per mailbox and account (TOOMANY)
MAX_VALUE = 64 * 1024  # octets of one value (MAXSIZE)
# entry = "/" followed by levels of printable ASCII without wildcards (RFC 5464 §3.2)
_ENTRY = re.compile(r"/(private|shared)(/[\x21-\x7e]+?)*\Z", re.IGNORECASE)


def _entry(r: Reader) -> str:
    name = r.astring()
    low = name.lower()
    if (not _ENTRY.match(name) or "//" in name or name.endswith("/") or "*" in name
            or "%" in name or low in ("/private", "/shared")):
        raise BadCommand(f"Invalid entry name {name}")
    return low


def _entries(r: Reader) -> list[str]:
    if r.accept("("):
        out = [_entry(r)]
        while not r.accept(")"):
            r.sp()
            out.append(_entry(r))
            if len(out) > 1000:
                raise ParseError("too many entries")
        return out
    return [_entry(r)]


async def _mailbox_id(s: ImapSession, name: str) -> int:
    if name == "":
        return 0  # the server's own entries
    info = await s.store.get_mailbox(s.account_id, name)
    if info is None:
        raise Nonexistent
    return info.id


async def cmd_getmetadata(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    maxsize: int | None = None
    depth = 0
    if r.accept("("):
        while not r.accept(")"):
            r.maybe_sp()
            opt = r.atom().upper()
            r.sp()
            if opt == "MAXSIZE":
                maxsize = r.number()
            elif opt == "DEPTH":
                word = r.atom().lower()
                if word not in ("0", "1", "infinity"):
                    raise ParseError("DEPTH is 0, 1 or infinity")
                depth = -1 if word == "infinity" else int(word)
            else:
                raise ParseError(f"unknown GETMETADATA option {opt}")
        r.sp()
    name = r.mailbox()  # "" names the server
    r.sp()
    wanted = _entries(r)
    r.end()
    mailbox_id = await _mailbox_id(s, name)
    stored = await s.store.get_metadata(s.account_id, mailbox_id)
    found: dict[str, bytes] = {}
    for entry in wanted:
        for key, value in stored.items():
            if key == entry:
                found[key] = value
            elif depth != 0 and key.startswith(entry + "/"):
                rest = key[len(entry) + 1 :]
                if depth == -1 or "/" not in rest:
                    found[key] = value
    longest = 0
    items: list[bytes] = []
    for key in sorted(found):
        value = found[key]
        if maxsize is not None and len(value) > maxsize:
            longest = max(longest, len(value))
            continue
        items.append(astring(key) + b" " + _value(value))
    if items:
        shown = s.mailbox_name(name) if name else b'""'
        s.send(b"* METADATA " + shown + b" (" + b" ".join(items) + b")\r\n")
    code = f"METADATA LONGENTRIES {longest}" if longest else None
    s.ok(tag, "GETMETADATA completed", code)


def _value(value: bytes) -> bytes:
    if b"\x00" in value:
        return b"~{%d}\r\n" % len(value) + value  # literal8 (RFC 5464 §5)
    return nstring(value)


async def cmd_setmetadata(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    name = r.mailbox()  # "" names the server
    r.sp()
    r.expect("(")
    values: dict[str, bytes | None] = {}
    while True:
        entry = _entry(r)
        r.sp()
        if r.accept("NIL"):
            values[entry] = None
        else:
            values[entry] = r.string_bytes()
        if r.accept(")"):
            break
        r.sp()
    r.end()
    too_big = max((len(v) for v in values.values() if v is not None), default=0)
    if too_big > MAX_VALUE:
        raise ImapError("Value too large", f"METADATA MAXSIZE {MAX_VALUE}")
    mailbox_id = await _mailbox_id(s, name)
    stored = await s.store.get_metadata(s.account_id, mailbox_id)
    after = set(stored) | {k for k, v in values.items() if v is not None}
    after -= {k for k, v in values.items() if v is None}
    if len(after) > MAX_ENTRIES:
        raise ImapError("Too many entries", "METADATA TOOMANY")
    await s.store.set_metadata(s.account_id, mailbox_id, values)
    s.ok(tag, "SETMETADATA completed")
