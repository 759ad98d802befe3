"""The storage contract: every backend (embedded SQLite, PostgreSQL) implements it.

Protocol front-ends (SMTP, submission, IMAP, POP3) and services talk to the store only
through these types; the store never knows which protocol called it.

Concepts
--------
* A *blob* is the bytes of one message, written once and shared by every mailbox copy
  (several recipients, IMAP COPY) and by queue entries.
* A *mailbox* belongs to an account and holds messages with IMAP semantics: UIDs strictly
  ascending and never reused within a UIDVALIDITY; a modification sequence (RFC 7162)
  raised on every change; flags and keywords stored as strings (``\\Seen``, ``$Junk``).
* ``accept()`` is the one way a message enters the store: local mailbox copies and
  outbound queue entries are written in one transaction, fsynced (group commit), before
  it returns. Only then may a protocol answer ``250``.
* Change notifications: ``watch(mailbox_id)`` gives a ``ChangeWatcher`` whose ``wait()``
  wakes when anything in that mailbox changed (new mail, flags, expunge), for IDLE/NOOP.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# The store's errors are members of Pochta's one error hierarchy, which knows how each
# protocol answers them (pochta/errors.py); re-exported here as part of the contract.
from ..errors import AlreadyExists as AlreadyExists
from ..errors import NotFound as NotFound
from ..errors import QuotaExceeded as QuotaExceeded
from ..errors import StorageCorrupt as StorageCorrupt
from ..errors import StorageFull as StorageFull
from ..errors import StoreError as StoreError
from ..mail.model import Changes as Changes
from ..mail.model import MailboxInfo as MailboxInfo
from ..mail.model import MessageMeta as MessageMeta
from ..mail.model import SpecialUse as SpecialUse
from .interfaces_imap import ImapStateStore
from .interfaces_ops import OpsStore
from .interfaces_sending import SendingStore
from .interfaces_spam import SpamStore
from .interfaces_transport import TransportSecurityStore
from .interfaces_web import WebStore


@dataclass(frozen=True, slots=True)
class BlobProblem:
    """One blob that failed ``verify_blobs``."""

    blob_id: int
    problem: str


@dataclass(frozen=True, slots=True)
class StoreStats:
    """``pochta store stats``: what the store holds and what compaction would give back."""

    blobs: int
    live_bytes: int  # bytes of blobs still referenced by a mailbox or the queue
    reclaimable_bytes: int  # bytes a compaction would give back
    disk_bytes: int  # bytes the backend occupies now (files, or relation sizes)


# --- directory -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """What SCRAM-SHA-256 needs (RFC 5802 §3), derived when a password is set."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    address: str  # lower-case local part @ lower-case ASCII (IDNA) domain
    password_hash: str  # argon2id PHC string
    scram: ScramCredentials | None = None
    may_send_as_anyone: bool = False
    quota_bytes: int = 0  # 0 = unlimited
    apop_secret: str | None = None
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Alias:
    source: str  # "user@domain" or "@domain" (catch-all)
    targets: tuple[str, ...]


@dataclass(frozen=True)
class AddressRecords:
    """What ``find_addresses`` found, by lower-cased address."""

    aliases: dict[str, Alias]
    accounts: dict[str, Account]


# --- mailboxes and messages ------------------------------------------------------------




# Created for every new account (name, special use).
DEFAULT_MAILBOXES: tuple[tuple[str, SpecialUse | None], ...] = (
    ("INBOX", None),
    ("Drafts", SpecialUse.DRAFTS),
    ("Sent", SpecialUse.SENT),
    ("Trash", SpecialUse.TRASH),
    ("Junk", SpecialUse.JUNK),
    ("Archive", SpecialUse.ARCHIVE),
)




@dataclass(frozen=True, slots=True)
class MailboxStatus:
    messages: int
    unseen: int
    deleted: int
    size: int  # sum of message sizes (STATUS SIZE, RFC 8438)
    uidnext: int
    uidvalidity: int
    highestmodseq: int
    recent: int  # messages with uid >= the mailbox's first-recent marker




class FlagMode(enum.Enum):
    ADD = "+"
    REMOVE = "-"
    REPLACE = ""


