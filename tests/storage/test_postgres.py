"""What only the PostgreSQL store has: a server shared by processes (notifications across
stores), schema versions, passwords kept out of the config, chunked blobs checked on read,
compaction, and driver errors turned into Pochta's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest

from pochta.config import ConfigError, from_dict
from pochta.storage.factory import open_store
from pochta.storage.interfaces import (
    Envelope,
    FlagMode,
    LocalTarget,
    RemoteRecipient,
    SpooledMessage,
    StorageCorrupt,
    StorageFull,
    StoreError,
)
from pochta.storage.postgres import (
    BLOB_CHUNK,
    MIGRATIONS,
    SCHEMA_VERSION,
    PostgresStore,
    translate_error,
)
from tests.pgcluster import PASSWORD, PgCluster

MSG = b"Subject: test\r\n\r\nbody\r\n"
ENV = Envelope(sender="a@elsewhere.test")


@pytest.fixture
def dsn(pg_cluster: PgCluster) -> str:
    return pg_cluster.fresh_dsn()


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresStore]:
    s = await PostgresStore.open(dsn)
    await s.add_domain("example.test")
    yield s
    await s.close()


async def alice(store: PostgresStore) -> int:
    account = await store.add_account("alice@example.test", "hash", None)
    return account.id


def sql(dsn: str, query: str, *args: object) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(query.encode(), args)


async def test_a_delivery_through_one_store_wakes_a_watcher_of_another(
    store: PostgresStore, dsn: str
) -> None:
    """Two processes (or nodes) on one database: IDLE on B sees mail accepted by A."""
    acc = await alice(store)
    other = await PostgresStore.open(dsn)
    try:
        box = await other.get_mailbox(acc, "INBOX")
        assert box is not None
        watcher = other.watch(box.id)
        assert not await watcher.wait(0.05)
        waiting = asyncio.create_task(watcher.wait(5))
        start = time.monotonic()
        await store.accept(MSG, ENV, [LocalTarget(acc)])
        assert await waiting
        assert time.monotonic() - start < 1.0
        assert [m.uid for m in await other.list_messages(box.id)] == [1]
        watcher.close()
    finally:
        await other.close()


async def test_a_newer_schema_is_refused(dsn: str) -> None:
    s = await PostgresStore.open(dsn)
    await s.close()
    sql(dsn, "UPDATE schema_version SET version=%s", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="newer than this Pochta knows"):
        await PostgresStore.open(dsn)


async def test_open_twice_keeps_data_and_one_version_row(dsn: str) -> None:
    s = await PostgresStore.open(dsn)
    await s.add_domain("example.test")
    await s.close()
    s = await PostgresStore.open(dsn)
    try:
        assert await s.list_domains() == ["example.test"]
    finally:
        await s.close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute(b"SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)]


async def test_a_password_in_the_dsn_is_refused(pg_cluster: PgCluster) -> None:
    dsn = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{pg_cluster.port}/pochta"
    with pytest.raises(StoreError, match=r"storage\.dsn"):
        await PostgresStore.open(dsn)
    raw = {"hostname": "mail.example.test", "storage": {"backend": "postgresql", "dsn": dsn}}
    with pytest.raises(ConfigError, match=r"storage\.dsn: must not contain a password"):
        from_dict(raw)
    with pytest.raises(ConfigError, match=r"storage\.dsn: required"):
        from_dict({"hostname": "mail.example.test", "storage": {"backend": "postgresql"}})
    with pytest.raises(ConfigError, match=r"storage\.backend"):
        from_dict({"hostname": "mail.example.test", "storage": {"backend": "mysql"}})


async def test_password_from_password_file_or_pgpassword(
    pg_cluster: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over TCP the test cluster wants scram-sha-256: the password comes from
    storage.password_file (relative to the config file) or PGPASSWORD."""
    schema = pg_cluster.fresh_dsn().rsplit("search_path=", 1)[1].split("'")[0].strip()
    (tmp_path / "pg-password").write_text(PASSWORD + "\n")
    storage = {"backend": "postgresql", "dsn": pg_cluster.tcp_dsn(schema)}
    monkeypatch.delenv("PGPASSWORD", raising=False)
    config = from_dict({"hostname": "mail.example.test", "base_dir": str(tmp_path),
                        "storage": storage})
    with pytest.raises(StoreError, match="database unavailable"):
        await open_store(config)  # no password at all
    config = from_dict({"hostname": "mail.example.test", "base_dir": str(tmp_path),
                        "storage": {**storage, "password_file": "pg-password"}})
    s = await open_store(config)
    assert isinstance(s, PostgresStore)
    await s.close()
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    config = from_dict({"hostname": "mail.example.test", "base_dir": str(tmp_path),
                        "storage": storage})
    s = await open_store(config)
    await s.close()
    config = from_dict({"hostname": "mail.example.test", "base_dir": str(tmp_path),
                        "storage": {**storage, "password_file": "missing"}})
    with pytest.raises(StoreError, match=r"storage\.password_file"):
        await open_store(config)


