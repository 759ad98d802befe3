"""The PostgreSQL store: the whole ``MailStore`` contract on a database server, so several
Pochta processes (or nodes) can share one set of mailboxes.

Driver: psycopg 3 (async connections, ``psycopg_pool`` for the pool). It is the
maintained successor of psycopg2, ships typed (``py.typed``, so mypy --strict checks our
calls) and as binary wheels with libpq inside, and exposes LISTEN/NOTIFY as an async
iterator.

Layout (tables of one schema: the first of the connection's ``search_path``)::

    schema_version     one row: the version of the tables below; see MIGRATIONS
    counters           named counters (the last UIDVALIDITY handed out)
    domains, accounts, aliases, subscriptions
    mailboxes          UIDNEXT, HIGHESTMODSEQ and the first-recent marker per mailbox
    messages           one row per message per mailbox; flags as text[]
    expunged           (mailbox, uid, modseq) of removed messages, for QRESYNC
    blobs              one row per message body: length, sha256, number of chunks
    blob_chunks        the body in BLOB_CHUNK-byte bytea rows (blob_id, seq)
    queue              one row per remote recipient, with the worker that claimed it and
                       until when (claimed_by, lease_until)
    blob_gc            blobs whose last reference went, and since when (for compact)
    locks, window_counters   coordination across processes and nodes

Durability and group commit: every write is one transaction on a pooled connection;
``accept()`` returns after COMMIT, which with ``synchronous_commit=on`` (forced for our
sessions) means the WAL record is flushed. Accepts are also batched here, as the SQLite
store batches its writes: the accepts waiting when one of a few runner loops becomes free
go into one transaction that locks their accounts and mailboxes once, takes every UID of
a mailbox with one UPDATE and writes all rows with pipelined ``executemany``; a job
refused by a rule (quota, no such account) writes nothing and the others still commit,
and a batch that fails as a whole is retried job by job. Without this, deliveries to one
mailbox queue on its row lock one transaction at a time (~600/s here, against ~3,800/s
batched). Lock order is accounts, then mailboxes by id, for every writer; a deadlock or
serialisation failure is retried a few times.

Change notifications: a transaction that changes a mailbox runs ``pg_notify`` with the
mailbox id and this store's origin token; PostgreSQL delivers it at COMMIT to every
listening session. Each store keeps one dedicated LISTEN connection and fans out to its
watchers, ignoring its own notifications (those wake local watchers directly after the
commit). If the listening connection drops, it reconnects and wakes every watcher, since
it may have missed something.

Queue claims (``claim_queue_items``): ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP
LOCKED)`` takes due items that nobody holds, or whose holder's lease ran out, for the
caller's owner until ``now + lease``; two workers in any process on any node never get
the same item. ``update_queue_item`` ends the claim. Queue wake-ups (new remote
recipients, ``reschedule_queue_items``) travel on the same NOTIFY channel as mailbox
changes.

Space: when the last message row or pending/deferred queue row that references a blob
goes, a trigger records the blob in ``blob_gc`` with the time; ``compact(min_age)``
deletes those still unreferenced after ``min_age`` seconds (their chunks go by ON DELETE
CASCADE) and returns their bytes. PostgreSQL's (auto)vacuum then reuses the space.

Coordination (``try_lock``, windowed counters): rows in ``locks`` and ``window_counters``
with the caller's clock, as in the SQLite store.

Errors: no driver exception leaves this module. ``disk_full`` (SQLSTATE 53100) becomes
``StorageFull``, other failures ``StoreError``; a body whose length or sha256 does not
match its ``blobs`` row is ``StorageCorrupt``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import psycopg.conninfo
import psycopg.errors
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from . import (
    postgres_imap,
    postgres_ops,
    postgres_sending,
    postgres_sieve,
    postgres_spam,
    postgres_transport,
    postgres_web,
    settings,
)
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
from .postgres_imap import PostgresImapState
from .postgres_ops import PostgresOpsMixin
from .postgres_sending import PostgresSendingMixin
from .postgres_sieve import PostgresSieveMixin
from .postgres_spam import PostgresSpamMixin
from .postgres_transport import PostgresTransportSecurity
from .postgres_web import PostgresWebMixin
from .rules import new_message_id, normalize_mailbox_name, stream_fields

T = TypeVar("T")
log = logging.getLogger("pochta.storage.postgres")

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

BLOB_CHUNK = 256 * 1024
# Bodies larger than this are hashed in a thread, off the event loop.
HASH_INLINE_MAX = 256 * 1024
TX_RETRIES = 8
# Accepts committed together at most (group commit); a batch is whatever waited.
ACCEPT_BATCH = 64
# Accept transactions in flight at once. Few, so that under load each commits a bigger
# batch: the round trips and the WAL flush are shared by more messages (50 SMTP sessions:
# 1.28 -> 1.03 ms of Pochta's CPU and 0.46 -> 0.33 ms of PostgreSQL's per message, against
# pool_size - 2 = 8 runners); one message alone still commits at once.
ACCEPT_RUNNERS = 3

# Each entry brings the schema from version i to i+1; the store applies the missing ones
# when it opens, in one transaction, under an advisory lock.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE counters(name text PRIMARY KEY, value bigint NOT NULL);
    CREATE TABLE domains(name text PRIMARY KEY);
    CREATE TABLE accounts(
        id bigserial PRIMARY KEY,
        address text UNIQUE NOT NULL,
        password_hash text NOT NULL,
        scram_salt bytea, scram_iterations integer, scram_stored_key bytea,
        scram_server_key bytea,
        may_send_as_anyone boolean NOT NULL DEFAULT false,
        quota_bytes bigint NOT NULL DEFAULT 0,
        apop_secret text,
        disabled boolean NOT NULL DEFAULT false);
    CREATE TABLE aliases(source text PRIMARY KEY, targets text[] NOT NULL);
    CREATE TABLE mailboxes(
        id bigserial PRIMARY KEY,
        account_id bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
        name text NOT NULL,
        uidvalidity bigint NOT NULL,
        uidnext bigint NOT NULL DEFAULT 1,
        highestmodseq bigint NOT NULL DEFAULT 1,
        special_use text,
        first_recent_uid bigint NOT NULL DEFAULT 1,
        UNIQUE(account_id, name));
    CREATE TABLE subscriptions(
        account_id bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
        name text NOT NULL,
        PRIMARY KEY(account_id, name));
    CREATE TABLE blobs(
        id bigserial PRIMARY KEY,
        length bigint NOT NULL,
        sha256 bytea NOT NULL,
        chunks integer NOT NULL,
        created double precision NOT NULL);
    CREATE TABLE blob_chunks(
        blob_id bigint NOT NULL REFERENCES blobs ON DELETE CASCADE,
        seq integer NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY(blob_id, seq));
    CREATE TABLE messages(
        mailbox_id bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
        uid bigint NOT NULL,
        blob_id bigint NOT NULL REFERENCES blobs,
        size bigint NOT NULL,
        internaldate double precision NOT NULL,
        flags text[] NOT NULL,
        modseq bigint NOT NULL,
        PRIMARY KEY(mailbox_id, uid));
    CREATE INDEX messages_modseq ON messages(mailbox_id, modseq);
    CREATE INDEX messages_blob ON messages(blob_id);
    CREATE TABLE expunged(
        mailbox_id bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
        uid bigint NOT NULL,
        modseq bigint NOT NULL,
        PRIMARY KEY(mailbox_id, uid));
    CREATE TABLE queue(
        id bigserial PRIMARY KEY,
        message_id text NOT NULL,
        blob_id bigint NOT NULL REFERENCES blobs,
        envelope jsonb NOT NULL,
        recipient text NOT NULL, notify text, orcpt text,
        state text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt double precision NOT NULL,
        last_reply text NOT NULL DEFAULT '',
        created double precision NOT NULL);
    CREATE INDEX queue_due ON queue(state, next_attempt);
    CREATE INDEX queue_blob ON queue(blob_id);
    """,
    # 2: queue claims with leases (several workers and nodes share one queue), blob
    # garbage collection (blob_gc, filled by triggers; a finished queue item no longer
    # keeps its blob, hence no foreign key from queue), locks and windowed counters
    """
    ALTER TABLE queue ADD COLUMN claimed_by text, ADD COLUMN lease_until double precision;
    ALTER TABLE queue DROP CONSTRAINT IF EXISTS queue_blob_id_fkey;
    DROP INDEX IF EXISTS queue_blob;
    CREATE INDEX queue_blob ON queue(blob_id, state);
    CREATE INDEX queue_claimed ON queue(claimed_by) WHERE claimed_by IS NOT NULL;
    CREATE TABLE blob_gc(blob_id bigint PRIMARY KEY, since double precision NOT NULL);
    INSERT INTO blob_gc SELECT b.id, extract(epoch FROM now()) FROM blobs b
        WHERE NOT EXISTS(SELECT 1 FROM messages m WHERE m.blob_id=b.id)
        AND NOT EXISTS(SELECT 1 FROM queue q WHERE q.blob_id=b.id
                       AND q.state IN ('pending','deferred'));
    CREATE FUNCTION pochta_blob_released() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO blob_gc VALUES (OLD.blob_id, extract(epoch FROM clock_timestamp()))
            ON CONFLICT DO NOTHING;
        RETURN NULL;
    END $$;
    CREATE FUNCTION pochta_queue_done() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO blob_gc VALUES (NEW.blob_id, extract(epoch FROM clock_timestamp()))
            ON CONFLICT DO NOTHING;
        RETURN NULL;
    END $$;
    CREATE TRIGGER messages_release AFTER DELETE ON messages
        FOR EACH ROW EXECUTE FUNCTION pochta_blob_released();
    CREATE TRIGGER queue_release AFTER DELETE ON queue
        FOR EACH ROW EXECUTE FUNCTION pochta_blob_released();
    CREATE TRIGGER queue_done AFTER UPDATE OF state ON queue
        FOR EACH ROW WHEN (NEW.state IN ('delivered', 'failed'))
        EXECUTE FUNCTION pochta_queue_done();
    CREATE TABLE locks(name text PRIMARY KEY, owner text NOT NULL,
        expires double precision NOT NULL);
    CREATE TABLE window_counters(key text NOT NULL, second bigint NOT NULL,
        amount bigint NOT NULL, PRIMARY KEY(key, second));
    """,
)
# Feature modules (postgres_base.py) bring their own migrations, after the core ones.
MIGRATIONS += (postgres_sieve.MIGRATION, postgres_transport.MIGRATION,
               postgres_spam.MIGRATION, postgres_imap.MIGRATION, postgres_sending.MIGRATION,
               postgres_web.MIGRATION)
