"""The address argument of ``redirect`` (RFC 5228 §4.2): an RFC 5322 mailbox, that is an
addr-spec or a name-addr, with white space allowed around its tokens (RFC 5322 §3.2.2
CFWS; comments are not accepted). The result is the addr-spec the envelope gets, with
the white space gone and a quoted local part unquoted when it does not need the quotes."""

from __future__ import annotations

import re

# RFC 5322 §3.2.3 atext, plus any non-ASCII character (RFC 6532 §3.2)
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_QUOTED = re.compile(r'"((?:[^"\\\r\n]|\\[^\r\n])*)"\Z')
_DOMAIN_LITERAL = re.compile(r"\[[!-Z^-~\s]*\]\Z")
_PHRASE = re.compile(rf'(?:\s*(?:{_ATEXT}+|"(?:[^"\\\r\n]|\\[^\r\n])*"|\.))*\s*\Z')


def redirect_address(raw: str) -> str | None:
    """The normalised addr-spec of ``raw``, or None when it is not one mailbox."""
    text = raw.strip()
    if text.endswith(">") and "<" in text:
        at = _angle_start(text)
        if at is None or not _PHRASE.match(text[:at]):
            return None
        text = text[at + 1:-1]
    return _addr_spec(text)


def _angle_start(text: str) -> int | None:
    """Where the ``<`` of a name-addr is: the first one outside a quoted string."""
    quoted = escaped = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\" and quoted:
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == "<" and not quoted:
            return i
    return None


def _addr_spec(text: str) -> str | None:
    at = text.rfind("@")
    if at < 0:
        return None
    local, domain = text[:at].strip(), text[at + 1:].strip()
    if not (_DOT_ATOM.match(domain) or _DOMAIN_LITERAL.match(domain)):
        return None
    if _DOT_ATOM.match(local):
        return f"{local}@{domain}"
    quoted = _QUOTED.match(local)
    if quoted is None:
        return None
    content = re.sub(r"\\(.)", r"\1", quoted.group(1))
    if content and _DOT_ATOM.match(content):
        return f"{content}@{domain}"  # RFC 5322 §3.4.1: the quotes say nothing more
    escaped = re.sub(r'(["\\])', r"\\\1", content)
    return f'"{escaped}"@{domain}'


# An envelope address as an SMTP server hands it on (RFC 5321 §4.1.2), read as leniently
# as real mail needs: dots anywhere in a local part (old Japanese mobile addresses such
# as "taro..yamada.@example.jp"), "_" and "-" anywhere in a host name label (RFC 2181
# §11: DNS allows them), UTF-8 (RFC 6531).
_ENV_LOCAL = re.compile(rf"(?:{_ATEXT}|\.)+\Z")
_ENV_LABEL = r"[A-Za-z0-9_\-\u0080-\U0010ffff]+"
_ENV_DOMAIN = re.compile(rf"{_ENV_LABEL}(?:\.{_ENV_LABEL})*\Z")


def _env_domain(domain: str) -> bool:
    return bool(_ENV_DOMAIN.match(domain) or _DOMAIN_LITERAL.match(domain))


def envelope_path(raw: str) -> str | None:
    """The address an envelope test sees for an SMTP path (``<@relay:user@host>``,
    ``user@host`` or, as RFC 5321 §4.1.1.3 allows for Postmaster, ``<user>``): the source
    route dropped (RFC 5321 §4.1.2: accepted and ignored), ``""`` for ``<>``, None when
    it is not a path. Only the brackets, the route and the "@" are checked strictly."""
    text = raw.strip()
    if text.startswith("<") != text.endswith(">") or text in ("<", ">"):
        return None
    if text.startswith("<"):
        text = text[1:-1]
    if "<" in text or ">" in text:
        return None
    if not text:
        return ""
    if text.startswith("@"):
        route, colon, text = text.partition(":")
        if not colon or not all(hop.startswith("@") and _env_domain(hop[1:])
                                for hop in route.split(",")):
            return None
    if text.startswith('"'):
        end = _quoted_end(text)
        if end is None:
            return None
        local, rest = text[:end + 1], text[end + 1:]
        if not _QUOTED.match(local):
            return None
    else:
        at = text.find("@")
        local, rest = (text, "") if at < 0 else (text[:at], text[at:])
        if not _ENV_LOCAL.match(local):
            return None
    if not rest:
        return local  # a local part alone: "postmaster", "MAILER-DAEMON"
    domain = rest[1:]
    if not rest.startswith("@") or not _env_domain(domain):
        return None
    return f"{local}@{domain}"


def _quoted_end(text: str) -> int | None:
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    return None
