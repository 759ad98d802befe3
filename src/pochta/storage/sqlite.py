"""The embedded store: one data directory with an SQLite index and append-only blob segments.

Layout (``data_dir``)::

    pochta.db            SQLite in WAL mode: domains, accounts, aliases, mailboxes,
                         message metadata, queue; synchronous=FULL so COMMIT is fsynced
    blobs/<name>.seg     message bodies appended back to back; a blob is (segment, offset,
                         length). Each store instance appends to its own segment, so two
                         processes (server and CLI) never interleave writes.

Small messages (up to INLINE_MAX) are stored inside the index, in ``blobs.data``: their
batch then costs one fsync (the WAL commit) instead of two. Larger ones go to segments,
appended back to back: creating a file per message costs 15-800 us on these machines, and
appending to an open file and fsyncing it once per batch is cheap.

Durability and group commit: a write goes through the writer thread. It takes every
job queued since its last commit, appends their blobs to the segment, fdatasyncs it, then
runs the jobs' SQL in one transaction, commits and fdatasyncs the WAL. Only then are the
callers' futures resolved, so ``accept()`` returning means the message and its index entry
are on disk. A crash before COMMIT leaves unreferenced bytes at the end of a segment,
never a half-visible message; a crash after leaves a complete one. Small writes (a few
rows, no segment: STORE, EXPUNGE, \\Recent claims, an APPEND that fits in the index) are
committed on the event loop's own connection instead, one transaction per loop turn, and a
durable one is acknowledged only after the syncer thread has fdatasynced the WAL
(``_commit_on_loop``): the GIL hand-offs to and from the writer thread cost more than the
SQL itself.

Several processes on one index (``pochta serve --workers N``, the CLI beside the server):
SQLite lets one of them write at a time. Each writer waits for its turn on a flock()ed
file, asleep until the holder lets go (SQLite's own busy handler polls, sleeping 1, 2, 5
... 100 ms, so the lock sat idle while a worker slept and went back to the worker that had
just let go), drains the jobs that queued up meanwhile into its batch, and holds the lock
only for the SQL and COMMIT: the writer connection runs with ``synchronous=NORMAL`` (COMMIT
writes the WAL frames without waiting for the disk) and the fdatasync of the WAL comes
after the lock is released, before any caller hears of the commit. So one worker's fsync
overlaps the other's transaction instead of holding it up. WAL with NORMAL never corrupts
the index (SQLite syncs the WAL before each checkpoint); our own fdatasync is what makes
each acknowledged commit durable. The price: other connections may read a commit up to
one fsync (a few ms) before it is on disk, so a power cut in that window can undo a
message an IMAP client has already listed (its sender never got a 250 and sends again).
A process frozen inside its write transaction (SIGSTOP, a debugger) now stalls the other
writers until it goes on or dies (the kernel drops its flock), where SQLite's busy timeout
used to fail their writes after 30 s.

A full disk (or any failed write) never leaves the index pointing at bytes that are not
the blob's: the offset of each new blob is taken from the segment file's real size
(``fstat``), never from a counter that a failed write could have advanced, and a failed
or partial append is cut off again (``ftruncate``) or, if even that fails, the segment is
abandoned and a new one started. Every blob also carries its length and SHA-256, checked
on every read: a mismatch raises ``StorageCorrupt`` instead of returning another
message's bytes, and ``verify_blobs`` (``pochta store verify``) checks them all.

Space is given back: when the last message row or active queue row that references a
blob goes, a trigger records the blob as a candidate; ``compact()`` (run in the background
by the server, and by ``pochta store compact``) deletes dead blobs, rewrites segments that
are mostly dead into a new one, unlinks empty ones, and returns free pages of the index to
the file system (``auto_vacuum=INCREMENTAL``). A segment still being appended to by a live
store instance (this process or another) is flock()ed by it and never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .interfaces import (
    DEFAULT_MAILBOXES,
    AcceptResult,
    Account,
    AddressRecords,
    Alias,
    AlreadyExists,
    BlobProblem,
    Changes,
    Envelope,
    FlagMode,
    FlagUpdate,
    LocalTarget,
    MailboxInfo,
    MailboxStatus,
    MessageMeta,
    NotFound,
    QueueItem,
    QueueState,
    QuotaExceeded,
    RemoteRecipient,
    ScramCredentials,
    SpecialUse,
    SpooledMessage,
    StorageCorrupt,
    StorageFull,
    StoreError,
    StoreStats,
)
from .rules import (
    apply_flags,
    flags_set,
    flags_text,
    new_message_id,
    normalize_mailbox_name,
    stream_fields,
)
from .sqlite_base import Migration, SQLiteFeature
from .sqlite_imap import MIGRATIONS as IMAP_MIGRATIONS
from .sqlite_imap import SQLiteImapState
from .sqlite_ops import MIGRATIONS as OPS_MIGRATIONS  # issue 19: log, app passwords
from .sqlite_ops import SQLiteOpsMixin
from .sqlite_sending import MIGRATIONS as SENDING_MIGRATIONS
from .sqlite_sending import SQLiteSendingMixin
from .sqlite_sieve import MIGRATIONS as SIEVE_MIGRATIONS
from .sqlite_sieve import SQLiteSieveMixin
from .sqlite_spam import MIGRATIONS as SPAM_MIGRATIONS
from .sqlite_spam import SQLiteSpamMixin
from .sqlite_transport import MIGRATIONS as TRANSPORT_MIGRATIONS
from .sqlite_transport import SQLiteTransportSecurity
from .sqlite_web import MIGRATIONS as WEB_MIGRATIONS  # issue 19
from .sqlite_web import SQLiteWebMixin

__all__ = ["SQLiteStore", "new_message_id", "normalize_mailbox_name"]

log = logging.getLogger(__name__)

T = TypeVar("T")

SEGMENT_MAX = 256 * 1024 * 1024
# Threads that run reads (each with its own SQLite connection).
READ_THREADS = 4
# Messages up to this size live in the index itself (one fsync per commit, no segment).
INLINE_MAX = 64 * 1024
INLINE_CHANGES = 256  # changes_since reads up to this many rows on the event loop
# The store syncer checkpoints the WAL past this size (the loop's connection, which commits
# most IMAP writes, never does: a checkpoint fsyncs the database file)
WAL_CHECKPOINT_BYTES = 4 * 1024 * 1024
QUOTA_SEEN_SECONDS = 30.0  # see SQLiteStore._small_delivery

# changes_since's one statement (?1 mailbox, ?2 modseq, ?3 row limit); the LIMITs sit in
# subqueries so that each applies to its own part of the UNION
_CHANGES_SQL = (
    "SELECT 0, highestmodseq, 0, 0, 0, '', 0 FROM mailboxes WHERE id=?1 "
    "UNION ALL SELECT * FROM (SELECT 1, uid, blob_id, size, internaldate, flags, modseq "
    "FROM messages WHERE mailbox_id=?1 AND modseq>?2 LIMIT ?3) "
    "UNION ALL SELECT * FROM (SELECT 2, uid, 0, 0, 0, '', 0 "
    "FROM expunged WHERE mailbox_id=?1 AND modseq>?2 LIMIT ?3)"
)

# mailbox_status's one statement (? the mailbox): the mailbox row and the counts over its
# messages ({limit}: a bound on the rows walked, or ""); no mailbox: one row of NULLs
_STATUS_SQL = (
    "SELECT b.uidnext, b.uidvalidity, b.highestmodseq, b.first_recent_uid, count(m.uid),"
    " coalesce(sum(m.size),0),"
    " coalesce(sum(instr(' '||m.flags||' ', ' \\Seen ')>0),0),"
    " coalesce(sum(instr(' '||m.flags||' ', ' \\Deleted ')>0),0),"
    " coalesce(sum(m.uid>=b.first_recent_uid),0)"
    " FROM mailboxes b LEFT JOIN (SELECT uid, size, flags FROM messages"
    " WHERE mailbox_id=?1 {limit}) m WHERE b.id=?1"
)

# expunge's look before it writes (?1 mailbox, ?2 row limit): messages, and of them
# those flagged \Deleted (flags are stored space-separated: rules.flags_text)
_DELETED_SQL = (
    "SELECT count(*), coalesce(sum(instr(' '||flags||' ', ' \\Deleted ')>0),0)"
    " FROM (SELECT flags FROM messages WHERE mailbox_id=?1 LIMIT ?2)"
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS domains(name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS accounts(
    id INTEGER PRIMARY KEY,
    address TEXT UNIQUE NOT NULL,
    password_hash TEXT NOT NULL,
    scram_salt BLOB, scram_iterations INTEGER, scram_stored_key BLOB, scram_server_key BLOB,
    may_send_as_anyone INTEGER NOT NULL DEFAULT 0,
    quota_bytes INTEGER NOT NULL DEFAULT 0,
    apop_secret TEXT,
    disabled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS aliases(source TEXT PRIMARY KEY, targets TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mailboxes(
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,
    special_use TEXT,
    subscribed INTEGER NOT NULL DEFAULT 1,
    first_recent_uid INTEGER NOT NULL DEFAULT 1,
    UNIQUE(account_id, name));
CREATE TABLE IF NOT EXISTS blobs(
    id INTEGER PRIMARY KEY, segment TEXT NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, data BLOB, sha256 BLOB);
CREATE TABLE IF NOT EXISTS messages(
    mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, blob_id INTEGER NOT NULL,
    size INTEGER NOT NULL, internaldate REAL NOT NULL, flags TEXT NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY(mailbox_id, uid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_modseq ON messages(mailbox_id, modseq);
CREATE TABLE IF NOT EXISTS expunged(
    mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, modseq INTEGER NOT NULL,
    PRIMARY KEY(mailbox_id, uid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue(
    id INTEGER PRIMARY KEY, message_id TEXT NOT NULL, blob_id INTEGER NOT NULL,
    envelope TEXT NOT NULL, recipient TEXT NOT NULL, notify TEXT, orcpt TEXT,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL,
    last_reply TEXT NOT NULL DEFAULT '', created REAL NOT NULL,
    claimed_by TEXT, lease_until REAL);
CREATE INDEX IF NOT EXISTS queue_due ON queue(state, next_attempt);
CREATE TABLE IF NOT EXISTS subscriptions(
    account_id INTEGER NOT NULL, name TEXT NOT NULL,
    PRIMARY KEY(account_id, name)) WITHOUT ROWID;
"""

# Version 4: blob checksums, blob garbage collection (references found through indexes,
# candidates recorded by triggers), incremental vacuum.
SCHEMA_V4 = """
CREATE INDEX IF NOT EXISTS messages_blob ON messages(blob_id);
CREATE INDEX IF NOT EXISTS queue_blob ON queue(blob_id, state);
CREATE TABLE IF NOT EXISTS blob_gc(blob_id INTEGER PRIMARY KEY, since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS locks(name TEXT PRIMARY KEY, owner TEXT NOT NULL,
    expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters(key TEXT NOT NULL, second INTEGER NOT NULL,
    amount INTEGER NOT NULL, PRIMARY KEY(key, second)) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS messages_release AFTER DELETE ON messages BEGIN
    INSERT OR IGNORE INTO blob_gc VALUES (old.blob_id, strftime('%s', 'now'));
END;
CREATE TRIGGER IF NOT EXISTS queue_release AFTER DELETE ON queue BEGIN
    INSERT OR IGNORE INTO blob_gc VALUES (old.blob_id, strftime('%s', 'now'));
END;
CREATE TRIGGER IF NOT EXISTS queue_done AFTER UPDATE OF state ON queue
    WHEN new.state IN ('delivered', 'failed') BEGIN
    INSERT OR IGNORE INTO blob_gc VALUES (new.blob_id, strftime('%s', 'now'));
END;
"""