@dataclass(frozen=True, slots=True)
class FlagUpdate:
    """Result of ``store_flags``: the messages changed and those refused by UNCHANGEDSINCE."""

    changed: tuple[MessageMeta, ...]
    failed_uids: tuple[int, ...] = ()




# --- the acceptance pipeline -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalTarget:
    """Deliver a copy into one mailbox of one account (INBOX unless named)."""

    account_id: int
    mailbox: str = "INBOX"
    flags: frozenset[str] = frozenset()
    internaldate: float | None = None  # None: now


@dataclass(frozen=True, slots=True)
class RemoteRecipient:
    address: str
    notify: str | None = None  # DSN NOTIFY= (RFC 3461), raw value
    orcpt: str | None = None  # DSN ORCPT=


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str  # "" for the null reverse-path
    ret: str | None = None  # DSN RET=FULL|HDRS
    envid: str | None = None  # DSN ENVID=
    smtputf8: bool = False
    body_8bit: bool = False
    authenticated_as: str | None = None
    # The sending layer's stream ("" for ordinary mail) and the queue claim priority it
    # maps to (higher first: a password reset overtakes a newsletter, issue 18).
    stream: str = ""
    priority: int = 0


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    """A message too big to hold in memory, for ``accept``: ``prefix`` (the trace
    headers the receiver adds) followed by the bytes of the file at ``path``, a private
    temporary file that the caller owns and removes after ``accept`` returns."""

    path: str
    size: int  # bytes taken from the file, starting at ``offset``
    prefix: bytes = b""
    offset: int = 0

    @property
    def total(self) -> int:
        return len(self.prefix) + self.size


@dataclass(frozen=True, slots=True)
class AcceptResult:
    message_id: str  # the queue id printed in "250 2.0.0 Ok: queued as <ID>"
    blob_id: int
    local_uids: tuple[tuple[int, int], ...]  # (mailbox_id, uid) per LocalTarget, in order


class QueueState(enum.StrEnum):
    PENDING = "pending"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One remote recipient of one queued message."""

    id: int
    message_id: str
    blob_id: int
    envelope: Envelope
    recipient: RemoteRecipient
    state: QueueState
    attempts: int
    next_attempt: float
    last_reply: str
    created: float


class ChangeWatcher(Protocol):
    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the mailbox changed since the last wait; False on timeout."""

    def close(self) -> None: ...


class DirectoryStore(Protocol):
    """Domains, accounts and aliases. Addresses arrive normalised by the caller."""

    # directory: domains
    async def add_domain(self, name: str) -> None: ...
    async def remove_domain(self, name: str) -> None: ...
    async def list_domains(self) -> list[str]: ...
    async def has_domain(self, name: str) -> bool: ...

    # directory: accounts (creating one creates DEFAULT_MAILBOXES)
    async def add_account(
        self, address: str, password_hash: str, scram: ScramCredentials | None
    ) -> Account: ...
    async def set_password(
        self, address: str, password_hash: str, scram: ScramCredentials | None
    ) -> None: ...
    async def update_account(
        self,
        address: str,
        *,
        may_send_as_anyone: bool | None = None,
        quota_bytes: int | None = None,
        apop_secret: str | None = None,
        disabled: bool | None = None,
    ) -> None: ...
    async def remove_account(self, address: str) -> None: ...
    async def get_account(self, address: str) -> Account | None: ...
    async def get_account_by_id(self, account_id: int) -> Account | None: ...
    async def list_accounts(self, domain: str | None = None) -> list[Account]: ...
    async def account_usage(self, account_id: int) -> int:
        """Bytes used by all messages of the account (for QUOTA)."""

    # directory: aliases
    async def add_alias(self, source: str, targets: Sequence[str]) -> None: ...
    async def remove_alias(self, source: str) -> None: ...
    async def get_alias(self, source: str) -> Alias | None: ...
    async def list_aliases(self, domain: str | None = None) -> list[Alias]: ...
    async def aliases_naming(self, address: str) -> list[str]:
        """The aliases (not catch-alls) with ``address`` among their targets, sorted: the
        groups whose ACL grants count for it (proto/imap/acl.py)."""

    # recipient resolution: every alias and account among ``addresses`` in one round
    # trip (the directory asks for an address, its base without +tag and the catch-all
    # at once; which one wins is the directory's rule, not the store's)
    async def find_addresses(self, addresses: Sequence[str]) -> AddressRecords: ...


