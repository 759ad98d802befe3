"""Delivery Status Notifications: RFC 3464 reports, sent as RFC 6522 multipart/report,
honoring the RFC 3461 NOTIFY/RET/ENVID/ORCPT parameters of the original transaction.

A DSN is never sent for a message with the null reverse-path (RFC 3461 §6.2; RFC 5321
§4.5.5), so bounces cannot loop.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from pochta.maildate import mail_date
from pochta.proto.smtp.client import ServerReply, has_8bit, header_section
from pochta.storage.interfaces import Envelope, RemoteRecipient

_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")


def xtext_decode(value: str) -> str:
    """RFC 3461 §4: "+XX" is the octet with that hex value."""
    return _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)


def notify_set(recipient: RemoteRecipient) -> set[str]:
    """NOTIFY values; absent means FAILURE and DELAY (RFC 3461 §4.1 leaves the
    default to the MTA; Postfix does the same)."""
    if not recipient.notify:
        return {"FAILURE", "DELAY"}
    return {v.strip().upper() for v in recipient.notify.split(",") if v.strip()}


def wants(envelope: Envelope, recipient: RemoteRecipient, action: str) -> bool:
    """Does the sender want a DSN with this action for this recipient?"""
    if envelope.sender == "":
        return False
    notify = notify_set(recipient)
    if "NEVER" in notify:
        return False
    kind = {"failed": "FAILURE", "delayed": "DELAY", "delivered": "SUCCESS",
            "relayed": "SUCCESS", "expanded": "SUCCESS"}[action]
    return kind in notify


def status_of(reply: ServerReply) -> str:
    """The RFC 3463 status for a reply (its enhanced code, or one from its class)."""
    if reply.enhanced:
        return reply.enhanced
    return {2: "2.0.0", 4: "4.0.0"}.get(reply.code // 100, "5.0.0")


@dataclass(frozen=True, slots=True)
class RecipientReport:
    recipient: RemoteRecipient
    action: str  # failed | delayed | delivered | relayed
    status: str  # RFC 3463, e.g. "5.1.1"
    diagnostic: str = ""  # the remote (or local) reply text, e.g. "550 5.1.1 no such user"
    remote_mta: str = ""  # host name of the server that answered
    last_attempt: float | None = None
    will_retry_until: float | None = None


def _field_value(text: str) -> str:
    # One logical line: no CR/LF may leak from a remote reply into our headers.
    return " ".join(text.replace("\r", " ").replace("\n", " ").split())


_HUMAN = {
    "failed": (
        "Undelivered Mail Returned to Sender",
        "I'm sorry to have to inform you that your message could not be delivered to one or "
        "more recipients. The details are below.",
    ),
    "delayed": (
        "Delayed Mail (still being retried)",
        "Your message could not be delivered yet to one or more recipients. Delivery will "
        "be retried; you do not need to resend it. The details are below.",
    ),
    "delivered": (
        "Successful Mail Delivery Report",
        "Your message was successfully delivered to the recipients listed below.",
    ),
    "relayed": (
        "Successful Mail Delivery Report",
        "Your message was relayed to the recipients below, to a server that does not "
        "send delivery notifications; no further report will follow.",
    ),
}


def build_dsn(
    *,
    reporting_mta: str,
    envelope: Envelope,
    queue_id: str,
    original: bytes,
    reports: Sequence[RecipientReport],
    arrival: float,
    now: float,
    size_limit: int = 50_000,
    from_: str | None = None,
) -> bytes:
    """The DSN message (CRLF line ends), addressed to ``envelope.sender``; ``from_`` is
    its From: (default: the MTA's MAILER-DAEMON)."""
    action = reports[0].action
    subject, intro = _HUMAN[action]
    boundary = f"=_report_{secrets.token_hex(16)}"  # RFC 2046 §5.1.1: at most 70 chars
    utf8 = envelope.smtputf8 or any(not r.recipient.address.isascii() for r in reports)
    date = mail_date(now)

    head = [
        f"From: {from_ or f'Mail Delivery System <MAILER-DAEMON@{reporting_mta}>'}",
        f"To: <{envelope.sender}>",
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: <{queue_id}.{secrets.token_hex(6)}@{reporting_mta}>",
        # RFC 3834 §5: automatic replies must say so, so that nobody answers them.
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
    ]
    human = [intro, ""]
    for r in reports:
        line = f"<{r.recipient.address}>"
        if r.diagnostic:
            line += f": {_field_value(r.diagnostic)}"
        if r.remote_mta:
            line += f" (from {r.remote_mta})"
        human.append(line)
    human += ["", f"Queue ID: {queue_id}", f"Reporting MTA: {reporting_mta}"]

    # RFC 3464 §2.2: per-message fields, then one block per recipient.
    status = [f"Reporting-MTA: dns; {reporting_mta}"]
    if envelope.envid:
        status.append(f"Original-Envelope-Id: {_field_value(xtext_decode(envelope.envid))}")
    status.append(f"Arrival-Date: {mail_date(arrival)}")
    for r in reports:
        status.append("")
        addr_type = "utf-8" if not r.recipient.address.isascii() else "rfc822"
        if r.recipient.orcpt:
            kind, _, value = r.recipient.orcpt.partition(";")
            status.append(
                f"Original-Recipient: {kind.strip()};{_field_value(xtext_decode(value))}"
            )
        status.append(f"Final-Recipient: {addr_type}; {r.recipient.address}")
        status.append(f"Action: {r.action}")
        status.append(f"Status: {r.status}")
        if r.remote_mta:
            status.append(f"Remote-MTA: dns; {r.remote_mta}")
        if r.diagnostic:
            status.append(f"Diagnostic-Code: smtp; {_field_value(r.diagnostic)}")
        if r.last_attempt is not None:
            status.append(f"Last-Attempt-Date: {mail_date(r.last_attempt)}")
        if r.will_retry_until is not None:
            status.append(
                f"Will-Retry-Until: {mail_date(r.will_retry_until)}"
            )

    # RET=HDRS: headers only; RET=FULL: everything; unspecified: the whole message up to
    # size_limit. Delay and success reports carry only the headers (RFC 3461 §4.3).
    full = action == "failed" and (
        envelope.ret == "FULL" or (envelope.ret is None and len(original) <= size_limit)
    )
    if full:
        body = original if original.endswith(b"\r\n") else original + b"\r\n"
        # RFC 6532 §3.7: a message with UTF-8 header fields travels as message/global.
        ctype = "message/global" if has_8bit(header_section(original)) else "message/rfc822"
    else:
        body = header_section(original) + b"\r\n"
        ctype = "text/rfc822-headers"
        if has_8bit(body):
            ctype = "message/global-headers"  # RFC 6533 §6.3
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"

    def lines(items: list[str]) -> bytes:
        return "".join(f"{x}\r\n" for x in items).encode("utf-8")

    out = bytearray()
    out += lines(head) + b"\r\n"
    out += b"This is a MIME-encapsulated message.\r\n\r\n"
    out += f"--{boundary}\r\n".encode()
    out += b"Content-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n"
    out += b"Content-Transfer-Encoding: 8bit\r\n\r\n" if has_8bit(lines(human)) else b"\r\n"
    out += lines(human) + b"\r\n"
    out += f"--{boundary}\r\n".encode()
    out += f"Content-Description: Delivery report\r\nContent-Type: {status_type}\r\n\r\n".encode()
    out += lines(status) + b"\r\n"
    out += f"--{boundary}\r\n".encode()
    desc = "Undelivered Message" if full else "Undelivered Message Headers"
    out += f"Content-Description: {desc}\r\nContent-Type: {ctype}\r\n".encode()
    if has_8bit(body):
        out += b"Content-Transfer-Encoding: 8bit\r\n"
    out += b"\r\n" + body + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)