SCHEMA_VERSION = "4"

# Migrations of the feature modules (see sqlite_base.py), applied in this order.
FEATURE_MIGRATIONS: list[Migration] = [
    *SIEVE_MIGRATIONS, *TRANSPORT_MIGRATIONS, *SPAM_MIGRATIONS, *IMAP_MIGRATIONS,
    *SENDING_MIGRATIONS,
    *WEB_MIGRATIONS,
    *OPS_MIGRATIONS,
]
# A segment is rewritten when less than this share of its bytes is still referenced.
COMPACT_LIVE_RATIO = 0.5
# SQLite's extended result codes for a full disk or database (sqlite3.h).
_SQLITE_FULL = 13


def storage_error(exc: BaseException) -> StoreError:
    """Pochta's error for a backend failure: a full disk is ``StorageFull`` (temporary,
    RFC 3463 4.3.1), anything else a plain ``StoreError``."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"insufficient system storage: {exc}")
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF == _SQLITE_FULL:
        return StorageFull(f"insufficient system storage: {exc}")
    return StoreError(f"storage failure: {exc}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


COPY_CHUNK = 1024 * 1024


def _blob_size(blob: bytes | SpooledMessage) -> int:
    return len(blob) if isinstance(blob, bytes) else blob.total


def _small_bytes(blob: bytes | SpooledMessage) -> bytes:
    """A blob small enough for the index, as bytes (a small spooled file is read)."""
    if isinstance(blob, bytes):
        return blob
    with open(blob.path, "rb") as f:
        f.seek(blob.offset)
        data = blob.prefix + f.read(blob.size)
    if len(data) != blob.total:
        raise StoreError(f"spooled message {blob.path} changed size")
    return data


def _append_one(fd: int, blob: bytes | SpooledMessage) -> bytes:
    """Write one blob at the end of the segment; its SHA-256."""
    if isinstance(blob, bytes):
        _write_all(fd, blob)
        return _digest(blob)
    digest = hashlib.sha256(blob.prefix)
    _write_all(fd, blob.prefix)
    copied = 0
    with open(blob.path, "rb") as f:
        f.seek(blob.offset)
        while copied < blob.size and (chunk := f.read(min(COPY_CHUNK, blob.size - copied))):
            digest.update(chunk)
            _write_all(fd, chunk)
            copied += len(chunk)
    if copied != blob.size:
        raise StoreError(f"spooled message {blob.path} changed size")
    return digest.digest()


LOOP_CACHE_KB = 32 << 10  # the event loop connection's page cache, at most


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        # SQLite gives -wal and -shm the database file's mode: create it private.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    # Only takes effect on a new, empty database (before journal_mode writes its header);
    # lets compaction give free pages back to the file system.
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: in WAL mode, NORMAL would not fsync at COMMIT, and a 250 must mean on disk.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection, int | None], Any]
    blob: bytes | SpooledMessage | None
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    touched: set[int]  # mailbox ids to notify after commit
    durable: bool = True  # False: the commit need not be fsynced (flags, expunges, \Recent)


class _Watcher:
    def __init__(self, store: SQLiteStore, mailbox_id: int) -> None:
        self._store = store
        self.mailbox_id = mailbox_id
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True

    def close(self) -> None:
        self._store._unwatch(self)


def check_blob(blob_id: int, data: bytes, length: int, digest: bytes | None) -> None:
    """Never hand out bytes that are not this blob's (a wrong offset would show one user
    another's mail)."""
    if len(data) != length:
        raise StorageCorrupt(f"blob {blob_id} is truncated on disk ({len(data)} of {length} "
                             "bytes): run pochta store verify")
    if digest is not None and _digest(data) != bytes(digest):
        raise StorageCorrupt(f"blob {blob_id} does not match its checksum: run pochta store "
                             "verify")


def _check_segment_blob(
    fd: int, blob_id: int, offset: int, length: int, digest: bytes | None
) -> None:
    """Length and checksum of a segment blob, read in chunks (constant memory)."""
    hasher = hashlib.sha256()
    pos = 0
    while pos < length:
        part = os.pread(fd, min(COPY_CHUNK, length - pos), offset + pos)
        if not part:
            raise StorageCorrupt(f"blob {blob_id} is truncated on disk ({pos} of {length} "
                                 "bytes): run pochta store verify")
        hasher.update(part)
        pos += len(part)
    if digest is not None and hasher.digest() != bytes(digest):
        raise StorageCorrupt(f"blob {blob_id} does not match its checksum: run pochta store "
                             "verify")


def _statements(script: str) -> list[str]:
    """Split a script of CREATE statements (triggers hold semicolons before END)."""
    out: list[str] = []
    current: list[str] = []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current)
        if line.rstrip().endswith(";") and (not text.lstrip().startswith("CREATE TRIGGER")
                                            or line.strip() == "END;"):
            out.append(text)
            current = []
    return out


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _private_dir(path: Path) -> None:
    """The data directory holds password hashes and mail: 0700, tightened with a warning."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s was mode %o: readable by other local users; setting 0700", path, mode)
        path.chmod(0o700)


def _tighten_files(data_dir: Path) -> None:
    """Every file of the store is 0600 (index, WAL, shared memory, segments, keys)."""
    for path in [*data_dir.iterdir(), *(data_dir / "blobs").iterdir()]:
        if not path.is_file() or path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("%s was mode %o: readable by other local users; setting 0600",
                        path, mode)
            path.chmod(0o600)


class _QueueWatcher:
    """Wakes the queue worker when items become due early: queued mail (this process) or
    ``pochta queue retry|flush`` from any process (a counter in ``meta``, polled)."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True

    def close(self) -> None:
        self._store._queue_watchers.discard(self)




def _account(row: sqlite3.Row | tuple[Any, ...]) -> Account:
    (id_, address, pw, salt, iters, stored, server, any_, quota, apop, disabled) = row
    scram = ScramCredentials(salt, iters, stored, server) if salt is not None else None
    return Account(id_, address, pw, scram, bool(any_), quota, apop, bool(disabled))


_ACCOUNT_COLS = (
    "id, address, password_hash, scram_salt, scram_iterations, scram_stored_key, "
    "scram_server_key, may_send_as_anyone, quota_bytes, apop_secret, disabled"
)
# An alias as a row of the accounts query (find_addresses' UNION): its source where an
# account has its address, NULL for the other account columns.
_ALIAS_ROW = "NULL, source, " + ", ".join(["NULL"] * (_ACCOUNT_COLS.count(",") - 1))
_MAILBOX_COLS = (
    "id, account_id, name, uidvalidity, uidnext, highestmodseq, special_use, "
    "EXISTS(SELECT 1 FROM subscriptions s WHERE s.account_id=mailboxes.account_id "
    "AND s.name=mailboxes.name)"
)


def _mailbox(row: tuple[Any, ...]) -> MailboxInfo:
    id_, acc, name, validity, uidnext, modseq, special, subscribed = row
    return MailboxInfo(
        id_, acc, name, validity, uidnext, modseq,
        SpecialUse(special) if special else None, bool(subscribed),
    )


def _meta(row: tuple[Any, ...]) -> MessageMeta:
    uid, blob_id, size, internaldate, flags, modseq = row
    return MessageMeta(uid, blob_id, size, internaldate, flags_set(flags), modseq)




