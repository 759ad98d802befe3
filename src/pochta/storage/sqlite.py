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

Durability and group commit: every write goes through one writer thread. It takes every
job queued since its last commit, appends their blobs to the segment, fdatasyncs it, then
runs the jobs' SQL in one transaction and commits (one WAL fsync). Only then are the
callers' futures resolved, so ``accept()`` returning means the message and its index entry
are on disk. A crash before COMMIT leaves unreferenced bytes at the end of a segment,
never a half-visible message; a crash after leaves a complete one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .interfaces import (
    DEFAULT_MAILBOXES,
    AcceptResult,
    Account,
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
    StoreError,
    StoreStats,
)

T = TypeVar("T")

SEGMENT_MAX = 256 * 1024 * 1024
# Messages up to this size live in the index itself (one fsync per commit, no segment).
INLINE_MAX = 64 * 1024

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
    length INTEGER NOT NULL, data BLOB);
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
    last_reply TEXT NOT NULL DEFAULT '', created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS queue_due ON queue(state, next_attempt);
CREATE TABLE IF NOT EXISTS subscriptions(
    account_id INTEGER NOT NULL, name TEXT NOT NULL,
    PRIMARY KEY(account_id, name)) WITHOUT ROWID;
"""

SCHEMA_VERSION = "3"


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: in WAL mode, NORMAL would not fsync at COMMIT, and a 250 must mean on disk.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection, int | None], Any]
    blob: bytes | None
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    touched: set[int]  # mailbox ids to notify after commit


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


def _flags_text(flags: frozenset[str]) -> str:
    return " ".join(sorted(flags))


def _flags_set(text: str) -> frozenset[str]:
    return frozenset(text.split()) if text else frozenset()


def _account(row: sqlite3.Row | tuple[Any, ...]) -> Account:
    (id_, address, pw, salt, iters, stored, server, any_, quota, apop, disabled) = row
    scram = ScramCredentials(salt, iters, stored, server) if salt is not None else None
    return Account(id_, address, pw, scram, bool(any_), quota, apop, bool(disabled))


_ACCOUNT_COLS = (
    "id, address, password_hash, scram_salt, scram_iterations, scram_stored_key, "
    "scram_server_key, may_send_as_anyone, quota_bytes, apop_secret, disabled"
)
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
    return MessageMeta(uid, blob_id, size, internaldate, _flags_set(flags), modseq)


def new_message_id() -> str:
    """A queue id in Postfix's spirit: short, upper-case hex, unique enough to grep logs."""
    return secrets.token_hex(6).upper()


def normalize_mailbox_name(name: str) -> str:
    """INBOX is case-insensitive (RFC 9051 §5.1); other names are kept as given."""
    if name.upper() == "INBOX":
        return "INBOX"
    if name.upper().startswith("INBOX/"):
        return "INBOX" + name[5:]
    return name


