"""The mail data model the store's contract and the IMAP core share: mailboxes, the
messages in them, what changed, and the keys SORT/THREAD read. Plain values, standard
library only, so that the sans-IO IMAP core (``proto/imap``) uses them without importing
the store (storage/interfaces.py re-exports them)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SpecialUse(enum.StrEnum):
    """RFC 6154 attributes."""

    DRAFTS = "\\Drafts"
    SENT = "\\Sent"
    TRASH = "\\Trash"
    JUNK = "\\Junk"
    ARCHIVE = "\\Archive"
    ALL = "\\All"
    FLAGGED = "\\Flagged"


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    id: int
    account_id: int
    name: str  # hierarchy separator is "/"; "INBOX" is always upper case
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    special_use: SpecialUse | None
    subscribed: bool


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """One message in one mailbox, as IMAP and POP3 see it."""

    uid: int
    blob_id: int
    size: int
    internaldate: float  # POSIX seconds
    flags: frozenset[str]
    modseq: int


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed in a mailbox since a modseq (CONDSTORE/QRESYNC, NOOP, IDLE)."""

    highestmodseq: int
    changed: tuple[MessageMeta, ...]  # new or flag-changed messages, by uid
    expunged: tuple[int, ...]  # uids expunged since then (sorted)


@dataclass(frozen=True, slots=True)
class SortKeys:
    """What SORT and THREAD (RFC 5256, 5957) need of one message, computed once from its
    header and kept by the store, keyed by blob (copies share them)."""

    date: float | None  # the Date: field in UTC seconds; None when missing or invalid
    subject: str  # base subject (RFC 5256 §2.1), upper case
    reply: bool  # the subject was a reply or forward
    from_: str  # addr-mailbox of the first From address, upper case
    to: str
    cc: str
    display_from: str  # RFC 5957
    display_to: str
    message_id: str  # "<...>" or ""
    references: str  # message ids of References (else In-Reply-To), space separated


@dataclass(slots=True)
class ThreadColumns:
    """What THREAD (RFC 5256 §2.4, §2.5) needs of every message of a mailbox, as parallel
    lists in UID order (no object per message: a cold THREAD of 100,000 messages spent
    more time building objects than threading)."""

    uids: list[int]
    dates: list[float]  # the sent date, else the internal date (RFC 5256 §2.2)
    subjects: list[str]  # base subjects (SortKeys.subject)
    replies: list[bool]
    message_ids: list[str]
    references: list[str]
