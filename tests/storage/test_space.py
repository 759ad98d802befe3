"""Disk that is given back, private files, schema versions, and the queue wake-up
(storage v2 issue; hardening issue, item 3)."""

from __future__ import annotations

import asyncio
import imaplib
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pochta.storage.interfaces import (
    Envelope,
    LocalTarget,
    QueueState,
    RemoteRecipient,
    StoreError,
)
from pochta.storage.sqlite import SQLiteStore
from tests.conftest import Instance
from tests.imap.helpers import start

ENV = Envelope(sender="sender@elsewhere.test")


def du(path: Path) -> int:
    """Bytes of the files in a data directory, without SQLite's shared-memory index
    (``-shm``: a fixed 32 KB that comes and goes with connections, not stored mail)."""
    return sum(
        p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix != ".db-shm"
        and not p.name.endswith("-shm")
    )


async def test_append_and_expunge_gives_the_disk_back(instance: Instance) -> None:
    """The issue's experiment: a data directory of about 4 MB (40 messages of 100 KB that
    stay), then 300 messages of 100 KB appended over IMAP and expunged: after compaction
    the directory is back within 10 % of its size before (it grew by ~30 MB)."""
    server = await start(instance)
    data_dir = server.ctx.config.data_path
    try:
        bob = await server.store.get_account("bob@example.test")
        assert bob is not None
        for n in range(40):
            await server.store.accept(b"Subject: %d\r\n\r\n" % n + b"k" * 100_000, ENV,
                                      [LocalTarget(bob.id)])
        await server.store.compact()
        before = du(data_dir)
        port = server.port("imap", "none")
        body = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 100

        def client() -> None:
            imap = imaplib.IMAP4("127.0.0.1", port)
            imap.login("alice@example.test", "alice-pass")
            for _ in range(300):
                typ, _data = imap.append("INBOX", None, None, body)
                assert typ == "OK"
            imap.select("INBOX")
            imap.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
            typ, _data = imap.expunge()
            assert typ == "OK"
            imap.logout()

        await asyncio.to_thread(client)
        grown = du(data_dir)
        assert grown - before > 25_000_000
        stats = await server.store.store_stats()
        assert stats.reclaimable_bytes > 25_000_000
        reclaimed = await server.store.compact()
        after = du(data_dir)
        print(f"data dir: {before} before, {grown} after 300x100KB, {after} compacted")
        assert reclaimed > 25_000_000
        assert after <= before * 1.10, (before, grown, after)
        assert await server.store.verify_blobs() == []
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def test_compaction_keeps_live_and_shared_blobs(tmp_path: Path) -> None:
    """A blob shared by several mailboxes (many recipients, COPY) or by a pending queue
    item lives as long as one reference does; a segment with live blobs is rewritten, and
    the live bytes read back unchanged."""
    store = await SQLiteStore.open(tmp_path)
    await store.add_domain("example.test")
    a = await store.add_account("a@example.test", "x", None)
    b = await store.add_account("b@example.test", "x", None)
    big = [b"Subject: %d\r\n\r\n" % n + bytes([65 + n]) * 200_000 for n in range(6)]
    shared = await store.accept(big[0], ENV, [LocalTarget(a.id), LocalTarget(b.id)])
    queued = await store.accept(big[1], ENV, [LocalTarget(a.id)],
                                [RemoteRecipient("x@remote.test")])
    for data in big[2:]:
        await store.accept(data, ENV, [LocalTarget(a.id)])
    inbox_a = await store.get_mailbox(a.id, "INBOX")
    assert inbox_a is not None
    await store.expunge(inbox_a.id, [m.uid for m in await store.list_messages(inbox_a.id)])
    # a's copies are gone; b's copy of big[0] and the queue item of big[1] remain
    await store.compact()
    assert await store.read_blob(shared.blob_id) == big[0]
    assert await store.read_blob(queued.blob_id) == big[1]
    segments = list((tmp_path / "blobs").glob("*.seg"))
    # everything dead was given back: only the two live blobs' bytes are left in segments
    assert sum(p.stat().st_size for p in segments) <= 2 * 200_100
    # the queue item is delivered: its blob goes too (after the grace period)
    (item,) = await store.list_queue()
    await store.update_queue_item(item.id, QueueState.DELIVERED, time.time(), "250 ok")
    await store.compact(min_age=3600)  # still within the grace period: kept
    assert await store.read_blob(queued.blob_id) == big[1]
    await store.compact()
    with pytest.raises(StoreError):
        await store.read_blob(queued.blob_id)
    assert await store.read_blob(shared.blob_id) == big[0]
    assert await store.verify_blobs() == []
    await store.close()


