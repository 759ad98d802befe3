"""``[sending]``: the sending API, its streams, bounces, unsubscribe and webhooks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class StreamSettings:
    """``[[sending.stream_limits]]``: how one stream's mail leaves the queue. Streams
    queue separately: each has its own connections (a bulk send holding every bulk
    connection to a domain never delays a transactional message) and its claim priority."""

    stream: str = field(metadata=_doc("the stream's name (in streams or domain_streams)"))
    priority: int = field(
        default=0,
        metadata=_doc("queue claim order, higher first; 0 takes the default: 10 for "
                      "non-bulk streams, -10 for bulk_streams (ordinary mail is 0)"))
    connections: int = field(
        default=0, metadata=_doc("connections per destination; 0: [queue] per_destination"))
    rate: float = field(
        default=0.0,
        metadata=_doc("messages per minute per destination; 0: [queue] per_destination_rate"))
    concurrency: int = field(
        default=0, metadata=_doc("connections in total; 0: [queue] concurrency"))


@dataclass(frozen=True)
class TrackingSettings:
    """``[[sending.tracking]]``: open/click tracking for a domain's stream (opt-in; the
    message's own ``track`` field wins). The first entry that matches applies."""

    domain: str = field(default="*", metadata=_doc('sending domain, or "*"'))
    stream: str = field(default="*", metadata=_doc('stream, or "*"'))
    opens: bool = field(default=False, metadata=_doc("add a tracking pixel to HTML"))
    clicks: bool = field(default=False, metadata=_doc("rewrite HTML links through /t/c/"))


@dataclass(frozen=True)
class DomainStreams:
    """``[[sending.domain_streams]]``: streams only one sending domain may name."""

    domain: str = field(metadata=_doc("the sending domain"))
    streams: list[str] = field(default_factory=list,
                               metadata=_doc("its own stream names, besides [sending] streams"))


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
    webhook_allow_networks: list[str] = field(
        default_factory=list,
        metadata=_doc("networks webhooks may reach besides globally routable addresses "
                      "(e.g. [\"10.1.2.0/24\"]); loopback, private, link-local (cloud "
                      "metadata) and reserved addresses are refused otherwise"))
    smtp_suppression: list[str] = field(
        default_factory=list,
        metadata=_doc("sending domains whose normal SMTP users' mail follows the "
                      "suppression list too (\"*\": every domain): a suppressed recipient "
                      "is not sent to (a suppressed event and a DSN to the sender), a "
                      "hard bounce adds the address"))
    tracking: list[TrackingSettings] = field(
        default_factory=list, metadata=_doc("[[sending.tracking]]"))
    stream_limits: list[StreamSettings] = field(
        default_factory=list, metadata=_doc("[[sending.stream_limits]]"))
    domain_streams: list[DomainStreams] = field(
        default_factory=list, metadata=_doc("[[sending.domain_streams]]"))

    def streams_of(self, domain: str) -> list[str]:
        """The streams a message from ``domain`` may name (the first is the default)."""
        extra = [s for d in self.domain_streams if d.domain.lower() == domain.lower()
                 for s in d.streams]
        return [*self.streams, *(s for s in extra if s not in self.streams)]

    def all_streams(self) -> list[str]:
        out = list(self.streams)
        for d in self.domain_streams:
            out += [s for s in d.streams if s not in out]
        return out

    def tracking_of(self, domain: str, stream: str) -> tuple[bool, bool]:
        """(opens, clicks) by default for mail of ``domain`` on ``stream``."""
        for t in self.tracking:
            if t.domain in ("*", domain.lower()) and t.stream in ("*", stream):
                return t.opens, t.clicks
        return False, False

    def priority_of(self, stream: str) -> int:
        for limits in self.stream_limits:
            if limits.stream == stream and limits.priority:
                return limits.priority
        return -10 if stream in self.bulk_streams else 10


def check(settings: SendingSettings) -> list[str]:
    problems = []
    if not settings.streams:
        problems.append("sending.streams: name at least one stream")
    for net in settings.webhook_allow_networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            problems.append(f"sending.webhook_allow_networks: {net!r} is not a network")
    known = settings.all_streams()
    for s in settings.bulk_streams:
        if s not in known:
            problems.append(f"sending.bulk_streams: {s!r} is not in sending.streams")
    for i, lim in enumerate(settings.stream_limits):
        if lim.stream not in known:
            problems.append(f"sending.stream_limits[{i}].stream: {lim.stream!r} is not a "
                            "stream (sending.streams or domain_streams)")
        if lim.connections < 0 or lim.rate < 0 or lim.concurrency < 0:
            problems.append(f"sending.stream_limits[{i}]: connections, rate and "
                            "concurrency must be 0 or positive")
    for i, d in enumerate(settings.domain_streams):
        if not d.domain or not d.streams or any(not s or s == "*" for s in d.streams):
            problems.append(f"sending.domain_streams[{i}]: a domain and stream names")
    if not settings.bounce_local_part or "+" in settings.bounce_local_part:
        problems.append("sending.bounce_local_part: a local part without '+'")
    if not 1 <= settings.max_batch <= 10000:
        problems.append("sending.max_batch: from 1 to 10000")
    if settings.max_recipients < 1:
        problems.append("sending.max_recipients: must be positive")
    if settings.webhook_batch < 1 or settings.webhook_timeout <= 0:
        problems.append("sending.webhook_batch/webhook_timeout: must be positive")
    return problems
