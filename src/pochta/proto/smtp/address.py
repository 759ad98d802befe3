"""RFC 5321 section 4.1.2 paths and ESMTP parameters for MAIL and RCPT.

``parse_mail_from`` and ``parse_rcpt_to`` take the text after ``MAIL FROM:`` /
``RCPT TO:`` and return the event, or raise ``AddressError`` carrying the reply to send.

Leniencies that Postfix users expect: spaces between the colon and ``<`` and several
spaces between parameters are accepted. Angle brackets are required.
Source routes (``<@a,@b:user@d>``) are accepted and stripped (RFC 5321 section 4.1.1.3).
Quoted local parts that need no quoting are unquoted (``"joe"@x`` -> ``joe@x``).
"""

from __future__ import annotations

import ipaddress
import re

from pochta.proto.smtp import replies
from pochta.proto.smtp.events import MailFrom, RcptTo
from pochta.proto.smtp.replies import Reply

_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_LDH_TAG = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_NOTIFY = ("SUCCESS", "FAILURE", "DELAY")
MAX_DOMAIN = 255  # RFC 5321 section 4.5.3.1.2
MAX_ENVID = 100  # RFC 3461 section 4.4


class AddressError(ValueError):
    """A bad path or parameter; ``reply`` is what the server answers."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


def _atext(c: str) -> bool:
    # RFC 6531 section 3.3: atext also admits UTF-8 non-ASCII characters.
    return c in _ATEXT or ord(c) > 127


def is_dot_string(s: str) -> bool:
    """``Dot-string = Atom *("." Atom)``."""
    return bool(s) and all(atom and all(_atext(c) for c in atom) for atom in s.split("."))


def is_domain(s: str) -> bool:
    """``Domain = sub-domain *("." sub-domain)``; U-labels allowed (RFC 6531)."""
    if not s or len(s) > MAX_DOMAIN:
        return False
    for label in s.split("."):
        if not label or len(label.encode("utf-8")) > 63:
            return False
        if label[0] == "-" or label[-1] == "-":
            return False
        if not all((c.isascii() and (c.isalnum() or c == "-")) or ord(c) > 127 for c in label):
            return False
    return True


def is_address_literal(s: str) -> bool:
    """``[1.2.3.4]``, ``[IPv6:...]`` or a general literal ``[tag:content]``."""
    if len(s) < 3 or s[0] != "[" or s[-1] != "]":
        return False
    inner = s[1:-1]
    if inner[:5].upper() == "IPV6:":
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            return False
        return True
    if ":" in inner:
        tag, _, content = inner.partition(":")
        return bool(
            _LDH_TAG.fullmatch(tag)
            and content
            and all(33 <= ord(c) <= 90 or 94 <= ord(c) <= 126 for c in content)
        )
    try:
        ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def _split_path(text: str, bad: Reply) -> tuple[str, str]:
    """Split ``<path> params`` into the text inside the brackets and the rest."""
    text = text.lstrip(" ")
    if not text.startswith("<"):
        raise AddressError(bad)
    in_quotes = False
    i = 1
    while i < len(text):
        c = text[i]
        if in_quotes and c == "\\":
            i += 2
            continue
        if c == '"':
            in_quotes = not in_quotes
        elif c == ">" and not in_quotes:
            rest = text[i + 1 :]
            if rest and not rest.startswith(" "):
                raise AddressError(bad)
            return text[1:i], rest
        i += 1
    raise AddressError(bad)


def _parse_quoted(local: str) -> str | None:
    """The content of a Quoted-string (RFC 5321 4.1.2), or None when invalid."""
    if len(local) < 2 or local[0] != '"' or local[-1] != '"':
        return None
    out = []
    i = 1
    while i < len(local) - 1:
        c = local[i]
        if c == "\\":
            if i + 1 >= len(local) - 1:
                return None
            nxt = local[i + 1]
            if not 32 <= ord(nxt) <= 126:
                return None
            out.append(nxt)
            i += 2
            continue
        # qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF-8 (RFC 6531).
        if c == '"' or not (32 <= ord(c) <= 126 or ord(c) > 127):
            return None
        out.append(c)
        i += 1
    return "".join(out)


def _canonical_local(local: str) -> str | None:
    if local.startswith('"'):
        content = _parse_quoted(local)
        if content is None:
            return None
        if is_dot_string(content):
            return content
        return '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return local if is_dot_string(local) else None


def parse_mailbox(path: str) -> tuple[str, str] | None:
    """Parse ``[A-d-l ":"] Mailbox`` into (local-part, domain); domain may be ``""``.

    Returns None on a syntax error. The source route, if any, is dropped.
    """
    if path.startswith("@"):
        route, colon, path = path.partition(":")
        if not colon:
            return None
        for hop in route.split(","):
            if not hop.startswith("@") or not is_domain(hop[1:]):
                return None
    if path.startswith('"'):
        # The quoted string ends at the first unescaped quote.
        i = 1
        while i < len(path):
            if path[i] == "\\":
                i += 2
                continue
            if path[i] == '"':
                break
            i += 1
        local, rest = path[: i + 1], path[i + 1 :]
        if rest and not rest.startswith("@"):
            return None
        domain = rest[1:] if rest else ""
        if rest == "@":
            return None
    else:
        local, at, domain = path.partition("@")
        if at and not domain:
            return None
    canonical = _canonical_local(local)
    if canonical is None:
        return None
    if domain and not (is_domain(domain) or is_address_literal(domain)):
        return None
    return canonical, domain


def _parse_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(" "):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not _KEYWORD.fullmatch(key):
            raise AddressError(replies.BAD_PARAMETER)
        # esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 (RFC 6531 section 3.3).
        if eq and (
            not value
            or any(not (33 <= ord(c) <= 126 or ord(c) > 127) or c == "=" for c in value)
        ):
            raise AddressError(replies.BAD_PARAMETER)
        key = key.upper()
        if key in params:
            raise AddressError(replies.BAD_PARAMETER)
        params[key] = value if eq else None
    return params


def xtext_decode(s: str) -> str:
    """RFC 3461 section 4: ``+HH`` escapes; raises ValueError on invalid xtext."""
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c == "+":
            hexpair = s[i + 1 : i + 3]
            if len(hexpair) != 2 or not all(h in "0123456789ABCDEFabcdef" for h in hexpair):
                raise ValueError("bad xtext escape")
            out.append(int(hexpair, 16))
            i += 3
            continue
        if not 33 <= ord(c) <= 126 or c == "=":
            raise ValueError("bad xtext character")
        out.append(ord(c))
        i += 1
    return out.decode("utf-8", errors="replace")


def xtext_encode(s: str) -> str:
    """Encode for ENVID=/ORCPT= (RFC 3461 section 4)."""
    out = []
    for b in s.encode("utf-8"):
        if 33 <= b <= 126 and b not in (ord("+"), ord("=")):
            out.append(chr(b))
        else:
            out.append(f"+{b:02X}")
    return "".join(out)


def _check_utf8(address: str, smtputf8: bool) -> None:
    if not smtputf8 and not address.isascii():
        raise AddressError(replies.NON_ASCII_ADDRESS)


def parse_mail_from(
    text: str,
    *,
    max_message_size: int,
    smtputf8_enabled: bool = True,
    binarymime_enabled: bool = False,
    requiretls_enabled: bool = False,
) -> MailFrom:
    """Parse the text after ``MAIL FROM:``."""
    inner, rest = _split_path(text, replies.BAD_SENDER_SYNTAX)
    params = _parse_params(rest)
    size: int | None = None
    body: str | None = None
    smtputf8 = False
    ret: str | None = None
    envid: str | None = None
    requiretls = False
    for key, value in params.items():
        if key == "SIZE":  # RFC 1870
            if value is None or not value.isascii() or not value.isdigit() or len(value) > 20:
                raise AddressError(replies.BAD_PARAMETER)
            size = int(value)
        elif key == "BODY":  # RFC 6152, RFC 3030
            kind = (value or "").upper()
            if kind == "BINARYMIME" and not binarymime_enabled:
                raise AddressError(replies.UNKNOWN_PARAMETER)
            if kind not in ("7BIT", "8BITMIME", "BINARYMIME"):
                raise AddressError(replies.BAD_PARAMETER)
            body = kind
        elif key == "SMTPUTF8":  # RFC 6531 section 3.4
            if value is not None:
                raise AddressError(replies.BAD_PARAMETER)
            if not smtputf8_enabled:
                raise AddressError(replies.UNKNOWN_PARAMETER)
            smtputf8 = True
        elif key == "RET":  # RFC 3461 section 4.3
            ret = (value or "").upper()
            if ret not in ("FULL", "HDRS"):
                raise AddressError(replies.BAD_PARAMETER)
        elif key == "ENVID":  # RFC 3461 section 4.4
            try:
                envid = xtext_decode(value or "")
            except ValueError:
                raise AddressError(replies.BAD_PARAMETER) from None
            if not envid or len(value or "") > MAX_ENVID:
                raise AddressError(replies.BAD_PARAMETER)
        elif key == "REQUIRETLS":  # RFC 8689 section 4.1: only over TLS, no value
            if not requiretls_enabled:
                raise AddressError(replies.UNKNOWN_PARAMETER)
            if value is not None:
                raise AddressError(replies.BAD_PARAMETER)
            requiretls = True
        elif key == "AUTH":
            # RFC 4954 section 5: a server that does not trust the client ignores it.
            continue
        else:
            raise AddressError(replies.UNKNOWN_PARAMETER)
    if inner == "":
        address = ""
    else:
        mailbox = parse_mailbox(inner)
        if mailbox is None or not mailbox[1]:
            raise AddressError(replies.BAD_SENDER_SYNTAX)
        address = f"{mailbox[0]}@{mailbox[1]}"
        _check_utf8(address, smtputf8)
    if size is not None and size > max_message_size:
        raise AddressError(replies.MESSAGE_TOO_BIG)
    return MailFrom(address, params, size, body, smtputf8, ret, envid, requiretls)


def parse_rcpt_to(text: str, *, smtputf8: bool, local_hostname: str) -> RcptTo:
    """Parse the text after ``RCPT TO:``; ``smtputf8`` is the transaction's flag.

    ``<Postmaster>`` without a domain is accepted (RFC 5321 section 4.1.1.3) and becomes
    ``Postmaster@<local_hostname>``.
    """
    inner, rest = _split_path(text, replies.BAD_RECIPIENT_SYNTAX)
    params = _parse_params(rest)
    notify: str | None = None
    orcpt: str | None = None
    for key, value in params.items():
        if key == "NOTIFY":  # RFC 3461 section 4.1
            items = (value or "").upper().split(",")
            if items == ["NEVER"]:
                notify = "NEVER"
            elif len(set(items)) == len(items) and all(i in _NOTIFY for i in items):
                notify = ",".join(items)
            else:
                raise AddressError(replies.BAD_PARAMETER)
        elif key == "ORCPT":  # RFC 3461 section 4.2
            addr_type, semi, xtext = (value or "").partition(";")
            if not semi or not _ADDR_TYPE.fullmatch(addr_type) or not xtext:
                raise AddressError(replies.BAD_PARAMETER)
            try:
                orcpt = f"{addr_type};{xtext_decode(xtext)}"
            except ValueError:
                raise AddressError(replies.BAD_PARAMETER) from None
        else:
            raise AddressError(replies.UNKNOWN_PARAMETER)
    if inner == "":
        raise AddressError(replies.BAD_RECIPIENT_SYNTAX)
    mailbox = parse_mailbox(inner)
    if mailbox is None:
        raise AddressError(replies.BAD_RECIPIENT_SYNTAX)
    local, domain = mailbox
    if not domain:
        if local.lower() != "postmaster":
            raise AddressError(replies.RECIPIENT_NEEDS_DOMAIN)
        domain = local_hostname
    address = f"{local}@{domain}"
    _check_utf8(address, smtputf8)
    return RcptTo(address, params, notify, orcpt)
