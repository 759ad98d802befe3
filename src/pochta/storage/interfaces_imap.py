"""The IMAP extensions' part of the storage contract: METADATA (RFC 5464) entries,
SAVEDATE (RFC 8514), SORT keys, URLAUTH keys (RFC 4467) and ACL grants (RFC 4314).
``MailStore`` includes ``ImapStateStore``; every backend implements it and passes
``tests/storage/test_imap_state.py`` and ``test_imap_acl_urlauth.py``.

Entry names are full, lower-case paths that start with ``/private/`` (visible to their
owner account only) or ``/shared/`` (visible to every account that sees the mailbox);
``mailbox_id`` 0 names the server itself (RFC 5464 §3.2: server annotations); its
``/shared/`` entries are the administrator's, written with ``account_id`` 0 (IMAP refuses
them to users: services/server_metadata.py). Entries belong to their mailbox: RENAME keeps
them, DELETE drops them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..mail.model import SortKeys as SortKeys
from ..mail.model import ThreadColumns as ThreadColumns

# kept SEARCH texts (``put_search_fields``) are this many parts joined by "\x1e": FROM,
# TO, CC, BCC, SUBJECT (proto/imap/search.py's SEARCH_FIELDS)
SEARCH_FIELD_PARTS = 5


THREAD_SNAPSHOT_MAX = 64 << 20  # octets: ~7 MB for 100,000 messages, compressed


@dataclass(frozen=True, slots=True)
class ThreadSnapshot:
    """A mailbox's THREAD state as the IMAP server serialized it (``data``: opaque to
    the store), for the first THREAD after a restart; ``uidvalidity`` and ``uid_upto``
    (the highest UID it covers) let the server tell when it is stale. Only ever a
    cache: the server checks it against the mailbox and threads without it."""

    uidvalidity: int
    uid_upto: int
    data: bytes


SORT_SNAPSHOT_MAX = 64 << 20  # octets: 400 KB per order of 100,000 messages
SORT_SNAPSHOTS = 8  # kept per mailbox (the most recently written)
SORT_CRITERIA_MAX = 200  # characters of a snapshot's criteria name


@dataclass(frozen=True, slots=True)
class SortSnapshot:
    """A mailbox's SORT order for one criteria list as the IMAP server serialized it
    (``data``: opaque to the store), for the first SORT after a restart; ``uidvalidity``
    and ``uid_upto`` (the highest UID it covers) let the server tell what it misses.
    Only ever a cache: the server checks it against the mailbox and sorts without it."""

    uidvalidity: int
    uid_upto: int
    data: bytes


class ImapStateStore(Protocol):
    async def get_metadata(self, account_id: int, mailbox_id: int) -> dict[str, bytes]:
        """Every entry of the mailbox (0: the server) that ``account_id`` sees: its own
        ``/private/...`` entries and all ``/shared/...`` ones."""

    async def set_metadata(
        self, account_id: int, mailbox_id: int, values: Mapping[str, bytes | None]
    ) -> None:
        """Set entries (None removes one) in one transaction; ``/private/`` entries are
        ``account_id``'s own."""

    async def account_metadata(self, account_id: int) -> dict[int, dict[str, bytes]]:
        """``get_metadata`` of the server (0) and of every mailbox of the account, by
        mailbox id, in one read; mailboxes without entries are absent (the unsolicited
        METADATA responses of RFC 5464 §4.4.2 compare two of these)."""

    async def read_blobs(self, blob_ids: Sequence[int]) -> dict[int, bytes]:
        """Many messages' bytes at once (SORT, THREAD, SEARCH over a big mailbox), each
        checked like ``read_blob``; ids that do not exist are absent from the result."""

    async def get_sort_keys(self, blob_ids: Sequence[int]) -> dict[int, SortKeys]:
        """The stored keys of these blobs (absent: not computed yet)."""

    async def put_sort_keys(self, keys: Mapping[int, SortKeys]) -> None:
        """Keep keys computed by the caller; they go when their blob goes."""

    async def get_search_fields(self, blob_ids: Sequence[int]) -> dict[int, str]:
        """The kept SEARCH header texts of these blobs (an opaque string the caller
        wrote; absent: not computed yet)."""

    async def kept_search_fields(
        self, mailbox_id: int, containing: str
    ) -> dict[int, str | None]:
        """For every message of the mailbox whose SEARCH header texts are kept: its texts
        if they contain ``containing`` (a plain substring test), else None."""

    async def kept_search_uids(
        self, mailbox_id: int, terms: Sequence[tuple[int, str]]
    ) -> tuple[list[int], list[int]]:
        """Decide SEARCH on the kept texts (``put_search_fields``' strings are
        SEARCH_FIELD_PARTS parts joined by "\x1e"): the UIDs of the mailbox's messages
        whose kept text, for every (index, needle) term, holds ``needle`` in its
        ``index``-th part (a plain substring test, as Python's ``in``), ascending; and the
        UIDs of the messages whose texts are not kept, ascending (the caller reads those)."""

    async def unkept_search_blobs(
        self, after: int, limit: int
    ) -> tuple[list[tuple[int, int]], int]:
        """(blob id, size) of stored messages whose SEARCH texts are not kept, blob ids
        above ``after``, ascending, at most ``limit`` (the background keeper's work); and
        the highest blob id of any stored message (0: none), where to go on from when
        fewer than ``limit`` came back."""

    async def put_search_fields(self, fields: Mapping[int, str]) -> None:
        """Keep SEARCH header texts computed by the caller; they go when their blob goes
        (a blob's bytes never change, so neither do they)."""

    async def sorted_uids(
        self, mailbox_id: int, criteria: Sequence[tuple[str, bool]]
    ) -> list[int]:
        """The UIDs of the mailbox in SORT order (RFC 5256 §3: ``criteria`` are
        (SORT_CRITERIA key, reverse) pairs; DATE falls back to the internal date; ties go
        by UID, ascending), sorted by the store from the kept keys (strings compare by
        code point). Messages with no kept keys yet are left out."""

    async def thread_columns(
        self, mailbox_id: int, uids: Sequence[int] | None = None
    ) -> ThreadColumns:
        """The kept THREAD keys of every message of the mailbox (or of these UIDs of it)
        as columns, by UID ascending, in one read; the date is the sent date, else the
        internal date. Messages with no kept keys yet are left out."""

    async def get_thread_snapshot(self, mailbox_id: int) -> ThreadSnapshot | None:
        """The mailbox's kept THREAD snapshot (None: none kept)."""

    async def put_thread_snapshot(self, mailbox_id: int, snapshot: ThreadSnapshot) -> None:
        """Keep this snapshot of the mailbox's THREAD state in place of the last one
        (nothing when the mailbox does not exist; ValueError past THREAD_SNAPSHOT_MAX
        octets). The store does not read ``data``; it goes with the mailbox."""

    async def get_sort_snapshot(self, mailbox_id: int, criteria: str) -> SortSnapshot | None:
        """The mailbox's kept SORT snapshot for these criteria (a name the caller chose,
        at most 200 characters; None: none kept)."""

    async def put_sort_snapshot(
        self, mailbox_id: int, criteria: str, snapshot: SortSnapshot
    ) -> None:
        """Keep this snapshot for the criteria in place of the last one; at most
        SORT_SNAPSHOTS per mailbox are kept, the least recently written go (nothing when
        the mailbox does not exist; ValueError past SORT_SNAPSHOT_MAX octets or a longer
        name). The store does not read ``data``; it goes with the mailbox."""

    async def save_dates(self, mailbox_id: int, uids: Sequence[int]) -> dict[int, float]:
        """When each message was saved into this mailbox (APPEND, delivery, COPY, MOVE),
        POSIX seconds; messages saved before the backend recorded it are absent."""

    # --- URLAUTH (RFC 4467 §3): one secret "mailbox access key" per mailbox -------------
    async def urlauth_key(self, mailbox_id: int, create: bool) -> bytes | None:
        """The mailbox's URLAUTH key; with ``create`` a new random one when it has none
        (two sessions creating at once get the same key). It goes with its mailbox."""

    async def reset_urlauth_keys(self, mailbox_ids: Sequence[int]) -> None:
        """RESETKEY: forget these mailboxes' keys, so every URL signed with them fails."""

    # --- ACL (RFC 4314): rights granted on a mailbox to other identifiers ---------------
    async def get_acl(self, mailbox_id: int) -> dict[str, str]:
        """identifier -> rights (letters of RFC 4314 §2.1, sorted) of the grants that are
        stored; the owner's implicit full rights are not stored."""

    async def set_acl(self, mailbox_id: int, identifier: str, rights: str | None) -> None:
        """Replace the identifier's rights (None or "" removes the grant). Grants belong
        to their mailbox: RENAME keeps them, DELETE drops them."""

    async def acl_grants(self, identifiers: Sequence[str]) -> list[AclGrant]:
        """Every grant to one of these identifiers (an account's address, ``anyone``,
        ``authenticated``) with its mailbox: what an account may see of others'."""


@dataclass(frozen=True, slots=True)
class AclGrant:
    mailbox_id: int
    owner_id: int  # the account the mailbox belongs to
    mailbox: str  # its name in the owner's hierarchy
    identifier: str
    rights: str