MIGRATIONS += (postgres_imap.EXPUNGED_MODSEQ_MIGRATION, postgres_sending.MIGRATION_QUEUE_PRIORITY)
MIGRATIONS += (postgres_ops.MIGRATION,)  # issue 19: log, app passwords, queue holds
MIGRATIONS += (postgres_imap.SEARCH_FIELDS_MIGRATION,)
MIGRATIONS += (postgres_imap.MIGRATION_2,)  # IMAP ACL and URLAUTH keys (issue 15)
MIGRATIONS += (postgres_imap.THREAD_SNAPSHOT_MIGRATION,)  # THREAD after a restart (issue 15)
MIGRATIONS += (postgres_imap.SORT_SNAPSHOT_MIGRATION,)  # SORT after a restart (issue 15)
MIGRATIONS += (postgres_spam.MIGRATION_2,)  # per-account allow/block lists of senders
SCHEMA_VERSION = len(MIGRATIONS)

TABLES: tuple[str, ...] = (
    "schema_version", "counters", "domains", "accounts", "aliases", "mailboxes",
    "subscriptions", "blobs", "blob_chunks", "messages", "expunged", "queue", "blob_gc",
    "locks", "window_counters",
)
TABLES += (postgres_sieve.TABLES + postgres_transport.TABLES + postgres_spam.SPAM_TABLES
           + postgres_imap.TABLES + postgres_sending.TABLES + postgres_web.TABLES)
TABLES += postgres_ops.TABLES

# Lock for schema migrations: the same number in every Pochta process ("pochta" in ASCII).
_MIGRATION_LOCK = 0x706F63687461

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
_META_COLS = "uid, blob_id, size, internaldate, flags, modseq"
_QUEUE_COLS = (
    "id, message_id, blob_id, envelope, recipient, notify, orcpt, state, attempts, "
    "next_attempt, last_reply, created"
)


def _account(row: tuple[Any, ...]) -> Account:
    (id_, address, pw, salt, iters, stored, server, any_, quota, apop, disabled) = row
    scram = (ScramCredentials(bytes(salt), iters, bytes(stored), bytes(server))
             if salt is not None else None)
    return Account(id_, address, pw, scram, bool(any_), quota, apop, bool(disabled))


def _mailbox(row: tuple[Any, ...]) -> MailboxInfo:
    id_, acc, name, validity, uidnext, modseq, special, subscribed = row
    return MailboxInfo(
        id_, acc, name, validity, uidnext, modseq,
        SpecialUse(special) if special else None, bool(subscribed),
    )


def _meta(row: tuple[Any, ...]) -> MessageMeta:
    uid, blob_id, size, internaldate, flags, modseq = row
    return MessageMeta(uid, blob_id, size, internaldate, frozenset(flags), modseq)


def _queue_item(row: tuple[Any, ...]) -> QueueItem:
    (id_, mid, blob_id, e, rcpt, notify, orcpt, state, attempts, nxt, reply, created) = row
    envelope = Envelope(
        e["sender"], e.get("ret"), e.get("envid"), bool(e.get("smtputf8")),
        bool(e.get("body_8bit")), e.get("authenticated_as"), e.get("stream", ""),
        int(e.get("priority", 0)),
    )
    return QueueItem(
        id_, mid, blob_id, envelope, RemoteRecipient(rcpt, notify, orcpt),
        QueueState(state), attempts, nxt, reply, created,
    )