class MessageStore(Protocol):
    """Mailboxes and messages with IMAP semantics, and ``accept``, the one way in."""

    # acceptance: the one way in (SMTP, submission, APPEND); fsynced before returning
    async def accept(
        self,
        data: bytes | SpooledMessage,
        envelope: Envelope,
        local: Sequence[LocalTarget],
        remote: Sequence[RemoteRecipient] = (),
        message_id: str | None = None,
    ) -> AcceptResult:
        """``message_id`` lets the caller name the queue id it already wrote into a
        Received: header; a new one is made when None."""

    # mailboxes
    async def list_mailboxes(self, account_id: int) -> list[MailboxInfo]: ...
    async def get_mailbox(self, account_id: int, name: str) -> MailboxInfo | None: ...
    async def create_mailbox(
        self,
        account_id: int,
        name: str,
        special_use: SpecialUse | None = None,
        subscribe: bool = False,
    ) -> MailboxInfo:
        """A new mailbox with a UIDVALIDITY never used before, even by a deleted one."""
    async def delete_mailbox(self, account_id: int, name: str) -> None: ...
    async def rename_mailbox(self, account_id: int, old: str, new: str) -> None:
        """Renames children too. Renaming INBOX moves its messages to a new mailbox and
        leaves INBOX empty (RFC 9051 §6.3.6)."""

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        """Subscriptions are names and may outlive their mailbox (RFC 9051 §6.3.7)."""

    async def list_subscriptions(self, account_id: int) -> list[str]: ...
    async def mailbox_status(self, mailbox_id: int) -> MailboxStatus: ...

    # messages
    async def list_messages(self, mailbox_id: int) -> list[MessageMeta]:
        """Every message, in ascending UID order."""

    async def changes_since(self, mailbox_id: int, modseq: int) -> Changes: ...
    async def store_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        flags: frozenset[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> FlagUpdate: ...
    async def copy_messages(
        self, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int
    ) -> list[tuple[int, int]]:
        """Returns (source uid, new uid) pairs; shares blobs, no body copy."""

    async def move_messages(
        self, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int
    ) -> list[tuple[int, int]]: ...
    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]:
        """Remove the given uids (or every ``\\Deleted`` message); returns removed uids."""
    async def replace_message(self, mailbox_id: int, uid: int, data: bytes | SpooledMessage,
                              target: LocalTarget) -> AcceptResult:
        """IMAP REPLACE (RFC 8508 §3.4): ``data`` into ``target`` and message ``uid`` of
        ``mailbox_id`` expunged, in one transaction. The quota counts the net growth when
        the old message is the target account's. ``NotFound`` (nothing written) when the
        message is gone."""

    async def claim_recent(self, mailbox_id: int) -> int:
        """IMAP4rev1 \\Recent: the first session to claim gets every uid >= the returned
        value as recent; the marker moves to UIDNEXT so no later session sees them so."""


class BlobStore(Protocol):
    """Message bytes: read (checked), verified, counted and collected."""

    async def read_blob(self, blob_id: int) -> bytes:
        """The message bytes, checked against the stored length and checksum (raises
        ``StorageCorrupt`` rather than return bytes that are not this blob's)."""

    async def blob_size(self, blob_id: int) -> int: ...

    def stream_blob(
        self, blob_id: int, offset: int = 0, length: int | None = None,
        chunk: int = 256 * 1024,
    ) -> AsyncIterator[bytes]:
        """The bytes ``[offset, offset+length)`` in chunks of at most ``chunk`` (a big
        message is never whole in memory), checked like ``read_blob`` before the first
        chunk is given out."""

    async def verify_blobs(self) -> list[BlobProblem]:
        """Check every blob against the index (length and checksum)."""

    async def store_stats(self) -> StoreStats: ...

    async def compact(self, min_age: float = 0.0) -> int:
        """Give back the space of blobs that no message and no pending or deferred queue
        item has referenced for ``min_age`` seconds; returns the bytes reclaimed."""


