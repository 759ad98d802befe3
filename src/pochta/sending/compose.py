"""From the API's JSON to RFC 5322 bytes: validation (unknown fields, bad addresses, sizes
are refused with a stable code) and per-recipient variable substitution.

A message is given either structured (``from``, ``to``/``cc``/``bcc``, ``subject``,
``text`` and/or ``html``, ``attachments``, ``headers``) or raw (``raw``: the RFC 5322
message, with ``to`` naming the envelope recipients). Both take ``tags``, ``metadata``,
``stream`` and ``variables`` (``{{name}}`` in subject, text and html is replaced by the
variable's value; HTML gets it escaped).
"""

from __future__ import annotations

import base64
import binascii
import email.header
import email.utils
import functools
import html
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..mail.addresses import AddressError, normalize_address, split_address
from ..mail.headers import fold, header_values, split_header
from ..services.submission import from_addresses
from .rawtrack import html_rebuilder

MESSAGE_FIELDS = {"from", "to", "cc", "bcc", "reply_to", "subject", "text", "html",
                  "attachments", "headers", "tags", "metadata", "stream", "variables", "raw",
                  "track"}
ATTACHMENT_FIELDS = {"filename", "content_type", "content", "content_id"}
# Header fields the API sets itself (or that would break the message's structure).
RESERVED_HEADERS = {"from", "to", "cc", "bcc", "subject", "reply-to", "content-type",
                    "content-transfer-encoding", "mime-version", "dkim-signature",
                    "list-unsubscribe", "list-unsubscribe-post", "return-path", "received"}
MAX_TAGS = 10
VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