def translate_error(exc: BaseException) -> StoreError:
    """The Pochta error for a driver exception (the only place that maps them)."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, PoolTimeout):
        return StoreError("database unavailable: no connection free in the pool")
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate or ""
        if state == "53100":  # disk_full
            return StorageFull(f"database out of disk space: {exc}")
        if state.startswith("53"):  # insufficient resources: memory, connections
            return StoreError(f"database out of resources: {exc}")
        if isinstance(exc, psycopg.OperationalError):
            return StoreError(f"database unavailable: {exc}")
        return StoreError(f"database error: {exc}")
    if isinstance(exc, OSError):
        return StoreError(f"database unavailable: {exc}")
    return StoreError(f"database error: {exc}")


def dsn_has_password(dsn: str) -> bool:
    """True if the connection string carries a password (storage/settings.py)."""
    try:
        return settings.dsn_has_password(dsn)
    except ValueError as exc:
        raise StoreError(str(exc)) from None


async def _sha256(data: bytes) -> bytes:
    if len(data) <= HASH_INLINE_MAX:
        return hashlib.sha256(data).digest()
    return await asyncio.to_thread(lambda: hashlib.sha256(data).digest())


async def _configure(conn: Conn) -> None:
    """Every pooled connection: a COMMIT must be durable (``250`` depends on it), so a
    server or database set to ``synchronous_commit=off`` is overridden for our sessions
    (``local``, ``remote_write``, ``on`` and ``remote_apply`` are kept)."""
    await conn.execute(
        "SELECT set_config('synchronous_commit', 'on', false) "
        "WHERE current_setting('synchronous_commit') = 'off'"
    )


@dataclass
class _Accept:
    """One ``accept()`` waiting for its batch."""

    message_id: str
    env: Jsonb
    local: tuple[LocalTarget, ...]
    remote: tuple[RemoteRecipient, ...]
    size: int
    digest: bytes
    chunks: list[memoryview]
    now: float
    future: asyncio.Future[AcceptResult] | None
    blob_id: int | None = None  # already written (a spooled message), else with the batch
    freed: int = 0  # bytes the job frees in its (one) target's account: REPLACE's old copy


async def _job(message_id: str, env: Jsonb, local: Sequence[LocalTarget],
               remote: Sequence[RemoteRecipient], data: bytes | SpooledMessage, now: float
               ) -> _Accept:
    """An accept's job: a spooled message's blob is streamed in by its transaction,
    bytes go in chunks (views, no copies) with the batch."""
    if isinstance(data, SpooledMessage):
        return _Accept(message_id, env, tuple(local), tuple(remote), data.total, b"", [], now,
                       None)
    view = memoryview(data)
    return _Accept(message_id, env, tuple(local), tuple(remote), len(data),
                   await _sha256(data),
                   [view[i:i + BLOB_CHUNK] for i in range(0, len(data), BLOB_CHUNK)] or [view],
                   now, None)


class _DeadConnection(Exception):
    """BEGIN failed on a pooled connection: nothing of the transaction reached the server."""


@dataclass
class _Tx:
    """One write transaction: its connection and the mailboxes it changed."""

    conn: Conn
    touched: set[int]
    queue_woken: bool = False  # new remote recipients, or items made due early

    async def one(self, query: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        cur = await self.conn.execute(query, args)
        return await cur.fetchone()

    async def all(self, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = await self.conn.execute(query, args)
        return await cur.fetchall()

    async def run(self, query: str, args: Sequence[Any] = ()) -> int:
        cur = await self.conn.execute(query, args)
        return cur.rowcount


class _Watcher:
    def __init__(self, store: PostgresStore, mailbox_id: int) -> None:
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


class _QueueWatcher:
    def __init__(self, store: PostgresStore) -> None:
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


class PostgresStore(
    PostgresSieveMixin, PostgresTransportSecurity, PostgresSpamMixin, PostgresImapState,
    PostgresSendingMixin, PostgresWebMixin, PostgresOpsMixin,
):
    """The PostgreSQL ``MailStore`` (see interfaces.py for the contract)."""

    def __init__(self, dsn: str, password: str | None, pool_size: int) -> None:
        self._dsn = dsn
        # storage.fsync = "always": metadata commits wait for the WAL flush too
        self.fsync_always = False
        self._kwargs: dict[str, Any] = {"autocommit": True}
        if password is not None:
            self._kwargs["password"] = password
        self._pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            dsn, min_size=1, max_size=max(1, pool_size), kwargs=self._kwargs, open=False,
            timeout=30.0, name="pochta", configure=_configure,
        )
        self._origin = secrets.token_hex(8)
        self._channel = "pochta_changes"
        self._watchers: dict[int, set[_Watcher]] = {}
        self._listen_conn: Conn | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._queue_watchers: set[_QueueWatcher] = set()
        self._accepts: list[_Accept] = []
        self._verified: dict[int, None] = {}  # blobs whose stream was checked (LRU)
        self._accept_runners = 0
        self._max_accept_runners = max(1, min(ACCEPT_RUNNERS, pool_size - 2))
        self._accept_tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    async def open(cls, dsn: str, *, password: str | None = None, pool_size: int = 10,
                   fsync_always: bool = False) -> PostgresStore:
        """Connect, apply missing migrations and start listening for changes."""
        if dsn_has_password(dsn):
            raise StoreError("storage.dsn: must not contain a password; put it in "
                             "storage.password_file or the PGPASSWORD environment variable")
        store = cls(dsn, password, pool_size)
        store.fsync_always = fsync_always
        conn: Conn | None = None
        try:
            # One connection first, not the pool: a wrong DSN or password fails at once
            # with the server's reason instead of a pool timeout. It then listens.
            conn = await psycopg.AsyncConnection.connect(dsn, **store._kwargs)
            await store._migrate(conn)
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(store._channel)))
            store._listen_conn = conn
            await store._pool.open(wait=False)
        except BaseException as exc:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            await store._pool.close()
            if isinstance(exc, StoreError | psycopg.Error | OSError):
                raise translate_error(exc) from exc
            raise
        store._listen_task = asyncio.create_task(store._listen_loop(), name="pochta-pg-listen")
        return store

    async def _migrate(self, conn: Conn) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version(version integer NOT NULL)"
            )
            cur = await conn.execute("SELECT version FROM schema_version")
            row = await cur.fetchone()
            current = int(row[0]) if row is not None else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the database schema is version {current}, newer than this Pochta "
                    f"knows ({SCHEMA_VERSION}): upgrade Pochta before opening it"
                )
            for step in MIGRATIONS[current:]:
                await conn.execute(step)
            if row is None:
                await conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))
            elif current != SCHEMA_VERSION:
                await conn.execute("UPDATE schema_version SET version=%s", (SCHEMA_VERSION,))
            cur = await conn.execute("SELECT current_schema()")
            schema = await cur.fetchone()
            # Channels are per database: name the schema so two stores in two schemas of
            # one database do not wake each other.
            if schema is not None and schema[0] and schema[0] != "public":
                self._channel = f"pochta_changes_{schema[0]}"[:63]

    async def close(self) -> None:
        if self._closed:
            return
        while self._accept_tasks:  # accepts already queued are committed first
            await asyncio.gather(*self._accept_tasks, return_exceptions=True)
        self._closed = True
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listen_task
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.close()
        await self._pool.close()

    # --- transactions, reads and errors ----------------------------------------------

    async def _tx(self, fn: Callable[[_Tx], Awaitable[T]], *, pipeline: bool = False,
                  durable: bool = True) -> T:
        """Run ``fn`` in one transaction (retried on deadlock or serialisation failure,
        and when the pooled connection turns out dead before COMMIT was sent, e.g. after
        a database restart: nothing was committed then), send the change notifications
        inside it, wake local watchers after COMMIT.

        ``pipeline``: libpq pipeline mode, statements are sent without waiting for the
        previous one's answer until a result is read, and COMMIT travels with the last
        writes (the accept path: three round trips instead of eight).

        ``durable=False``: COMMIT returns before the WAL is flushed (``SET LOCAL
        synchronous_commit = off``, this transaction only): for flag changes, expunges,
        subscriptions and \\Recent under ``storage.fsync = "optimized"``. PostgreSQL
        replays WAL in order, so a crash can only drop such a transaction, never one
        committed durably after it."""
        if self._closed:
            raise StoreError("store is closed")
        for attempt in range(TX_RETRIES):
            tx: _Tx | None = None
            try:
                async with self._pool.connection() as conn, contextlib.AsyncExitStack() as st:
                    try:
                        if pipeline:
                            await st.enter_async_context(conn.pipeline())
                        await st.enter_async_context(conn.transaction())
                    except psycopg.OperationalError as exc:
                        raise _DeadConnection from exc
                    tx = _Tx(conn, set())
                    try:
                        if not durable:
                            await conn.execute("SET LOCAL synchronous_commit = off")
                        result = await fn(tx)
                    except psycopg.OperationalError as exc:
                        # COMMIT is sent after fn returns: nothing of this try was kept
                        if conn.broken or conn.closed:
                            raise _DeadConnection from exc
                        raise
                    # payloads: "<mailbox id> <origin>", or "q <origin>" for the queue
                    keys = [str(b) for b in sorted(tx.touched)]
                    keys += ["q"] if tx.queue_woken else []
                    if keys:
                        await conn.execute(
                            "SELECT pg_notify(%s, k || ' ' || %s) FROM unnest(%s::text[]) k",
                            (self._channel, self._origin, keys),
                        )
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                if attempt + 1 < TX_RETRIES:
                    await asyncio.sleep(0.005 * (attempt + 1))
                    continue
                raise translate_error(exc) from exc
            except _DeadConnection as exc:
                if attempt + 1 < TX_RETRIES and not self._closed:
                    continue  # the pool drops the dead connection; try a fresh one
                raise translate_error(exc.__cause__ or exc) from exc
            except StoreError:
                raise
            except (psycopg.Error, PoolTimeout, OSError) as exc:
                raise translate_error(exc) from exc
            assert tx is not None
            self._wake(tx.touched)
            if tx.queue_woken:
                self._wake_queue()
            return result
        raise StoreError("transaction retried too often")  # pragma: no cover

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        """A pooled connection for reads (autocommit: one snapshot per statement)."""
        if self._closed:
            raise StoreError("store is closed")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except StoreError:
            raise
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            raise translate_error(exc) from exc

    async def _query(self, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read; retried on a lost connection (e.g. pooled connections that died with a
        database restart: the pool replaces them)."""
        for attempt in range(1, TX_RETRIES + 1):
            try:
                async with self._conn() as conn:
                    cur = await conn.execute(query, args)
                    return await cur.fetchall()
            except StoreError as exc:
                lost = isinstance(exc.__cause__, psycopg.OperationalError) and not isinstance(
                    exc.__cause__, PoolTimeout)
                if attempt == TX_RETRIES or not lost or self._closed:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # --- change notifications ------------------------------------------------------

    async def _listen_connect(self) -> Conn:
        conn: Conn = await psycopg.AsyncConnection.connect(self._dsn, **self._kwargs)
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        return conn

    async def _listen_loop(self) -> None:
        while not self._closed:
            conn = self._listen_conn
            try:
                if conn is None:
                    conn = self._listen_conn = await self._listen_connect()
                    # a gap in listening: anything may have changed meanwhile
                    self._wake(set(self._watchers))
                    self._wake_queue()
                async for note in conn.notifies():
                    key, _, origin = note.payload.partition(" ")
                    if origin == self._origin:
                        continue
                    if key == "q":
                        self._wake_queue()
                    elif key.isdigit():
                        self._wake({int(key)})
            except (psycopg.Error, OSError) as exc:
                log.warning("change notifications interrupted, reconnecting: %s", exc)
            if self._listen_conn is not None:
                with contextlib.suppress(Exception):
                    await self._listen_conn.close()
                self._listen_conn = None
            if not self._closed:
                await asyncio.sleep(1.0)

    def _wake(self, boxes: set[int]) -> None:
        for box in boxes:
            for watcher in self._watchers.get(box, ()):
                watcher.notify()

    def _wake_queue(self) -> None:
        for watcher in self._queue_watchers:
            watcher.notify()

    def watch_queue(self) -> _QueueWatcher:
        watcher = _QueueWatcher(self)
        self._queue_watchers.add(watcher)
        return watcher

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

    # --- directory ------------------------------------------------------------------

    async def add_domain(self, name: str) -> None:
        async def fn(tx: _Tx) -> None:
            row = await tx.one(
                "INSERT INTO domains(name) VALUES (%s) ON CONFLICT DO NOTHING RETURNING name",
                (name.lower(),),
            )
            if row is None:
                raise AlreadyExists(f"domain {name} already exists")

        await self._tx(fn)

    async def remove_domain(self, name: str) -> None:
        name = name.lower()

        async def fn(tx: _Tx) -> None:
            if await tx.run("DELETE FROM domains WHERE name=%s", (name,)) == 0:
                raise NotFound(f"no domain {name}")
            row = await tx.one(
                "SELECT count(*) FROM accounts WHERE address LIKE %s", (f"%@{name}",)
            )
            used = row[0] if row else 0
            if used:
                raise StoreError(f"domain {name} still has {used} account(s); remove them first")

        await self._tx(fn)

    async def list_domains(self) -> list[str]:
        return [r[0] for r in await self._query("SELECT name FROM domains ORDER BY name")]

    async def has_domain(self, name: str) -> bool:
        return bool(await self._query("SELECT 1 FROM domains WHERE name=%s", (name.lower(),)))

    @staticmethod
    def _uidvalidity_base() -> int:
        # Seconds since 2020 fit the 32-bit UIDVALIDITY for a century.
        return max(1, int(time.time()) - 1_577_836_800)

    async def _next_uidvalidity(self, tx: _Tx) -> int:
        """A UIDVALIDITY never handed out before by this database, even to a mailbox
        since deleted (RFC 9051 §2.3.1.1)."""
        row = await tx.one(
            "INSERT INTO counters(name, value) VALUES ('uidvalidity', %s) "
            "ON CONFLICT(name) DO UPDATE SET value=greatest(counters.value+1, excluded.value) "
            "RETURNING value", (self._uidvalidity_base(),),
        )
        assert row is not None
        return int(row[0])

    async def _insert_mailbox(self, tx: _Tx, account_id: int, name: str,
                              special: SpecialUse | None, subscribe: bool) -> int:
        row = await tx.one(
            "INSERT INTO mailboxes(account_id, name, uidvalidity, special_use) "
            "VALUES (%s,%s,%s,%s) ON CONFLICT DO NOTHING RETURNING id",
            (account_id, name, await self._next_uidvalidity(tx),
             special.value if special else None),
        )
        if row is None:
            raise AlreadyExists(f"mailbox {name} already exists")
        if subscribe:
            await tx.run(
                "INSERT INTO subscriptions VALUES (%s,%s) ON CONFLICT DO NOTHING",
                (account_id, name),
            )
        return int(row[0])

    async def add_account(
        self, address: str, password_hash: str, scram: ScramCredentials | None
    ) -> Account:
        address = address.lower()
        s = scram

        async def fn(tx: _Tx) -> int:
            row = await tx.one(
                "INSERT INTO accounts(address, password_hash, scram_salt, scram_iterations,"
                " scram_stored_key, scram_server_key) VALUES (%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT DO NOTHING RETURNING id",
                (address, password_hash, s and s.salt, s and s.iterations,
                 s and s.stored_key, s and s.server_key),
            )
            if row is None:
                raise AlreadyExists(f"account {address} already exists")
            for name, special in DEFAULT_MAILBOXES:
                await self._insert_mailbox(tx, row[0], name, special, True)
            return int(row[0])

        await self._tx(fn)
        account = await self.get_account(address)
        assert account is not None
        return account

    async def set_password(
        self, address: str, password_hash: str, scram: ScramCredentials | None
    ) -> None:
        s = scram

        async def fn(tx: _Tx) -> None:
            n = await tx.run(
                "UPDATE accounts SET password_hash=%s, scram_salt=%s, scram_iterations=%s,"
                " scram_stored_key=%s, scram_server_key=%s WHERE address=%s",
                (password_hash, s and s.salt, s and s.iterations, s and s.stored_key,
                 s and s.server_key, address.lower()),
            )
            if n == 0:
                raise NotFound(f"no account {address}")

        await self._tx(fn)

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
            changes["may_send_as_anyone"] = may_send_as_anyone
        if quota_bytes is not None:
            changes["quota_bytes"] = quota_bytes
        if apop_secret is not None:
            changes["apop_secret"] = apop_secret or None
        if disabled is not None:
            changes["disabled"] = disabled
        if not changes:
            return
        sets = ", ".join(f"{k}=%s" for k in changes)

        async def fn(tx: _Tx) -> None:
            n = await tx.run(
                f"UPDATE accounts SET {sets} WHERE address=%s",  # noqa: S608 (keys are ours)
                (*changes.values(), address.lower()),
            )
            if n == 0:
                raise NotFound(f"no account {address}")

        await self._tx(fn)

    async def remove_account(self, address: str) -> None:
        address = address.lower()

        async def fn(tx: _Tx) -> None:
            # mailboxes, messages, expunged and subscriptions go by ON DELETE CASCADE
            boxes = await tx.all(
                "SELECT m.id FROM mailboxes m JOIN accounts a ON a.id=m.account_id "
                "WHERE a.address=%s", (address,),
            )
            if await tx.run("DELETE FROM accounts WHERE address=%s", (address,)) == 0:
                raise NotFound(f"no account {address}")
            tx.touched.update(int(r[0]) for r in boxes)

        await self._tx(fn)

    async def get_account(self, address: str) -> Account | None:
        rows = await self._query(
            f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE address=%s",  # noqa: S608
            (address.lower(),),
        )
        return _account(rows[0]) if rows else None

    async def get_account_by_id(self, account_id: int) -> Account | None:
        rows = await self._query(
            f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE id=%s", (account_id,)  # noqa: S608
        )
        return _account(rows[0]) if rows else None

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        if domain:
            rows = await self._query(
                f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE address LIKE %s "  # noqa: S608
                "ORDER BY address", (f"%@{domain.lower()}",),
            )
        else:
            rows = await self._query(
                f"SELECT {_ACCOUNT_COLS} FROM accounts ORDER BY address"  # noqa: S608
            )
        return [_account(r) for r in rows]

    async def account_usage(self, account_id: int) -> int:
        rows = await self._query(
            "SELECT coalesce(sum(m.size),0)::bigint FROM messages m JOIN mailboxes b "
            "ON m.mailbox_id=b.id WHERE b.account_id=%s", (account_id,),
        )
        return int(rows[0][0])

    async def add_alias(self, source: str, targets: Sequence[str]) -> None:
        wanted = [t.lower() for t in targets]

        async def fn(tx: _Tx) -> None:
            row = await tx.one(
                "INSERT INTO aliases(source, targets) VALUES (%s,%s) ON CONFLICT DO NOTHING "
                "RETURNING source", (source.lower(), wanted),
            )
            if row is None:
                raise AlreadyExists(f"alias {source} already exists")

        await self._tx(fn)

    async def remove_alias(self, source: str) -> None:
        async def fn(tx: _Tx) -> None:
            if await tx.run("DELETE FROM aliases WHERE source=%s", (source.lower(),)) == 0:
                raise NotFound(f"no alias {source}")

        await self._tx(fn)

    async def get_alias(self, source: str) -> Alias | None:
        rows = await self._query(
            "SELECT source, targets FROM aliases WHERE source=%s", (source.lower(),)
        )
        return Alias(rows[0][0], tuple(rows[0][1])) if rows else None

    async def find_addresses(self, addresses: Sequence[str]) -> AddressRecords:
        wanted = sorted({a.lower() for a in addresses})
        found = AddressRecords({}, {})
        if not wanted:
            return found
        rows = await self._query(
            f"SELECT {_ACCOUNT_COLS}, NULL::text[] FROM accounts WHERE address=ANY(%s) "  # noqa: S608
            f"UNION ALL SELECT {_ALIAS_ROW}, targets "
            "FROM aliases WHERE source=ANY(%s)", (wanted, wanted),
        )
        for row in rows:
            if row[-1] is None:
                account = _account(row[:-1])
                found.accounts[account.address] = account
            else:
                found.aliases[row[1]] = Alias(row[1], tuple(row[-1]))
        return found

    async def list_aliases(self, domain: str | None = None) -> list[Alias]:
        if domain:
            rows = await self._query(
                "SELECT source, targets FROM aliases WHERE source LIKE %s ORDER BY source",
                (f"%@{domain.lower()}",),
            )
        else:
            rows = await self._query("SELECT source, targets FROM aliases ORDER BY source")
        return [Alias(s, tuple(t)) for s, t in rows]

    async def aliases_naming(self, address: str) -> list[str]:
        rows = await self._query(
            "SELECT source FROM aliases WHERE source NOT LIKE '@%%' AND %s = ANY(targets) "
            "ORDER BY source", (address.lower(),),
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
        env = Jsonb({
            "sender": envelope.sender, "ret": envelope.ret, "envid": envelope.envid,
            "smtputf8": envelope.smtputf8, "body_8bit": envelope.body_8bit,
            "authenticated_as": envelope.authenticated_as,
            **stream_fields(envelope),
        })
        job = await _job(message_id, env, local, remote, data, now)
        if isinstance(data, SpooledMessage):
            return await self._accept_spooled(data, job)
        future: asyncio.Future[AcceptResult] = asyncio.get_running_loop().create_future()
        job.future = future
        if self._closed:
            raise StoreError("store is closed")
        self._accepts.append(job)
        if self._accept_runners < self._max_accept_runners:
            self._accept_runners += 1
            task = asyncio.get_running_loop().create_task(self._run_accepts())
            self._accept_tasks.add(task)
            task.add_done_callback(self._accept_tasks.discard)
        return await future

    async def _accept_spooled(self, spool: SpooledMessage, job: _Accept) -> AcceptResult:
        """A big message in its own transaction: its chunks are streamed from the spool
        file into the database before any lock is taken, never whole in memory."""
        async def fn(tx: _Tx) -> AcceptResult:
            job.blob_id = await self._stream_in(tx, spool, job.now)
            [outcome] = await self._accept_in(tx, [job])
            if isinstance(outcome, StoreError):
                raise outcome
            return outcome

        return await self._tx(fn)

    @staticmethod
    async def _stream_in(tx: _Tx, spool: SpooledMessage, now: float) -> int:
        row = await tx.one(
            "INSERT INTO blobs(length, sha256, chunks, created) VALUES (%s,'',0,%s) "
            "RETURNING id", (spool.total, now),
        )
        assert row is not None
        blob_id = int(row[0])
        digest = hashlib.sha256()
        total = seq = 0
        try:
            f = await asyncio.to_thread(open, spool.path, "rb")
        except OSError as exc:
            raise StoreError(f"cannot read the spooled message: {exc}") from None
        try:
            await asyncio.to_thread(f.seek, spool.offset)
            pending = bytearray(spool.prefix)
            left = spool.size  # bytes still to take from the file
            eof = False
            while True:
                while len(pending) < BLOB_CHUNK and not eof:
                    want = min(BLOB_CHUNK - len(pending), left)
                    more = await asyncio.to_thread(f.read, want) if want else b""
                    left -= len(more)
                    eof = not more
                    pending += more
                piece = bytes(pending[:BLOB_CHUNK])
                del pending[:BLOB_CHUNK]
                digest.update(piece)
                total += len(piece)
                await tx.run("INSERT INTO blob_chunks(blob_id, seq, data) VALUES (%s,%s,%b)",
                             (blob_id, seq, piece))
                seq += 1
                if eof and not pending:
                    break
        except OSError as exc:
            raise StoreError(f"cannot read the spooled message: {exc}") from None
        finally:
            await asyncio.to_thread(f.close)
        if total != spool.total:
            raise StoreError(f"the spooled message has {total} bytes, not {spool.total}")
        await tx.run("UPDATE blobs SET sha256=%s, chunks=%s WHERE id=%s",
                     (digest.digest(), seq, blob_id))
        return blob_id

    async def _run_accepts(self) -> None:
        """One of up to ``_max_accept_runners`` loops that commit queued accepts, every
        one waiting at a time in one transaction (group commit, see the module
        docstring)."""
        try:
            while self._accepts:
                batch = [j for j in self._accepts[:ACCEPT_BATCH]
                         if j.future is not None and not j.future.done()]
                del self._accepts[:ACCEPT_BATCH]
                if batch:
                    await self._accept_batch(batch)
        finally:
            self._accept_runners -= 1

    async def _accept_batch(self, batch: list[_Accept]) -> None:
        try:
            outcomes: list[AcceptResult | StoreError] = await self._tx(
                lambda tx: self._accept_in(tx, batch), pipeline=True)
        except StoreError as exc:
            # One job's failure must not fail the others: the batch was rolled back, so
            # each job is tried alone. Not after a lost connection, though: COMMIT may
            # have gone through, and a retry could deliver twice.
            lost = isinstance(exc.__cause__, psycopg.OperationalError)
            if len(batch) > 1 and not lost:
                for job in batch:
                    await self._accept_batch([job])
                return
            outcomes = [exc] * len(batch)
        except BaseException as exc:  # a bug, or cancellation: no caller waits forever
            for job in batch:
                if job.future is not None and not job.future.done():
                    job.future.set_exception(exc)
            raise
        for job, outcome in zip(batch, outcomes, strict=True):
            assert job.future is not None
            if job.future.done():
                continue
            if isinstance(outcome, StoreError):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)

    async def _accept_in(self, tx: _Tx, batch: list[_Accept]
                         ) -> list[AcceptResult | StoreError]:
        """Every accept of the batch in one transaction, in a fixed number of round trips:
        lock the accounts (reading their quotas) and the target mailboxes with their
        INBOXes, decide each job (quota, a gone folder means INBOX), then write all blobs,
        UIDs, messages and queue rows at once. A refused job (QuotaExceeded, NotFound)
        writes nothing and does not hold up the others."""
        accounts = sorted({t.account_id for job in batch for t in job.local})
        quotas: dict[int, int] = {}
        boxes: dict[tuple[int, str], int] = {}
        fresh = sum(1 for job in batch if job.blob_id is None)  # blobs written with the batch
        # Sent together (one round trip in pipeline mode), executed in this order. Lock
        # order: accounts, then mailboxes by id (see the module docstring). Ids of
        # refused jobs' blobs are simply never used.
        account_rows = await tx.conn.execute(
            "SELECT id, quota_bytes FROM accounts WHERE id=ANY(%s) ORDER BY id "
            "FOR NO KEY UPDATE", (accounts,),
        ) if accounts else None
        names = sorted({normalize_mailbox_name(t.mailbox) for job in batch
                        for t in job.local} | {"INBOX"})
        box_rows = await tx.conn.execute(
            "SELECT id, account_id, name FROM mailboxes WHERE account_id=ANY(%s) "
            "AND name=ANY(%s) ORDER BY id FOR NO KEY UPDATE", (accounts, names),
        ) if accounts else None
        id_rows = await tx.conn.execute(
            "SELECT nextval(pg_get_serial_sequence('blobs', 'id')) "
            "FROM generate_series(1, %s)", (fresh,),
        ) if fresh else None
        if account_rows is not None and box_rows is not None:
            quotas = {int(r[0]): int(r[1]) for r in await account_rows.fetchall()}
            boxes = {(int(r[1]), r[2]): int(r[0]) for r in await box_rows.fetchall()}
        blob_ids = [int(r[0]) for r in await id_rows.fetchall()] if id_rows is not None else []
        used = {acc: await self._usage(tx, acc) for acc in accounts if quotas.get(acc)}
        outcomes: list[AcceptResult | StoreError | None] = []
        plans: list[list[int]] = []  # the mailbox of each target, per accepted job
        for job in batch:
            added: dict[int, int] = {}
            plan: list[int] = []
            try:
                for t in job.local:
                    acc = t.account_id
                    box = boxes.get((acc, normalize_mailbox_name(t.mailbox)),
                                    boxes.get((acc, "INBOX")))
                    if box is None:
                        raise NotFound(f"account {acc} has no mailbox {t.mailbox}")
                    if acc in used:
                        added[acc] = added.get(acc, 0) + job.size - job.freed
                        if used[acc] + added[acc] > quotas[acc]:
                            raise QuotaExceeded(f"account {acc} is over its quota")
                    plan.append(box)
            except StoreError as exc:
                outcomes.append(exc)
                plans.append([])
                continue
            for acc, n in added.items():
                used[acc] += n
            outcomes.append(None)
            plans.append(plan)
        ok = [i for i, o in enumerate(outcomes) if o is None]
        if ok:
            await self._write_accepts(tx, [batch[i] for i in ok], [plans[i] for i in ok],
                                      outcomes, ok, iter(blob_ids))
        done: list[AcceptResult | StoreError] = []
        for outcome in outcomes:
            assert outcome is not None  # every accepted job got its result above
            done.append(outcome)
        return done

    @staticmethod
    async def _write_accepts(tx: _Tx, jobs: list[_Accept], plans: list[list[int]],
                             outcomes: list[AcceptResult | StoreError | None],
                             slots: list[int], new_ids: Iterator[int]) -> None:
        blob_ids = [j.blob_id if j.blob_id is not None else next(new_ids) for j in jobs]
        counts: dict[int, int] = {}
        for plan in plans:
            for box in plan:
                counts[box] = counts.get(box, 0) + 1
        next_uid: dict[int, int] = {}
        modseq: dict[int, int] = {}
        if counts:
            rows = await tx.all(
                "UPDATE mailboxes m SET uidnext=m.uidnext+c.n, highestmodseq=m.highestmodseq+1 "
                "FROM unnest(%s::bigint[], %s::bigint[]) AS c(id, n) WHERE m.id=c.id "
                "RETURNING m.id, m.uidnext-c.n, m.highestmodseq",
                (list(counts), list(counts.values())),
            )
            for box, first, ms in rows:
                next_uid[int(box)], modseq[int(box)] = int(first), int(ms)
            tx.touched.update(counts)
        messages: list[tuple[Any, ...]] = []
        queued: list[tuple[Any, ...]] = []
        for job, plan, blob_id, slot in zip(jobs, plans, blob_ids, slots, strict=True):
            uids: list[tuple[int, int]] = []
            for t, box in zip(job.local, plan, strict=True):
                uid = next_uid[box]
                next_uid[box] += 1
                messages.append((box, uid, blob_id, job.size,
                                 t.internaldate if t.internaldate is not None else job.now,
                                 sorted(t.flags), modseq[box]))
                uids.append((box, uid))
            priority = int(job.env.obj.get("priority", 0))
            queued += [(job.message_id, blob_id, job.env, r.address, r.notify, r.orcpt,
                        QueueState.PENDING.value, job.now, job.now, priority)
                       for r in job.remote]
            outcomes[slot] = AcceptResult(job.message_id, blob_id, tuple(uids))
        async with tx.conn.cursor() as cur:
            written = [(b, j) for b, j in zip(blob_ids, jobs, strict=True) if j.blob_id is None]
            if written:
                await cur.executemany(
                    "INSERT INTO blobs(id, length, sha256, chunks, created) "
                    "VALUES (%s,%s,%s,%s,%s)",
                    [(b, j.size, j.digest, len(j.chunks), j.now) for b, j in written],
                )
                await cur.executemany(
                    "INSERT INTO blob_chunks(blob_id, seq, data) VALUES (%s,%s,%b)",
                    [(b, seq, chunk) for b, j in written for seq, chunk in enumerate(j.chunks)],
                )
            if messages:
                await cur.executemany(
                    "INSERT INTO messages VALUES (%s,%s,%s,%s,%s,%s,%s)", messages)
            if queued:
                tx.queue_woken = True
                await cur.executemany(
                    "INSERT INTO queue(message_id, blob_id, envelope, recipient, notify,"
                    " orcpt, state, next_attempt, created, priority)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    queued,
                )

    @staticmethod
    async def _usage(tx: _Tx, account_id: int) -> int:
        row = await tx.one(
            "SELECT coalesce(sum(m.size),0)::bigint FROM messages m JOIN mailboxes b "
            "ON m.mailbox_id=b.id WHERE b.account_id=%s", (account_id,),
        )
        assert row is not None
        return int(row[0])

    async def _check_quota(self, tx: _Tx, account_id: int, size: int) -> None:
        row = await tx.one("SELECT quota_bytes FROM accounts WHERE id=%s", (account_id,))
        if row is None or not row[0]:
            return
        if await self._usage(tx, account_id) + size > row[0]:
            raise QuotaExceeded(f"account {account_id} is over its quota")

    @staticmethod
    async def _next_uids(tx: _Tx, box_id: int, count: int) -> tuple[int, int]:
        """Reserve ``count`` UIDs; returns the first and the new HIGHESTMODSEQ."""
        row = await tx.one(
            "UPDATE mailboxes SET uidnext=uidnext+%s, highestmodseq=highestmodseq+1 "
            "WHERE id=%s RETURNING uidnext-%s, highestmodseq", (count, box_id, count),
        )
        if row is None:
            raise NotFound(f"mailbox {box_id} is gone")
        return int(row[0]), int(row[1])

    @staticmethod
    async def _lock_mailbox(tx: _Tx, box_id: int) -> None:
        """Writers lock the mailbox row before its message rows (one order, no
        deadlocks between flag changes, expunges, moves and deliveries)."""
        await tx.run("SELECT 1 FROM mailboxes WHERE id=%s FOR NO KEY UPDATE", (box_id,))

    @staticmethod
    async def _bump_modseq(tx: _Tx, box_id: int) -> int:
        row = await tx.one(
            "UPDATE mailboxes SET highestmodseq=highestmodseq+1 WHERE id=%s "
            "RETURNING highestmodseq", (box_id,),
        )
        if row is None:
            raise NotFound(f"mailbox {box_id} is gone")
        return int(row[0])

    async def read_blob(self, blob_id: int) -> bytes:
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT length, sha256, chunks FROM blobs WHERE id=%s", (blob_id,)
            )
            head = await cur.fetchone()
            if head is None:
                raise NotFound(f"no blob {blob_id}")
            cur = await conn.execute(
                "SELECT seq, data FROM blob_chunks WHERE blob_id=%s ORDER BY seq",
                (blob_id,), binary=True,
            )
            rows = await cur.fetchall()
        data, problem = await self._check_blob(head, rows)
        if problem is not None:
            raise StorageCorrupt(f"blob {blob_id}: {problem}")
        return data

    async def blob_size(self, blob_id: int) -> int:
        rows = await self._query("SELECT length FROM blobs WHERE id=%s", (blob_id,))
        if not rows:
            raise NotFound(f"no blob {blob_id}")
        return int(rows[0][0])

    async def stream_blob(
        self, blob_id: int, offset: int = 0, length: int | None = None,
        chunk: int = 256 * 1024,
    ) -> AsyncIterator[bytes]:
        """The bytes ``[offset, offset+length)`` in pieces of at most ``chunk``, one stored
        chunk in memory at a time. The whole blob is checked against its length and
        sha256 first (a streamed hash, remembered for later reads of the same blob); no
        pooled connection is held between pieces, however slow the reader."""
        rows = await self._query(
            "SELECT length, sha256, chunks FROM blobs WHERE id=%s", (blob_id,))
        if not rows:
            raise NotFound(f"no blob {blob_id}")
        size, expected, nchunks = int(rows[0][0]), bytes(rows[0][1]), int(rows[0][2])
        if blob_id not in self._verified:
            digest = hashlib.sha256()
            total = 0
            for seq in range(nchunks):
                part = await self._chunk(blob_id, seq)
                digest.update(part)
                total += len(part)
            if total != size:
                raise StorageCorrupt(f"blob {blob_id}: length {total}, the index says {size}")
            if digest.digest() != expected:
                raise StorageCorrupt(f"blob {blob_id}: sha256 does not match the index")
            self._verified[blob_id] = None
            if len(self._verified) > 4096:
                self._verified.pop(next(iter(self._verified)))
        end = size if length is None else min(size, offset + length)
        pos = max(0, offset)
        while pos < end:  # stored chunks are BLOB_CHUNK bytes, the last one shorter
            seq, skip = divmod(pos, BLOB_CHUNK)
            part = await self._chunk(blob_id, seq)
            part = part[skip:skip + (end - pos)]
            if not part:
                raise StorageCorrupt(f"blob {blob_id} is shorter than the index says")
            for i in range(0, len(part), chunk):
                yield part[i:i + chunk]
            pos += len(part)

    async def _chunk(self, blob_id: int, seq: int) -> bytes:
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT data FROM blob_chunks WHERE blob_id=%s AND seq=%s", (blob_id, seq),
                binary=True,
            )
            row = await cur.fetchone()
        if row is None:
            raise StorageCorrupt(f"blob {blob_id}: chunk {seq} is missing")
        return bytes(row[0])

    @staticmethod
    async def _check_blob(head: tuple[Any, ...], rows: list[tuple[Any, ...]]
                          ) -> tuple[bytes, str | None]:
        length, digest, nchunks = head
        if [r[0] for r in rows] != list(range(nchunks)):
            return b"", f"{nchunks} chunks expected, found {len(rows)}"
        data = b"".join(bytes(r[1]) for r in rows)
        if len(data) != length:
            return b"", f"length {len(data)}, the index says {length}"
        if await _sha256(data) != bytes(digest):
            return b"", "sha256 does not match the index"
        return data, None

    async def verify_blobs(self) -> list[BlobProblem]:
        problems: list[BlobProblem] = []
        last = 0
        while True:
            heads = await self._query(
                "SELECT id, length, sha256, chunks FROM blobs WHERE id>%s ORDER BY id LIMIT 100",
                (last,),
            )
            if not heads:
                return problems
            for blob_id, *head in heads:
                last = blob_id
                async with self._conn() as conn:
                    cur = await conn.execute(
                        "SELECT seq, data FROM blob_chunks WHERE blob_id=%s ORDER BY seq",
                        (blob_id,), binary=True,
                    )
                    rows = await cur.fetchall()
                _, problem = await self._check_blob(tuple(head), rows)
                if problem is not None:
                    problems.append(BlobProblem(blob_id, problem))

    # no message and no pending or deferred queue item references the blob b
    _UNREFERENCED = (
        "NOT EXISTS(SELECT 1 FROM messages m WHERE m.blob_id=b.id) "
        "AND NOT EXISTS(SELECT 1 FROM queue q WHERE q.blob_id=b.id "
        "AND q.state IN ('pending','deferred'))"
    )

    async def store_stats(self) -> StoreStats:
        query = (
            "SELECT count(*), "  # noqa: S608 (our constant)
            "coalesce(sum(length) FILTER (WHERE NOT free),0)::bigint, "
            "coalesce(sum(length) FILTER (WHERE free),0)::bigint FROM "
            f"(SELECT b.length, {self._UNREFERENCED} AS free FROM blobs b) s"
        )
        rows = await self._query(query)
        disk = await self._query(
            "SELECT coalesce(sum(pg_total_relation_size(to_regclass(t))),0)::bigint "
            "FROM unnest(%s::text[]) t", (list(TABLES),),
        )
        blobs, live, free = rows[0]
        return StoreStats(int(blobs), int(live), int(free), int(disk[0][0]))

    async def compact(self, min_age: float = 0.0) -> int:
        """Delete the blobs that ``blob_gc`` recorded at least ``min_age`` seconds ago and
        that are still unreferenced (their chunks go by ON DELETE CASCADE), a batch per
        transaction; returns their bytes (PostgreSQL's vacuum then reuses the space).
        Safe on several nodes at once (SKIP LOCKED) and against writers: a new blob is
        referenced in the transaction that creates it, and a copy locks its source row."""
        cutoff = time.time() - min_age
        reclaimed = 0
        while True:
            async def fn(tx: _Tx) -> tuple[int, int]:
                rows = await tx.all(
                    "DELETE FROM blob_gc WHERE blob_id IN (SELECT blob_id FROM blob_gc "
                    "WHERE since<=%s ORDER BY blob_id LIMIT 200 FOR UPDATE SKIP LOCKED) "
                    "RETURNING blob_id", (cutoff,),
                )
                if not rows:
                    return 0, 0
                freed = await tx.all(
                    "DELETE FROM blobs b WHERE b.id=ANY(%s) AND "  # noqa: S608
                    f"{self._UNREFERENCED} RETURNING length", ([r[0] for r in rows],),
                )
                return len(rows), sum(int(r[0]) for r in freed)

            seen, freed = await self._tx(fn)
            reclaimed += freed
            if not seen:
                return reclaimed

    # --- coordination (locks and counters shared by processes and nodes) ---------------

    async def try_lock(self, name: str, owner: str, ttl: float) -> bool:
        now = time.time()

        async def fn(tx: _Tx) -> bool:
            row = await tx.one(
                "INSERT INTO locks(name, owner, expires) VALUES (%s,%s,%s) "
                "ON CONFLICT(name) DO UPDATE SET owner=excluded.owner, expires=excluded.expires "
                "WHERE locks.owner=excluded.owner OR locks.expires<%s RETURNING owner",
                (name, owner, now + ttl, now),
            )
            return row is not None

        return await self._tx(fn)

    async def unlock(self, name: str, owner: str) -> None:
        async def fn(tx: _Tx) -> None:
            await tx.run("DELETE FROM locks WHERE name=%s AND owner=%s", (name, owner))

        await self._tx(fn)

    async def add_to_counter(self, key: str, amount: int, window: float) -> int:
        now = time.time()

        async def fn(tx: _Tx) -> int:
            await tx.run(
                "INSERT INTO window_counters(key, second, amount) VALUES (%s,%s,%s) "
                "ON CONFLICT(key, second) DO UPDATE "
                "SET amount=window_counters.amount+excluded.amount",
                (key, int(now), amount),
            )
            await tx.run("DELETE FROM window_counters WHERE key=%s AND second<=%s",
                         (key, int(now - window)))
            row = await tx.one(
                "SELECT coalesce(sum(amount),0)::bigint FROM window_counters WHERE key=%s",
                (key,),
            )
            assert row is not None
            return int(row[0])

        return await self._tx(fn)

    async def counter_value(self, key: str, window: float) -> int:
        rows = await self._query(
            "SELECT coalesce(sum(amount),0)::bigint FROM window_counters "
            "WHERE key=%s AND second>%s", (key, int(time.time() - window)),
        )
        return int(rows[0][0])

    async def reset_counter(self, key: str) -> None:
        async def fn(tx: _Tx) -> None:
            await tx.run("DELETE FROM window_counters WHERE key=%s", (key,))

        await self._tx(fn)

    # --- mailboxes ------------------------------------------------------------------

    async def list_mailboxes(self, account_id: int) -> list[MailboxInfo]:
        rows = await self._query(
            f"SELECT {_MAILBOX_COLS} FROM mailboxes WHERE account_id=%s "  # noqa: S608
            "ORDER BY name COLLATE \"C\"", (account_id,),
        )
        return [_mailbox(r) for r in rows]

    async def get_mailbox(self, account_id: int, name: str) -> MailboxInfo | None:
        rows = await self._query(
            f"SELECT {_MAILBOX_COLS} FROM mailboxes WHERE account_id=%s AND name=%s",  # noqa: S608
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

        async def fn(tx: _Tx) -> None:
            await self._insert_mailbox(tx, account_id, name, special_use, subscribe)

        await self._tx(fn)
        box = await self.get_mailbox(account_id, name)
        assert box is not None
        return box

    async def delete_mailbox(self, account_id: int, name: str) -> None:
        name = normalize_mailbox_name(name)
        if name == "INBOX":
            raise StoreError("INBOX cannot be deleted")

        async def fn(tx: _Tx) -> None:
            # messages and expunged go by ON DELETE CASCADE
            row = await tx.one(
                "DELETE FROM mailboxes WHERE account_id=%s AND name=%s RETURNING id",
                (account_id, name),
            )
            if row is None:
                raise NotFound(f"no mailbox {name}")
            tx.touched.add(int(row[0]))

        await self._tx(fn)

    async def rename_mailbox(self, account_id: int, old: str, new: str) -> None:
        old, new = normalize_mailbox_name(old), normalize_mailbox_name(new)

        async def fn(tx: _Tx) -> None:
            box = await tx.one(
                "SELECT id, uidnext, highestmodseq FROM mailboxes "
                "WHERE account_id=%s AND name=%s FOR UPDATE", (account_id, old),
            )
            if box is None:
                raise NotFound(f"no mailbox {old}")
            if await tx.one("SELECT 1 FROM mailboxes WHERE account_id=%s AND name=%s",
                            (account_id, new)):
                raise AlreadyExists(f"mailbox {new} already exists")
            box_id, uidnext, highest = box
            tx.touched.add(box_id)
            if old == "INBOX":
                # RFC 9051 §6.3.6: messages move to the new mailbox, INBOX stays, empty.
                row = await tx.one(
                    "INSERT INTO mailboxes(account_id, name, uidvalidity, uidnext,"
                    " highestmodseq) VALUES (%s,%s,%s,%s,%s) RETURNING id",
                    (account_id, new, await self._next_uidvalidity(tx), uidnext, highest),
                )
                assert row is not None
                modseq = await self._bump_modseq(tx, box_id)
                await tx.run(
                    "INSERT INTO expunged SELECT %s, uid, %s FROM messages WHERE mailbox_id=%s "
                    "ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq=excluded.modseq",
                    (box_id, modseq, box_id),
                )
                await tx.run("UPDATE messages SET mailbox_id=%s WHERE mailbox_id=%s",
                             (row[0], box_id))
                return
            children = await tx.all(
                "SELECT id, name FROM mailboxes WHERE account_id=%s AND left(name, %s)=%s",
                (account_id, len(old) + 1, old + "/"),
            )
            await tx.run("UPDATE mailboxes SET name=%s WHERE id=%s", (new, box_id))
            await self._rename_subscription(tx, account_id, old, new)
            for child_id, child_name in children:
                renamed = new + child_name[len(old):]
                await tx.run("UPDATE mailboxes SET name=%s WHERE id=%s", (renamed, child_id))
                await self._rename_subscription(tx, account_id, child_name, renamed)

        await self._tx(fn)

    @staticmethod
    async def _rename_subscription(tx: _Tx, account_id: int, old: str, new: str) -> None:
        moved = await tx.run(
            "DELETE FROM subscriptions WHERE account_id=%s AND name=%s", (account_id, old)
        )
        if moved:
            await tx.run(
                "INSERT INTO subscriptions VALUES (%s,%s) ON CONFLICT DO NOTHING",
                (account_id, new),
            )

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        """Subscriptions are names: they may outlive their mailbox (RFC 9051 §6.3.7)."""
        name = normalize_mailbox_name(name)

        async def fn(tx: _Tx) -> None:
            if subscribed:
                await tx.run(
                    "INSERT INTO subscriptions VALUES (%s,%s) ON CONFLICT DO NOTHING",
                    (account_id, name),
                )
            else:
                await tx.run(
                    "DELETE FROM subscriptions WHERE account_id=%s AND name=%s",
                    (account_id, name),
                )

        await self._tx(fn, durable=self.fsync_always)

    async def list_subscriptions(self, account_id: int) -> list[str]:
        rows = await self._query(
            "SELECT name FROM subscriptions WHERE account_id=%s ORDER BY name COLLATE \"C\"",
            (account_id,),
        )
        return [r[0] for r in rows]

    async def mailbox_status(self, mailbox_id: int) -> MailboxStatus:
        rows = await self._query(
            "SELECT b.uidnext, b.uidvalidity, b.highestmodseq, count(m.uid), "
            "coalesce(sum(m.size),0)::bigint, "
            "count(m.uid) FILTER (WHERE '\\Seen'=ANY(m.flags)), "
            "count(m.uid) FILTER (WHERE '\\Deleted'=ANY(m.flags)), "
            "count(m.uid) FILTER (WHERE m.uid>=b.first_recent_uid) "
            "FROM mailboxes b LEFT JOIN messages m ON m.mailbox_id=b.id WHERE b.id=%s "
            "GROUP BY b.id", (mailbox_id,),
        )
        if not rows:
            raise NotFound(f"no mailbox {mailbox_id}")
        uidnext, validity, modseq, total, size, seen, deleted, recent = rows[0]
        return MailboxStatus(
            messages=total, unseen=total - seen, deleted=deleted, size=size,
            uidnext=uidnext, uidvalidity=validity, highestmodseq=modseq, recent=recent,
        )

    # --- messages -------------------------------------------------------------------

    async def list_messages(self, mailbox_id: int) -> list[MessageMeta]:
        rows = await self._query(
            f"SELECT {_META_COLS} FROM messages WHERE mailbox_id=%s ORDER BY uid",  # noqa: S608
            (mailbox_id,),
        )
        return [_meta(r) for r in rows]

    async def changes_since(self, mailbox_id: int, modseq: int) -> Changes:
        box = await self._query("SELECT highestmodseq FROM mailboxes WHERE id=%s",
                                (mailbox_id,))
        if not box:
            raise NotFound(f"no mailbox {mailbox_id}")
        highest = int(box[0][0])
        if highest <= modseq:  # the common NOOP/IDLE case: nothing happened
            return Changes(highest, (), ())
        changed = await self._query(
            f"SELECT {_META_COLS} FROM messages WHERE mailbox_id=%s AND modseq>%s "  # noqa: S608
            "ORDER BY uid", (mailbox_id, modseq),
        )
        gone = await self._query(
            "SELECT uid FROM expunged WHERE mailbox_id=%s AND modseq>%s ORDER BY uid",
            (mailbox_id, modseq),
        )
        return Changes(highest, tuple(_meta(r) for r in changed), tuple(r[0] for r in gone))

    async def store_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        flags: frozenset[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> FlagUpdate:
        wanted = sorted(set(uids))

        async def fn(tx: _Tx) -> FlagUpdate:
            tx.touched.add(mailbox_id)
            await self._lock_mailbox(tx, mailbox_id)
            rows = await tx.all(
                f"SELECT {_META_COLS} FROM messages WHERE mailbox_id=%s "  # noqa: S608
                "AND uid=ANY(%s) ORDER BY uid FOR UPDATE", (mailbox_id, wanted),
            )
            changed: list[MessageMeta] = []
            failed: list[int] = []
            updates: list[tuple[list[str], int]] = []
            for meta in map(_meta, rows):
                if unchanged_since is not None and meta.modseq > unchanged_since:
                    failed.append(meta.uid)
                    continue
                if mode is FlagMode.ADD:
                    new = meta.flags | flags
                elif mode is FlagMode.REMOVE:
                    new = meta.flags - flags
                else:
                    new = flags
                if new != meta.flags:
                    updates.append((sorted(new), meta.uid))
                    changed.append(meta)
            if not updates:
                return FlagUpdate((), tuple(failed))
            modseq = await self._bump_modseq(tx, mailbox_id)
            async with tx.conn.cursor() as cur:
                await cur.executemany(
                    "UPDATE messages SET flags=%s, modseq=%s WHERE mailbox_id=%s AND uid=%s",
                    [(f, modseq, mailbox_id, uid) for f, uid in updates],
                )
            return FlagUpdate(
                tuple(MessageMeta(m.uid, m.blob_id, m.size, m.internaldate, frozenset(f), modseq)
                      for m, (f, _) in zip(changed, updates, strict=True)),
                tuple(failed),
            )

        return await self._tx(fn, durable=self.fsync_always)

    async def _copy(self, mailbox_id: int, uids: Sequence[int], target: int, move: bool
                    ) -> list[tuple[int, int]]:
        wanted = sorted(set(uids))

        async def fn(tx: _Tx) -> list[tuple[int, int]]:
            tx.touched.update({mailbox_id, target} if move else {target})
            owner = await tx.one("SELECT account_id FROM mailboxes WHERE id=%s", (target,))
            if owner is None:
                raise NotFound("target mailbox is gone")
            await tx.run("SELECT 1 FROM accounts WHERE id=%s FOR NO KEY UPDATE", (owner[0],))
            await tx.run(
                "SELECT 1 FROM mailboxes WHERE id=ANY(%s) ORDER BY id FOR NO KEY UPDATE",
                (sorted({mailbox_id, target}),),
            )
            # FOR SHARE: the source rows (and so their blobs) stay until we commit
            rows = await tx.all(
                "SELECT uid, blob_id, size, internaldate, flags FROM messages "
                "WHERE mailbox_id=%s AND uid=ANY(%s) ORDER BY uid FOR SHARE",
                (mailbox_id, wanted),
            )
            if not rows:
                return []
            if not move:
                await self._check_quota(tx, owner[0], sum(int(r[2]) for r in rows))
            first, modseq = await self._next_uids(tx, target, len(rows))
            pairs = [(int(r[0]), first + i) for i, r in enumerate(rows)]
            async with tx.conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO messages VALUES (%s,%s,%s,%s,%s,%s,%s)",
                    [(target, new_uid, r[1], r[2], r[3], r[4], modseq)
                     for (_, new_uid), r in zip(pairs, rows, strict=True)],
                )
            if move:
                await self._expunge_uids(tx, mailbox_id, [p[0] for p in pairs])
            return pairs

        return await self._tx(fn)

    async def copy_messages(
        self, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int
    ) -> list[tuple[int, int]]:
        return await self._copy(mailbox_id, uids, target_mailbox_id, move=False)

    async def move_messages(
        self, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int
    ) -> list[tuple[int, int]]:
        return await self._copy(mailbox_id, uids, target_mailbox_id, move=True)

    async def _expunge_uids(self, tx: _Tx, mailbox_id: int, uids: list[int]) -> None:
        modseq = await self._bump_modseq(tx, mailbox_id)
        await tx.run("DELETE FROM messages WHERE mailbox_id=%s AND uid=ANY(%s)",
                     (mailbox_id, uids))
        await tx.run(
            "INSERT INTO expunged SELECT %s, u, %s FROM unnest(%s::bigint[]) u "
            "ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq=excluded.modseq",
            (mailbox_id, modseq, uids),
        )

    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]:
        wanted = None if uids is None else sorted(set(uids))

        async def fn(tx: _Tx) -> list[int]:
            tx.touched.add(mailbox_id)
            await self._lock_mailbox(tx, mailbox_id)
            if wanted is None:
                rows = await tx.all(
                    "SELECT uid FROM messages WHERE mailbox_id=%s AND '\\Deleted'=ANY(flags) "
                    "ORDER BY uid FOR UPDATE", (mailbox_id,),
                )
            else:
                rows = await tx.all(
                    "SELECT uid FROM messages WHERE mailbox_id=%s AND uid=ANY(%s) "
                    "ORDER BY uid FOR UPDATE", (mailbox_id, wanted),
                )
            gone = [int(r[0]) for r in rows]
            if gone:
                await self._expunge_uids(tx, mailbox_id, gone)
            return gone

        return await self._tx(fn, durable=self.fsync_always)

    async def replace_message(self, mailbox_id: int, uid: int, data: bytes | SpooledMessage,
                              target: LocalTarget) -> AcceptResult:
        now = time.time()
        env = Jsonb({"sender": "", "ret": None, "envid": None, "smtputf8": False,
                     "body_8bit": False, "authenticated_as": None})
        job = await _job(new_message_id(), env, (target,), (), data, now)

        async def fn(tx: _Tx) -> AcceptResult:
            # the old message first: a replace of a message gone writes nothing
            old = await tx.one(
                "SELECT m.size, b.account_id FROM messages m JOIN mailboxes b "
                "ON b.id=m.mailbox_id WHERE m.mailbox_id=%s AND m.uid=%s", (mailbox_id, uid),
            )
            if old is None:
                raise NotFound(f"no message {uid} in mailbox {mailbox_id} to replace")
            # RFC 8508 §3.4: the quota sees the net growth (the old message goes too)
            job.freed = int(old[0]) if int(old[1]) == target.account_id else 0
            if isinstance(data, SpooledMessage):
                job.blob_id = await self._stream_in(tx, data, now)
            [outcome] = await self._accept_in(tx, [job])  # locks the account, then boxes
            if isinstance(outcome, StoreError):
                raise outcome
            tx.touched.add(mailbox_id)
            await self._lock_mailbox(tx, mailbox_id)
            still = await tx.one("SELECT 1 FROM messages WHERE mailbox_id=%s AND uid=%s "
                                 "FOR UPDATE", (mailbox_id, uid))
            if still is None:  # expunged meanwhile by another session: nothing to replace
                raise NotFound(f"message {uid} of mailbox {mailbox_id} went meanwhile")
            await self._expunge_uids(tx, mailbox_id, [uid])
            return outcome

        return await self._tx(fn)

    async def claim_recent(self, mailbox_id: int) -> int:
        async def fn(tx: _Tx) -> int:
            row = await tx.one(
                "UPDATE mailboxes n SET first_recent_uid=n.uidnext FROM "
                "(SELECT id, first_recent_uid FROM mailboxes WHERE id=%s FOR UPDATE) o "
                "WHERE n.id=o.id RETURNING o.first_recent_uid", (mailbox_id,),
            )
            if row is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            return int(row[0])

        return await self._tx(fn, durable=self.fsync_always)

    # --- outbound queue -------------------------------------------------------------

    async def due_queue_items(self, now: float, limit: int = 100) -> list[QueueItem]:
        rows = await self._query(
            f"SELECT {_QUEUE_COLS} FROM queue WHERE state IN ('pending','deferred') "  # noqa: S608
            "AND NOT EXISTS (SELECT 1 FROM queue_holds h WHERE h.item_id = queue.id) "
            "AND next_attempt<=%s ORDER BY next_attempt, id LIMIT %s", (now, limit),
        )
        return [_queue_item(r) for r in rows]

    async def claim_queue_items(
        self, now: float, limit: int, owner: str, lease: float
    ) -> list[QueueItem]:
        cols = ", ".join(f"q.{c.strip()}" for c in _QUEUE_COLS.split(","))
        query = (
            "WITH due AS (SELECT id FROM queue "  # noqa: S608 (our constants)
            "WHERE state IN ('pending','deferred') AND next_attempt<=%(now)s "
            "AND NOT EXISTS (SELECT 1 FROM queue_holds h WHERE h.item_id = queue.id) "
            "AND (claimed_by IS NULL OR lease_until<%(now)s) "
            # higher priority first (streams, issue 18), then oldest due
            "ORDER BY priority DESC, next_attempt, id LIMIT %(limit)s "
            "FOR UPDATE SKIP LOCKED) "
            "UPDATE queue q SET claimed_by=%(owner)s, lease_until=%(until)s FROM due "
            f"WHERE q.id=due.id RETURNING {cols}"
        )
        args = {"now": now, "owner": owner, "limit": limit, "until": now + lease}

        async def fn(tx: _Tx) -> list[tuple[Any, ...]]:
            cur = await tx.conn.execute(query, args)
            return await cur.fetchall()

        items = [_queue_item(r) for r in await self._tx(fn)]
        return sorted(items, key=lambda i: (-i.envelope.priority, i.next_attempt, i.id))

    async def renew_queue_claims(
        self, item_ids: Sequence[int], owner: str, until: float
    ) -> int:
        wanted = sorted(set(item_ids))

        async def fn(tx: _Tx) -> int:
            return await tx.run(
                "UPDATE queue SET lease_until=%s WHERE id=ANY(%s) AND claimed_by=%s",
                (until, wanted, owner),
            )

        return await self._tx(fn) if wanted else 0

    async def queue_claim_owners(self) -> list[str]:
        rows = await self._query(
            "SELECT DISTINCT claimed_by FROM queue WHERE claimed_by IS NOT NULL "
            "AND state IN ('pending','deferred') ORDER BY 1"
        )
        return [r[0] for r in rows]

    async def release_queue_claims_of(self, owner: str) -> int:
        async def fn(tx: _Tx) -> int:
            return await tx.run(
                "UPDATE queue SET claimed_by=NULL, lease_until=NULL WHERE claimed_by=%s",
                (owner,),
            )

        return await self._tx(fn)

    async def release_queue_items(self, item_ids: Sequence[int], owner: str) -> None:
        wanted = sorted(set(item_ids))

        async def fn(tx: _Tx) -> None:
            await tx.run(
                "UPDATE queue SET claimed_by=NULL, lease_until=NULL "
                "WHERE id=ANY(%s) AND claimed_by=%s", (wanted, owner),
            )

        if wanted:
            await self._tx(fn)

    async def reschedule_queue_items(self, item_ids: Sequence[int], when: float) -> int:
        """Make pending/deferred items due at ``when`` without counting an attempt, and
        wake every queue worker, in this process or another (``pochta queue retry``)."""
        wanted = sorted(set(item_ids))

        async def fn(tx: _Tx) -> int:
            tx.queue_woken = True
            return await tx.run(
                "UPDATE queue SET next_attempt=%s WHERE id=ANY(%s) "
                "AND state IN ('pending','deferred')", (when, wanted),
            )

        return await self._tx(fn)

    async def list_queue(self) -> list[QueueItem]:
        rows = await self._query(f"SELECT {_QUEUE_COLS} FROM queue ORDER BY id")  # noqa: S608
        return [_queue_item(r) for r in rows]

    async def update_queue_item(
        self, item_id: int, state: QueueState, next_attempt: float, last_reply: str
    ) -> None:
        async def fn(tx: _Tx) -> None:
            n = await tx.run(
                "UPDATE queue SET state=%s, next_attempt=%s, last_reply=%s, "
                "attempts=attempts+1, claimed_by=NULL, lease_until=NULL WHERE id=%s",
                (state.value, next_attempt, last_reply, item_id),
            )
            if n == 0:
                raise NotFound(f"no queue item {item_id}")

        await self._tx(fn)

    async def delete_queue_item(self, item_id: int) -> None:
        async def fn(tx: _Tx) -> None:
            if await tx.run("DELETE FROM queue WHERE id=%s", (item_id,)) == 0:
                raise NotFound(f"no queue item {item_id}")

        await self._tx(fn)

    async def purge_queue(self, finished_before: float) -> int:
        async def fn(tx: _Tx) -> int:
            return await tx.run(
                "DELETE FROM queue WHERE state IN ('delivered','failed') AND next_attempt<%s",
                (finished_before,),
            )

        return await self._tx(fn)
