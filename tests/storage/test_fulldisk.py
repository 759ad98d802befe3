"""A full disk must never lose or leak mail (hardening issue, item 1).

A fault-injecting file layer makes the segment writes fail with ENOSPC at every position
of a batch (first byte, mid-blob, between blobs, the fdatasync, and with the clean-up
truncate failing too); SQLite's own SQLITE_FULL is made with ``max_page_count``. After
each failure the disk "gets space back" and more mail arrives for a second user: every
acknowledged message must then read back byte for byte from its owner's mailbox, the index
must survive a restart, and ``verify_blobs`` must find nothing wrong.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pochta.storage.interfaces import (
    AcceptResult,
    Envelope,
    LocalTarget,
    RemoteRecipient,
    StorageCorrupt,
    StorageFull,
)
from pochta.storage.sqlite import SQLiteStore

ENV = Envelope(sender="sender@elsewhere.test")
BIG = 100 * 1024  # above INLINE_MAX: goes to a segment


def message(tag: str, size: int = BIG) -> bytes:
    head = f"Subject: {tag}\r\n\r\n".encode()
    line = f"{tag} body line\r\n".encode()
    return head + line * ((size - len(head)) // len(line) + 1)


def is_segment(fd: int) -> bool:
    return os.readlink(f"/proc/self/fd/{fd}").endswith(".seg")


class DiskFault:
    """Makes os.write / os.fdatasync / os.ftruncate fail on blob segment files only."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.budget: int | None = None  # bytes that may still be written; None: no limit
        self.fail_sync = False
        self.fail_truncate = False
        real_write, real_sync, real_truncate = os.write, os.fdatasync, os.ftruncate

        def write(fd: int, data: bytes | memoryview) -> int:
            if self.budget is None or not is_segment(fd):
                return real_write(fd, data)
            if self.budget <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            n = real_write(fd, bytes(data[: self.budget]))  # a partial write, as on ENOSPC
            self.budget -= n
            return n

        def fdatasync(fd: int) -> None:
            if self.fail_sync and is_segment(fd):
                raise OSError(errno.ENOSPC, "No space left on device")
            real_sync(fd)

        def ftruncate(fd: int, size: int) -> None:
            if self.fail_truncate and is_segment(fd):
                raise OSError(errno.EIO, "Input/output error")
            real_truncate(fd, size)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "ftruncate", ftruncate)

    def heal(self) -> None:
        self.budget = None
        self.fail_sync = self.fail_truncate = False


@pytest.fixture
def fault(monkeypatch: pytest.MonkeyPatch) -> Iterator[DiskFault]:
    yield DiskFault(monkeypatch)


async def setup_store(path: Path) -> tuple[SQLiteStore, int, int]:
    store = await SQLiteStore.open(path)
    await store.add_domain("example.test")
    alice = await store.add_account("alice@example.test", "x", None)
    bob = await store.add_account("bob@example.test", "x", None)
    return store, alice.id, bob.id


async def inbox_bodies(store: SQLiteStore, account_id: int) -> list[bytes]:
    box = await store.get_mailbox(account_id, "INBOX")
    assert box is not None
    return [await store.read_blob(m.blob_id) for m in await store.list_messages(box.id)]