async def test_large_blobs_are_chunked_and_checked_on_read(
    store: PostgresStore, dsn: str
) -> None:
    acc = await alice(store)
    big = b"x" * (BLOB_CHUNK * 2 + 10)
    result = await store.accept(big, ENV, [LocalTarget(acc)])
    small = await store.accept(MSG, ENV, [LocalTarget(acc)])
    with psycopg.connect(dsn) as conn:
        chunks = conn.execute(b"SELECT count(*) FROM blob_chunks WHERE blob_id=%s",
                              (result.blob_id,)).fetchone()
    assert chunks == (3,)
    assert await store.read_blob(result.blob_id) == big
    assert await store.verify_blobs() == []
    # one flipped byte, one missing chunk
    sql(dsn, "UPDATE blob_chunks SET data=overlay(data placing 'y'::bytea from 5) "
             "WHERE blob_id=%s", small.blob_id)
    sql(dsn, "DELETE FROM blob_chunks WHERE blob_id=%s AND seq=1", result.blob_id)
    with pytest.raises(StorageCorrupt):
        await store.read_blob(small.blob_id)
    with pytest.raises(StorageCorrupt):
        await store.read_blob(result.blob_id)
    problems = await store.verify_blobs()
    assert [p.blob_id for p in problems] == sorted([small.blob_id, result.blob_id])
    assert "sha256" in problems[0].problem or "sha256" in problems[1].problem


async def test_compact_reclaims_unreferenced_blobs_only(store: PostgresStore) -> None:
    acc = await alice(store)
    kept = await store.accept(MSG, ENV, [LocalTarget(acc)])
    queued = await store.accept(MSG + b"q", ENV, [], [RemoteRecipient("x@remote.test")])
    gone = await store.accept(MSG + b"gone", ENV, [LocalTarget(acc)])
    box = await store.get_mailbox(acc, "INBOX")
    assert box is not None
    await store.expunge(box.id, [gone.local_uids[0][1]])
    stats = await store.store_stats()
    assert stats.blobs == 3
    assert stats.live_bytes == len(MSG) * 2 + 1
    assert stats.reclaimable_bytes == len(MSG) + 4
    assert stats.disk_bytes > 0
    assert await store.compact() == len(MSG) + 4
    assert await store.compact() == 0
    assert await store.read_blob(kept.blob_id) == MSG
    assert await store.read_blob(queued.blob_id) == MSG + b"q"
    [item] = await store.list_queue()
    await store.delete_queue_item(item.id)
    assert await store.compact() == len(MSG) + 1
    after = await store.store_stats()
    assert (after.blobs, after.reclaimable_bytes) == (1, 0)


def test_driver_errors_become_pochta_errors() -> None:
    assert isinstance(translate_error(psycopg.errors.DiskFull("no space")), StorageFull)
    assert type(translate_error(psycopg.errors.OutOfMemory("x"))) is StoreError
    assert type(translate_error(psycopg.OperationalError("gone"))) is StoreError
    assert type(translate_error(psycopg.errors.UniqueViolation("dup"))) is StoreError


async def test_killed_connections_are_replaced_without_an_error(
    store: PostgresStore, dsn: str
) -> None:
    """Every connection killed under the store (as a database restart does): the next
    write and read go through on fresh connections (BEGIN failed, nothing was sent)."""
    acc = await alice(store)
    await asyncio.gather(*[store.accept(MSG, ENV, [LocalTarget(acc)]) for _ in range(8)])
    sql(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
             "WHERE pid <> pg_backend_pid() AND datname = current_database()")
    await store.accept(MSG, ENV, [LocalTarget(acc)])
    assert await store.list_domains() == ["example.test"]
    box = await store.get_mailbox(acc, "INBOX")
    assert box is not None
    assert len(await store.list_messages(box.id)) == 9
    # the listener reconnects and keeps waking watchers
    watcher = store.watch(box.id)
    other = await PostgresStore.open(dsn)
    try:
        deadline = time.monotonic() + 10
        woke = False
        while not woke and time.monotonic() < deadline:
            await other.accept(MSG, ENV, [LocalTarget(acc)])
            woke = await watcher.wait(0.5)
        assert woke
    finally:
        watcher.close()
        await other.close()


