"""URLAUTH (RFC 4467) and URLAUTH=BINARY (RFC 5524): GENURLAUTH signs a URL of one of the
user's messages with the mailbox's access key (kept by the store), URLFETCH returns what
an authorized URL names to whoever its access identifier allows, RESETKEY replaces keys
so that every URL signed before stops working. The URL grammar and the token are pure
(proto/imap/urlauth.py)."""

from __future__ import annotations

from ..proto.imap import bodystructure as bs
from ..proto.imap.errors import BadCommand, ImapError, Nonexistent
from ..proto.imap.imapurl import BadUrl
from ..proto.imap.parser import ParseError, Reader
from ..proto.imap.response import astring, literal
from ..proto.imap.urlauth import MECHANISMS, authorized_url, binary_message, parse_auth_url
from ..services.urlauth import Requester, UrlUnauthorized, UrlUnresolved, resolve
from ..storage.interfaces import StoreError
from .imap_session import ImapSession

MAX_URLS = 100  # in one GENURLAUTH or URLFETCH


async def cmd_genurlauth(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    requests: list[tuple[str, str]] = []
    while True:
        url = r.astring()
        r.sp()
        requests.append((url, r.atom().upper()))
        if len(requests) > MAX_URLS:
            raise ParseError("too many URLs")
        if not r.maybe_sp():
            break
    r.end()
    assert s.account is not None
    out: list[bytes] = []
    for url, mechanism in requests:
        if mechanism not in MECHANISMS:
            raise ImapError(f"Unsupported URLAUTH mechanism {mechanism}")
        try:
            auth = parse_auth_url(url, authorized=False)
        except BadUrl as exc:
            raise BadCommand(f"Bad URL: {exc}") from None
        # only the owner signs URLs of a mailbox (RFC 4467 §7.1)
        if auth.owner_address().lower() != s.account.address.lower():
            raise ImapError("The URL is not for this user's mailbox")
        info = await s.store.get_mailbox(s.account_id, auth.message.mailbox)
        if info is None:
            raise Nonexistent
        key = await s.store.urlauth_key(info.id, create=True)
        if key is None:
            raise Nonexistent
        out.append(astring(authorized_url(key, auth.rump), s.utf8))
    s.send(b"* GENURLAUTH " + b" ".join(out) + b"\r\n")
    s.ok(tag, "GENURLAUTH completed")


async def cmd_resetkey(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    """RESETKEY [mailbox [mechanism ...]] (RFC 4467 §7.2): no mailbox resets them all."""
    boxes: list[int] = []
    if r.at_end():
        boxes = [m.id for m in await s.store.list_mailboxes(s.account_id)]
    else:
        name = r.mailbox()
        while r.maybe_sp():
            mechanism = r.atom().upper()
            if mechanism not in MECHANISMS:
                raise ImapError(f"Unsupported URLAUTH mechanism {mechanism}")
        info = await s.store.get_mailbox(s.account_id, name)
        if info is None:
            raise Nonexistent
        boxes = [info.id]
    r.end()
    await s.store.reset_urlauth_keys(boxes)
    s.ok(tag, "RESETKEY completed")


def _fetch_request(r: Reader) -> tuple[str, set[str]]:
    """``url`` or, with URLAUTH=BINARY (RFC 5524 §3), ``(url [BODYPARTSTRUCTURE]
    [BINARY|BODY])``."""
    if not r.accept("("):
        return r.astring(), set()
    url = r.astring()
    params: set[str] = set()
    while not r.accept(")"):
        r.sp()
        word = r.atom().upper()
        if word not in ("BODYPARTSTRUCTURE", "BINARY", "BODY") or word in params:
            raise ParseError(f"bad URLFETCH parameter {word}")
        params.add(word)
    if {"BINARY", "BODY"} <= params:
        raise ParseError("BINARY and BODY together")
    return url, params


async def _resolve(s: ImapSession, url: str) -> tuple[bytes, bs.Part | None] | None:
    """The message (or section) an authorized URL names, and its part; None when the URL
    is not valid for this user (RFC 4467 §7.3: NIL, never an error)."""
    fetcher = s.account.address if s.account is not None else None
    try:
        found = await resolve(s.store, url, Requester(fetcher=fetcher))
    except (UrlUnauthorized, UrlUnresolved):
        return None
    return found.data, found.part


def _binary(data: bytes, part: bs.Part) -> tuple[bytes, bs.Part]:
    """BINARY's octets for a URL's data and the part BODYPARTSTRUCTURE then describes:
    the decoded content (RFC 5524 §3)."""
    try:
        if data is part.body and not part.is_multipart and part.message is None:
            body = bs.decode_body(part)  # a leaf: its content without the encoding
            return body, bs.Part(part.header, body, part.msg)
        if data is part.body and part.message is not None:  # a message/rfc822 part
            return (binary_message(data),
                    bs.parse(part.header + binary_message(data, relabel=False)))
        if data is part.raw or data == part.raw:  # a whole message
            return binary_message(data), bs.parse(binary_message(data, relabel=False))
    except bs.UnknownCTE:
        pass
    return data, part


def _literal8(data: bytes) -> bytes:
    return b"~" + literal(data) if b"\x00" in data else literal(data)


async def cmd_urlfetch(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    requests = [_fetch_request(r)]
    while r.maybe_sp():
        requests.append(_fetch_request(r))
        if len(requests) > MAX_URLS:
            raise ParseError("too many URLs")
    r.end()
    out = [b"* URLFETCH"]
    for url, params in requests:
        try:
            found = await _resolve(s, url)
        except StoreError:
            found = None
        out.append(astring(url, s.utf8))
        if not params:
            out.append(b"NIL" if found is None else literal(found[0]))
            continue
        if found is None:
            out.append(b"NIL")
            continue
        data, part = found
        items: list[bytes] = []
        decoded, described = data, part
        if "BINARY" in params and part is not None:
            decoded, described = _binary(data, part)
        if "BODYPARTSTRUCTURE" in params:
            items.append(b"BODYPARTSTRUCTURE " + (
                bs.bodystructure(described, utf8=s.utf8) if described is not None
                else b"NIL"))
        if "BINARY" in params:
            items.append(b"BINARY " + _literal8(decoded))
        elif "BODY" in params:
            items.append(b"BODY " + literal(data))
        out.append(b"(" + b" ".join(items) + b")")
    s.send(b" ".join(out) + b"\r\n")
    s.ok(tag, "URLFETCH completed")
