"""The sending platform's part of the storage contract (issue 18): API keys, the messages
sent through the sending layer and their delivery events, suppressions, idempotency keys,
statistics and webhooks.

Concepts
--------
* A *sent message* is one recipient's copy of a message sent through the API (or through
  SMTP with an API key): its ``message_id`` is the queue id of that copy, so the queue
  worker's outcomes (queue items carry the queue id) find it. A recipient that was
  suppressed also gets a sent message (never queued) so its ``suppressed`` event has an id.
* An *event* is one step of a recipient's life (accepted, delivered, deferred, bounced,
  complained, unsubscribed, suppressed). Event ids are strictly ascending in the order
  events were recorded: webhooks and paged queries use them as a cursor.
* A *suppression* stops sending from a domain's stream (or every stream: ``"*"``) to an
  address.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

ALL_STREAMS = "*"


class EventKind(enum.StrEnum):
    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    SUPPRESSED = "suppressed"
    OPENED = "opened"  # tracking.py: the pixel was loaded
    CLICKED = "clicked"  # a tracked link was followed


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key of one sending domain. The secret itself is never stored: only its
    SHA-256 (the secret is 32 random bytes, so a slow hash would add nothing)."""

    key_id: str  # public part, e.g. "k3f9a0c1d2e4b"
    domain: str
    scopes: frozenset[str]
    secret_hash: bytes
    created: float
    description: str = ""


@dataclass(frozen=True, slots=True)
class SentMessage:
    message_id: str  # the queue id of this recipient's copy
    domain: str
    stream: str  # "transactional" or "bulk"
    recipient: str
    sender: str
    subject: str
    tags: tuple[str, ...]
    metadata: str  # JSON object as text
    created: float


@dataclass(frozen=True, slots=True)
class NewEvent:
    message_id: str
    kind: EventKind
    time: float
    detail: str = "{}"  # JSON object as text (reply, status, next attempt, ...)


@dataclass(frozen=True, slots=True)
class SendingEvent:
    id: int
    time: float
    domain: str
    stream: str
    message_id: str
    recipient: str
    kind: EventKind
    tags: tuple[str, ...]
    detail: str


@dataclass(frozen=True, slots=True)
class EventQuery:
    domain: str
    message_id: str | None = None
    recipient: str | None = None
    tag: str | None = None
    kinds: tuple[EventKind, ...] = ()
    since: float | None = None
    until: float | None = None  # exclusive
    after_id: int = 0  # paging cursor: events with a larger id
    limit: int = 100


@dataclass(frozen=True, slots=True)
class Suppression:
    domain: str
    stream: str  # a stream name or ALL_STREAMS
    address: str
    reason: str  # "bounce", "complaint", "unsubscribe", "manual", ...
    created: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StatsRow:
    bucket: float  # start of the hour or day (POSIX seconds, UTC)
    stream: str
    kind: EventKind
    count: int


@dataclass(frozen=True, slots=True)
class Webhook:
    id: int
    domain: str
    url: str
    secret: str
    cursor: int  # id of the last event delivered
    created: float


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    webhook_id: int
    time: float
    first_event: int
    last_event: int
    status: int  # HTTP status, 0 when no answer
    detail: str


class SendingStore(Protocol):
    """State of the sending layer; every method is awaited and safe on the event loop."""

    # API keys
    async def add_api_key(self, key: ApiKey) -> None: ...
    async def get_api_key(self, key_id: str) -> ApiKey | None: ...
    async def list_api_keys(self, domain: str | None = None) -> list[ApiKey]: ...
    async def remove_api_key(self, key_id: str) -> None:
        """Raises ``NotFound`` for an unknown key."""

    # idempotency keys
    async def reserve_idempotency_key(self, domain: str, key: str, now: float) -> str | None:
        """Claim ``key`` for a new request: None if it was free (now reserved), else the
        stored reply ("" while the first request is still running)."""

    async def finish_idempotency_key(self, domain: str, key: str, reply: str) -> None: ...
    async def release_idempotency_key(self, domain: str, key: str) -> None:
        """Forget a reservation whose request failed (nothing was queued)."""

    async def purge_idempotency_keys(self, before: float) -> int: ...

    # messages and events
    async def record_sent(self, messages: Sequence[SentMessage],
                          events: Sequence[NewEvent] = ()) -> None:
        """Remember messages (before they are queued, so no outcome can come first) and
        record events for them, in one durable write."""

    async def forget_sent(self, message_ids: Sequence[str]) -> None:
        """Drop messages that could not be queued after all (and their events)."""

    async def record_events(self, events: Sequence[NewEvent]) -> int:
        """Record events of known messages (others are ignored: mail that did not come
        through the sending layer); returns how many were recorded."""

    async def get_sent(self, message_id: str) -> SentMessage | None: ...
    async def query_events(self, query: EventQuery) -> list[SendingEvent]:
        """Matching events in id order, at most ``query.limit``."""

    async def event_stats(self, domain: str, since: float, until: float, bucket: int,
                          tag: str | None = None) -> list[StatsRow]:
        """Event counts per ``bucket`` seconds (3600 or 86400), stream and kind."""

    async def delivery_times(self, domain: str, since: float, until: float,
                             tag: str | None = None, stream: str | None = None
                             ) -> list[float]:
        """Seconds from ``accepted`` to ``delivered`` of the copies delivered in the range
        (for percentiles), of one tag and stream when given, in no particular order."""

    # suppressions
    async def add_suppressions(self, entries: Sequence[Suppression]) -> int:
        """Add (or keep) each entry; returns how many were new."""

    async def remove_suppression(self, domain: str, stream: str, address: str) -> bool: ...
    async def list_suppressions(self, domain: str, stream: str | None = None,
                                after: str = "", limit: int = 1000) -> list[Suppression]:
        """In address order, addresses after ``after`` (paging)."""

    async def suppressed(self, domain: str, stream: str,
                         addresses: Sequence[str]) -> set[str]:
        """Which of ``addresses`` may not be sent to on ``stream`` (its own or "*")."""

    # webhooks
    async def add_webhook(self, domain: str, url: str, secret: str, now: float,
                          cursor: int) -> Webhook: ...
    async def list_webhooks(self, domain: str | None = None) -> list[Webhook]: ...
    async def remove_webhook(self, domain: str, webhook_id: int) -> bool: ...
    async def set_webhook_cursor(self, webhook_id: int, cursor: int) -> None: ...
    async def log_webhook_attempt(self, attempt: WebhookAttempt) -> None: ...
    async def webhook_attempts(self, webhook_id: int, limit: int = 100
                               ) -> list[WebhookAttempt]:
        """The newest attempts first."""

    async def last_event_id(self) -> int: ...
