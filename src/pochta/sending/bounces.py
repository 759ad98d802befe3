"""Mail that comes back: asynchronous bounces, delay notices, complaints and mailto
unsubscribes, read from the return path (VERP) they were sent to.

Every copy sent through the sending layer has its own signed return path
``bounces+MESSAGEID.MAC@domain`` (tokens.py), so what comes back names the copy and its
recipient without trusting anything in the report. Formats understood:

* RFC 3464 DSNs (``multipart/report; report-type=delivery-status``): Postfix, Exim 4.9x,
  Exchange/Office 365, Gmail, Pochta itself all send these; each ``Action: failed``
  recipient is a bounce with its ``Status`` and ``Diagnostic-Code``; ``delayed`` is a
  deferral.
* RFC 5965 ARF feedback reports (``report-type=feedback-report``): a complaint.
* Plain-text bounces without a report part (older Exim, qmail, many appliances): the
  first RFC 3463 status code in the text, else the SMTP reply code, decides; words such as
  "delayed" or "will retry" make it a delay notice.
* Anything else sent to the return path whose subject says "unsubscribe": the mailto URI
  of List-Unsubscribe (RFC 2369).

A report that reaches the plain bounce address (``bounces@domain``: feedback loops are
registered with one address) is matched by the return path found inside it (the
returned original's headers).
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from typing import TYPE_CHECKING

from ..mail.addresses import AddressError, normalize_address, normalize_local
from ..storage.interfaces import Envelope
from ..storage.interfaces_sending import EventKind, NewEvent
from .service import SendingService, classify

if TYPE_CHECKING:
    from ..context import AppContext

log = logging.getLogger("pochta.sending.bounces")

STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
SMTP_CODE = re.compile(r"(?<!\d)([45]\d\d)(?:[ -]|$)", re.MULTILINE)
DELAY_WORDS = ("delayed", "will retry", "will be retried", "still trying",
               "has not yet been delivered", "warning: message")


@dataclass(frozen=True, slots=True)
class Finding:
    kind: EventKind  # BOUNCED, DEFERRED, COMPLAINED, UNSUBSCRIBED
    status: str = ""
    diagnostic: str = ""
    format: str = ""


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode(part.get_content_charset() or "utf-8", "replace")
    if isinstance(payload, list):
        return "\n".join(str(p) for p in payload)
    return str(part.get_payload())


def _fields(block: str) -> list[dict[str, str]]:
    """The field groups of a message/delivery-status body (per-message first, then one
    per recipient), names lower-cased, continuation lines unfolded."""
    groups: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in block.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                groups.append(current)
                current, last = {}, ""
            continue
        if line[0] in " \t" and last:
            current[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep:
            last = name.strip().lower()
            current[last] = value.strip()
    if current:
        groups.append(current)
    return groups


def _delivery_status(part: Message) -> str:
    """The text of a message/delivery-status part (the stdlib parses it into header
    blocks; put them back together)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n\n".join("\n".join(f"{k}: {v}" for k, v in block.items())
                           for block in payload if isinstance(block, Message))
    return _text(part)


def parse_report(data: bytes) -> Finding | None:
    """What a message sent to a return path says, or None if it says nothing we know."""
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    if msg.get_content_type() == "multipart/report":
        report_type = str(msg.get_param("report-type") or "").lower()
        for part in msg.walk():
            ctype = part.get_content_type()
            if ctype in ("message/delivery-status", "message/global-delivery-status"):
                return _from_dsn(_delivery_status(part))
            if ctype == "message/feedback-report" or report_type == "feedback-report":
                return Finding(EventKind.COMPLAINED, format="arf",
                               diagnostic=_feedback_type(part))
    subject = str(msg.get("Subject", ""))
    body = "\n".join(_text(p) for p in msg.walk() if p.get_content_maintype() == "text")
    if _looks_like_bounce(msg, subject):
        return _from_text(subject + "\n" + body)
    if "unsubscribe" in subject.lower():
        return Finding(EventKind.UNSUBSCRIBED, format="mailto")
    return None


def _feedback_type(part: Message) -> str:
    if part.get_content_type() != "message/feedback-report":
        return "abuse"
    groups = _fields(_delivery_status(part))
    for g in groups:
        if "feedback-type" in g:
            return g["feedback-type"]
    return "abuse"


def _from_dsn(block: str) -> Finding | None:
    groups = _fields(block)
    per_recipient = [g for g in groups if "action" in g or "final-recipient" in g]
    for g in per_recipient:
        action = g.get("action", "").lower()
        status = g.get("status", "")
        match = STATUS.search(status)
        status = ".".join(match.groups()) if match else ""
        diagnostic = g.get("diagnostic-code", "")
        if ";" in diagnostic:
            diagnostic = diagnostic.split(";", 1)[1].strip()
        if action == "failed" or (not action and status.startswith("5")):
            return Finding(EventKind.BOUNCED, status or "5.0.0", diagnostic, "rfc3464")
        if action == "delayed":
            return Finding(EventKind.DEFERRED, status or "4.0.0", diagnostic, "rfc3464")
    return None


