"""CATENATE (RFC 4469): an APPEND message made of TEXT literals and URLs of messages or
parts in the user's own mailboxes (relative IMAP URLs, RFC 5092; no URLAUTH)."""

from __future__ import annotations

import bisect
from pathlib import Path

from ..proto.imap import bodystructure as bs
from ..proto.imap.errors import ImapError, Limit, TooBig
from ..proto.imap.imapurl import BadUrl, parse_message_url
from ..storage.interfaces import NotFound
from .imap_session import ImapSession, SpoolFile

CatPart = tuple[str, "bytes | str | SpoolFile"]  # ("TEXT", data) or ("URL", url)


def _bad(url: str) -> ImapError:
    shown = "".join(c for c in url if c not in "]\r\n")[:200]
    return ImapError("Bad URL", f"BADURL {shown}")


async def resolve_url(s: ImapSession, url: str) -> bytes:
    try:
        u = parse_message_url(url)
    except BadUrl:
        raise _bad(url) from None
    info = await s.store.get_mailbox(s.account_id, u.mailbox)
    if info is None or (u.uidvalidity is not None and u.uidvalidity != info.uidvalidity):
        raise _bad(url)
    metas = await s.store.list_messages(info.id)
    uids = [m.uid for m in metas]
    i = bisect.bisect_left(uids, u.uid)
    if i >= len(uids) or uids[i] != u.uid:
        raise _bad(url)
    try:
        data = await s.store.read_blob(metas[i].blob_id)
    except NotFound:
        raise _bad(url) from None
    if u.path or u.text:
        section = bs.section_bytes(bs.parse(data), u.path, u.text)
        if section is None:
            raise _bad(url)
        data = section
    if u.partial is not None:
        off, length = u.partial
        data = data[off : off + length] if length is not None else data[off:]
    return data


async def catenate(s: ImapSession, parts: list[CatPart]) -> bytes:
    """The message the parts make, checked against APPENDLIMIT as it grows."""
    out = bytearray()
    for kind, value in parts:
        if kind == "URL":
            assert isinstance(value, str)
            out += await resolve_url(s, value)
        elif isinstance(value, SpoolFile):
            if value.failed:
                raise Limit
            out += Path(value.path).read_bytes()
        else:
            assert isinstance(value, bytes)
            out += value
        if len(out) > s.append_limit:
            raise TooBig
    return bytes(out)