class QueueStore(Protocol):
    """The outbound queue, shared by every worker and node through claims with leases."""

    # outbound queue (the outbound-delivery issue drives it)
    async def due_queue_items(self, now: float, limit: int = 100) -> list[QueueItem]: ...
    async def list_queue(self) -> list[QueueItem]: ...
    async def update_queue_item(
        self, item_id: int, state: QueueState, next_attempt: float, last_reply: str
    ) -> None: ...
    async def delete_queue_item(self, item_id: int) -> None: ...
    async def claim_queue_items(
        self, now: float, limit: int, owner: str, lease: float
    ) -> list[QueueItem]:
        """Due items (pending or deferred, ``next_attempt <= now``) that no worker holds,
        or whose holder's lease ran out (a killed node), now held by ``owner`` until
        ``now + lease``: two workers, in one process or on two nodes, never get the same
        item. ``update_queue_item`` ends the claim."""

    async def renew_queue_claims(
        self, item_ids: Sequence[int], owner: str, until: float
    ) -> int:
        """Extend ``owner``'s leases (deliveries still running); returns how many."""

    async def queue_claim_owners(self) -> list[str]:
        """Owners that hold claims on pending or deferred items."""

    async def release_queue_claims_of(self, owner: str) -> int:
        """Drop every claim of an owner known to be dead (a restarted node's earlier
        process), without waiting for its leases to run out."""

    async def release_queue_items(self, item_ids: Sequence[int], owner: str) -> None:
        """Give back claims without an attempt (a delivery task ended early)."""

    async def reschedule_queue_items(self, item_ids: Sequence[int], when: float) -> int:
        """Make pending/deferred items due at ``when`` (not counted as an attempt) and wake
        every queue worker, in any process or node; returns how many were changed."""

    async def purge_queue(self, finished_before: float) -> int:
        """Forget delivered and failed items older than ``finished_before``; returns how
        many."""


class ChangeNotifier(Protocol):
    """Wake-ups for IMAP IDLE/NOOP and the queue worker. A backend shared by several
    processes or nodes must deliver changes made by any of them."""

    def watch(self, mailbox_id: int) -> ChangeWatcher: ...

    def watch_queue(self) -> ChangeWatcher:
        """Wakes when queue items became due early (``reschedule_queue_items``) or new
        remote recipients were queued, from this process or another."""


class CoordinationStore(Protocol):
    """State that must hold across processes and nodes: exclusive locks with a lease
    (the POP3 maildrop lock) and counters in a time window (login failures, sending
    rates)."""

    async def try_lock(self, name: str, owner: str, ttl: float) -> bool:
        """Take the named lock for ``ttl`` seconds, or renew it if ``owner`` holds it;
        False while another owner holds an unexpired lock."""

    async def unlock(self, name: str, owner: str) -> None:
        """Release the lock if ``owner`` holds it."""

    async def add_to_counter(self, key: str, amount: int, window: float) -> int:
        """Add ``amount`` to the counter ``key`` and return its total over the last
        ``window`` seconds (older additions no longer count)."""

    async def counter_value(self, key: str, window: float) -> int:
        """The counter's total over the last ``window`` seconds."""

    async def reset_counter(self, key: str) -> None: ...


from .interfaces_sieve import SieveStore  # noqa: E402 - builds on StoreError above


class MailStore(
    DirectoryStore, MessageStore, BlobStore, QueueStore, ChangeNotifier, CoordinationStore,
    SieveStore,
    TransportSecurityStore,
    SpamStore,  # interfaces_spam.py
    ImapStateStore,
    SendingStore,  # interfaces_sending.py (issue 18)
    WebStore,  # interfaces_web.py (issue 19)
    OpsStore,  # interfaces_ops.py (issue 19)
    Protocol,
):
    """The whole storage contract, made of the concerns above. Every method that touches
    storage is awaited and safe to call from the event loop (no backend blocks it);
    backend failures reach callers as ``StoreError`` and its subclasses only."""

    async def close(self) -> None: ...


@dataclass(slots=True)
class MailboxSnapshot:
    """The view one selected IMAP session works on: message sequence numbers map to
    ``uids`` by position (seq n = uids[n-1])."""

    mailbox: MailboxInfo
    messages: list[MessageMeta] = field(default_factory=list)
