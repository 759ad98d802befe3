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
import email.policy
import email.utils
import html
import re
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from ..addresses import AddressError, normalize_address, split_address

MESSAGE_FIELDS = {"from", "to", "cc", "bcc", "reply_to", "subject", "text", "html",
                  "attachments", "headers", "tags", "metadata", "stream", "variables", "raw"}
ATTACHMENT_FIELDS = {"filename", "content_type", "content", "content_id"}
# Header fields the API sets itself (or that would break the message's structure).
RESERVED_HEADERS = {"from", "to", "cc", "bcc", "subject", "reply-to", "content-type",
                    "content-transfer-encoding", "mime-version", "dkim-signature",
                    "list-unsubscribe", "list-unsubscribe-post", "return-path", "received"}
MAX_TAGS = 10
VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")
SMTP_POLICY = email.policy.SMTP.clone(max_line_length=998)


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


def _need(cond: bool, code: str, message: str) -> None:
    if not cond:
        raise InvalidRequest(code, message)


def _address(value: Any, where: str) -> tuple[str, str]:
    """(display name, normalised address) from "a@b", "Name <a@b>" or {"email", "name"}."""
    if isinstance(value, dict):
        unknown = set(value) - {"email", "name"}
        _need(not unknown, "unknown_field", f"{where}: unknown field {sorted(unknown)[0]!r}")
        name, addr = value.get("name", ""), value.get("email")
        _need(isinstance(name, str) and isinstance(addr, str), "invalid_address",
              f"{where}: email and name must be strings")
    elif isinstance(value, str):
        name, addr = email.utils.parseaddr(value)
        _need(bool(addr), "invalid_address", f"{where}: {value!r} is not an address")
    else:
        raise InvalidRequest("invalid_address", f"{where}: expected an address")
    try:
        norm = normalize_address(str(addr))
        split_address(norm)
    except AddressError as exc:
        raise InvalidRequest("invalid_address", f"{where}: {addr!r}: {exc}") from None
    _need("\r" not in name and "\n" not in name, "invalid_address", f"{where}: bad name")
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
    _need(not unknown, "unknown_field", f"{where}: unknown field {sorted(unknown)[0]!r}"
          if unknown else "")
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
    rcpts = [a for key in ("to", "cc", "bcc") for _, a in _addresses(spec.get(key),
                                                                      f"{where}.{key}")]
    _need(bool(rcpts), "no_recipients", f"{where}: no recipients (to, cc or bcc)")
    _need(len(rcpts) <= max_recipients, "too_many_recipients",
          f"{where}: more than {max_recipients} recipients")
    recipients = list(dict.fromkeys(rcpts))
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
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = _fmt(from_name, sender)
    for key, header in (("to", "To"), ("cc", "Cc")):
        addrs = _addresses(spec.get(key), f"{where}.{key}")
        if addrs:
            msg[header] = ", ".join(_fmt(n, a) for n, a in addrs)
    if "reply_to" in spec:
        msg["Reply-To"] = ", ".join(_fmt(n, a) for n, a in
                                    _addresses(spec["reply_to"], f"{where}.reply_to"))
    msg["Subject"] = subject.replace("\r", " ").replace("\n", " ")
    headers = spec.get("headers", {})
    _need(isinstance(headers, dict), "invalid_header", f"{where}.headers: an object")
    for name, value in headers.items():
        msg[name] = _header_value(name, value)
    if text is not None:
        msg.set_content(substitute(text, variables), cte="quoted-printable")
    if body_html is not None:
        html_text = substitute(body_html, variables, escape=True)
        if text is not None:
            msg.add_alternative(html_text, subtype="html", cte="quoted-printable")
        else:
            msg.set_content(html_text, subtype="html", cte="quoted-printable")
    attachments = spec.get("attachments", [])
    _need(isinstance(attachments, list), "invalid_attachment", f"{where}.attachments: a list")
    for i, att in enumerate(attachments):
        _attach(msg, att, f"{where}.attachments[{i}]")
    data = msg.as_bytes()
    return Outgoing(sender, split_address(sender)[1], recipients, data, subject, stream,
                    tuple(tags), metadata)


def _fmt(name: str, address: str) -> str:
    if not name:
        return address
    local, _, domain = address.rpartition("@")
    return str(Address(display_name=name, username=local, domain=domain))


def _attach(msg: EmailMessage, att: Any, where: str) -> None:
    _need(isinstance(att, dict), "invalid_attachment", f"{where}: an object")
    unknown = set(att) - ATTACHMENT_FIELDS
    _need(not unknown, "unknown_field", f"{where}: unknown field "
          f"{sorted(unknown)[0] if unknown else ''!r}")
    filename, ctype, content = att.get("filename"), att.get("content_type",
                                                            "application/octet-stream"), \
        att.get("content")
    _need(isinstance(filename, str) and bool(filename) and isinstance(content, str)
          and isinstance(ctype, str) and ctype.count("/") == 1, "invalid_attachment",
          f"{where}: filename, content (base64) and content_type (type/subtype)")
    try:
        payload = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("invalid_attachment", f"{where}.content: not base64") from None
    if msg.get_content_type() != "multipart/mixed":
        msg.make_mixed()
    maintype, subtype = ctype.split("/")
    msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)


def _raw(spec: dict[str, Any], where: str, recipients: list[str], stream: str,
         tags: tuple[str, ...], metadata: dict[str, Any]) -> Outgoing:
    extra = set(spec) & {"from", "subject", "text", "html", "attachments", "headers",
                         "cc", "bcc", "reply_to", "variables"}
    _need(not extra, "unknown_field",
          f"{where}: {sorted(extra)[0] if extra else ''!r} does not go with raw")
    raw = spec["raw"]
    _need(isinstance(raw, str) and bool(raw), "invalid_message", f"{where}.raw: a string")
    data = raw.encode("utf-8")
    # line endings as SMTP wants them
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    from ..services.submission import from_addresses, header_values, split_message

    headers, _ = split_message(data)
    senders = from_addresses(headers)
    _need(len(senders) == 1, "invalid_message", f"{where}.raw: needs exactly one From address")
    _, sender = _address(senders[0], f"{where}.raw From")
    subject = (header_values(headers, "Subject") or [""])[0]
    return Outgoing(sender, split_address(sender)[1], recipients, data, subject, stream, tags,
                    metadata)