async def test_segment_in_use_by_another_process_is_not_touched(tmp_path: Path) -> None:
    """Compaction in one process (the CLI) never rewrites the segment another process
    (the server) is appending to: it holds a lock on it."""
    server_store = await SQLiteStore.open(tmp_path)
    await server_store.add_domain("example.test")
    a = await server_store.add_account("a@example.test", "x", None)
    live = b"Subject: keep\r\n\r\n" + b"k" * 150_000
    dead = b"Subject: dead\r\n\r\n" + b"d" * 600_000
    await server_store.accept(dead, ENV, [LocalTarget(a.id)])
    kept = await server_store.accept(live, ENV, [LocalTarget(a.id)])
    inbox = await server_store.get_mailbox(a.id, "INBOX")
    assert inbox is not None
    await server_store.expunge(inbox.id, [1])
    proc = subprocess.run(
        [sys.executable, "-c",
         "import asyncio, sys\n"
         "from pochta.storage.sqlite import SQLiteStore\n"
         "async def main():\n"
         "    s = await SQLiteStore.open(sys.argv[1])\n"
         "    print(await s.compact())\n"
         "    await s.close()\n"
         "asyncio.run(main())\n", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )
    segments = list((tmp_path / "blobs").glob("*.seg"))
    assert len(segments) == 1 and segments[0].stat().st_size == len(dead) + len(live), proc
    # the owner itself may rotate and compact it
    await server_store.accept(live, ENV, [LocalTarget(a.id)])
    assert await server_store.read_blob(kept.blob_id) == live
    await server_store.close()
    store = await SQLiteStore.open(tmp_path)
    assert await store.compact() >= len(dead) * 0.9
    assert await store.read_blob(kept.blob_id) == live
    await store.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_files_are_private(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    store = await SQLiteStore.open(data)
    await store.add_domain("example.test")
    a = await store.add_account("a@example.test", "x", None)
    await store.accept(b"Subject: x\r\n\r\n" + b"x" * 100_000, ENV, [LocalTarget(a.id)])
    assert mode(data) == 0o700
    assert mode(data / "blobs") == 0o700
    files = [p for p in data.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"pochta.db", "pochta.db-wal", "pochta.db-shm"}
    assert any(p.suffix == ".seg" for p in files)
    assert all(mode(p) == 0o600 for p in files), {p.name: oct(mode(p)) for p in files}
    await store.close()
    # an installation made by an older version (0755 / 0644) is tightened, with a warning
    data.chmod(0o755)
    (data / "pochta.db").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="pochta.storage.sqlite"):
        store = await SQLiteStore.open(data)
    await store.close()
    assert mode(data) == 0o700 and mode(data / "pochta.db") == 0o600
    assert "readable by other local users" in caplog.text


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path)
    await store.close()
    import sqlite3

    conn = sqlite3.connect(tmp_path / "pochta.db")
    conn.execute("UPDATE meta SET value='99' WHERE key='schema'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer Pochta"):
        await SQLiteStore.open(tmp_path)


async def test_retry_from_another_process_wakes_the_queue_without_an_attempt(
    tmp_path: Path,
) -> None:
    """``pochta queue retry`` runs in its own process: the server's queue watcher wakes
    within a second, and the retry is not counted as an attempt."""
    server_store = await SQLiteStore.open(tmp_path)
    result = await server_store.accept(b"Subject: q\r\n\r\nq\r\n", ENV, [],
                                       [RemoteRecipient("x@remote.test")])
    (item,) = await server_store.list_queue()
    later = time.time() + 3600
    await server_store.update_queue_item(item.id, QueueState.DEFERRED, later, "451 try later")
    watcher = server_store.watch_queue()
    await asyncio.sleep(0.6)  # the poller has seen the current counter
    cli_store = await SQLiteStore.open(tmp_path)
    assert await cli_store.reschedule_queue_items([item.id], time.time()) == 1
    await cli_store.close()
    started = time.monotonic()
    assert await watcher.wait(2.0)
    assert time.monotonic() - started < 1.5
    (item,) = await server_store.list_queue()
    assert item.attempts == 1 and item.next_attempt <= time.time()
    assert item.message_id == result.message_id
    watcher.close()
    await server_store.close()


def test_store_cli_verify_stats_compact(tmp_path: Path) -> None:
    """The real command: ``pochta store verify`` exits 1 naming a damaged blob."""
    pochta = str(Path(sys.executable).parent / "pochta")
    config = tmp_path / "pochta.toml"
    subprocess.run(
        [pochta, "init", "--dir", str(tmp_path), "--hostname", "mail.example.test",
         "--domain", "example.test"], check=True, capture_output=True)
    env = {**os.environ, "POCHTA_CONFIG": str(config)}

    async def fill() -> None:
        store = await SQLiteStore.open(tmp_path / "data")
        a = await store.add_account("a@example.test", "x", None)
        await store.accept(b"Subject: x\r\n\r\n" + b"x" * 100_000, ENV, [LocalTarget(a.id)])
        await store.close()

    asyncio.run(fill())

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([pochta, *args], env=env, capture_output=True, text=True)

    ok = run("store", "verify")
    assert ok.returncode == 0 and "ok:" in ok.stdout, ok
    stats = run("store", "stats")
    assert "reclaimable" in stats.stdout, stats
    assert run("store", "compact").returncode == 0
    (segment,) = (tmp_path / "data" / "blobs").glob("*.seg")
    raw = bytearray(segment.read_bytes())
    raw[500] ^= 1
    segment.write_bytes(bytes(raw))
    bad = run("store", "verify")
    assert bad.returncode == 1 and "checksum" in bad.stdout, bad


async def test_unknown_feature_migration_is_refused(tmp_path: Path) -> None:
    """A feature migration this code does not know: written by a newer Pochta."""
    store = await SQLiteStore.open(tmp_path)
    await store.close()
    import sqlite3

    conn = sqlite3.connect(tmp_path / "pochta.db")
    conn.execute("INSERT INTO migrations VALUES ('from-the-future-1', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="from-the-future-1"):
        await SQLiteStore.open(tmp_path)
