"""SQLite: small writes committed on the event loop's own connection (issue 15).

STORE, EXPUNGE, \\Recent claims and small deliveries (IMAP APPEND) run their SQL on the
loop, in one transaction per loop turn; a durable one is acknowledged after the store's
syncer thread has fdatasynced the WAL (tests/storage/test_fsync_modes.py checks which
commits are synced). These tests check what the loop must never do: wait for the write
lock, or let one failing job undo the others of its batch; and that the WAL is still
checkpointed although the loop's connection never does it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path
from typing import Any

import pytest

from pochta.storage import sqlite as sqlite_mod
from pochta.storage.interfaces import (
    Envelope,
    FlagMode,
    LocalTarget,
    NotFound,
    QuotaExceeded,
)
from pochta.storage.sqlite import SQLiteStore

ENV = Envelope(sender="a@elsewhere.test")


async def setup(tmp_path: Path) -> tuple[SQLiteStore, int, int]:
    store = await SQLiteStore.open(tmp_path)
    await store.add_domain("example.test")
    acc = await store.add_account("alice@example.test", "hash", None)
    inbox = await store.get_mailbox(acc.id, "INBOX")
    assert inbox is not None
    return store, acc.id, inbox.id


async def test_small_write_waits_for_a_held_lock_on_the_writer_not_the_loop(
    tmp_path: Path,
) -> None:
    store, account, inbox = await setup(tmp_path)
    try:
        await store.accept(b"Subject: a\r\n\r\nbody\r\n", ENV, [LocalTarget(account)])
        # another process (or a compaction's checkpoint) holds the write lock
        fd = os.open(tmp_path / "pochta.db-writer", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            task = asyncio.create_task(
                store.store_flags(inbox, [1], frozenset({"\\Seen"}), FlagMode.ADD))
            ticks = 0
            for _ in range(20):  # the loop keeps running meanwhile
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks == 20 and not task.done()
            assert (await store.get_mailbox(account, "INBOX")) is not None  # loop reads too
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        update = await asyncio.wait_for(task, 10)  # the writer thread committed it
        assert [m.flags for m in update.changed] == [frozenset({"\\Seen"})]
        assert (await store.list_messages(inbox))[0].flags == frozenset({"\\Seen"})
    finally:
        await store.close()


async def test_a_failing_job_of_a_loop_batch_leaves_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, account, inbox = await setup(tmp_path)
    transactions: list[int] = []
    real = store._commit_jobs

    def counting(conn: Any, batch: Any, places: Any, start: int) -> Any:
        transactions.append(len(batch))
        return real(conn, batch, places, start)

    monkeypatch.setattr(store, "_commit_jobs", counting)
    try:
        await store.accept(b"Subject: a\r\n\r\nbody\r\n", ENV, [LocalTarget(account)])
        transactions.clear()
        flags, missing, delivered = await asyncio.gather(
            store.store_flags(inbox, [1], frozenset({"\\Flagged"}), FlagMode.ADD),
            store.claim_recent(inbox + 1000),  # no such mailbox
            store.accept(b"Subject: b\r\n\r\nbody\r\n", ENV, [LocalTarget(account)]),
            return_exceptions=True,
        )
        assert transactions == [3]  # one transaction on the loop for the three
        assert isinstance(missing, NotFound)
        assert not isinstance(flags, BaseException) and len(flags.changed) == 1
        assert not isinstance(delivered, BaseException)
        assert delivered.local_uids == ((inbox, 2),)
        metas = await store.list_messages(inbox)
        assert [(m.uid, m.flags) for m in metas] == [
            (1, frozenset({"\\Flagged"})), (2, frozenset())]
    finally:
        await store.close()
    store = await SQLiteStore.open(tmp_path)  # and they are on disk
    try:
        assert [m.uid for m in await store.list_messages(inbox)] == [1, 2]
    finally:
        await store.close()


async def test_big_or_quota_bound_deliveries_stay_on_the_writer_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, account, inbox = await setup(tmp_path)
    on_loop: list[bool] = []
    real = store._dispatch

    def spy(job: Any, small: bool) -> None:
        on_loop.append(small)
        real(job, small)

    monkeypatch.setattr(store, "_dispatch", spy)
    try:
        await store.accept(b"Subject: a\r\n\r\nsmall\r\n", ENV, [LocalTarget(account)])
        big = b"Subject: b\r\n\r\n" + b"x" * (sqlite_mod.INLINE_MAX + 1)
        await store.accept(big, ENV, [LocalTarget(account)])  # a segment: fdatasync first
        await store.update_account("alice@example.test", quota_bytes=10_000_000)
        on_loop.clear()
        await store.accept(b"Subject: c\r\n\r\nsmall\r\n", ENV, [LocalTarget(account)])
        assert on_loop == [False]  # the quota check sums every message of the account
        assert [m.uid for m in await store.list_messages(inbox)] == [1, 2, 3]
        assert await store.read_blob((await store.list_messages(inbox))[1].blob_id) == big
    finally:
        await store.close()


async def test_quota_set_by_another_process_is_enforced_on_the_loop_too(
    tmp_path: Path,
) -> None:
    """Whether an account has a quota is remembered for a while (it decides only where a
    delivery commits); the job's own check still sees a quota set meanwhile elsewhere."""
    store, account, inbox = await setup(tmp_path)
    cli = await SQLiteStore.open(tmp_path)  # as `pochta user quota` would
    try:
        await store.accept(b"Subject: a\r\n\r\nsmall\r\n", ENV, [LocalTarget(account)])
        await cli.update_account("alice@example.test", quota_bytes=100)
        with pytest.raises(QuotaExceeded):
            await store.accept(b"Subject: b\r\n\r\n" + b"q" * 200, ENV, [LocalTarget(account)])
        assert [m.uid for m in await store.list_messages(inbox)] == [1]
    finally:
        await cli.close()
        await store.close()


async def test_wal_is_checkpointed_although_the_loop_never_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_mod, "WAL_CHECKPOINT_BYTES", 256 * 1024)
    store, account, inbox = await setup(tmp_path)
    try:
        body = b"Subject: wal\r\n\r\n" + b"w" * 3000 + b"\r\n"
        for _ in range(400):  # 1.2 MB of messages in the index
            await store.accept(body, ENV, [LocalTarget(account)])
        wal = (tmp_path / "pochta.db-wal").stat().st_size
        assert wal < 1536 * 1024, wal  # reused from its start (8 MB without checkpoints)
        assert len(await store.list_messages(inbox)) == 400
    finally:
        await store.close()