class InvalidRequest(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass
class Outgoing:
    """One message ready to queue: its bytes (unsigned) and who gets a copy."""

    sender: str  # the From address (normalised)
    domain: str  # the sending domain (From's domain)
    recipients: list[str]  # envelope recipients, normalised, de-duplicated
    data: bytes
    subject: str
    stream: str
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    # Open/click tracking asked for by the message (None: the [[sending.tracking]] default)
    track_opens: bool | None = None
    track_clicks: bool | None = None
    # The message's bytes again with its HTML rewritten (tracking.py); None without HTML
    rebuild: Callable[[Callable[[str], str]], bytes] | None = None


def _need(cond: bool, code: str, message: str) -> None:
    if not cond:
        raise InvalidRequest(code, message)


def _address(value: Any, where: str) -> tuple[str, str]:
    """(display name, normalised address) from "a@b", "Name <a@b>" or {"email", "name"}."""
    if isinstance(value, dict):
        unknown = set(value) - {"email", "name"}
        _need(not unknown, "unknown_field", f"{where}: unknown field {min(unknown, default='')!r}")
        name, addr = value.get("name", ""), value.get("email")
        _need(isinstance(name, str) and isinstance(addr, str), "invalid_address",
              f"{where}: email and name must be strings")
        parsed = _parse_address(f"{addr}")
        _need("\r" not in name and "\n" not in name, "invalid_address", f"{where}: bad name")
        if isinstance(parsed, str):
            raise InvalidRequest("invalid_address", f"{where}: {addr!r}: {parsed}")
        return name, parsed[1]
    _need(isinstance(value, str), "invalid_address", f"{where}: expected an address")
    parsed = _parse_address(value)
    if isinstance(parsed, str):
        raise InvalidRequest("invalid_address", f"{where}: {value!r}: {parsed}")
    return parsed


@functools.lru_cache(maxsize=4096)
def _parse_address(value: str) -> tuple[str, str] | str:
    """(name, normalised address), or what is wrong (cached: a batch repeats its From)."""
    if value.count("@") == 1 and not any(c in value for c in ' <>"(),;:\\[]\r\n'):
        name, addr = "", value  # the common case, without the full RFC 5322 parser
    else:
        name, addr = email.utils.parseaddr(value)
        if not addr:
            return "not an address"
        if "\r" in name or "\n" in name:
            return "bad name"
    try:
        norm = normalize_address(addr)
        split_address(norm)
    except AddressError as exc:
        return str(exc)
    return name, norm


def _addresses(value: Any, where: str) -> list[tuple[str, str]]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [_address(v, f"{where}[{i}]") for i, v in enumerate(items)]


def substitute(text: str, variables: dict[str, Any], escape: bool = False) -> str:
    if not variables or "{{" not in text:
        return text

    def repl(m: re.Match[str]) -> str:
        value = variables.get(m.group(1))
        if value is None:
            return ""
        s = str(value)
        return html.escape(s) if escape else s

    return VARIABLE.sub(repl, text)


def _header_value(name: str, value: Any) -> str:
    _need(isinstance(value, str), "invalid_header", f"headers.{name}: expected a string")
    _need(re.fullmatch(r"[!-9;-~]+", name) is not None, "invalid_header",
          f"headers: {name!r} is not a header field name")
    _need(name.lower() not in RESERVED_HEADERS, "invalid_header",
          f"headers: {name} is set by the API")
    _need("\r" not in value and "\n" not in value, "invalid_header",
          f"headers.{name}: no line breaks")
    return str(value)


def parse_message(spec: Any, streams: list[str], max_recipients: int, where: str = "message"
                  ) -> Outgoing:
    """Validate one message of an API call and build it."""
    _need(isinstance(spec, dict), "invalid_message", f"{where}: expected an object")
    unknown = set(spec) - MESSAGE_FIELDS
    _need(not unknown, "unknown_field", f"{where}: unknown field {min(unknown, default='')!r}")
    stream = spec.get("stream", streams[0])
    _need(stream in streams, "invalid_stream",
          f"{where}.stream: one of {', '.join(streams)}")
    tags = spec.get("tags", [])
    _need(isinstance(tags, list) and len(tags) <= MAX_TAGS
          and all(isinstance(t, str) and 0 < len(t) <= 128 and "\x1f" not in t for t in tags),
          "invalid_tags", f"{where}.tags: at most {MAX_TAGS} non-empty strings")
    metadata = spec.get("metadata", {})
    _need(isinstance(metadata, dict), "invalid_metadata", f"{where}.metadata: an object")
    variables = spec.get("variables", {})
    _need(isinstance(variables, dict), "invalid_variables", f"{where}.variables: an object")
    parsed = {key: _addresses(spec.get(key), f"{where}.{key}") for key in ("to", "cc", "bcc")}
    rcpts = [a for key in ("to", "cc", "bcc") for _, a in parsed[key]]
    _need(bool(rcpts), "no_recipients", f"{where}: no recipients (to, cc or bcc)")
    _need(len(rcpts) <= max_recipients, "too_many_recipients",
          f"{where}: more than {max_recipients} recipients")
    recipients = list(dict.fromkeys(rcpts))
    track_opens, track_clicks = _track(spec.get("track"), where)
    if "raw" in spec:
        return _raw(spec, where, recipients, stream, tuple(tags), metadata)
    _need("from" in spec, "missing_field", f"{where}.from is required")
    from_name, sender = _address(spec["from"], f"{where}.from")
    subject = spec.get("subject", "")
    text, body_html = spec.get("text"), spec.get("html")
    _need(isinstance(subject, str), "invalid_message", f"{where}.subject: a string")
    _need(text is None or isinstance(text, str), "invalid_message", f"{where}.text: a string")
    _need(body_html is None or isinstance(body_html, str), "invalid_message",
          f"{where}.html: a string")
    _need(text is not None or body_html is not None, "missing_field",
          f"{where}: text or html is required")
    subject = substitute(subject, variables)
    header_lines = [fold("From", _fmt(from_name, sender))]
    for key, header in (("to", "To"), ("cc", "Cc")):
        addrs = parsed[key]
        if addrs:
            header_lines.append(fold(header, ", ".join(_fmt(n, a) for n, a in addrs)))
    if "reply_to" in spec:
        header_lines.append(fold("Reply-To", ", ".join(
            _fmt(n, a) for n, a in _addresses(spec["reply_to"], f"{where}.reply_to"))))
    header_lines.append(fold("Subject", subject.replace("\r", " ").replace("\n", " ")))
    headers = spec.get("headers", {})
    _need(isinstance(headers, dict), "invalid_header", f"{where}.headers: an object")
    for name, value in headers.items():
        header_lines.append(fold(name, _header_value(name, value)))
    header_lines.append("MIME-Version: 1.0")
    plain = _text_part(substitute(text, variables), "plain") if text is not None else None
    html_text = substitute(body_html, variables, escape=True) if body_html is not None else None
    attachments = spec.get("attachments", [])
    _need(isinstance(attachments, list), "invalid_attachment", f"{where}.attachments: a list")
    files = [_attachment(att, f"{where}.attachments[{i}]") for i, att in enumerate(attachments)]
    head = ("\r\n".join(header_lines) + "\r\n").encode("utf-8")

    def assemble(rewrite: Callable[[str], str] | None = None) -> bytes:
        parts: list[tuple[str, bytes]] = []  # (Content-Type and friends, encoded body)
        if plain is not None:
            parts.append(plain)
        if html_text is not None:
            parts.append(_text_part(rewrite(html_text) if rewrite else html_text, "html"))
        body = parts[0] if len(parts) == 1 else _multipart("alternative", parts)
        if files:
            body = _multipart("mixed", [body, *files])
        return head + body[0].encode("ascii") + b"\r\n" + body[1]

    return Outgoing(sender, split_address(sender)[1], recipients, assemble(), subject, stream,
                    tuple(tags), metadata, track_opens, track_clicks,
                    assemble if html_text is not None else None)


def _track(value: Any, where: str) -> tuple[bool | None, bool | None]:
    """``track``: true/false (both), or {"opens": bool, "clicks": bool}."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return value, value
    _need(isinstance(value, dict) and not set(value) - {"opens", "clicks"}
          and all(isinstance(v, bool) for v in value.values()), "invalid_track",
          f'{where}.track: true, false or {{"opens": bool, "clicks": bool}}')
    return value.get("opens"), value.get("clicks")


def _text_part(text: str, subtype: str) -> tuple[str, bytes]:
    """(headers, body): 7bit when it is ASCII with short lines, else quoted-printable."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    raw = text.encode("utf-8")
    ctype = f'Content-Type: text/{subtype}; charset="utf-8"'
    lines = raw.split(b"\n")
    if raw.isascii() and max(len(x) for x in lines) <= 998:
        body = b"\r\n".join(lines)
        return f"{ctype}\r\nContent-Transfer-Encoding: 7bit\r\n", _end(body)
    qp = binascii.b2a_qp(raw, istext=True).replace(b"\n", b"\r\n")
    return f"{ctype}\r\nContent-Transfer-Encoding: quoted-printable\r\n", _end(qp)


def _end(body: bytes) -> bytes:
    return body if body.endswith(b"\r\n") else body + b"\r\n"


def _multipart(subtype: str, parts: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    boundary = "=_pochta_" + secrets.token_hex(12)
    chunks = [b"--" + boundary.encode() + b"\r\n" + h.encode("ascii") + b"\r\n" + b
              for h, b in parts]
    body = b"".join(chunks) + b"--" + boundary.encode() + b"--\r\n"
    return f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n', body


def _fmt(name: str, address: str) -> str:
    if not name:
        return address
    return email.utils.formataddr((name, address))


def _attachment(att: Any, where: str) -> tuple[str, bytes]:
    _need(isinstance(att, dict), "invalid_attachment", f"{where}: an object")
    unknown = set(att) - ATTACHMENT_FIELDS
    _need(not unknown, "unknown_field", f"{where}: unknown field {min(unknown, default='')!r}")
    filename = att.get("filename")
    ctype = att.get("content_type", "application/octet-stream")
    content = att.get("content")
    _need(isinstance(filename, str) and bool(filename) and isinstance(content, str)
          and isinstance(ctype, str) and re.fullmatch(r"[\w.+-]+/[\w.+-]+", ctype) is not None
          and "\r" not in filename and "\n" not in filename, "invalid_attachment",
          f"{where}: filename, content (base64) and content_type (type/subtype)")
    try:
        payload = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("invalid_attachment", f"{where}.content: not base64") from None
    disposition = email.utils.encode_rfc2231(filename, "utf-8") if not filename.isascii() \
        else '"' + filename.replace("\\", "\\\\").replace('"', '\\"') + '"'
    star = "*" if not filename.isascii() else ""
    headers = (f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: base64\r\n"
               f"Content-Disposition: attachment; filename{star}={disposition}\r\n")
    body = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return headers, body


def _raw(spec: dict[str, Any], where: str, recipients: list[str], stream: str,
         tags: tuple[str, ...], metadata: dict[str, Any]) -> Outgoing:
    extra = set(spec) & {"from", "subject", "text", "html", "attachments", "headers",
                         "cc", "bcc", "reply_to", "variables"}
    _need(not extra, "unknown_field",
          f"{where}: {min(extra, default='')!r} does not go with raw")
    raw = spec["raw"]
    _need(isinstance(raw, str) and bool(raw), "invalid_message", f"{where}.raw: a string")
    data = raw.encode("utf-8")
    # line endings as SMTP wants them
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    headers, _ = split_header(data)
    senders = from_addresses(headers)
    _need(len(senders) == 1, "invalid_message", f"{where}.raw: needs exactly one From address")
    _, sender = _address(senders[0], f"{where}.raw From")
    subject = (header_values(headers, "Subject") or [""])[0]
    return Outgoing(sender, split_address(sender)[1], recipients, data, subject, stream, tags,
                    metadata, rebuild=html_rebuilder(data))  # tracking (rawtrack.py)