# (budget in bytes, fail fdatasync, fail the truncate that undoes the write)
FAULTS = {
    "first byte": (0, False, False),
    "one byte": (1, False, False),
    "mid first blob": (BIG // 2, False, False),
    "between blobs": (len(message("b1")), False, False),
    "mid second blob": (len(message("b1")) + 777, False, False),
    "at fdatasync": (None, True, False),
    "truncate fails too": (BIG // 3, False, True),
}


@pytest.mark.parametrize("where", sorted(FAULTS))
async def test_enospc_at_every_position_loses_and_leaks_nothing(
    tmp_path: Path, fault: DiskFault, where: str
) -> None:
    budget, fail_sync, fail_truncate = FAULTS[where]
    store, alice, bob = await setup_store(tmp_path)
    acked: dict[int, list[bytes]] = {alice: [], bob: []}

    first = message("a0")
    await store.accept(first, ENV, [LocalTarget(alice)])
    acked[alice].append(first)

    # The disk fills: two messages in one batch (gathered) and one alone all fail.
    fault.budget, fault.fail_sync, fault.fail_truncate = budget, fail_sync, fail_truncate
    if budget is None:
        fault.budget = None
    filling = [message("b1"), message("b2")]
    results = await asyncio.gather(
        *(store.accept(data, ENV, [LocalTarget(alice)]) for data in filling),
        return_exceptions=True,
    )
    # Whether both land in one group commit or two, what got 250 must stay readable.
    for data, result in zip(filling, results, strict=True):
        if isinstance(result, AcceptResult):
            acked[alice].append(data)
        else:
            assert isinstance(result, StorageFull), result
    assert any(isinstance(r, StorageFull) for r in results)
    with pytest.raises(StorageFull):
        await store.accept(message("b3"), ENV, [LocalTarget(alice)])

    # Space comes back: new mail for alice, then for bob, in the same process.
    fault.heal()
    for n in range(3):
        data = message(f"a{n + 1}", BIG + 1000 * n)
        await store.accept(data, ENV, [LocalTarget(alice)])
        acked[alice].append(data)
    for n in range(6):
        data = message(f"bob{n}", BIG + 333 * n)
        await store.accept(data, ENV, [LocalTarget(bob)])
        acked[bob].append(data)

    for account, expected in acked.items():
        assert await inbox_bodies(store, account) == expected
    assert await store.verify_blobs() == []
    await store.close()

    # The index on disk is right too (the first report survived restarts).
    store = await SQLiteStore.open(tmp_path)
    for account, expected in acked.items():
        assert await inbox_bodies(store, account) == expected
    assert await store.verify_blobs() == []
    await store.close()


async def test_full_database_is_storage_full_and_recovers(tmp_path: Path) -> None:
    """SQLITE_FULL (here: max_page_count) is reported as StorageFull, not a raw
    sqlite3 error, for small (inline) messages; reads keep working meanwhile."""
    store, alice, _ = await setup_store(tmp_path)
    small = b"Subject: small\r\n\r\nhello\r\n"
    await store.accept(small, ENV, [LocalTarget(alice)])
    # both connections that write: the writer thread's, and the event loop's (small
    # deliveries such as this one commit there)
    writers = (store._writer_conn, store._loop_connection())
    (pages,) = store._writer_conn.execute("PRAGMA page_count").fetchone()
    for conn in writers:
        conn.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(StorageFull):
        await store.accept(b"Subject: x\r\n\r\n" + b"y" * 30_000, ENV, [LocalTarget(alice)])
    with pytest.raises(StorageFull):  # on the writer thread (a remote recipient)
        await store.accept(b"Subject: x\r\n\r\n" + b"y" * 30_000, ENV, [LocalTarget(alice)],
                           [RemoteRecipient("r@elsewhere.test")])
    assert await inbox_bodies(store, alice) == [small]  # reading still works
    for conn in writers:
        conn.execute("PRAGMA max_page_count=1073741823")
    await store.accept(small + b"2", ENV, [LocalTarget(alice)])
    assert await inbox_bodies(store, alice) == [small, small + b"2"]
    await store.close()


async def test_damaged_or_misplaced_bytes_are_never_served(tmp_path: Path) -> None:
    """A flipped byte, a truncated segment or an index row pointing at another blob's
    bytes (what the old full-disk bug produced) raise StorageCorrupt, never mail."""
    store, alice, bob = await setup_store(tmp_path)
    a = await store.accept(message("alice"), ENV, [LocalTarget(alice)])
    b = await store.accept(message("bobby"), ENV, [LocalTarget(bob)])
    small = await store.accept(b"Subject: s\r\n\r\nsmall\r\n", ENV, [LocalTarget(bob)])
    assert await store.verify_blobs() == []

    # alice's index row now points at bob's bytes (same length)
    seg, off, _length = store._writer_conn.execute(
        "SELECT segment, offset, length FROM blobs WHERE id=?", (b.blob_id,)).fetchone()
    store._writer_conn.execute(
        "UPDATE blobs SET segment=?, offset=? WHERE id=?", (seg, off, a.blob_id))
    with pytest.raises(StorageCorrupt):
        await store.read_blob(a.blob_id)
    assert await store.read_blob(b.blob_id) == message("bobby")

    # a flipped byte in a segment, and an inline blob altered
    path = tmp_path / "blobs" / f"{seg}.seg"
    raw = bytearray(path.read_bytes())
    raw[off + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    store._writer_conn.execute(
        "UPDATE blobs SET data=? WHERE id=?", (b"Subject: s\r\n\r\nSMALL\r\n", small.blob_id))
    with pytest.raises(StorageCorrupt):
        await store.read_blob(b.blob_id)
    with pytest.raises(StorageCorrupt):
        await store.read_blob(small.blob_id)
    problems = {p.blob_id for p in await store.verify_blobs()}
    assert problems == {a.blob_id, b.blob_id, small.blob_id}

    # a truncated segment: length check
    path.write_bytes(bytes(raw[: off + 100]))
    with pytest.raises(StorageCorrupt, match="truncated"):
        await store.read_blob(b.blob_id)
    await store.close()
