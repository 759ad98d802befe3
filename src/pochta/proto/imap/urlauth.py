"""URLAUTH (RFC 4467): IMAP URLs that carry their own authorization, so that someone
other than the mailbox's owner (another user, ``authuser``, or ``anonymous``) may fetch
one message or part with URLFETCH. Pure: parsing, the token and its check.

An authorized URL is ``rump ":" mechanism ":" token``, where the rump is an absolute IMAP
URL ending in ``;URLAUTH=<access>`` (RFC 4467 §2.1, optionally after ``;EXPIRE=``) and the
token (mechanism INTERNAL, §3) is an HMAC-SHA256 of the rump under the mailbox's access
key, which the store keeps and RESETKEY replaces.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from pochta.proto.imap import bodystructure as bs
from pochta.proto.imap.imapurl import BadUrl, MessageUrl, parse_message_url

MECHANISMS = ("INTERNAL",)
_SERVER = re.compile(r"imap://(?:([^@/;]+)(?:;AUTH=[^@/]*)?@)?([^/:]+)(?::\d+)?/",
                     re.IGNORECASE)
_AUTH = re.compile(r";URLAUTH=([^:;/]+)(?::([A-Za-z0-9.-]+):([0-9A-Fa-f]{32,128}))?\Z",
                   re.IGNORECASE)
_EXPIRE = re.compile(r";EXPIRE=([^;/]+)\Z", re.IGNORECASE)
_ACCESS = re.compile(r"(?:(user|submit)\+(.+)|(authuser|anonymous))\Z", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class AuthUrl:
    rump: str  # what the token signs: the URL up to and including the access identifier
    user: str  # the URL's user (the mailbox owner), decoded
    host: str
    message: MessageUrl
    access: str  # "authuser", "anonymous", "user", "submit"
    access_user: str  # the named user of "user+NAME" / "submit+NAME", else ""
    expire: datetime | None
    mechanism: str | None  # upper case, for an authorized URL
    token: str | None  # lower-case hex

    def owner_address(self) -> str:
        """The owner's account: the URL's user, with the host as its domain when the
        user has none (``imap://fred@example.com/...``)."""
        return self.user if "@" in self.user else f"{self.user}@{self.host}"


def parse_auth_url(url: str, authorized: bool) -> AuthUrl:
    """A rump URL (GENURLAUTH, ``authorized=False``) or an authorized one (URLFETCH)."""
    server = _SERVER.match(url)
    if server is None or not server.group(1):
        raise BadUrl("URLAUTH needs an absolute URL with a user")
    m = _AUTH.search(url)
    if m is None:
        raise BadUrl("no ;URLAUTH=")
    if authorized != (m.group(2) is not None):
        raise BadUrl("an authorized URL" if authorized else "a URL without a token")
    access_m = _ACCESS.match(unquote(m.group(1)))
    if access_m is None:
        raise BadUrl("unknown access identifier")
    rump = url[: m.start(2) - 1] if authorized else url
    base = url[: m.start()]
    expire = None
    e = _EXPIRE.search(base)
    if e is not None:
        try:
            expire = datetime.fromisoformat(unquote(e.group(1)).replace("z", "Z"))
        except ValueError:
            raise BadUrl("bad ;EXPIRE=") from None
        if expire.tzinfo is None:
            raise BadUrl(";EXPIRE= needs a time zone")
        base = base[: e.start()]
    message = parse_message_url(base)
    access = (access_m.group(1) or access_m.group(3)).lower()
    return AuthUrl(rump, unquote(server.group(1)), server.group(2).lower(), message, access,
                   unquote(access_m.group(2) or ""), expire,
                   m.group(2).upper() if m.group(2) else None,
                   m.group(3).lower() if m.group(3) else None)


def token(key: bytes, rump: str) -> str:
    return hmac.new(key, rump.encode("utf-8"), hashlib.sha256).hexdigest()


def authorized_url(key: bytes, rump: str) -> str:
    """GENURLAUTH's answer for a rump URL (RFC 4467 §7.1)."""
    return f"{rump}:internal:{token(key, rump)}"


def verify(key: bytes, url: AuthUrl) -> bool:
    return (url.mechanism == "INTERNAL" and url.token is not None
            and hmac.compare_digest(url.token, token(key, url.rump)))


def may_fetch(url: AuthUrl, fetcher: str | None, now: datetime) -> bool:
    """Whether ``fetcher`` (an authenticated account's address; None: nobody logged in)
    may use the URL by URLFETCH (RFC 4467 §2.1). ``submit+`` URLs are for submission's
    BURL (RFC 4468, services/urlauth.py), so they are never fetched here."""
    if url.expire is not None and now >= url.expire:
        return False
    if url.access == "anonymous":
        return True
    if url.access == "authuser":
        return fetcher is not None
    if url.access == "user":
        return fetcher is not None and fetcher.lower() == url.access_user.lower()
    return False


_CTE_LINE = re.compile(rb"(?im)^content-transfer-encoding:[^\r\n]*(\r?\n[ \t][^\r\n]*)*\r?\n")


def _leaves(part: bs.Part) -> list[bs.Part]:
    if part.is_multipart:
        return [leaf for c in part.children for leaf in _leaves(c)]
    if part.message is not None:
        return _leaves(part.message)
    return [part]


def binary_message(data: bytes, relabel: bool = True) -> bytes:
    """A message (or message/rfc822 part) as URLFETCH BINARY returns it (RFC 5524 §3,
    RFC 3516): every base64 or quoted-printable leaf decoded and relabelled ``binary``.
    Without ``relabel`` the leaves keep their Content-Transfer-Encoding field: what
    BODYPARTSTRUCTURE describes when BINARY is asked for too (sizes and lines of the
    decoded content, the encoding it was stored with; as Dovecot and imaptest have it)."""
    for leaf in _leaves(bs.parse(data)):
        cte = (leaf.header_value("Content-Transfer-Encoding") or "").strip().lower()
        if cte not in ("base64", "quoted-printable"):
            continue
        try:
            decoded = bs.decode_body(leaf)
        except bs.UnknownCTE:
            continue
        header = leaf.header
        if relabel:
            header = _CTE_LINE.sub(b"", header)
            end = len(header) - (2 if header.endswith(b"\r\n") else 1)
            header = header[:end] + b"Content-Transfer-Encoding: binary\r\n" + header[end:]
        old = leaf.header + leaf.body
        if old in data:
            data = data.replace(old, header + decoded, 1)
    return data
