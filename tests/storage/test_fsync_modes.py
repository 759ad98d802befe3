"""``[storage] fsync``: which transactions wait for the disk, on both backends.

"optimized" (the default, like Dovecot's ``mail_fsync = optimized``): flag changes,
expunges, subscriptions and \\Recent claims commit without waiting for the fsync; whatever
makes a message exist (accept/APPEND, COPY, MOVE) always does. "always": every commit does.

The tests see what each transaction really got. SQLite: whether the WAL was fdatasynced
after the transaction's SQL ran and before the caller heard back (the writer thread and
the event loop commit with ``synchronous=NORMAL``; the writer thread, or for the loop's
commits the syncer thread, syncs the WAL outside the cross-process write lock);
PostgreSQL: ``current_setting('synchronous_commit')`` from inside the transaction.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pochta.storage.interfaces import Envelope, FlagMode, LocalTarget, MailStore
from pochta.storage.postgres import PostgresStore
from pochta.storage.sqlite import SQLiteStore, _Job
from tests.pgcluster import PgCluster

MSG = b"Subject: fsync\r\n\r\nbody\r\n"


class Recorder:
    """The durability of every write transaction since the last ``take()``."""

    def __init__(self) -> None:
        self.seen: list[bool] = []
        self.unsynced: list[int] = []  # SQLite: indexes in ``seen`` awaiting a WAL sync

    def take(self) -> list[bool]:
        seen, self.seen = self.seen, []
        self.unsynced = []
        return seen

    def wal_synced(self) -> None:
        for i in self.unsynced:
            self.seen[i] = True
        self.unsynced = []


def spy_job(job: _Job, rec: Recorder) -> None:
    """Wrap the job's SQL: it records whether a WAL fdatasync comes between it and the
    caller hearing back (whichever commits it: the writer thread or the event loop)."""
    inner = job.fn
    mine: list[int] = []

    def fn(conn: sqlite3.Connection, blob_id: int | None) -> Any:
        mine.append(len(rec.seen))
        rec.unsynced.append(mine[0])
        rec.seen.append(False)
        return inner(conn, blob_id)

    def heard_back(_: object) -> None:
        if mine and mine[0] in rec.unsynced:  # a later sync no longer counts
            rec.unsynced.remove(mine[0])

    job.fn = fn
    job.future.add_done_callback(heard_back)


def spy_sqlite(store: SQLiteStore, rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    real_dispatch = store._dispatch

    def dispatch(job: _Job, small: bool) -> None:
        spy_job(job, rec)
        real_dispatch(job, small)

    monkeypatch.setattr(store, "_dispatch", dispatch)
    real_sync = os.fdatasync
    wal = os.path.realpath(store.data_dir / "pochta.db-wal")

    def fdatasync(fd: int) -> None:
        real_sync(fd)
        if os.path.realpath(f"/proc/self/fd/{fd}") == wal:
            rec.wal_synced()

    monkeypatch.setattr(os, "fdatasync", fdatasync)


def spy_postgres(store: PostgresStore, rec: Recorder) -> None:
    tx = store._tx

    async def spying_tx(fn: Callable[[Any], Awaitable[Any]], **kw: Any) -> Any:
        async def inner(t: Any) -> Any:
            row = await t.one("SELECT current_setting('synchronous_commit')")
            rec.seen.append(row[0] != "off")
            return await fn(t)

        return await tx(inner, **kw)

    store._tx = spying_tx  # type: ignore[method-assign]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def open_store(backend: str, request: pytest.FixtureRequest, path: Path,
                     always: bool, rec: Recorder) -> MailStore:
    if backend == "sqlite":
        lite = await SQLiteStore.open(path, fsync_always=always)
        spy_sqlite(lite, rec, request.getfixturevalue("monkeypatch"))
        return lite
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    pg = await PostgresStore.open(cluster.fresh_dsn(), fsync_always=always)
    spy_postgres(pg, rec)
    return pg


@pytest.fixture
async def optimized(backend: str, request: pytest.FixtureRequest,
                    tmp_path: Path) -> AsyncIterator[tuple[MailStore, Recorder]]:
    rec = Recorder()
    store = await open_store(backend, request, tmp_path, False, rec)
    yield store, rec
    await store.close()


@pytest.fixture
async def always(backend: str, request: pytest.FixtureRequest,
                 tmp_path: Path) -> AsyncIterator[tuple[MailStore, Recorder]]:
    rec = Recorder()
    store = await open_store(backend, request, tmp_path, True, rec)
    yield store, rec
    await store.close()


async def durability_per_operation(store: MailStore, rec: Recorder) -> dict[str, list[bool]]:
    await store.add_domain("example.test")
    acc = await store.add_account("alice@example.test", "hash", None)
    inbox = await store.get_mailbox(acc.id, "INBOX")
    archive = await store.get_mailbox(acc.id, "Archive")
    assert inbox is not None and archive is not None
    rec.take()
    seen: dict[str, list[bool]] = {}
    await store.accept(MSG, Envelope(sender="a@elsewhere.test"), [LocalTarget(acc.id)])
    await store.accept(MSG, Envelope(sender="a@elsewhere.test"), [LocalTarget(acc.id)])
    seen["accept"] = rec.take()
    await store.copy_messages(inbox.id, [1], archive.id)
    seen["copy"] = rec.take()
    await store.move_messages(inbox.id, [2], archive.id)
    seen["move"] = rec.take()
    update = await store.store_flags(inbox.id, [1], frozenset({"\\Deleted"}), FlagMode.ADD)
    assert [m.uid for m in update.changed] == [1]
    seen["flags"] = rec.take()
    assert await store.expunge(inbox.id) == [1]
    seen["expunge"] = rec.take()
    await store.set_subscribed(acc.id, "Archive", True)
    seen["subscribe"] = rec.take()
    await store.claim_recent(archive.id)
    seen["recent"] = rec.take()
    # the operations really happened
    assert [m.uid for m in await store.list_messages(inbox.id)] == []
    assert len(await store.list_messages(archive.id)) == 2
    assert "Archive" in await store.list_subscriptions(acc.id)
    return seen


async def test_optimized_skips_fsync_for_metadata_only(
    optimized: tuple[MailStore, Recorder],
) -> None:
    seen = await durability_per_operation(*optimized)
    # a message never exists without its commit being on disk (MOVE: copy and expunge
    # are one durable transaction, so the message is never lost between them)
    assert seen["accept"] and all(seen["accept"])
    assert seen["copy"] == [True]
    assert seen["move"] == [True]
    for op in ("flags", "expunge", "subscribe", "recent"):
        assert seen[op] == [False], op


async def test_always_fsyncs_every_commit(always: tuple[MailStore, Recorder]) -> None:
    seen = await durability_per_operation(*always)
    for op, levels in seen.items():
        assert levels and all(levels), op


async def test_sqlite_durable_commit_after_relaxed_one_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a relaxed batch the next delivery is fsynced again (and with it the WAL frames
    of the relaxed commits before it)."""
    rec = Recorder()
    store = await SQLiteStore.open(tmp_path)
    spy_sqlite(store, rec, monkeypatch)
    try:
        await store.add_domain("example.test")
        acc = await store.add_account("alice@example.test", "hash", None)
        inbox = await store.get_mailbox(acc.id, "INBOX")
        assert inbox is not None
        for _ in range(3):
            await store.accept(MSG, Envelope(sender="a@x.test"), [LocalTarget(acc.id)])
            await store.store_flags(inbox.id, [1], frozenset({"\\Seen"}), FlagMode.ADD)
        levels = rec.take()
        assert levels[-6:] == [True, False, True, False, True, False]
    finally:
        await store.close()