class SQLiteStore:
    """The embedded ``MailStore`` (see interfaces.py for the contract)."""

    def __init__(self, data_dir: Path, commit_interval: float = 0.0) -> None:
        self.data_dir = data_dir
        self.blob_dir = data_dir / "blobs"
        self.commit_interval = commit_interval
        self._reader = _connect(data_dir / "pochta.db")
        self._writer_conn = _connect(data_dir / "pochta.db")
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._writer_loop, name="store-writer", daemon=True)
        self._segment_name: str | None = None
        self._segment_fd: int | None = None
        self._segment_size = 0
        self._read_fds: dict[str, int] = {}
        self._watchers: dict[int, set[_Watcher]] = {}
        self._closed = False

    @classmethod
    async def open(cls, data_dir: str | Path, commit_interval: float = 0.0) -> SQLiteStore:
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        (path / "blobs").mkdir(exist_ok=True)
        store = cls(path, commit_interval)
        store._writer_conn.executescript(SCHEMA)
        store._migrate()
        store._thread.start()
        return store

    def _migrate(self) -> None:
        """Bring an older data directory up to SCHEMA_VERSION (runs before any job)."""
        conn = self._writer_conn
        row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is not None and row[0] == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        columns = {r[1] for r in conn.execute("PRAGMA table_info(blobs)")}
        if "data" not in columns:  # versions 1 and 2 kept every body in segments
            conn.execute("ALTER TABLE blobs ADD COLUMN data BLOB")
        if row is None:
            # version 1 kept subscriptions on mailbox rows: copy them to their own table
            conn.execute(
                "INSERT OR IGNORE INTO subscriptions SELECT account_id, name FROM mailboxes "
                "WHERE subscribed=1"
            )
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
        )
        conn.execute("COMMIT")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()
        self._reader.close()

    # --- the writer thread (group commit) -------------------------------------------

    def _writer_loop(self) -> None:
        conn = self._writer_conn
        while True:
            first = self._jobs.get()
            if first is None:
                break
            if self.commit_interval:
                time.sleep(self.commit_interval)
            batch = [first]
            stop = False
            while True:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(conn, batch)
            if stop:
                break
        if self._segment_fd is not None:
            os.close(self._segment_fd)
        conn.close()

    def _append_blobs(self, batch: list[_Job]) -> list[tuple[str, int, int] | None]:
        """Append every blob of the batch to the segment with one write and one fsync."""
        places: list[tuple[str, int, int] | None] = []
        chunks: list[bytes] = []
        for job in batch:
            if job.blob is None or len(job.blob) <= INLINE_MAX:
                places.append(None)
                continue
            if self._segment_fd is None or self._segment_size > SEGMENT_MAX:
                self._open_segment()
            assert self._segment_name is not None
            places.append((self._segment_name, self._segment_size, len(job.blob)))
            self._segment_size += len(job.blob)
            chunks.append(job.blob)
        if chunks:
            assert self._segment_fd is not None
            data = b"".join(chunks)
            view = memoryview(data)
            while view:
                written = os.write(self._segment_fd, view)
                view = view[written:]
            os.fdatasync(self._segment_fd)
        return places

    def _open_segment(self) -> None:
        if self._segment_fd is not None:
            os.close(self._segment_fd)
        name = f"{time.time_ns():x}-{os.getpid()}-{secrets.token_hex(3)}"
        path = self.blob_dir / f"{name}.seg"
        self._segment_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        # the new directory entry must survive a crash too
        dir_fd = os.open(self.blob_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._segment_name = name
        self._segment_size = 0

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        results: list[tuple[bool, Any]] = []
        try:
            places = self._append_blobs(batch)
            conn.execute("BEGIN IMMEDIATE")
            for job, place in zip(batch, places, strict=True):
                conn.execute("SAVEPOINT job")
                try:
                    blob_id = None
                    if place is not None:
                        cur = conn.execute(
                            "INSERT INTO blobs(segment, offset, length) VALUES (?,?,?)", place
                        )
                        blob_id = cur.lastrowid
                    elif job.blob is not None:
                        cur = conn.execute(
                            "INSERT INTO blobs(segment, offset, length, data) VALUES ('',0,?,?)",
                            (len(job.blob), job.blob),
                        )
                        blob_id = cur.lastrowid
                    results.append((True, job.fn(conn, blob_id)))
                    conn.execute("RELEASE job")
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((False, exc))
            conn.execute("COMMIT")
        except Exception as exc:  # disk full, I/O error: nothing of the batch is durable
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            results = [(False, StoreError(f"storage failure: {exc}")) for _ in batch]
        for job, (ok, value) in zip(batch, results, strict=True):
            job.loop.call_soon_threadsafe(self._finish, job, ok, value)

    def _finish(self, job: _Job, ok: bool, value: Any) -> None:
        if ok:
            for mailbox_id in job.touched:
                for watcher in self._watchers.get(mailbox_id, ()):
                    watcher.notify()
        if job.future.done():
            return
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)

    async def _write(
        self,
        fn: Callable[[sqlite3.Connection, int | None], T],
        blob: bytes | None = None,
        touched: set[int] | None = None,
    ) -> T:
        if self._closed:
            raise StoreError("store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, blob, fut, loop, touched if touched is not None else set()))
        return await fut

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._reader.execute(sql, args).fetchall()

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
        return [r[0] for r in self._query("SELECT name FROM domains ORDER BY name")]

    async def has_domain(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM domains WHERE name=?", (name.lower(),)))

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
        rows = self._query(
            f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE address=?",  # noqa: S608
            (address.lower(),),
        )
        return _account(rows[0]) if rows else None

    async def get_account_by_id(self, account_id: int) -> Account | None:
        rows = self._query(
            f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE id=?", (account_id,)  # noqa: S608
        )
        return _account(rows[0]) if rows else None

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        if domain:
            rows = self._query(
                f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE address LIKE ? "  # noqa: S608
                "ORDER BY address", (f"%@{domain.lower()}",),
            )
        else:
            rows = self._query(
                f"SELECT {_ACCOUNT_COLS} FROM accounts ORDER BY address"  # noqa: S608
            )
        return [_account(r) for r in rows]

    async def account_usage(self, account_id: int) -> int:
        rows = self._query(
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
        rows = self._query(
            "SELECT source, targets FROM aliases WHERE source=?", (source.lower(),)
        )
        return Alias(rows[0][0], tuple(rows[0][1].split("\n"))) if rows else None

    async def list_aliases(self, domain: str | None = None) -> list[Alias]:
        if domain:
            rows = self._query(
                "SELECT source, targets FROM aliases WHERE source LIKE ? ORDER BY source",
                (f"%@{domain.lower()}",),
            )
        else:
            rows = self._query("SELECT source, targets FROM aliases ORDER BY source")
        return [Alias(s, tuple(t.split("\n"))) for s, t in rows]

    # --- acceptance -----------------------------------------------------------------

    async def accept(
        self,
        data: bytes,
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
        })
        # Filled by the writer thread; watchers of these mailboxes wake after the commit.
        touched: set[int] = set()
        size = len(data)

        def fn(conn: sqlite3.Connection, blob_id: int | None) -> AcceptResult:
            assert blob_id is not None
            uids: list[tuple[int, int]] = []
            for target in local:
                box_id = self._target_mailbox(conn, target)
                touched.add(box_id)
                self._check_quota(conn, target.account_id, size)
                uid, modseq = self._next_uid(conn, box_id)
                conn.execute(
                    "INSERT INTO messages VALUES (?,?,?,?,?,?,?)",
                    (box_id, uid, blob_id, size,
                     target.internaldate if target.internaldate is not None else now,
                     _flags_text(target.flags), modseq),
                )
                uids.append((box_id, uid))
            for rcpt in remote:
                conn.execute(
                    "INSERT INTO queue(message_id, blob_id, envelope, recipient, notify, orcpt,"
                    " state, next_attempt, created) VALUES (?,?,?,?,?,?,?,?,?)",
                    (message_id, blob_id, env_json, rcpt.address, rcpt.notify, rcpt.orcpt,
                     QueueState.PENDING.value, now, now),
                )
            return AcceptResult(message_id, blob_id, tuple(uids))

        return await self._write(fn, blob=data, touched=touched)

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
        rows = self._query(
            "SELECT segment, offset, length, data FROM blobs WHERE id=?", (blob_id,)
        )
        if not rows:
            raise NotFound(f"no blob {blob_id}")
        segment, offset, length, inline = rows[0]
        if inline is not None:
            return bytes(inline)
        fd = self._read_fds.get(segment)
        if fd is None:
            fd = os.open(self.blob_dir / f"{segment}.seg", os.O_RDONLY)
            if len(self._read_fds) >= 256:
                os.close(self._read_fds.pop(next(iter(self._read_fds))))
            self._read_fds[segment] = fd
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise StoreError(f"blob {blob_id} is truncated on disk")
        return data

    # --- mailboxes ------------------------------------------------------------------

    async def list_mailboxes(self, account_id: int) -> list[MailboxInfo]:
        rows = self._query(
            f"SELECT {_MAILBOX_COLS} FROM mailboxes WHERE account_id=? ORDER BY name",  # noqa: S608
            (account_id,),
        )
        return [_mailbox(r) for r in rows]

    async def get_mailbox(self, account_id: int, name: str) -> MailboxInfo | None:
        rows = self._query(
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

        await self._write(fn)

    async def list_subscriptions(self, account_id: int) -> list[str]:
        rows = self._query(
            "SELECT name FROM subscriptions WHERE account_id=? ORDER BY name", (account_id,)
        )
        return [r[0] for r in rows]

    async def mailbox_status(self, mailbox_id: int) -> MailboxStatus:
        box = self._query(
            "SELECT uidnext, uidvalidity, highestmodseq, first_recent_uid FROM mailboxes "
            "WHERE id=?", (mailbox_id,),
        )
        if not box:
            raise NotFound(f"no mailbox {mailbox_id}")
        uidnext, validity, modseq, first_recent = box[0]
        total, size, seen, deleted, recent = self._query(
            "SELECT count(*), coalesce(sum(size),0),"
            " coalesce(sum(instr(' '||flags||' ', ' \\Seen ')>0),0),"
            " coalesce(sum(instr(' '||flags||' ', ' \\Deleted ')>0),0),"
            " coalesce(sum(uid>=?),0) FROM messages WHERE mailbox_id=?",
            (first_recent, mailbox_id),
        )[0]
        return MailboxStatus(
            messages=total, unseen=total - seen, deleted=deleted, size=size,
            uidnext=uidnext, uidvalidity=validity, highestmodseq=modseq, recent=recent,
        )

    # --- messages -------------------------------------------------------------------

    async def list_messages(self, mailbox_id: int) -> list[MessageMeta]:
        rows = self._query(
            "SELECT uid, blob_id, size, internaldate, flags, modseq FROM messages "
            "WHERE mailbox_id=? ORDER BY uid", (mailbox_id,),
        )
        return [_meta(r) for r in rows]

    async def changes_since(self, mailbox_id: int, modseq: int) -> Changes:
        box = self._query("SELECT highestmodseq FROM mailboxes WHERE id=?", (mailbox_id,))
        if not box:
            raise NotFound(f"no mailbox {mailbox_id}")
        highest = int(box[0][0])
        if highest <= modseq:  # the common NOOP/IDLE case: nothing happened
            return Changes(highest, (), ())
        # No ORDER BY uid in SQL: it would make SQLite walk the primary key (every
        # message) instead of the (mailbox_id, modseq) index.
        changed = self._query(
            "SELECT uid, blob_id, size, internaldate, flags, modseq FROM messages "
            "WHERE mailbox_id=? AND modseq>?", (mailbox_id, modseq),
        )
        gone = self._query(
            "SELECT uid FROM expunged WHERE mailbox_id=? AND modseq>?", (mailbox_id, modseq),
        )
        return Changes(
            highest,
            tuple(sorted((_meta(r) for r in changed), key=lambda m: m.uid)),
            tuple(sorted(r[0] for r in gone)),
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
                if mode is FlagMode.ADD:
                    new = meta.flags | flags
                elif mode is FlagMode.REMOVE:
                    new = meta.flags - flags
                else:
                    new = flags
                if new == meta.flags:
                    continue
                if modseq is None:
                    modseq = self._bump_modseq(conn, mailbox_id)
                conn.execute(
                    "UPDATE messages SET flags=?, modseq=? WHERE mailbox_id=? AND uid=?",
                    (_flags_text(new), modseq, mailbox_id, uid),
                )
                changed.append(MessageMeta(
                    meta.uid, meta.blob_id, meta.size, meta.internaldate, new, modseq))
            return FlagUpdate(tuple(changed), tuple(failed))

        return await self._write(fn, touched={mailbox_id})

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

        def fn(conn: sqlite3.Connection, _: int | None) -> list[int]:
            rows = conn.execute(
                "SELECT uid, flags FROM messages WHERE mailbox_id=? ORDER BY uid", (mailbox_id,)
            ).fetchall()
            if wanted is None:
                gone = [uid for uid, flags in rows if "\\Deleted" in _flags_set(flags)]
            else:
                gone = [uid for uid, _flags in rows if uid in wanted]
            if gone:
                self._expunge_uids(conn, mailbox_id, gone)
            return gone

        return await self._write(fn, touched={mailbox_id})

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

        return await self._write(fn)

    def watch(self, mailbox_id: int) -> _Watcher:
        watcher = _Watcher(self, mailbox_id)
        self._watchers.setdefault(mailbox_id, set()).add(watcher)
        return watcher

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
            bool(e.get("body_8bit")), e.get("authenticated_as"),
        )
        return QueueItem(
            id_, mid, blob_id, envelope, RemoteRecipient(rcpt, notify, orcpt),
            QueueState(state), attempts, nxt, reply, created,
        )

    async def due_queue_items(self, now: float, limit: int = 100) -> list[QueueItem]:
        rows = self._query(
            f"SELECT {self._QUEUE_COLS} FROM queue WHERE state IN ('pending','deferred') "  # noqa: S608
            "AND next_attempt<=? ORDER BY next_attempt LIMIT ?", (now, limit),
        )
        return [self._queue_item(r) for r in rows]

    async def list_queue(self) -> list[QueueItem]:
        rows = self._query(f"SELECT {self._QUEUE_COLS} FROM queue ORDER BY id")  # noqa: S608
        return [self._queue_item(r) for r in rows]

    async def update_queue_item(
        self, item_id: int, state: QueueState, next_attempt: float, last_reply: str
    ) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            cur = conn.execute(
                "UPDATE queue SET state=?, next_attempt=?, last_reply=?, attempts=attempts+1 "
                "WHERE id=?", (state.value, next_attempt, last_reply, item_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no queue item {item_id}")

        await self._write(fn)

    async def delete_queue_item(self, item_id: int) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            if conn.execute("DELETE FROM queue WHERE id=?", (item_id,)).rowcount == 0:
                raise NotFound(f"no queue item {item_id}")

        await self._write(fn)

    async def purge_queue(self, finished_before: float) -> int:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            cur = conn.execute(
                "DELETE FROM queue WHERE state IN ('delivered','failed') AND next_attempt<?",
                (finished_before,),
            )
            return cur.rowcount

        return await self._write(fn)

    # --- integrity and space (being built: see the storage v2 work) -------------------

    async def verify_blobs(self) -> list[BlobProblem]:
        raise NotImplementedError("verify_blobs is being built")

    async def store_stats(self) -> StoreStats:
        raise NotImplementedError("store_stats is being built")

    async def compact(self) -> int:
        raise NotImplementedError("compact is being built")
