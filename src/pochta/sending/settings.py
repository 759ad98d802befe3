"""``[sending]``: the sending API, its streams, bounces, unsubscribe and webhooks."""

from __future__ import annotations

from dataclasses import dataclass, field


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class SendingSettings:
    streams: list[str] = field(
        default_factory=lambda: ["transactional", "bulk"],
        metadata=_doc("message streams an API call may name; the first is the default"))
    bulk_streams: list[str] = field(
        default_factory=lambda: ["bulk"],
        metadata=_doc("streams that get List-Unsubscribe (https and mailto), "
                      "List-Unsubscribe-Post (RFC 8058), Precedence: bulk and Feedback-ID"))
    bounce_local_part: str = field(
        default="bounces",
        metadata=_doc("local part of the per-message return path (VERP): "
                      "bounces+ID.MAC@domain; mail to it is read as a bounce or complaint"))
    max_batch: int = field(default=1000, metadata=_doc("messages per batch call"))
    max_recipients: int = field(
        default=1000, metadata=_doc("to + cc + bcc of one message sent through the API"))
    idempotency_hours: float = field(
        default=24.0, metadata=_doc("how long an Idempotency-Key's reply is kept"))
    suppress_hard_bounces: bool = field(
        default=True, metadata=_doc("a hard bounce adds the address to the suppression list"))
    webhook_timeout: float = field(
        default=10.0, metadata=_doc("seconds a webhook endpoint has to answer"))
    webhook_retry_hours: float = field(
        default=24.0,
        metadata=_doc("a webhook batch that keeps failing is retried with backoff this long, "
                      "then skipped (the delivery log keeps it; replay sends it again)"))
    webhook_batch: int = field(default=100, metadata=_doc("events per webhook POST"))


def check(settings: SendingSettings) -> list[str]:
    problems = []
    if not settings.streams:
        problems.append("sending.streams: name at least one stream")
    for s in settings.bulk_streams:
        if s not in settings.streams:
            problems.append(f"sending.bulk_streams: {s!r} is not in sending.streams")
    if not settings.bounce_local_part or "+" in settings.bounce_local_part:
        problems.append("sending.bounce_local_part: a local part without '+'")
    if not 1 <= settings.max_batch <= 10000:
        problems.append("sending.max_batch: from 1 to 10000")
    if settings.max_recipients < 1:
        problems.append("sending.max_recipients: must be positive")
    if settings.webhook_batch < 1 or settings.webhook_timeout <= 0:
        problems.append("sending.webhook_batch/webhook_timeout: must be positive")
    return problems