def _looks_like_bounce(msg: Message, subject: str) -> bool:
    sender = str(msg.get("From", "")).lower()
    low = subject.lower()
    return (any(w in sender for w in ("mailer-daemon", "postmaster", "mail delivery"))
            or any(w in low for w in ("undeliver", "delivery status", "failure notice",
                                      "returned mail", "delivery failure", "not delivered",
                                      "delayed", "mail delivery failed")))


def _from_text(text: str) -> Finding:
    low = text.lower()
    match = STATUS.search(text)
    status = ".".join(match.groups()) if match else ""
    if not status:
        code = SMTP_CODE.search(text)
        status = {"4": "4.0.0", "5": "5.0.0"}[code.group(1)[0]] if code else "5.0.0"
    diagnostic = ""
    for line in text.splitlines():
        if STATUS.search(line) or SMTP_CODE.search(line):
            diagnostic = line.strip()[:300]
            break
    if status.startswith("4") or any(w in low for w in DELAY_WORDS):
        return Finding(EventKind.DEFERRED, status if status.startswith("4") else "4.0.0",
                       diagnostic, "text")
    if status == "5.0.0" and classify(status, text) == "hard":
        status = "5.1.1"  # "user unknown" and friends in words only
    return Finding(EventKind.BOUNCED, status, diagnostic, "text")


VERP_IN_TEXT = re.compile(rb"[A-Za-z0-9._-]+\+[0-9A-Fa-f]+\.[0-9a-f]{16}@[A-Za-z0-9.-]+")


class BounceProcessor:
    def __init__(self, service: SendingService) -> None:
        self.service = service
        self.local_part = normalize_local(service.settings.bounce_local_part)

    def is_system(self, address: str, found_elsewhere: bool) -> bool:
        """Directory hook: a genuine return path, or (when no account or alias has it)
        the plain bounce address."""
        if self.service.message_of_return_path(address) is not None:
            return True
        local = normalize_local(address.rpartition("@")[0])
        return found_elsewhere and local == self.local_part

    async def receive(self, data: bytes, envelope: Envelope, recipients: Sequence[str]
                      ) -> None:
        """DeliveryService hook: read what came back to our return paths."""
        for rcpt in recipients:
            try:
                rcpt = normalize_address(rcpt)
            except AddressError:
                continue
            mid = self.service.message_of_return_path(rcpt)
            if mid is None and rcpt.rpartition("@")[0] == self.local_part:
                mid = self._find_inside(data)
            if mid is None:
                continue
            await self.process(mid, data)

    def _find_inside(self, data: bytes) -> str | None:
        for m in VERP_IN_TEXT.finditer(data):
            mid = self.service.message_of_return_path(m.group(0).decode("ascii"))
            if mid is not None:
                return mid
        return None

    async def process(self, message_id: str, data: bytes) -> Finding | None:
        finding = parse_report(data)
        if finding is None:
            log.info("%s: mail to the return path that is no report; ignored", message_id)
            return None
        service = self.service
        now = service.clock()
        sent = await service.store.get_sent(message_id)
        if sent is None:
            return None
        if finding.kind is EventKind.UNSUBSCRIBED:
            await service.unsubscribe_address(sent.domain, sent.stream, sent.recipient,
                                              "mailto", message_id)
            return finding
        detail: dict[str, str] = {"status": finding.status, "reply": finding.diagnostic,
                                  "format": finding.format, "async": "true"}
        if finding.kind is EventKind.BOUNCED:
            detail["type"] = classify(finding.status, finding.diagnostic)
        if finding.kind is EventKind.COMPLAINED:
            detail = {"feedback_type": finding.diagnostic, "format": "arf"}
        await service.store.record_events([NewEvent(message_id, finding.kind, now,
                                                    json.dumps(detail))])
        if finding.kind is EventKind.BOUNCED and detail["type"] == "hard":
            await service.suppress_message(message_id, "bounce",
                                           f"{finding.status} {finding.diagnostic}".strip())
        elif finding.kind is EventKind.COMPLAINED:
            await service.suppress_message(message_id, "complaint", finding.diagnostic)
        log.info("%s: %s from <%s> (%s %s)", message_id, finding.kind, sent.recipient,
                 finding.format, finding.status)
        return finding


def install(ctx: AppContext, service: SendingService) -> BounceProcessor:
    """Hook the sending layer into the directory (return paths are ours) and the
    acceptance pipeline (what arrives there is read, not stored)."""
    processor = BounceProcessor(service)
    ctx.directory.system_recipient = processor.is_system
    ctx.delivery.system_sink = processor.receive
    return processor