class SQLiteStore(
    SQLiteSieveMixin, SQLiteTransportSecurity, SQLiteSpamMixin, SQLiteImapState,
    SQLiteSendingMixin,
    SQLiteWebMixin,
    SQLiteOpsMixin,
    SQLiteFeature,
):
    """The embedded ``MailStore`` (see interfaces.py for the contract)."""

    def __init__(self, data_dir: Path, commit_interval: float = 0.0) -> None:
        self.data_dir = data_dir
        self.blob_dir = data_dir / "blobs"
        self.commit_interval = commit_interval
        # storage.fsync = "always": metadata commits are fsynced too (see _metadata_durable)
        self.fsync_always = False
        self._writer_conn = _connect(data_dir / "pochta.db")
        # flock()ed by the writer thread around each write transaction (see _run_batch)
        self._lock_fd = os.open(data_dir / "pochta.db-writer",
                                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._wal_fd: int | None = None  # opened at the first commit (see _sync_wal)
        self._read_pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="store-reader")
        self._local = threading.local()
        self._reader_lock = threading.Lock()
        self._reader_conns: list[sqlite3.Connection] = []
        self._loop_conn: sqlite3.Connection | None = None  # point reads on the loop thread
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._writer_loop, name="store-writer", daemon=True)
        # Small writes committed on the event loop (see _commit_on_loop): their own open of
        # the lock file, so that its flock excludes the writer thread's too
        self._loop_lock_fd = os.open(data_dir / "pochta.db-writer",
                                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._loop_batch: list[_Job] = []
        self._loop_commits = 0
        self._quota_seen: dict[int, tuple[float, bool]] = {}  # see _small_delivery
        self._syncs: queue.SimpleQueue[list[tuple[_Job, bool, Any]] | None] = queue.SimpleQueue()
        self._syncer = threading.Thread(target=self._syncer_loop, name="store-syncer",
                                        daemon=True)
        self._segment_name: str | None = None
        self._segment_fd: int | None = None
        self._segment_size = 0
        self._watchers: dict[int, set[_Watcher]] = {}
        self._queue_watchers: set[_QueueWatcher] = set()
        self._queue_poller: asyncio.Task[None] | None = None
        self._mailbox_poller: asyncio.Task[None] | None = None
        self._compact_lock = asyncio.Lock()
        self._verified: dict[int, None] = {}  # blobs whose checksum stream_blob checked
        self._closed = False

    @classmethod
    async def open(
        cls, data_dir: str | Path, commit_interval: float = 0.0, *, fsync_always: bool = False
    ) -> SQLiteStore:
        path = Path(data_dir)
        _private_dir(path)
        _private_dir(path / "blobs")
        _tighten_files(path)
        store = cls(path, commit_interval)
        store.fsync_always = fsync_always
        try:
            store._migrate()
        except BaseException:
            store._read_pool.shutdown()
            store._writer_conn.close()
            os.close(store._lock_fd)
            os.close(store._loop_lock_fd)
            raise
        # From here on COMMIT does not wait for the disk: _run_batch fdatasyncs the WAL
        # after releasing the write lock (migrations above committed with FULL).
        store._writer_conn.execute("PRAGMA synchronous=NORMAL")
        store._thread.start()
        store._syncer.start()
        return store

    def _migrate(self) -> None:
        """Bring an older data directory up to SCHEMA_VERSION (runs before any job);
        refuse one written by a newer Pochta."""
        conn = self._writer_conn
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.OperationalError:  # a new, empty database
            row = None
            # Must be chosen before the first table exists (or take a VACUUM later).
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        if row is not None and int(row[0]) > int(SCHEMA_VERSION):
            raise StoreError(
                f"{self.data_dir} holds schema version {row[0]}, written by a newer Pochta; "
                f"this one knows up to version {SCHEMA_VERSION}: upgrade Pochta"
            )
        if row is not None and row[0] == SCHEMA_VERSION:
            self._apply_feature_migrations()
            return
        conn.executescript(SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        columns = {r[1] for r in conn.execute("PRAGMA table_info(blobs)")}
        if "data" not in columns:  # versions 1 and 2 kept every body in segments
            conn.execute("ALTER TABLE blobs ADD COLUMN data BLOB")
        if "sha256" not in columns:  # before version 4: no checksums (length still checked)
            conn.execute("ALTER TABLE blobs ADD COLUMN sha256 BLOB")
        queue_columns = {r[1] for r in conn.execute("PRAGMA table_info(queue)")}
        if "claimed_by" not in queue_columns:  # before version 4: one worker, no claims
            conn.execute("ALTER TABLE queue ADD COLUMN claimed_by TEXT")
            conn.execute("ALTER TABLE queue ADD COLUMN lease_until REAL")
        if row is None:
            # version 1 kept subscriptions on mailbox rows: copy them to their own table
            conn.execute(
                "INSERT OR IGNORE INTO subscriptions SELECT account_id, name FROM mailboxes "
                "WHERE subscribed=1"
            )
        for statement in _statements(SCHEMA_V4):
            conn.execute(statement)
        # Blobs that nothing referenced before version 4 are collected like new ones.
        conn.execute(
            "INSERT OR IGNORE INTO blob_gc SELECT id, 0 FROM blobs b WHERE "
            "NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_id=b.id) AND "
            "NOT EXISTS (SELECT 1 FROM queue q WHERE q.blob_id=b.id "
            "AND q.state IN ('pending','deferred'))"
        )
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
        )
        conn.execute("COMMIT")
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            # An index made before version 4: switching to incremental vacuum takes one
            # full VACUUM (a copy of the index), once.
            log.warning("converting %s to incremental vacuum (one-time VACUUM)", self.data_dir)
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("VACUUM")
        self._apply_feature_migrations()

    def _apply_feature_migrations(self) -> None:
        conn = self._writer_conn
        conn.execute(
            "CREATE TABLE IF NOT EXISTS migrations(name TEXT PRIMARY KEY, applied REAL NOT NULL)"
        )
        done = {r[0] for r in conn.execute("SELECT name FROM migrations")}
        known = {m.name for m in FEATURE_MIGRATIONS}
        if done - known:
            raise StoreError(
                f"{self.data_dir} was written by a newer Pochta (migrations "
                f"{', '.join(sorted(done - known))} are unknown to this one): upgrade Pochta"
            )
        for migration in FEATURE_MIGRATIONS:
            if migration.name in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute("INSERT INTO migrations VALUES (?, ?)", (migration.name, time.time()))
            conn.execute("COMMIT")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for poller in (self._queue_poller, self._mailbox_poller):
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
        self._commit_on_loop()  # what is queued for the loop's next commit
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        self._syncs.put(None)
        await asyncio.to_thread(self._syncer.join)
        os.close(self._loop_lock_fd)
        await asyncio.to_thread(self._read_pool.shutdown)
        for conn in self._reader_conns:
            conn.close()
        if self._loop_conn is not None:
            self._loop_conn.close()

    # --- the writer thread (group commit) -------------------------------------------

    def _writer_loop(self) -> None:
        conn = self._writer_conn
        stop = False
        while not stop:
            first = self._jobs.get()
            if first is None:
                break
            if self.commit_interval:
                time.sleep(self.commit_interval)
            batch = [first]
            stop = self._drain(batch)
            stop = self._run_batch(conn, batch) or stop
        for fd in (self._segment_fd, self._wal_fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        conn.close()

    def _drain(self, batch: list[_Job]) -> bool:
        """Add every job queued now to ``batch``; True when close() asked to stop."""
        while True:
            try:
                nxt = self._jobs.get_nowait()
            except queue.Empty:
                return False
            if nxt is None:
                return True
            batch.append(nxt)

    def _sync_wal(self) -> None:
        """fdatasync the index's WAL: every frame written so far (this commit's, and any
        other process's before it) is on disk."""
        self._wal_fd = self._open_wal(self._wal_fd)
        os.fdatasync(self._wal_fd)

    def _open_wal(self, fd: int | None) -> int:
        """``fd`` if it is still the index's WAL, else the WAL opened afresh. The file stays
        the same while the writer connection is open (SQLite removes it only when the last
        connection closes)."""
        if fd is not None and os.fstat(fd).st_nlink == 0:  # cheap insurance all the same
            os.close(fd)
            fd = None
        if fd is None:
            fd = os.open(self.data_dir / "pochta.db-wal", os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def _append_blobs(
        self, batch: list[_Job]
    ) -> tuple[list[tuple[str, int, int, bytes] | None], int]:
        """Append every large blob of the batch to the segment, then one fdatasync.

        Returns each job's (segment, offset, length, sha256) and the segment size before
        the batch. Offsets come from the file's real size, so a failed write earlier can
        never shift them; a failed or partial write is cut off again before the error goes
        up. A spooled message is copied from its file in chunks (never whole in memory).
        """
        places: list[tuple[str, int, int, bytes] | None] = [None] * len(batch)
        large = [(i, job.blob) for i, job in enumerate(batch)
                 if job.blob is not None and _blob_size(job.blob) > INLINE_MAX]
        if not large:
            return places, -1
        if self._segment_fd is None or self._segment_size > SEGMENT_MAX:
            self._open_segment()
        assert self._segment_fd is not None and self._segment_name is not None
        fd = self._segment_fd
        start = offset = os.fstat(fd).st_size
        try:
            for i, blob in large:
                digest = _append_one(fd, blob)
                places[i] = (self._segment_name, offset, _blob_size(blob), digest)
                offset += _blob_size(blob)
            os.fdatasync(fd)
        except (OSError, StoreError):
            self._cut_segment(start)
            raise
        self._segment_size = offset
        return places, start

    def _cut_segment(self, size: int) -> None:
        """Undo a failed append: truncate the segment back to ``size``; if even that fails,
        stop using the segment (its tail is then unreferenced and compaction reclaims it)."""
        fd = self._segment_fd
        if fd is None or size < 0:
            return
        try:
            os.ftruncate(fd, size)
            os.fdatasync(fd)
            self._segment_size = size
        except OSError as exc:
            log.warning("cannot truncate segment %s after a failed write (%s); starting a "
                        "new one", self._segment_name, exc)
            os.close(fd)
            self._segment_fd = None
            self._segment_name = None

    def _open_segment(self) -> None:
        if self._segment_fd is not None:
            os.close(self._segment_fd)
            self._segment_fd = None
        name = f"{time.time_ns():x}-{os.getpid()}-{secrets.token_hex(3)}"
        path = self.blob_dir / f"{name}.seg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # Held while this instance appends: compaction (in any process) skips it.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _fsync_dir(self.blob_dir)  # the new directory entry must survive a crash too
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self._segment_fd = fd
        self._segment_name = name
        self._segment_size = 0

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> bool:
        """Commit ``batch`` and every job queued while it waited for the write lock (the
        list grows); True when close() asked to stop meanwhile."""
        results: list[tuple[bool, Any]] = []
        start = -1
        stop = locked = committed = False
        try:
            places, start = self._append_blobs(batch)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # asleep until the holder lets go
            locked = True
            first_late = len(batch)
            stop = self._drain(batch)  # what queued up while we waited: one fsync for all
            if len(batch) > first_late:
                late, late_start = self._append_blobs(batch[first_late:])
                places += late
                start = start if start >= 0 else late_start
            results, committed = self._commit_jobs(conn, batch, places, start)
        except Exception as exc:  # disk full, I/O error: nothing of the batch is durable
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            error = storage_error(exc)
            if isinstance(error, StorageFull):
                # The index did not take the batch: its blob bytes are nobody's.
                self._cut_segment(start)
            log.error("store write failed (%d job(s)): %s", len(batch), error)
            results = [(False, error) for _ in batch]
        finally:
            if locked:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        # A batch of nothing but non-durable jobs is not synced (a later durable one syncs
        # its frames too); the index stays consistent either way.
        if committed and any(job.durable for job in batch):
            try:
                self._sync_wal()
            except OSError as exc:  # committed but maybe not on disk: nobody hears "done"
                error = storage_error(exc)
                log.error("store WAL sync failed (%d job(s)): %s", len(batch), error)
                results = [(False, error) for _ in batch]
        # one wake-up of each event loop for the whole batch, not one per job
        done: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
        for job, (ok, value) in zip(batch, results, strict=True):
            done.setdefault(job.loop, []).append((job, ok, value))
        for loop, finished in done.items():
            loop.call_soon_threadsafe(self._finish, finished)
        return stop

    def _commit_jobs(
        self,
        conn: sqlite3.Connection,
        batch: list[_Job],
        places: list[tuple[str, int, int, bytes] | None],
        start: int,
    ) -> tuple[list[tuple[bool, Any]], bool]:
        """Run the jobs' SQL in one transaction on ``conn`` (the caller holds the write
        lock): each job's result or error, and whether the transaction was committed. A
        failure of the whole transaction (disk full, I/O error) raises."""
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        # a job alone in its batch (most of them) needs no savepoint: if it fails,
        # the whole transaction is rolled back instead
        alone = len(batch) == 1
        for job, place in zip(batch, places, strict=True):
            if not alone:
                conn.execute("SAVEPOINT job")
            try:
                blob_id = None
                if place is not None:
                    cur = conn.execute(
                        "INSERT INTO blobs(segment, offset, length, sha256) VALUES (?,?,?,?)",
                        place,
                    )
                    blob_id = cur.lastrowid
                elif job.blob is not None:
                    data = _small_bytes(job.blob)
                    cur = conn.execute(
                        "INSERT INTO blobs(segment, offset, length, data, sha256) "
                        "VALUES ('',0,?,?,?)",
                        (len(data), data, _digest(data)),
                    )
                    blob_id = cur.lastrowid
                results.append((True, job.fn(conn, blob_id)))
                if not alone:
                    conn.execute("RELEASE job")
            except Exception as exc:
                error = storage_error(exc)
                if alone:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    if isinstance(error, StorageFull):  # as a failed batch below
                        log.error("store write failed (1 job): %s", error)
                        self._cut_segment(start)
                    results.append((False, error))
                    break
                try:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                except sqlite3.Error:
                    # SQLite rolled back the whole transaction (e.g. SQLITE_FULL):
                    # the batch fails with this job's error.
                    raise error from exc
                results.append((False, error))
        if results[-1][0] or not alone:
            conn.execute("COMMIT")
            return results, True
        return results, False

    # --- small writes on the event loop -------------------------------------------

    def _commit_on_loop(self) -> None:
        """Commit the small writes queued during this turn of the event loop on the loop's
        own connection, in one transaction (group commit as the writer's).

        A job on the writer thread costs far more than its SQL: each of its statements,
        its flock and its fsync hands the GIL to the writer thread and back, and the
        futex wake-ups and context switches of those hand-offs were a fifth of the
        server's CPU under imaptest. Here the SQL runs on the loop (a few rows: callers
        pass ``small`` only for bounded writes) and only a durable batch goes to another
        thread, the syncer, for its WAL fdatasync; the callers hear back after it, as
        from the writer. Whoever else holds the write lock (another process, the writer
        thread, a compaction's checkpoint) sends the batch to the writer thread instead:
        the loop never waits for the lock. The writer thread and the loop both write,
        but the loop commits nearly all IMAP writes, so its reads keep their page cache
        (a connection's own commits do not drop it; another connection's do)."""
        batch, self._loop_batch = self._loop_batch, []
        if not batch:
            return
        try:
            fcntl.flock(self._loop_lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            for job in batch:
                self._jobs.put(job)
            return
        conn: sqlite3.Connection | None = None
        committed = False
        try:
            conn = self._loop_connection()
            results, committed = self._commit_jobs(conn, batch, [None] * len(batch), -1)
        except Exception as exc:  # disk full, I/O error: nothing of the batch is durable
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            error = storage_error(exc)
            log.error("store write failed (%d job(s)): %s", len(batch), error)
            results = [(False, error) for _ in batch]
        finally:
            fcntl.flock(self._loop_lock_fd, fcntl.LOCK_UN)
        finished = [(job, ok, value) for job, (ok, value) in zip(batch, results, strict=True)]
        if committed and any(job.durable for job in batch):
            self._syncs.put(finished)  # heard back after the WAL is on disk
            return
        self._finish(finished)
        self._loop_commits += 1
        if self._loop_commits % 64 == 0:
            self._syncs.put([])  # only a look at the WAL's size

    def _loop_connection(self) -> sqlite3.Connection:
        """The event loop's connection (point reads, small writes). COMMIT does not wait
        for the disk (synchronous=NORMAL: the syncer fdatasyncs the WAL before a durable
        write is acknowledged) and never checkpoints (the syncer does)."""
        conn = self._loop_conn
        if conn is None:
            conn = _connect(self.data_dir / "pochta.db")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            # every IMAP command reads here: SQLite's default 2 MB of page cache is
            # outgrown once small messages' bytes pass through (APPEND commits them here)
            conn.execute(f"PRAGMA cache_size=-{LOOP_CACHE_KB:d}")
            self._loop_conn = conn
        return conn

    def _syncer_loop(self) -> None:
        """fdatasync the WAL for the loop's durable commits (all those queued meanwhile
        in one), then wake their callers; keep the WAL short with passive checkpoints."""
        fd: int | None = None
        conn: sqlite3.Connection | None = None
        stop = False
        while not stop:
            first = self._syncs.get()
            if first is None:
                break
            finished = list(first)
            while True:
                try:
                    nxt = self._syncs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                finished += nxt
            try:
                fd = self._open_wal(fd)
                if finished:
                    os.fdatasync(fd)
            except OSError as exc:  # committed but maybe not on disk: nobody hears "done"
                error = storage_error(exc)
                log.error("store WAL sync failed (%d job(s)): %s", len(finished), error)
                finished = [(job, False, error) for job, _ok, _value in finished]
            done: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
            for item in finished:
                done.setdefault(item[0].loop, []).append(item)
            for loop, items in done.items():
                with contextlib.suppress(RuntimeError):  # a loop closed meanwhile
                    loop.call_soon_threadsafe(self._finish, items)
            try:
                if fd is not None and os.fstat(fd).st_size > WAL_CHECKPOINT_BYTES:
                    if conn is None:
                        conn = _connect(self.data_dir / "pochta.db")
                    self._checkpoint_locked(conn, "PASSIVE", restart=True)
            except (OSError, sqlite3.Error) as exc:
                log.warning("WAL checkpoint failed: %s", exc)
        if fd is not None:
            os.close(fd)
        if conn is not None:
            conn.close()

    def _finish(self, finished: list[tuple[_Job, bool, Any]]) -> None:
        for job, ok, value in finished:
            if ok:
                for mailbox_id in job.touched:
                    for watcher in self._watchers.get(mailbox_id, ()):
                        watcher.notify()
            if job.future.done():
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    async def _write(
        self,
        fn: Callable[[sqlite3.Connection, int | None], T],
        blob: bytes | SpooledMessage | None = None,
        touched: set[int] | None = None,
        durable: bool = True,
        small: bool = False,
    ) -> T:
        """Run ``fn`` in a write transaction, committed (and fsynced when ``durable``)
        before this returns. ``small``: ``fn`` touches a bounded handful of rows, and
        ``blob`` (if any) is bytes that live in the index; such a write is committed on the
        event loop (``_commit_on_loop``), any other by the writer thread."""
        if self._closed:
            raise StoreError("store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        job = _Job(fn, blob, fut, loop, touched if touched is not None else set(), durable)
        self._dispatch(job, small and (blob is None or (
            isinstance(blob, bytes) and len(blob) <= INLINE_MAX)))
        return await fut

    def _dispatch(self, job: _Job, small: bool) -> None:
        """Queue ``job`` for the loop's next commit or for the writer thread."""
        batch = self._loop_batch
        if small and (not batch or batch[0].loop is job.loop):
            batch.append(job)
            if len(batch) == 1:  # one commit for every small write of this loop turn
                job.loop.call_soon(self._commit_on_loop)
        else:
            self._jobs.put(job)

    async def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Reads run on the reader threads (each with its own connection, WAL lets them
        read while the writer commits): never on the event loop, whose other clients would
        wait for a big mailbox's listing."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._read_pool, self._query_sync, sql, args)
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    def _query_sync(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.data_dir / "pochta.db")
            self._local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn.execute(sql, args).fetchall()

    def _query_now(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A point read (one row by primary key) on the event loop's own connection: a few
        microseconds, where a hop to a reader thread and back costs far more (every IMAP
        command asks whether its mailbox changed). WAL readers never wait for the writer."""
        try:
            return self._loop_connection().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    async def _query_small(
        self, sql: str, args: Sequence[Any] = (), limit: int = INLINE_CHANGES
    ) -> list[tuple[Any, ...]]:
        """A read that usually returns a few rows (LIST's mailboxes, APPEND's METADATA
        lookup): on the loop's connection, as ``_query_now``, with ``LIMIT limit+1``
        appended, so the loop never walks more than that; a longer answer is read again,
        whole, on a reader thread. ``sql`` must reach its rows in order through an index
        (an ORDER BY that sorts would read everything before the LIMIT applies)."""
        rows = self._query_now(f"{sql} LIMIT {limit + 1:d}", args)
        if len(rows) <= limit:
            return rows
        return await self._query(sql, args)

    def _read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self._query_sync("SELECT 1", ())
            conn = self._local.conn
        return fn(conn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Several reads in one hop to a reader thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._read_pool, self._read_sync, fn)
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    # --- directory ------------------------------------------------------------------

    async def add_domain(self, name: str) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            try:
                conn.execute("INSERT INTO domains(name) VALUES (?)", (name.lower(),))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"domain {name} already exists") from None

        await self._write(fn)

    async def remove_domain(self, name: str) -> None:
        name = name.lower()

        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            if conn.execute("DELETE FROM domains WHERE name=?", (name,)).rowcount == 0:
                raise NotFound(f"no domain {name}")
            used = conn.execute(
                "SELECT count(*) FROM accounts WHERE address LIKE ?", (f"%@{name}",)
            ).fetchone()[0]
            if used:
                raise StoreError(f"domain {name} still has {used} account(s); remove them first")

        await self._write(fn)

    async def list_domains(self) -> list[str]:
        return [r[0] for r in await self._query("SELECT name FROM domains ORDER BY name")]

    async def has_domain(self, name: str) -> bool:
        return bool(await self._query("SELECT 1 FROM domains WHERE name=?", (name.lower(),)))

    async def add_account(
        self, address: str, password_hash: str, scram: ScramCredentials | None
    ) -> Account:
        address = address.lower()
        validity = self._uidvalidity_base()

        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            s = scram
            try:
                cur = conn.execute(
                    "INSERT INTO accounts(address, password_hash, scram_salt, scram_iterations,"
                    " scram_stored_key, scram_server_key) VALUES (?,?,?,?,?,?)",
                    (address, password_hash, s and s.salt, s and s.iterations,
                     s and s.stored_key, s and s.server_key),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"account {address} already exists") from None
            account_id = cur.lastrowid
            assert account_id is not None
            for name, special in DEFAULT_MAILBOXES:
                conn.execute(
                    "INSERT INTO mailboxes(account_id, name, uidvalidity, special_use)"
                    " VALUES (?,?,?,?)",
                    (account_id, name, self._next_uidvalidity(conn, validity),
                     special.value if special else None),
                )
                conn.execute(
                    "INSERT OR IGNORE INTO subscriptions VALUES (?,?)", (account_id, name)
                )
            return account_id

        await self._write(fn)
        account = await self.get_account(address)
        assert account is not None
        return account

    def _uidvalidity_base(self) -> int:
        # Seconds since 2020 fit the 32-bit UIDVALIDITY for a century.
        return max(1, int(time.time()) - 1_577_836_800)

    @staticmethod
    def _next_uidvalidity(conn: sqlite3.Connection, base: int) -> int:
        """A UIDVALIDITY never handed out before by this store, even to a mailbox since
        deleted (RFC 9051 §2.3.1.1: a re-created name must get a new one)."""
        row = conn.execute("SELECT value FROM meta WHERE key='last_uidvalidity'").fetchone()
        value = max(base, int(row[0]) + 1 if row else 1)
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('last_uidvalidity', ?)", (value,)
        )
        return value

    async def set_password(
        self, address: str, password_hash: str, scram: ScramCredentials | None
    ) -> None:
        s = scram

        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            cur = conn.execute(
                "UPDATE accounts SET password_hash=?, scram_salt=?, scram_iterations=?,"
                " scram_stored_key=?, scram_server_key=? WHERE address=?",
                (password_hash, s and s.salt, s and s.iterations, s and s.stored_key,
                 s and s.server_key, address.lower()),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no account {address}")

        await self._write(fn)

    async def update_account(
        self,
        address: str,
        *,
        may_send_as_anyone: bool | None = None,
        quota_bytes: int | None = None,
        apop_secret: str | None = None,
        disabled: bool | None = None,
    ) -> None:
        changes: dict[str, Any] = {}
        if may_send_as_anyone is not None:
            changes["may_send_as_anyone"] = int(may_send_as_anyone)
        if quota_bytes is not None:
            changes["quota_bytes"] = quota_bytes
            self._quota_seen.clear()
        if apop_secret is not None:
            changes["apop_secret"] = apop_secret or None
        if disabled is not None:
            changes["disabled"] = int(disabled)
        if not changes:
            return
        sets = ", ".join(f"{k}=?" for k in changes)

        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            cur = conn.execute(
                f"UPDATE accounts SET {sets} WHERE address=?",  # noqa: S608 (keys are ours)
                (*changes.values(), address.lower()),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no account {address}")

        await self._write(fn)

    async def remove_account(self, address: str) -> None:
        address = address.lower()

        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            row = conn.execute("SELECT id FROM accounts WHERE address=?", (address,)).fetchone()
            if row is None:
                raise NotFound(f"no account {address}")
            boxes = [r[0] for r in conn.execute(
                "SELECT id FROM mailboxes WHERE account_id=?", (row[0],))]
            for box in boxes:
                conn.execute("DELETE FROM messages WHERE mailbox_id=?", (box,))
                conn.execute("DELETE FROM expunged WHERE mailbox_id=?", (box,))
            conn.execute("DELETE FROM mailboxes WHERE account_id=?", (row[0],))
            conn.execute("DELETE FROM subscriptions WHERE account_id=?", (row[0],))
            conn.execute("DELETE FROM accounts WHERE id=?", (row[0],))

        await self._write(fn)

    async def get_account(self, address: str) -> Account | None:
        rows = await self._query(
            f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE address=?",  # noqa: S608
            (address.lower(),),
        )
        return _account(rows[0]) if rows else None

    async def get_account_by_id(self, account_id: int) -> Account | None:
        rows = await self._query(
            f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE id=?", (account_id,)  # noqa: S608
        )
        return _account(rows[0]) if rows else None

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        if domain:
            rows = await self._query(
                f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE address LIKE ? "  # noqa: S608
                "ORDER BY address", (f"%@{domain.lower()}",),
            )
        else:
            rows = await self._query(
                f"SELECT {_ACCOUNT_COLS} FROM accounts ORDER BY address"  # noqa: S608
            )
        return [_account(r) for r in rows]

    async def account_usage(self, account_id: int) -> int:
        rows = await self._query(
            "SELECT coalesce(sum(m.size),0) FROM messages m JOIN mailboxes b "
            "ON m.mailbox_id=b.id WHERE b.account_id=?", (account_id,),
        )
        return int(rows[0][0])

    async def add_alias(self, source: str, targets: Sequence[str]) -> None:
        text = "\n".join(t.lower() for t in targets)

        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            try:
                conn.execute(
                    "INSERT INTO aliases(source, targets) VALUES (?,?)", (source.lower(), text)
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"alias {source} already exists") from None

        await self._write(fn)

    async def remove_alias(self, source: str) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            cur = conn.execute("DELETE FROM aliases WHERE source=?", (source.lower(),))
            if cur.rowcount == 0:
                raise NotFound(f"no alias {source}")

        await self._write(fn)

    async def get_alias(self, source: str) -> Alias | None:
        rows = await self._query(
            "SELECT source, targets FROM aliases WHERE source=?", (source.lower(),)
        )
        return Alias(rows[0][0], tuple(rows[0][1].split("\n"))) if rows else None

    async def find_addresses(self, addresses: Sequence[str]) -> AddressRecords:
        wanted = sorted({a.lower() for a in addresses})
        found = AddressRecords({}, {})
        if not wanted:
            return found
        marks = ", ".join("?" * len(wanted))
        # a few rows by unique key, once per RCPT: on the loop (see _query_now), where the
        # hop to a reader thread and back cost more CPU than the read itself
        rows = self._query_now(
            f"SELECT {_ACCOUNT_COLS}, NULL FROM accounts WHERE address IN ({marks}) "  # noqa: S608
            f"UNION ALL SELECT {_ALIAS_ROW}, targets "
            f"FROM aliases WHERE source IN ({marks})", (*wanted, *wanted),
        )
        for row in rows:
            if row[-1] is None:
                account = _account(row[:-1])
                found.accounts[account.address] = account
            else:
                found.aliases[row[1]] = Alias(row[1], tuple(row[-1].split("\n")))
        return found

    async def list_aliases(self, domain: str | None = None) -> list[Alias]:
        if domain:
            rows = await self._query(
                "SELECT source, targets FROM aliases WHERE source LIKE ? ORDER BY source",
                (f"%@{domain.lower()}",),
            )
        else:
            rows = await self._query("SELECT source, targets FROM aliases ORDER BY source")
        return [Alias(s, tuple(t.split("\n"))) for s, t in rows]

    async def aliases_naming(self, address: str) -> list[str]:
        # targets are kept one per line: a whole line matches, not a part of an address
        rows = await self._query(
            "SELECT source FROM aliases WHERE source NOT LIKE '@%' AND "
            "instr(char(10)||targets||char(10), char(10)||?||char(10)) > 0 ORDER BY source",
            (address.lower(),),
        )
        return [r[0] for r in rows]

    # --- acceptance -----------------------------------------------------------------

    async def accept(
        self,
        data: bytes | SpooledMessage,
        envelope: Envelope,
        local: Sequence[LocalTarget],
        remote: Sequence[RemoteRecipient] = (),
        message_id: str | None = None,
    ) -> AcceptResult:
        message_id = message_id or new_message_id()
        now = time.time()
        env_json = json.dumps({
            "sender": envelope.sender, "ret": envelope.ret, "envid": envelope.envid,
            "smtputf8": envelope.smtputf8, "body_8bit": envelope.body_8bit,
            "authenticated_as": envelope.authenticated_as,
            **stream_fields(envelope),
        })
        # Filled by the writer thread; watchers of these mailboxes wake after the commit.
        touched: set[int] = set()
        size = _blob_size(data)

        def fn(conn: sqlite3.Connection, blob_id: int | None) -> AcceptResult:
            assert blob_id is not None
            uids: list[tuple[int, int]] = []
            for target in local:
                box_id, uid = self._file(conn, target, blob_id, size, size, now)
                touched.add(box_id)
                uids.append((box_id, uid))
            for rcpt in remote:
                conn.execute(
                    "INSERT INTO queue(message_id, blob_id, envelope, recipient, notify, orcpt,"
                    " state, next_attempt, created, priority) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (message_id, blob_id, env_json, rcpt.address, rcpt.notify, rcpt.orcpt,
                     QueueState.PENDING.value, now, now, envelope.priority),
                )
            return AcceptResult(message_id, blob_id, tuple(uids))

        result = await self._write(fn, blob=data, touched=touched,
                                   small=not remote and self._small_delivery(local))
        if remote:
            self._wake_queue()
        return result

    def _small_delivery(self, local: Sequence[LocalTarget]) -> bool:
        """A delivery whose SQL is a few rows (an IMAP APPEND, a message to a few local
        users), so it may commit on the event loop: no target account has a quota, whose
        check sums the sizes of every message of the account. Whether an account has one
        is looked up again after QUOTA_SEEN_SECONDS: a quota set meanwhile (by the CLI) is
        still enforced, by the job's own check, only on the loop for that while."""
        ids = {t.account_id for t in local}
        if not ids or len(ids) > 8:
            return False
        now = time.monotonic()
        seen = self._quota_seen
        stale = sorted(i for i in ids if now - seen.get(i, (-QUOTA_SEEN_SECONDS, False))[0]
                       >= QUOTA_SEEN_SECONDS)
        if stale:
            rows = self._query_now(
                f"SELECT id, quota_bytes>0 FROM accounts WHERE id IN "  # noqa: S608
                f"({','.join('?' * len(stale))})", stale,
            )
            for account in stale:
                seen[account] = (now, False)  # gone: the delivery fails in its job anyway
            for account, has_quota in rows:
                seen[account] = (now, bool(has_quota))
        return not any(seen[i][1] for i in ids)

    def _file(self, conn: sqlite3.Connection, target: LocalTarget, blob_id: int, size: int,
              growth: int, now: float) -> tuple[int, int]:
        """One message row for ``target`` (quota checked for ``growth`` bytes): its
        mailbox and UID."""
        box_id = self._target_mailbox(conn, target)
        self._check_quota(conn, target.account_id, growth)
        uid, modseq = self._next_uid(conn, box_id)
        conn.execute(
            "INSERT INTO messages VALUES (?,?,?,?,?,?,?)",
            (box_id, uid, blob_id, size,
             target.internaldate if target.internaldate is not None else now,
             flags_text(target.flags), modseq),
        )
        return box_id, uid

    @staticmethod
    def _target_mailbox(conn: sqlite3.Connection, target: LocalTarget) -> int:
        """The target's mailbox, or its INBOX when that mailbox is gone (e.g. a deleted
        Junk): a delivery never fails for want of a folder."""
        for name in (normalize_mailbox_name(target.mailbox), "INBOX"):
            row = conn.execute(
                "SELECT id FROM mailboxes WHERE account_id=? AND name=?",
                (target.account_id, name),
            ).fetchone()
            if row is not None:
                return int(row[0])
        raise NotFound(f"account {target.account_id} has no mailbox {target.mailbox}")

    @staticmethod
    def _check_quota(conn: sqlite3.Connection, account_id: int, size: int) -> None:
        quota = conn.execute(
            "SELECT quota_bytes FROM accounts WHERE id=?", (account_id,)
        ).fetchone()
        if quota is None or not quota[0]:
            return
        used = conn.execute(
            "SELECT coalesce(sum(m.size),0) FROM messages m JOIN mailboxes b "
            "ON m.mailbox_id=b.id WHERE b.account_id=?", (account_id,),
        ).fetchone()[0]
        if used + size > quota[0]:
            raise QuotaExceeded(f"account {account_id} is over its quota")

    @staticmethod
    def _next_uid(conn: sqlite3.Connection, box_id: int) -> tuple[int, int]:
        row = conn.execute(
            "UPDATE mailboxes SET uidnext=uidnext+1, highestmodseq=highestmodseq+1 "
            "WHERE id=? RETURNING uidnext-1, highestmodseq", (box_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"mailbox {box_id} is gone")
        return int(row[0]), int(row[1])

    @staticmethod
    def _bump_modseq(conn: sqlite3.Connection, box_id: int) -> int:
        row = conn.execute(
            "UPDATE mailboxes SET highestmodseq=highestmodseq+1 WHERE id=? "
            "RETURNING highestmodseq", (box_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"mailbox {box_id} is gone")
        return int(row[0])

    async def read_blob(self, blob_id: int) -> bytes:
        for _attempt in range(2):
            # on the loop: a primary-key read whose data, if any, is at most INLINE_MAX
            rows = self._query_now(
                "SELECT segment, offset, length, data, sha256 FROM blobs WHERE id=?", (blob_id,)
            )
            if not rows:
                raise NotFound(f"no blob {blob_id}")
            segment, offset, length, inline, digest = rows[0]
            if inline is not None:
                data = bytes(inline)
                check_blob(blob_id, data, length, digest)
                return data
            try:
                return await asyncio.to_thread(
                    self._read_segment, blob_id, segment, offset, length, digest
                )
            except FileNotFoundError:
                continue  # compaction moved it between the lookup and the open: look again
        raise StorageCorrupt(f"blob {blob_id}: segment {segment} is missing")

    async def blob_size(self, blob_id: int) -> int:
        rows = await self._query("SELECT length FROM blobs WHERE id=?", (blob_id,))
        if not rows:
            raise NotFound(f"no blob {blob_id}")
        return int(rows[0][0])

    async def stream_blob(
        self, blob_id: int, offset: int = 0, length: int | None = None,
        chunk: int = 256 * 1024,
    ) -> AsyncIterator[bytes]:
        """The blob's bytes ``[offset, offset+length)`` in chunks, so a 25 MB message is
        never whole in memory. The blob is checked against its checksum before the first
        chunk (a streamed hash, remembered for the next reads of the same blob)."""
        rows = await self._query(
            "SELECT segment, offset, length, data, sha256 FROM blobs WHERE id=?", (blob_id,)
        )
        if not rows:
            raise NotFound(f"no blob {blob_id}")
        segment, base, size, inline, digest = rows[0]
        end = size if length is None else min(size, offset + length)
        if inline is not None:
            data = bytes(inline)
            check_blob(blob_id, data, size, digest)
            for pos in range(offset, end, chunk):
                yield data[pos:min(end, pos + chunk)]
            return
        path = self.blob_dir / f"{segment}.seg"
        fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
        try:
            if blob_id not in self._verified:
                await asyncio.to_thread(_check_segment_blob, fd, blob_id, base, size, digest)
                self._verified[blob_id] = None
                if len(self._verified) > 4096:
                    self._verified.pop(next(iter(self._verified)))
            pos = offset
            while pos < end:
                n = min(chunk, end - pos)
                part = await asyncio.to_thread(os.pread, fd, n, base + pos)
                if len(part) != n:
                    raise StorageCorrupt(f"blob {blob_id} is truncated on disk")
                yield part
                pos += n
        finally:
            os.close(fd)

    def _read_segment(
        self, blob_id: int, segment: str, offset: int, length: int, digest: bytes | None
    ) -> bytes:
        fd = os.open(self.blob_dir / f"{segment}.seg", os.O_RDONLY)
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        check_blob(blob_id, data, length, digest)
        return data

    # --- mailboxes ------------------------------------------------------------------

    async def list_mailboxes(self, account_id: int) -> list[MailboxInfo]:
        rows = await self._query_small(  # UNIQUE(account_id, name) gives the order
            f"SELECT {_MAILBOX_COLS} FROM mailboxes WHERE account_id=? ORDER BY name",  # noqa: S608
            (account_id,),
        )
        return [_mailbox(r) for r in rows]

    async def get_mailbox(self, account_id: int, name: str) -> MailboxInfo | None:
        rows = self._query_now(
            f"SELECT {_MAILBOX_COLS} FROM mailboxes WHERE account_id=? AND name=?",  # noqa: S608
            (account_id, normalize_mailbox_name(name)),
        )
        return _mailbox(rows[0]) if rows else None

    async def create_mailbox(
        self,
        account_id: int,
        name: str,
        special_use: SpecialUse | None = None,
        subscribe: bool = False,
    ) -> MailboxInfo:
        name = normalize_mailbox_name(name)
        validity = self._uidvalidity_base()

        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            if conn.execute(
                "SELECT 1 FROM mailboxes WHERE account_id=? AND name=?", (account_id, name)
            ).fetchone():
                raise AlreadyExists(f"mailbox {name} already exists")
            conn.execute(
                "INSERT INTO mailboxes(account_id, name, uidvalidity, special_use)"
                " VALUES (?,?,?,?)",
                (account_id, name, self._next_uidvalidity(conn, validity),
                 special_use.value if special_use else None),
            )
            if subscribe:
                conn.execute(
                    "INSERT OR IGNORE INTO subscriptions VALUES (?,?)", (account_id, name)
                )

        await self._write(fn)
        box = await self.get_mailbox(account_id, name)
        assert box is not None
        return box

    async def delete_mailbox(self, account_id: int, name: str) -> None:
        name = normalize_mailbox_name(name)
        if name == "INBOX":
            raise StoreError("INBOX cannot be deleted")
        box = await self.get_mailbox(account_id, name)
        if box is None:
            raise NotFound(f"no mailbox {name}")

        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute("DELETE FROM messages WHERE mailbox_id=?", (box.id,))
            conn.execute("DELETE FROM expunged WHERE mailbox_id=?", (box.id,))
            conn.execute("DELETE FROM mailboxes WHERE id=?", (box.id,))

        await self._write(fn, touched={box.id})

    async def rename_mailbox(self, account_id: int, old: str, new: str) -> None:
        old, new = normalize_mailbox_name(old), normalize_mailbox_name(new)
        box = await self.get_mailbox(account_id, old)
        if box is None:
            raise NotFound(f"no mailbox {old}")
        if await self.get_mailbox(account_id, new) is not None:
            raise AlreadyExists(f"mailbox {new} already exists")
        validity = self._uidvalidity_base()

        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            if old == "INBOX":
                # RFC 9051 §6.3.6: messages move to the new mailbox, INBOX stays, empty.
                cur = conn.execute(
                    "INSERT INTO mailboxes(account_id, name, uidvalidity, uidnext, highestmodseq)"
                    " VALUES (?,?,?,?,?)",
                    (account_id, new, self._next_uidvalidity(conn, validity), box.uidnext,
                     box.highestmodseq),
                )
                conn.execute(
                    "UPDATE messages SET mailbox_id=? WHERE mailbox_id=?", (cur.lastrowid, box.id)
                )
                modseq = self._bump_modseq(conn, box.id)
                conn.execute(
                    "INSERT OR REPLACE INTO expunged SELECT ?, uid, ? FROM messages "
                    "WHERE mailbox_id=?", (box.id, modseq, cur.lastrowid),
                )
                return
            conn.execute("UPDATE mailboxes SET name=? WHERE id=?", (new, box.id))
            self._rename_subscription(conn, account_id, old, new)
            children = conn.execute(
                "SELECT id, name FROM mailboxes WHERE account_id=? AND substr(name,1,?)=?",
                (account_id, len(old) + 1, old + "/"),
            ).fetchall()
            for child_id, child_name in children:
                renamed = new + child_name[len(old):]
                conn.execute("UPDATE mailboxes SET name=? WHERE id=?", (renamed, child_id))
                self._rename_subscription(conn, account_id, child_name, renamed)

        await self._write(fn, touched={box.id})

    @staticmethod
    def _rename_subscription(conn: sqlite3.Connection, account_id: int, old: str, new: str
                             ) -> None:
        conn.execute(
            "UPDATE OR REPLACE subscriptions SET name=? WHERE account_id=? AND name=?",
            (new, account_id, old),
        )

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        """Subscriptions are names: they may outlive their mailbox (RFC 9051 §6.3.7)."""
        name = normalize_mailbox_name(name)

        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            if subscribed:
                conn.execute(
                    "INSERT OR IGNORE INTO subscriptions VALUES (?,?)", (account_id, name)
                )
            else:
                conn.execute(
                    "DELETE FROM subscriptions WHERE account_id=? AND name=?", (account_id, name)
                )

        await self._write(fn, durable=self.fsync_always)

    async def list_subscriptions(self, account_id: int) -> list[str]:
        rows = self._query_now(  # an index range of one account's names
            "SELECT name FROM subscriptions WHERE account_id=? ORDER BY name", (account_id,)
        )
        return [r[0] for r in rows]

    async def mailbox_status(self, mailbox_id: int) -> MailboxStatus:
        # STATUS (RFC 9051 §6.3.11) counts the messages: on the loop's connection for a
        # mailbox of up to INLINE_CHANGES messages (one statement, at most that many rows
        # walked), on a reader thread for a bigger one
        row = self._query_now(_STATUS_SQL.format(limit=f"LIMIT {INLINE_CHANGES + 1:d}"),
                              (mailbox_id,))[0]
        if row[0] is not None and row[4] > INLINE_CHANGES:

            def read(conn: sqlite3.Connection) -> tuple[Any, ...]:
                return tuple(conn.execute(_STATUS_SQL.format(limit=""), (mailbox_id,))
                             .fetchone())

            row = await self._read(read)  # one hop: the counts scan the whole mailbox
        if row[0] is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        uidnext, validity, modseq, _first_recent, total, size, seen, deleted, recent = row
        return MailboxStatus(
            messages=total, unseen=total - seen, deleted=deleted, size=size,
            uidnext=uidnext, uidvalidity=validity, highestmodseq=modseq, recent=recent,
        )

    # --- messages -------------------------------------------------------------------

    async def list_messages(self, mailbox_id: int) -> list[MessageMeta]:
        rows = await self._query(
            "SELECT uid, blob_id, size, internaldate, flags, modseq FROM messages "
            "WHERE mailbox_id=? ORDER BY uid", (mailbox_id,),
        )
        return [_meta(r) for r in rows]

    async def changes_since(self, mailbox_id: int, modseq: int) -> Changes:
        # Every IMAP command asks (RFC 9051 §7.5.1). One statement on the loop's connection
        # reads the HIGHESTMODSEQ and up to INLINE_CHANGES changed and expunged rows: one
        # read snapshot and one GIL hand-off instead of three; kind 0 is the mailbox row,
        # 1 a changed message, 2 an expunged UID. When nothing changed, the two index
        # probes find no row. Many changes go to a reader thread instead.
        rows = self._query_now(_CHANGES_SQL, (mailbox_id, modseq, INLINE_CHANGES + 1))
        box = [r for r in rows if r[0] == 0]
        if not box:
            raise NotFound(f"no mailbox {mailbox_id}")
        highest = int(box[0][1])
        if len(rows) == 1:  # the common NOOP/IDLE case: nothing happened
            return Changes(highest, (), ())
        changed = [r[1:] for r in rows if r[0] == 1]
        gone = [r[1] for r in rows if r[0] == 2]
        if len(changed) > INLINE_CHANGES or len(gone) > INLINE_CHANGES:

            def read(conn: sqlite3.Connection) -> tuple[int, list[Any], list[Any]]:
                # No ORDER BY uid in SQL: it would make SQLite walk the primary key (every
                # message) instead of the (mailbox_id, modseq) index.
                conn.execute("BEGIN")  # the three reads see one snapshot
                try:
                    top = conn.execute("SELECT highestmodseq FROM mailboxes WHERE id=?",
                                       (mailbox_id,)).fetchone()
                    changed = conn.execute(
                        "SELECT uid, blob_id, size, internaldate, flags, modseq FROM messages "
                        "WHERE mailbox_id=? AND modseq>?", (mailbox_id, modseq),
                    ).fetchall()
                    gone = conn.execute(
                        "SELECT uid FROM expunged WHERE mailbox_id=? AND modseq>?",
                        (mailbox_id, modseq),
                    ).fetchall()
                finally:
                    conn.execute("COMMIT")
                return (int(top[0]) if top else highest), changed, [r[0] for r in gone]

            highest, changed, gone = await self._read(read)
        return Changes(
            highest,
            tuple(sorted((_meta(r) for r in changed), key=lambda m: m.uid)),
            tuple(sorted(gone)),
        )

    async def store_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        flags: frozenset[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> FlagUpdate:
        wanted = sorted(set(uids))

        def fn(conn: sqlite3.Connection, _: int | None) -> FlagUpdate:
            changed: list[MessageMeta] = []
            failed: list[int] = []
            modseq: int | None = None
            for uid in wanted:
                row = conn.execute(
                    "SELECT uid, blob_id, size, internaldate, flags, modseq FROM messages "
                    "WHERE mailbox_id=? AND uid=?", (mailbox_id, uid),
                ).fetchone()
                if row is None:
                    continue
                meta = _meta(row)
                if unchanged_since is not None and meta.modseq > unchanged_since:
                    failed.append(uid)
                    continue
                new = apply_flags(meta.flags, flags, mode)
                if new == meta.flags:
                    continue
                if modseq is None:
                    modseq = self._bump_modseq(conn, mailbox_id)
                conn.execute(
                    "UPDATE messages SET flags=?, modseq=? WHERE mailbox_id=? AND uid=?",
                    (flags_text(new), modseq, mailbox_id, uid),
                )
                changed.append(MessageMeta(
                    meta.uid, meta.blob_id, meta.size, meta.internaldate, new, modseq))
            return FlagUpdate(tuple(changed), tuple(failed))

        # storage.fsync = "optimized" (Dovecot's mail_fsync default): a crash may undo a
        # flag change, which no message depends on (docs/config/README.md, security)
        return await self._write(fn, touched={mailbox_id}, durable=self.fsync_always,
                                 small=len(wanted) <= INLINE_CHANGES)

    def _copy_fn(
        self, mailbox_id: int, uids: Sequence[int], target: int, move: bool
    ) -> Callable[[sqlite3.Connection, int | None], list[tuple[int, int]]]:
        wanted = sorted(set(uids))

        def fn(conn: sqlite3.Connection, _: int | None) -> list[tuple[int, int]]:
            if conn.execute("SELECT 1 FROM mailboxes WHERE id=?", (target,)).fetchone() is None:
                raise NotFound("target mailbox is gone")
            pairs: list[tuple[int, int]] = []
            account = conn.execute(
                "SELECT account_id FROM mailboxes WHERE id=?", (target,)
            ).fetchone()[0]
            for uid in wanted:
                row = conn.execute(
                    "SELECT blob_id, size, internaldate, flags FROM messages "
                    "WHERE mailbox_id=? AND uid=?", (mailbox_id, uid),
                ).fetchone()
                if row is None:
                    continue
                if not move:
                    self._check_quota(conn, account, row[1])
                new_uid, modseq = self._next_uid(conn, target)
                conn.execute(
                    "INSERT INTO messages VALUES (?,?,?,?,?,?,?)",
                    (target, new_uid, row[0], row[1], row[2], row[3], modseq),
                )
                pairs.append((uid, new_uid))
            if move and pairs:
                self._expunge_uids(conn, mailbox_id, [p[0] for p in pairs])
            return pairs

        return fn

    async def copy_messages(
        self, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int
    ) -> list[tuple[int, int]]:
        fn = self._copy_fn(mailbox_id, uids, target_mailbox_id, move=False)
        return await self._write(fn, touched={target_mailbox_id})

    async def move_messages(
        self, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int
    ) -> list[tuple[int, int]]:
        fn = self._copy_fn(mailbox_id, uids, target_mailbox_id, move=True)
        return await self._write(fn, touched={mailbox_id, target_mailbox_id})

    def _expunge_uids(self, conn: sqlite3.Connection, mailbox_id: int, uids: list[int]) -> None:
        modseq = self._bump_modseq(conn, mailbox_id)
        for uid in uids:
            conn.execute("DELETE FROM messages WHERE mailbox_id=? AND uid=?", (mailbox_id, uid))
            conn.execute(
                "INSERT OR REPLACE INTO expunged VALUES (?,?,?)", (mailbox_id, uid, modseq)
            )

    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]:
        wanted = None if uids is None else set(uids)
        small = False
        if wanted is None:
            # EXPUNGE and CLOSE mostly find nothing to remove (imaptest: 2 in 3): a look
            # at up to INLINE_CHANGES messages on the loop's connection spares the write
            # transaction and the hop to the writer; a bigger mailbox is left to the writer
            total, deleted = self._query_now(_DELETED_SQL, (mailbox_id, INLINE_CHANGES + 1))[0]
            if total <= INLINE_CHANGES and not deleted:
                return []
            small = total <= INLINE_CHANGES  # fn reads every message of the mailbox

        def fn(conn: sqlite3.Connection, _: int | None) -> list[int]:
            rows = conn.execute(
                "SELECT uid, flags FROM messages WHERE mailbox_id=? ORDER BY uid", (mailbox_id,)
            ).fetchall()
            if wanted is None:
                gone = [uid for uid, flags in rows if "\\Deleted" in flags_set(flags)]
            else:
                gone = [uid for uid, _flags in rows if uid in wanted]
            if gone:
                self._expunge_uids(conn, mailbox_id, gone)
            return gone

        # optimized: a crash may bring an expunged message back, never lose one; the bytes
        # stay until a later (durable) compaction commit, which syncs this one's WAL frames
        return await self._write(fn, touched={mailbox_id}, durable=self.fsync_always,
                                 small=small)

    async def replace_message(self, mailbox_id: int, uid: int, data: bytes | SpooledMessage,
                              target: LocalTarget) -> AcceptResult:
        size = _blob_size(data)
        touched = {mailbox_id}
        now = time.time()

        def fn(conn: sqlite3.Connection, blob_id: int | None) -> AcceptResult:
            assert blob_id is not None
            old = conn.execute(
                "SELECT m.size, b.account_id FROM messages m JOIN mailboxes b "
                "ON b.id=m.mailbox_id WHERE m.mailbox_id=? AND m.uid=?", (mailbox_id, uid),
            ).fetchone()
            if old is None:
                raise NotFound(f"no message {uid} in mailbox {mailbox_id} to replace")
            # RFC 8508 §3.4: the quota sees the net growth (the old message goes too)
            freed = int(old[0]) if int(old[1]) == target.account_id else 0
            box_id, new_uid = self._file(conn, target, blob_id, size, size - freed, now)
            touched.add(box_id)
            self._expunge_uids(conn, mailbox_id, [uid])
            return AcceptResult(new_message_id(), blob_id, ((box_id, new_uid),))

        return await self._write(fn, blob=data, touched=touched)

    async def claim_recent(self, mailbox_id: int) -> int:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            row = conn.execute(
                "SELECT first_recent_uid, uidnext FROM mailboxes WHERE id=?", (mailbox_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            conn.execute(
                "UPDATE mailboxes SET first_recent_uid=? WHERE id=?", (row[1], mailbox_id)
            )
            return int(row[0])

        # \Recent is a hint (RFC 3501 §2.3.2): a claim lost in a crash costs nothing
        return await self._write(fn, durable=self.fsync_always, small=True)

    def watch(self, mailbox_id: int) -> _Watcher:
        watcher = _Watcher(self, mailbox_id)
        self._watchers.setdefault(mailbox_id, set()).add(watcher)
        if self._mailbox_poller is None:
            self._mailbox_poller = asyncio.get_running_loop().create_task(
                self._poll_mailboxes())
        return watcher

    async def _poll_mailboxes(self, interval: float = 0.25) -> None:
        """Writes by this process wake watchers at once (``_finish``); writes by another
        process (``pochta serve --workers``, the CLI) are seen here, by the mailbox's
        HIGHESTMODSEQ, within ``interval``."""
        seen: dict[int, int] = {}
        while True:
            ids = list(self._watchers)
            if ids:
                try:
                    rows = await self._query(
                        f"SELECT id, highestmodseq FROM mailboxes WHERE id IN "  # noqa: S608
                        f"({','.join('?' * len(ids))})", ids,
                    )
                except StoreError as exc:
                    log.warning("mailbox change poll failed: %s", exc)
                    rows = []
                current = {int(r[0]): int(r[1]) for r in rows}
                for box_id in ids:
                    modseq = current.get(box_id, -1)  # -1: deleted by someone else
                    if box_id in seen and seen[box_id] != modseq:
                        for watcher in self._watchers.get(box_id, ()):
                            watcher.notify()
                    seen[box_id] = modseq
                for gone in set(seen) - set(ids):
                    del seen[gone]
            await asyncio.sleep(interval)

    def _unwatch(self, watcher: _Watcher) -> None:
        group = self._watchers.get(watcher.mailbox_id)
        if group is not None:
            group.discard(watcher)
            if not group:
                del self._watchers[watcher.mailbox_id]

    # --- outbound queue -------------------------------------------------------------

    _QUEUE_COLS = (
        "id, message_id, blob_id, envelope, recipient, notify, orcpt, state, attempts, "
        "next_attempt, last_reply, created"
    )

    @staticmethod
    def _queue_item(row: tuple[Any, ...]) -> QueueItem:
        (id_, mid, blob_id, env, rcpt, notify, orcpt, state, attempts, nxt, reply, created) = row
        e = json.loads(env)
        envelope = Envelope(
            e["sender"], e.get("ret"), e.get("envid"), bool(e.get("smtputf8")),
            bool(e.get("body_8bit")), e.get("authenticated_as"), e.get("stream", ""),
            int(e.get("priority", 0)),
        )
        return QueueItem(
            id_, mid, blob_id, envelope, RemoteRecipient(rcpt, notify, orcpt),
            QueueState(state), attempts, nxt, reply, created,
        )

    async def due_queue_items(self, now: float, limit: int = 100) -> list[QueueItem]:
        rows = await self._query(
            f"SELECT {self._QUEUE_COLS} FROM queue WHERE state IN ('pending','deferred') "  # noqa: S608
            "AND id NOT IN (SELECT item_id FROM queue_holds) "
            "AND next_attempt<=? ORDER BY next_attempt LIMIT ?", (now, limit),
        )
        return [self._queue_item(r) for r in rows]

    async def list_queue(self) -> list[QueueItem]:
        rows = await self._query(f"SELECT {self._QUEUE_COLS} FROM queue ORDER BY id")  # noqa: S608
        return [self._queue_item(r) for r in rows]

    async def claim_queue_items(
        self, now: float, limit: int, owner: str, lease: float
    ) -> list[QueueItem]:
        def fn(conn: sqlite3.Connection, _: int | None) -> list[QueueItem]:
            rows = conn.execute(
                f"UPDATE queue SET claimed_by=?, lease_until=? WHERE id IN ("  # noqa: S608
                "SELECT id FROM queue WHERE state IN ('pending','deferred') AND "
                "id NOT IN (SELECT item_id FROM queue_holds) AND "
                "next_attempt<=? AND (claimed_by IS NULL OR lease_until<?) "
                # higher priority first (streams, issue 18), then oldest due
                f"ORDER BY priority DESC, next_attempt LIMIT ?) RETURNING {self._QUEUE_COLS}",
                (owner, now + lease, now, now, limit),
            ).fetchall()
            return sorted((self._queue_item(r) for r in rows),
                          key=lambda i: (-i.envelope.priority, i.next_attempt))

        return await self._write(fn)

    async def renew_queue_claims(
        self, item_ids: Sequence[int], owner: str, until: float
    ) -> int:
        wanted = list(item_ids)

        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            return sum(
                conn.execute(
                    "UPDATE queue SET lease_until=? WHERE id=? AND claimed_by=?",
                    (until, item_id, owner),
                ).rowcount
                for item_id in wanted
            )

        return await self._write(fn)

    async def queue_claim_owners(self) -> list[str]:
        rows = await self._query(
            "SELECT DISTINCT claimed_by FROM queue WHERE claimed_by IS NOT NULL "
            "AND state IN ('pending','deferred')"
        )
        return [r[0] for r in rows]

    async def release_queue_claims_of(self, owner: str) -> int:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            return conn.execute(
                "UPDATE queue SET claimed_by=NULL, lease_until=NULL WHERE claimed_by=?",
                (owner,),
            ).rowcount

        return await self._write(fn)

    async def release_queue_items(self, item_ids: Sequence[int], owner: str) -> None:
        wanted = list(item_ids)

        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            for item_id in wanted:
                conn.execute(
                    "UPDATE queue SET claimed_by=NULL, lease_until=NULL WHERE id=? AND "
                    "claimed_by=?", (item_id, owner),
                )

        await self._write(fn)

    async def update_queue_item(
        self, item_id: int, state: QueueState, next_attempt: float, last_reply: str
    ) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            cur = conn.execute(
                "UPDATE queue SET state=?, next_attempt=?, last_reply=?, attempts=attempts+1, "
                "claimed_by=NULL, lease_until=NULL WHERE id=?",
                (state.value, next_attempt, last_reply, item_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no queue item {item_id}")

        await self._write(fn)

    async def delete_queue_item(self, item_id: int) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            if conn.execute("DELETE FROM queue WHERE id=?", (item_id,)).rowcount == 0:
                raise NotFound(f"no queue item {item_id}")

        await self._write(fn)

    async def reschedule_queue_items(self, item_ids: Sequence[int], when: float) -> int:
        """Make pending/deferred items due at ``when`` without counting an attempt, and
        wake every queue worker (``pochta queue retry|flush``)."""
        wanted = list(item_ids)

        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            n = 0
            for item_id in wanted:
                n += conn.execute(
                    "UPDATE queue SET next_attempt=? WHERE id=? AND state IN "
                    "('pending','deferred')", (when, item_id),
                ).rowcount
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('queue_wake', '1') ON CONFLICT(key) "
                "DO UPDATE SET value=CAST(value AS INTEGER)+1"
            )
            return n

        n = await self._write(fn)
        self._wake_queue()
        return n

    def watch_queue(self) -> _QueueWatcher:
        watcher = _QueueWatcher(self)
        self._queue_watchers.add(watcher)
        if self._queue_poller is None:
            self._queue_poller = asyncio.get_running_loop().create_task(self._poll_queue_wake())
        return watcher

    def _wake_queue(self) -> None:
        for watcher in self._queue_watchers:
            watcher.notify()

    async def _poll_queue_wake(self, interval: float = 0.5) -> None:
        """Another process (the CLI) cannot reach this one's watchers: it bumps a counter
        that this cheap poll notices."""
        last: str | None = None
        first = True
        while True:
            rows = await self._query("SELECT value FROM meta WHERE key='queue_wake'")
            value = rows[0][0] if rows else None
            if not first and value != last:
                self._wake_queue()
            last, first = value, False
            await asyncio.sleep(interval)

    async def purge_queue(self, finished_before: float) -> int:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            cur = conn.execute(
                "DELETE FROM queue WHERE state IN ('delivered','failed') AND next_attempt<?",
                (finished_before,),
            )
            return cur.rowcount

        return await self._write(fn)

    # --- coordination (locks and counters shared by processes) ------------------------

    async def try_lock(self, name: str, owner: str, ttl: float) -> bool:
        def fn(conn: sqlite3.Connection, _: int | None) -> bool:
            now = time.time()
            row = conn.execute(
                "INSERT INTO locks(name, owner, expires) VALUES (?,?,?) ON CONFLICT(name) "
                "DO UPDATE SET owner=excluded.owner, expires=excluded.expires "
                "WHERE locks.owner=excluded.owner OR locks.expires<? RETURNING owner",
                (name, owner, now + ttl, now),
            ).fetchone()
            return row is not None

        return await self._write(fn)

    async def unlock(self, name: str, owner: str) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute("DELETE FROM locks WHERE name=? AND owner=?", (name, owner))

        await self._write(fn)

    async def add_to_counter(self, key: str, amount: int, window: float) -> int:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            now = time.time()
            conn.execute(
                "INSERT INTO counters(key, second, amount) VALUES (?,?,?) ON CONFLICT(key, "
                "second) DO UPDATE SET amount=amount+excluded.amount",
                (key, int(now), amount),
            )
            conn.execute("DELETE FROM counters WHERE key=? AND second<=?",
                         (key, int(now - window)))
            (total,) = conn.execute(
                "SELECT coalesce(sum(amount),0) FROM counters WHERE key=?", (key,)
            ).fetchone()
            return int(total)

        return await self._write(fn)

    async def counter_value(self, key: str, window: float) -> int:
        rows = await self._query(
            "SELECT coalesce(sum(amount),0) FROM counters WHERE key=? AND second>?",
            (key, int(time.time() - window)),
        )
        return int(rows[0][0])

    async def reset_counter(self, key: str) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute("DELETE FROM counters WHERE key=?", (key,))

        await self._write(fn)

    # --- integrity and space --------------------------------------------------------

    async def verify_blobs(self) -> list[BlobProblem]:
        return await asyncio.to_thread(self._verify_blobs)

    def _verify_blobs(self) -> list[BlobProblem]:
        conn = _connect(self.data_dir / "pochta.db")
        problems: list[BlobProblem] = []
        try:
            rows = conn.execute(
                "SELECT id, segment, offset, length, data IS NOT NULL, sha256 FROM blobs "
                "ORDER BY segment, offset"
            )
            for blob_id, segment, offset, length, inline, digest in rows:
                try:
                    if inline:
                        (data,) = conn.execute(
                            "SELECT data FROM blobs WHERE id=?", (blob_id,)
                        ).fetchone()
                        check_blob(blob_id, bytes(data), length, digest)
                    else:  # in chunks: a 25 MB blob is never whole in memory
                        fd = os.open(self.blob_dir / f"{segment}.seg", os.O_RDONLY)
                        try:
                            _check_segment_blob(fd, blob_id, offset, length, digest)
                        finally:
                            os.close(fd)
                except StorageCorrupt as exc:
                    problems.append(BlobProblem(blob_id, str(exc)))
                except FileNotFoundError:
                    problems.append(BlobProblem(blob_id, f"segment {segment} is missing"))
                except OSError as exc:
                    problems.append(BlobProblem(blob_id, f"cannot read: {exc}"))
        finally:
            conn.close()
        return problems

    async def store_stats(self) -> StoreStats:
        def stats() -> StoreStats:
            conn = _connect(self.data_dir / "pochta.db")
            try:
                blobs, total = conn.execute(
                    "SELECT count(*), coalesce(sum(length),0) FROM blobs"
                ).fetchone()
                dead = conn.execute(
                    "SELECT coalesce(sum(b.length),0) FROM blob_gc g JOIN blobs b "
                    "ON b.id=g.blob_id WHERE NOT EXISTS (SELECT 1 FROM messages m "
                    "WHERE m.blob_id=b.id) AND NOT EXISTS (SELECT 1 FROM queue q WHERE "
                    "q.blob_id=b.id AND q.state IN ('pending','deferred'))"
                ).fetchone()[0]
                on_disk = {
                    r[0]: r[1] for r in conn.execute(
                        "SELECT segment, sum(length) FROM blobs WHERE segment!='' "
                        "GROUP BY segment")
                }
                (free_pages,) = conn.execute("PRAGMA freelist_count").fetchone()
                (page_size,) = conn.execute("PRAGMA page_size").fetchone()
            finally:
                conn.close()
            disk = 0
            orphaned = 0  # segment bytes no blob row points at (failed or moved writes)
            for path in self.data_dir.rglob("*"):
                if path.is_file():
                    size = path.stat().st_size
                    disk += size
                    if path.suffix == ".seg":
                        orphaned += max(0, size - on_disk.get(path.stem, 0))
            return StoreStats(
                blobs=blobs, live_bytes=total - dead,
                reclaimable_bytes=dead + orphaned + free_pages * page_size, disk_bytes=disk,
            )

        return await asyncio.to_thread(stats)

    async def compact(self, min_age: float = 0.0) -> int:
        """Collect blobs unreferenced for at least ``min_age`` seconds (the grace period
        lets a session that still holds an expunged message's blob id read it, and the
        queue build a bounce after marking an item failed), then give their space back."""
        async with self._compact_lock:
            cutoff = time.time() - min_age

            def collect(conn: sqlite3.Connection, _: int | None) -> int:
                candidates = conn.execute(
                    "SELECT blob_id FROM blob_gc WHERE since<=?", (cutoff,)
                ).fetchall()
                freed = 0
                for (blob_id,) in candidates:
                    conn.execute("DELETE FROM blob_gc WHERE blob_id=?", (blob_id,))
                    if conn.execute(
                        "SELECT 1 FROM messages WHERE blob_id=? UNION ALL SELECT 1 FROM queue "
                        "WHERE blob_id=? AND state IN ('pending','deferred') LIMIT 1",
                        (blob_id, blob_id),
                    ).fetchone():
                        continue
                    row = conn.execute(
                        "DELETE FROM blobs WHERE id=? RETURNING length, data IS NOT NULL",
                        (blob_id,),
                    ).fetchone()
                    if row is not None and row[1]:
                        freed += int(row[0])
                conn.execute("PRAGMA incremental_vacuum")
                return freed

            before = await asyncio.to_thread(self._disk_bytes)
            await self._write(collect)
            await self._retire_dead_segment()
            await asyncio.to_thread(self._checkpoint)
            for segment in await asyncio.to_thread(self._segment_names):
                await self._compact_segment(segment)
            after = await asyncio.to_thread(self._disk_bytes)
            return max(0, before - after)

    async def _retire_dead_segment(self) -> None:
        """Stop appending to our own segment when it is mostly dead, so that it can be
        compacted like any other (the next large message opens a new one)."""
        name = self._segment_name
        if name is None:
            return
        rows = await self._query(
            "SELECT coalesce(sum(length),0) FROM blobs WHERE segment=?", (name,)
        )
        live = rows[0][0]
        if live >= COMPACT_LIVE_RATIO * max(self._segment_size, 1):
            return

        def retire(conn: sqlite3.Connection, _: int | None) -> None:
            # Runs in the writer thread after this batch's appends: nothing is lost.
            if self._segment_name == name and self._segment_fd is not None:
                os.close(self._segment_fd)
                self._segment_fd = None
                self._segment_name = None

        await self._write(retire)

    def _disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.data_dir.rglob("*") if p.is_file())

    def _checkpoint(self) -> None:
        conn = _connect(self.data_dir / "pochta.db")
        try:
            self._checkpoint_locked(conn, "TRUNCATE")
        finally:
            conn.close()

    def _checkpoint_locked(self, conn: sqlite3.Connection, mode: str,
                           restart: bool = False) -> None:
        """A checkpoint of the WAL (off the event loop), holding the write lock: no commit
        can then append to the WAL meanwhile, so the checkpoint copies every frame and the
        next commit starts the WAL from its beginning again; and the loop, which never
        waits for the lock, sends its writes to the writer thread instead of waiting in
        SQLite's busy handler for a TRUNCATE checkpoint's lock.

        ``restart``: that next commit is one here, a row rewritten as it is: the commit
        that starts the WAL again syncs its header (synchronous=NORMAL does that much),
        and that fsync should not be the event loop's."""
        fd = os.open(self.data_dir / "pochta.db-writer", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            busy, frames, copied = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            if restart and not busy and frames == copied:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute("UPDATE meta SET value=value WHERE key='schema'")
                finally:
                    conn.execute("COMMIT")
        finally:
            os.close(fd)  # lets go of the flock

    def _segment_names(self) -> list[str]:
        return sorted(p.stem for p in self.blob_dir.glob("*.seg"))

    async def _compact_segment(self, segment: str) -> None:
        """Unlink a segment nothing references, or move its live blobs into a new segment
        when less than COMPACT_LIVE_RATIO of it is live. Skips segments that a live store
        instance is appending to (it holds their flock)."""
        path = self.blob_dir / f"{segment}.seg"
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # still being written (this process or another)
            size = os.fstat(fd).st_size
            live = await self._query(
                "SELECT id, offset, length, sha256 FROM blobs WHERE segment=? ORDER BY offset",
                (segment,),
            )
            live_bytes = sum(r[2] for r in live)
            if live and (size == 0 or live_bytes / size >= COMPACT_LIVE_RATIO):
                return
            if live:
                moved = await asyncio.to_thread(self._copy_live, fd, segment, live)
                if moved is None:
                    return

                def repoint(conn: sqlite3.Connection, _: int | None) -> None:
                    for blob_id, new_segment, new_offset in moved:
                        conn.execute(
                            "UPDATE blobs SET segment=?, offset=? WHERE id=? AND segment=?",
                            (new_segment, new_offset, blob_id, segment),
                        )

                await self._write(repoint)
            path.unlink()
            await asyncio.to_thread(_fsync_dir, self.blob_dir)
            log.info("compacted segment %s: %d live blob(s) moved, %d bytes given back",
                     segment, len(live), size - live_bytes)
        finally:
            os.close(fd)

    def _copy_live(
        self, fd: int, segment: str, live: list[tuple[Any, ...]]
    ) -> list[tuple[int, str, int]] | None:
        """Copy a segment's live blobs (checked) into a fresh segment, fsynced."""
        name = f"{time.time_ns():x}-{os.getpid()}-{secrets.token_hex(3)}"
        out_path = self.blob_dir / f"{name}.seg"
        out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        moved: list[tuple[int, str, int]] = []
        offset = 0
        try:
            for blob_id, old_offset, length, digest in live:
                data = os.pread(fd, length, old_offset)
                try:
                    check_blob(blob_id, data, length, digest)
                except StorageCorrupt as exc:
                    # Keep the damaged segment as it is for pochta store verify to report.
                    log.error("not compacting segment %s: %s", segment, exc)
                    os.close(out)
                    out_path.unlink()
                    return None
                _write_all(out, data)
                moved.append((blob_id, name, offset))
                offset += length
            os.fdatasync(out)
        except OSError:
            os.close(out)
            with contextlib.suppress(OSError):
                out_path.unlink()
            raise
        os.close(out)
        _fsync_dir(self.blob_dir)
        return moved