async def test_commits_are_durable_even_if_the_database_says_otherwise(
    dsn: str, pg_cluster: PgCluster
) -> None:
    """synchronous_commit=off would let accept() return before the WAL is flushed."""
    sql(pg_cluster.admin_dsn(), "ALTER DATABASE pochta SET synchronous_commit=off")
    try:
        s = await PostgresStore.open(dsn)
        try:
            async with s._conn() as conn:
                cur = await conn.execute("SHOW synchronous_commit")
                assert await cur.fetchone() == ("on",)
        finally:
            await s.close()
    finally:
        sql(pg_cluster.admin_dsn(), "ALTER DATABASE pochta RESET synchronous_commit")


async def test_a_version_1_schema_is_migrated_on_open(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(b"CREATE TABLE schema_version(version integer NOT NULL)")
        conn.execute(MIGRATIONS[0].encode())
        conn.execute(b"INSERT INTO schema_version VALUES (1)")
        conn.execute(b"INSERT INTO domains VALUES ('example.test')")
    s = await PostgresStore.open(dsn)
    try:
        assert await s.list_domains() == ["example.test"]
        assert await s.due_queue_items(time.time()) == []  # uses the version 2 columns
    finally:
        await s.close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute(b"SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)]


async def test_concurrent_writers_on_two_stores_get_unique_uids(
    store: PostgresStore, dsn: str
) -> None:
    """Deliveries to several accounts in different orders, flag changes and moves, from
    two stores at once: no error escapes (deadlocks are avoided or retried), UIDs are
    unique and ascending per mailbox."""
    acc = await alice(store)
    bob = (await store.add_account("bob@example.test", "hash", None)).id
    other = await PostgresStore.open(dsn)
    try:
        inbox = await store.get_mailbox(acc, "INBOX")
        archive = await store.get_mailbox(acc, "Archive")
        assert inbox is not None and archive is not None
        jobs: list[Coroutine[Any, Any, object]] = []
        for n in range(40):
            s = store if n % 2 else other
            targets = [LocalTarget(acc), LocalTarget(bob)]
            jobs.append(s.accept(MSG + str(n).encode(), ENV,
                                 targets if n % 3 else targets[::-1]))
            if n % 5 == 4:
                jobs.append(s.store_flags(inbox.id, range(1, n), frozenset({"\\Seen"}),
                                          FlagMode.ADD))
                jobs.append(s.move_messages(inbox.id, [n - 3], archive.id))
        await asyncio.gather(*jobs)
        moved = await store.list_messages(archive.id)
        left = await store.list_messages(inbox.id)
        assert len(moved) + len(left) == 40
        assert [m.uid for m in left] == sorted({m.uid for m in left})
        status = await store.mailbox_status(inbox.id)
        assert status.uidnext == 41
    finally:
        await other.close()


@pytest.fixture
def tiny_tablespace(pg_cluster: PgCluster) -> Iterator[tuple[str, Path]]:
    """A tablespace on a 16 MB tmpfs (mounting needs root, which CI has): the database
    itself runs out of disk, not a fake. It is mounted inside the cluster's directory,
    which the server's account can reach."""
    mount = pg_cluster.root / f"tiny-{os.getpid()}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs",
                           str(mount)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    name = f"tiny_{os.getpid()}"
    try:
        (mount / "pg").mkdir()
        pg_cluster.chown(mount / "pg")
        sql(pg_cluster.admin_dsn(), f"CREATE TABLESPACE {name} LOCATION '{mount / 'pg'}'")
        yield name, mount
    finally:
        with contextlib.suppress(psycopg.Error):
            sql(pg_cluster.admin_dsn(), f"DROP TABLESPACE IF EXISTS {name}")
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_tablespace_is_storage_full(
    pg_cluster: PgCluster, tiny_tablespace: tuple[str, Path]
) -> None:
    """Messages are accepted until the tablespace is full, then StorageFull (SMTP 452):
    nothing of the failed delivery is visible, every accepted message reads back, and
    delivery works again once there is room."""
    name, mount = tiny_tablespace
    dsn = pg_cluster.fresh_dsn(f"-cdefault_tablespace={name}")
    s = await PostgresStore.open(dsn)
    schema = dsn.rsplit("search_path=", 1)[1].split()[0]
    filler = mount / "filler"
    try:
        await s.add_domain("example.test")
        acc = await alice(s)
        stat = os.statvfs(mount)
        filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 3 * 1024 * 1024))
        accepted: list[tuple[int, bytes]] = []
        with pytest.raises(StorageFull):
            for _ in range(40):  # ~300 KB each, incompressible: 3 MB fill up at ~10
                data = b"Subject: fill\r\n\r\n" + os.urandom(300_000)
                result = await s.accept(data, ENV, [LocalTarget(acc)])
                accepted.append((result.blob_id, data))
        assert accepted
        box = await s.get_mailbox(acc, "INBOX")
        assert box is not None
        metas = await s.list_messages(box.id)
        assert [m.blob_id for m in metas] == [b for b, _ in accepted]
        for blob_id, data in accepted:
            assert await s.read_blob(blob_id) == data
        filler.unlink()
        await s.accept(MSG, ENV, [LocalTarget(acc)])
        assert len(await s.list_messages(box.id)) == len(accepted) + 1
    finally:
        await s.close()
        sql(pg_cluster.admin_dsn(), f"DROP SCHEMA {schema} CASCADE")


