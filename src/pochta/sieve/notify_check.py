"""The arguments of enotify's ``notify`` (RFC 5435) checked as the RFCs write them, so a
script with a bad literal URI, ``:from`` or ``:options`` is refused when it is uploaded
(RFC 5435 §3.2: "MUST ... at compile time when possible"), with a message that says what
is wrong. Pochta's one notification method is mailto (RFC 5436, URIs of RFC 6068)."""

from __future__ import annotations

import re
from urllib.parse import unquote

from .address import redirect_address

# RFC 6068 §2: qchar = unreserved / pct-encoded / some-delims
_QCHARS = re.compile(r"(?:[A-Za-z0-9\-._~!$'()*+,;:@]|%[0-9A-Fa-f]{2})*\Z")
_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")  # RFC 5322 §3.6.8 ftext
# RFC 5435 §3.7 (ABNF of :options): optionname = l-d *l-d-p, value without CR or LF
_OPTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*=[^\r\n]*\Z")


def method_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be a notification method here (None: it can)."""
    scheme, colon, rest = uri.partition(":")
    if not colon or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        return f"invalid notification URI {_show(uri)}: it has no scheme (mailto:...)"
    if scheme.lower() != "mailto":
        return (f"unsupported notification method {scheme.lower()!r} in {_show(uri)} "
                "(the method supported is mailto)")
    return _mailto_problem(uri, rest)


def _mailto_problem(uri: str, rest: str) -> str | None:
    to_part, _, query = rest.partition("?")
    bad = f"invalid mailto URI {_show(uri)}"
    if not _QCHARS.match(to_part):
        return f"{bad}: a character in the recipients must be %-encoded"
    recipients = [a for a in unquote(to_part).split(",") if a]  # %2C separates too
    for field in query.split("&") if query else []:
        name, eq, value = field.partition("=")
        if not eq or not _QCHARS.match(name) or not _QCHARS.match(value):
            return f"{bad}: header field {_show(field)} is not name=value of URI characters"
        name = unquote(name)
        if not _FIELD_NAME.match(name):
            return f"{bad}: {_show(name)} is not a header field name"
        if name.lower() == "to":
            recipients += [a for a in unquote(value).split(",") if a]
    for address in recipients:
        if _mailbox(address) is None:
            return f"{bad}: {_show(address)} is not an email address"
    if not recipients:
        return f"{bad}: no recipient"
    return None


def from_problem(value: str) -> str | None:
    """RFC 5436 §2.3: ``:from`` is an address the notification is sent from."""
    if _mailbox(value) is None:
        return f"notify :from {_show(value)} is not an email address"
    return None


def option_problem(option: str) -> str | None:
    if not option:
        return "notify :options: empty option (expected name=value)"
    if not _OPTION.match(option):
        if re.match(r"[A-Za-z0-9][A-Za-z0-9._\-]*=", option):
            return f"notify :options: the value of {_show(option)} has a line break"
        return f"notify :options: invalid option name in {_show(option)} (expected name=value)"
    return None


def _mailbox(address: str) -> str | None:
    return redirect_address(address) if address.strip() else None


def _show(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")
