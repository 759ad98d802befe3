"""``pochta backup`` of a running server and ``pochta restore`` into an empty data
directory (SQLite) or an empty database (PostgreSQL): accounts, aliases, mailboxes with
UIDVALIDITY/UIDNEXT, UIDs, flags, INTERNALDATEs and message bytes (by SHA-256) come back
exactly; a backup taken while mail is being written is a consistent snapshot."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pochta.config import Config, load
from pochta.storage.factory import open_store
from pochta.storage.interfaces import Envelope, FlagMode, LocalTarget, MailStore
from tests.conftest import Instance, Server, run_tool, storage_toml
from tests.pgcluster import PgCluster
from tests.transfer.helpers import POCHTA, pochta, write_config

ENV = Envelope(sender="a@elsewhere.test")


async def fill(store: MailStore, start: int = 0, count: int = 12) -> None:
    alice = await store.get_account("alice@example.test")
    assert alice is not None
    if await store.get_mailbox(alice.id, "Projects/2024") is None:
        await store.create_mailbox(alice.id, "Projects/2024", subscribe=True)
        await store.add_alias("postmaster@example.test", ["alice@example.test"])
        await store.update_account("bob@example.test", quota_bytes=10_000_000)
    for n in range(start, start + count):
        size = 150_000 if n % 4 == 0 else 200  # some in segments, some inline
        box = "INBOX" if n % 3 else "Projects/2024"
        await store.accept(b"Subject: %d\r\n\r\n" % n + b"x" * size + b"\r\n", ENV,
                           [LocalTarget(alice.id, box, frozenset({f"$Label{n % 2}"}),
                                        1_700_000_000.0 + n)])
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None
    uids = [m.uid for m in await store.list_messages(inbox.id)]
    await store.store_flags(inbox.id, uids[:2], frozenset({"\\Seen"}), FlagMode.ADD)
    if start == 0:
        await store.expunge(inbox.id, uids[2:3])


async def fingerprint(config: Config) -> dict[str, Any]:
    store = await open_store(config)
    try:
        out: dict[str, Any] = {
            "domains": sorted(await store.list_domains()),
            "aliases": sorted((a.source, a.targets) for a in await store.list_aliases()),
        }
        for account in await store.list_accounts():
            boxes = {}
            for box in await store.list_mailboxes(account.id):
                messages = []
                for meta in await store.list_messages(box.id):
                    data = await store.read_blob(meta.blob_id)
                    messages.append((meta.uid, sorted(meta.flags), meta.internaldate,
                                     meta.size, hashlib.sha256(data).hexdigest()))
                boxes[box.name] = (box.uidvalidity, box.uidnext, box.special_use,
                                   box.subscribed, messages)
            out[account.address] = (account.password_hash, account.quota_bytes, boxes)
        return out
    finally:
        await store.close()


def restore_config(tmp_path: Path, instance: Instance, storage: dict[str, Any]) -> Path:
    directory = tmp_path / "restored"
    directory.mkdir()
    raw = instance.raw_config
    path = directory / "pochta.toml"
    path.write_text(f'hostname = "{raw["hostname"]}"\ndata_dir = "data"\n'
                    f'[tls]\ncert = "{instance.cert}"\nkey = "{instance.key}"\n'
                    + storage_toml(storage), encoding="utf-8")
    return path


async def test_backup_running_server_and_restore(
        running_server: Server, instance: Instance, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    config_file = instance.dir / "pochta.toml"
    raw = instance.raw_config
    config_file.write_text(f'hostname = "{raw["hostname"]}"\ndata_dir = "data"\n'
                           f'[tls]\ncert = "{instance.cert}"\nkey = "{instance.key}"\n'
                           + storage_toml(raw.get("storage", {})), encoding="utf-8")
    store = running_server.store
    await fill(store)
    before = await fingerprint(instance.config())
    target = tmp_path / "backup"
    code, out = await run_tool(POCHTA, "-c", str(config_file), "backup", str(target),
                                    timeout=120)
    assert code == 0, out
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["counts"]["accounts"] == 2
    assert manifest["counts"]["messages"] == 11
    assert (target / "manifest.json").stat().st_mode & 0o777 == 0o600

    # restore into an empty data directory (SQLite) or an empty database (PostgreSQL)
    storage: dict[str, Any] = {}
    if raw.get("storage", {}).get("backend") == "postgresql":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        storage = {**raw["storage"], "dsn": _new_database(cluster, raw["storage"]["dsn"])}
    restored = restore_config(tmp_path, instance, storage)
    code, out = await run_tool(POCHTA, "-c", str(restored), "restore", str(target),
                                    timeout=120)
    assert code == 0, out
    assert await fingerprint(load(restored)) == before
    code, out = await run_tool(POCHTA, "-c", str(restored), "restore", str(target))
    assert code == 1 and "already" in out

    # a backup taken while mail keeps arriving is one consistent snapshot
    second = tmp_path / "backup2"
    writer = asyncio.create_task(fill(store, start=100, count=40))
    code, out = await run_tool(POCHTA, "-c", str(config_file), "backup", str(second),
                                    timeout=120)
    await writer
    assert code == 0, out
    counts = json.loads((second / "manifest.json").read_text())["counts"]
    assert 11 <= counts["messages"] <= 51


def _new_database(cluster: PgCluster, dsn: str) -> str:
    name = f"restore_{abs(hash(dsn)) % 10**8}"
    with psycopg.connect(cluster.admin_dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}".encode())
        conn.execute(f"CREATE DATABASE {name}".encode())
    return dsn.replace("dbname=pochta", f"dbname={name}")


def test_backup_restore_sqlite_cli(instance: Instance, tmp_path: Path) -> None:
    """The offline path, and what restore refuses: a damaged file, a wrong backend."""
    if instance.raw_config.get("storage"):
        pytest.skip("SQLite only")
    config = write_config(instance)

    async def setup() -> None:
        store = await open_store(instance.config())
        try:
            await fill(store)
        finally:
            await store.close()

    asyncio.run(setup())
    (instance.dir / "data" / "auth-secret").write_bytes(b"s" * 32)
    target = tmp_path / "bk"
    done = pochta(config, "backup", str(target))
    assert done.returncode == 0, done.stderr
    assert (target / "auth-secret").read_bytes() == b"s" * 32
    assert pochta(config, "backup", str(target)).returncode == 1  # not into a used dir
    damaged = tmp_path / "damaged"
    shutil.copytree(target, damaged)
    segment = next((damaged / "blobs").iterdir())
    data = bytearray(segment.read_bytes())
    data[10] ^= 1
    segment.write_bytes(bytes(data))
    restored = restore_config(tmp_path, instance, {})
    assert pochta(restored, "store", "stats").returncode == 0  # an empty store, as init
    done = pochta(restored, "restore", str(damaged))
    assert done.returncode == 1 and "checksum" in done.stderr
    assert (restored.parent / "data" / "pochta.db").exists()  # untouched
    done = pochta(restored, "restore", str(target))
    assert done.returncode == 0, done.stderr
    assert (restored.parent / "data" / "auth-secret").read_bytes() == b"s" * 32
    assert pochta(restored, "store", "verify").returncode == 0
    assert asyncio.run(fingerprint(load(restored))) == asyncio.run(
        fingerprint(instance.config()))