async def test_a_refused_accept_does_not_spoil_its_batch(store: PostgresStore, dsn: str) -> None:
    """Concurrent accepts share transactions: the ones over quota or for a removed
    account fail alone, the others commit, and a refused one leaves no blob behind."""
    acc = await alice(store)
    bob = (await store.add_account("bob@example.test", "hash", None)).id
    await store.update_account("alice@example.test", quota_bytes=len(MSG) * 5)
    await store.remove_account("bob@example.test")
    outcomes = await asyncio.gather(
        *[store.accept(MSG, ENV, [LocalTarget(bob if n % 4 == 0 else acc)])
          for n in range(12)],
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, StoreError)]
    accepted = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(accepted) == 5 and len(refused) == 7
    box = await store.get_mailbox(acc, "INBOX")
    assert box is not None
    assert [m.uid for m in await store.list_messages(box.id)] == [1, 2, 3, 4, 5]
    assert (await store.store_stats()).blobs == 5


async def test_stream_refuses_damaged_bytes_before_the_first_chunk(
    store: PostgresStore, dsn: str
) -> None:
    acc = await alice(store)
    big = os.urandom(BLOB_CHUNK * 2 + 5)
    result = await store.accept(big, ENV, [LocalTarget(acc)])
    assert b"".join([c async for c in store.stream_blob(result.blob_id, chunk=100_000)]) == big
    part = b"".join([c async for c in store.stream_blob(result.blob_id, BLOB_CHUNK - 3, 10)])
    assert part == big[BLOB_CHUNK - 3:BLOB_CHUNK + 7]
    assert await store.blob_size(result.blob_id) == len(big)
    sql(dsn, "UPDATE blob_chunks SET data=overlay(data placing 'y'::bytea from 5) "
             "WHERE blob_id=%s AND seq=2", result.blob_id)
    fresh = await PostgresStore.open(dsn)  # no memory of the earlier check
    try:
        with pytest.raises(StorageCorrupt):
            async for _ in fresh.stream_blob(result.blob_id):
                pytest.fail("a chunk of a damaged blob was given out")
    finally:
        await fresh.close()


async def test_a_spooled_message_is_taken_from_its_offset(
    store: PostgresStore, tmp_path: Path
) -> None:
    acc = await alice(store)
    spool = tmp_path / "spool"
    body = os.urandom(BLOB_CHUNK + 500)
    spool.write_bytes(b"x" * 10 + body + b"trailing junk")
    result = await store.accept(SpooledMessage(str(spool), len(body), b"Received: x\r\n", 10),
                                ENV, [LocalTarget(acc)])
    assert await store.read_blob(result.blob_id) == b"Received: x\r\n" + body
