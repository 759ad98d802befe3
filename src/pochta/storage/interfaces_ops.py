"""The operations part of the storage contract (issue 19): the searchable mail log, app
passwords, queue holds and the counts the dashboard and ``/metrics`` read.

* **Mail log** (``mail_events``): one row per SMTP session summary, accepted message,
  delivery attempt result and bounce, searchable by queue id (``message_id``) or by an
  address (sender or recipient, exact, lower-case). Rows are bounded by age
  (``purge_mail_events``, ``[web] log_days``).
* **App passwords**: per-device passwords of a mail account. The secret is made by the
  server (random, 80 bits or more), so the store keeps only its SHA-256 (a fast hash is
  enough for a random secret that cannot be guessed from a dictionary); the secret is
  shown once. ``last_used`` is set by the authentication service.
* **Queue holds**: a held item is never returned by ``due_queue_items`` or
  ``claim_queue_items`` until it is released; deleting the item forgets its hold.
* **Counts**: aggregates done by the database (no list of every account or queue item is
  read into Python).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# mail_events.kind values
SESSION = "session"  # one SMTP, IMAP or POP3 session ended (detail: role, tls, user...)
ACCEPTED = "accepted"  # a message was accepted (tag: ham, spam)
REFUSED = "refused"  # a message was refused by the spam gate (tag: spam)
DELIVERED = "delivered"  # to a remote server
DEFERRED = "deferred"
BOUNCED = "bounced"  # failed for good (tag: bounced, expired)
EVENT_KINDS = (SESSION, ACCEPTED, REFUSED, DELIVERED, DEFERRED, BOUNCED)


@dataclass(frozen=True, slots=True)
class NewMailEvent:
    ts: float
    kind: str
    message_id: str = ""
    sender: str = ""
    recipient: str = ""  # one address (an accepted message has one event per recipient)
    client_ip: str = ""
    tag: str = ""  # spam verdict of an accepted message, bounce reason class ...
    detail: str = ""  # the human-readable line


@dataclass(frozen=True, slots=True)
class MailEvent:
    id: int
    ts: float
    kind: str
    message_id: str
    sender: str
    recipient: str
    client_ip: str
    tag: str
    detail: str


@dataclass(frozen=True, slots=True)
class AppPassword:
    id: int
    account_id: int
    name: str
    secret_hash: bytes  # SHA-256 of the secret
    created: float
    last_used: float | None


class OpsStore(Protocol):
    # -- mail log ------------------------------------------------------------------------
    async def record_mail_events(self, events: Sequence[NewMailEvent]) -> None:
        """Append events (one transaction). Addresses are stored lower-case."""

    async def search_mail_events(self, query: str = "", before_id: int | None = None,
                                 limit: int = 100) -> list[MailEvent]:
        """Newest first. ``query``: a queue id, or an address (matches the sender or the
        recipient), compared exactly (an address case-insensitively); empty: every event.
        ``before_id`` pages: only events with a smaller id."""

    async def purge_mail_events(self, before: float) -> int:
        """Forget events older than ``before``; how many."""

    async def count_mail_events(self, since: float) -> dict[tuple[str, str], int]:
        """(kind, tag) -> number of events since ``since``."""

    async def top_mail_addresses(self, kind: str, field: str, since: float,
                                 limit: int = 10) -> list[tuple[str, int]]:
        """The most frequent ``field`` ("sender" or "recipient") among events of ``kind``
        since ``since``, most frequent first (empty addresses left out)."""

    # -- app passwords -------------------------------------------------------------------
    async def add_app_password(self, account_id: int, name: str, secret_hash: bytes,
                               created: float) -> int:
        """The new id. Raises ``AlreadyExists`` when the account has one of that name."""

    async def list_app_passwords(self, account_id: int) -> list[AppPassword]:
        """By name."""

    async def find_app_password(self, account_id: int, secret_hash: bytes
                                ) -> AppPassword | None: ...

    async def revoke_app_password(self, account_id: int, name: str) -> None:
        """Raises ``NotFound``."""

    async def touch_app_password(self, password_id: int, when: float) -> None: ...

    # -- queue holds ---------------------------------------------------------------------
    async def hold_queue_items(self, item_ids: Sequence[int]) -> int:
        """Hold pending or deferred items; how many were newly held."""

    async def release_held_queue_items(self, item_ids: Sequence[int]) -> int:
        """Release held items (they become due at their next attempt time); how many."""

    async def held_queue_ids(self) -> set[int]: ...

    # -- counts --------------------------------------------------------------------------
    async def count_accounts(self) -> int: ...
    async def count_domains(self) -> int: ...

    async def queue_summary(self) -> tuple[dict[str, int], float | None]:
        """(state -> items, the oldest ``created`` among pending and deferred items)."""
