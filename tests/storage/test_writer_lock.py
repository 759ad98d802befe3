"""Several processes on one SQLite index (``pochta serve --workers N``, the CLI beside the
server): their writers take turns on a flock()ed file (``pochta.db-writer``), asleep until
the holder lets go, and every job that queued up meanwhile joins the waiting batch (one
WAL fsync for all of them). The fsync comes after the lock is released and before any
caller hears back."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import pytest

from pochta.storage.interfaces import Envelope, LocalTarget
from pochta.storage.sqlite import SQLiteStore

ENV = Envelope(sender="sender@elsewhere.test")


def count_wal_syncs(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-element list counting the fdatasyncs of ``store``'s WAL."""
    count = [0]
    real_sync = os.fdatasync
    wal = os.path.realpath(store.data_dir / "pochta.db-wal")

    def fdatasync(fd: int) -> None:
        real_sync(fd)
        if os.path.realpath(f"/proc/self/fd/{fd}") == wal:
            count[0] += 1

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return count


async def test_writer_waits_for_the_lock_then_commits_what_queued_in_one_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = await SQLiteStore.open(tmp_path)
    try:
        await store.add_domain("example.test")
        acc = await store.add_account("alice@example.test", "hash", None)
        syncs = count_wal_syncs(store, monkeypatch)
        # another process's writer is inside its transaction
        other = os.open(tmp_path / "pochta.db-writer", os.O_RDWR)
        try:
            fcntl.flock(other, fcntl.LOCK_EX)
            tasks = [asyncio.create_task(store.accept(f"Subject: {i}\r\n\r\n".encode(), ENV,
                                                      [LocalTarget(acc.id)]))
                     for i in range(20)]
            await asyncio.sleep(0.3)
            assert not any(t.done() for t in tasks)  # nothing acknowledged meanwhile
            assert syncs[0] == 0
        finally:
            fcntl.flock(other, fcntl.LOCK_UN)
            os.close(other)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert sorted(uid for r in results for _, uid in r.local_uids) == list(range(1, 21))
        assert syncs[0] == 1  # the batch that waited took the 19 that queued behind it
    finally:
        await store.close()


async def test_two_stores_on_one_index_write_in_turn(tmp_path: Path) -> None:
    """Two writers (as two workers have) delivering at once into the same mailbox: every
    message lands, UIDs stay unique and dense."""
    first = await SQLiteStore.open(tmp_path)
    await first.add_domain("example.test")
    acc = await first.add_account("alice@example.test", "hash", None)
    second = await SQLiteStore.open(tmp_path)
    try:
        async def deliver(store: SQLiteStore, tag: str) -> list[int]:
            results = await asyncio.gather(*(
                store.accept(f"Subject: {tag}{i}\r\n\r\n".encode(), ENV, [LocalTarget(acc.id)])
                for i in range(150)))
            return [uid for r in results for _, uid in r.local_uids]

        a, b = await asyncio.wait_for(
            asyncio.gather(deliver(first, "a"), deliver(second, "b")), 60)
        assert sorted(a + b) == list(range(1, 301))
        inbox = await first.get_mailbox(acc.id, "INBOX")
        assert inbox is not None
        assert len(await second.list_messages(inbox.id)) == 300
    finally:
        await second.close()
        await first.close()
