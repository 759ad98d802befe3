"""What the sender gets when a Sieve script rejects a message that could not be refused
in the protocol (other recipients took it; RFC 5429 §2.1): ``ereject`` answers with a
DSN (RFC 3464, status 5.7.1), ``reject`` with an MDN (RFC 8098, formerly RFC 3798: the
disposition ``deleted``, sent automatically), as RFC 5429 §2.2 and RFC 3028's reject
have it. Both come from the Postmaster, as Pigeonhole's do: the user's filter refused
the message, not a failed delivery, and an answer reaches a person (RFC 5321 §4.5.1);
neither goes to ``<>`` (the caller's rule)."""

from __future__ import annotations

import quopri
import re
import secrets
from email.header import Header

from ..mail.headers import header_values, split_header
from ..maildate import mail_date
from ..sieve import Reject
from ..storage.interfaces import Envelope, RemoteRecipient
from .dsn import RecipientReport, build_dsn

MAX_HEADER = 64 * 1024  # of the original's header returned (text/rfc822-headers)


def rejection_message(action: Reject, envelope: Envelope, user: str, hostname: str,
                      queue_id: str, data: bytes, now: float) -> bytes:
    """The DSN (``ereject``) or the MDN (``reject``) for a rejection after acceptance."""
    if action.extended:
        return rejection_dsn(action, envelope, user, hostname, queue_id, data, now)
    return rejection_mdn(action, envelope, user, hostname, data, now)


def rejection_dsn(action: Reject, envelope: Envelope, user: str, hostname: str,
                  queue_id: str, data: bytes, now: float) -> bytes:
    reason = " ".join(action.reason.split())[:400]
    return build_dsn(
        reporting_mta=hostname, envelope=envelope, queue_id=queue_id,
        original=data, arrival=now, now=now, from_=f"Postmaster <postmaster@{hostname}>",
        reports=[RecipientReport(RemoteRecipient(user), "failed", "5.7.1",
                                 f"550 5.7.1 {reason}")],
    )


def _one_line(value: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]+", " ", value).strip()


def _subject(value: str) -> str:
    """The original's subject (raw 8-bit text as UTF-8) for our Subject: field, RFC 2047
    encoded when it is not ASCII."""
    text = _one_line(value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    text = "Rejected: " + text[:200]
    return text if text.isascii() else Header(text, "utf-8").encode()


def rejection_mdn(action: Reject, envelope: Envelope, user: str, hostname: str,
                  data: bytes, now: float) -> bytes:
    """multipart/report; report-type=disposition-notification (RFC 8098 §3): the reason
    for a person, the machine-readable disposition, and the original's header."""
    head, _ = split_header(data)
    head = head[:MAX_HEADER]
    message_id = next(iter(header_values(head, "Message-ID")), "")
    subject = next(iter(header_values(head, "Subject")), "")
    boundary = f"=_mdn_{secrets.token_hex(16)}"
    text = (f"Your message to <{user}> was automatically rejected:\r\n\r\n"
            f"{action.reason.strip()}\r\n").encode()
    if text.isascii():
        cte = "7bit"
    else:
        cte, text = "quoted-printable", quopri.encodestring(text).replace(b"\n", b"\r\n")
        text = re.sub(rb"\r*\r\n", b"\r\n", text)
    report = [f"Reporting-UA: {hostname}; Pochta",
              f"Final-Recipient: rfc822; {user}"]
    if message_id:
        report.append(f"Original-Message-ID: {_one_line(message_id)}"
                      .encode("utf-8", "surrogateescape").decode("ascii", "replace"))
    report.append("Disposition: automatic-action/MDN-sent-automatically; deleted")
    lines = [
        f"From: Postmaster <postmaster@{hostname}>",
        f"To: <{envelope.sender}>",
        f"Subject: {_subject(subject)}" if subject else "Subject: Automatically rejected mail",
        f"Date: {mail_date(now)}",
        f"Message-ID: <mdn.{secrets.token_hex(8)}@{hostname}>",
        # RFC 3834 §5 and RFC 5429 §2.1: nobody answers an automatic rejection
        "Auto-Submitted: auto-replied (rejected)",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=disposition-notification;\r\n"
        f'\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Transfer-Encoding: {cte}",
        "",
    ]
    out = "\r\n".join(lines).encode("utf-8") + b"\r\n" + text.rstrip(b"\r\n") + b"\r\n"
    out += (f"--{boundary}\r\nContent-Type: message/disposition-notification\r\n\r\n"
            + "\r\n".join(report) + "\r\n\r\n").encode("utf-8")
    out += (f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n").encode()
    out += head.rstrip(b"\r\n") + b"\r\n\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out
