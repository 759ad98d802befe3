"""`pochta apikey`, `pochta suppress` and `pochta stats` through the real command, on an
instance made by `pochta init` (whose demo ports include the http role)."""

from __future__ import annotations

import asyncio
import time
import tomllib
from pathlib import Path

from pochta.config import load
from pochta.sending.tokens import hash_secret, split_api_key
from pochta.storage.interfaces_sending import EventKind, NewEvent, SentMessage
from pochta.storage.sqlite import SQLiteStore
from tests.test_admin_cli import inst, pochta  # noqa: F401


def test_init_has_http_listeners(inst: Path) -> None:  # noqa: F811
    cfg = tomllib.loads(inst.read_text())
    http = sorted((x["port"], x["tls"]) for x in cfg["listeners"] if x["role"] == "http")
    assert http == [(2080, "none"), (2443, "implicit")]


def test_apikey_add_list_remove(inst: Path) -> None:  # noqa: F811
    r = pochta("-c", str(inst), "apikey", "add", "example.org", "--scope",
               "send,events,suppressions", "--description", "shop")
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    parts = split_api_key(key)
    assert parts is not None and "shown once" in r.stderr
    key_id, secret = parts

    async def stored() -> bytes:
        store = await SQLiteStore.open(load(inst).data_path)
        try:
            k = await store.get_api_key(key_id)
            assert k is not None and k.scopes == {"send", "events", "suppressions"}
            return k.secret_hash
        finally:
            await store.close()

    hashed = asyncio.run(stored())
    assert hashed == hash_secret(secret) and secret.encode() not in hashed
    assert secret not in (load(inst).data_path / "pochta.db").read_bytes().decode("latin-1")
    r = pochta("-c", str(inst), "apikey", "list")
    assert key_id in r.stdout and "shop" in r.stdout and secret not in r.stdout
    assert pochta("-c", str(inst), "apikey", "add", "nowhere.org").returncode == 1
    r = pochta("-c", str(inst), "apikey", "add", "example.org", "--scope", "send,root")
    assert r.returncode == 1 and "--scope" in r.stderr
    assert pochta("-c", str(inst), "apikey", "remove", key_id).returncode == 0
    assert pochta("-c", str(inst), "apikey", "remove", key_id).returncode == 1


def test_suppress_commands(inst: Path, tmp_path: Path) -> None:  # noqa: F811
    c = ["-c", str(inst), "suppress"]
    assert pochta(*c, "add", "example.org", "A@Remote.test", "b@remote.test",
                  "--reason", "gdpr").stdout.strip() == "2 added"
    assert pochta(*c, "add", "example.org", "c@remote.test", "--stream", "bulk").returncode == 0
    r = pochta(*c, "list", "example.org")
    assert "a@remote.test" in r.stdout and "gdpr" in r.stdout and "bulk" in r.stdout
    assert pochta(*c, "remove", "example.org", "b@remote.test").returncode == 0
    assert pochta(*c, "remove", "example.org", "b@remote.test").returncode == 1
    r = pochta(*c, "export", "example.org")
    lines = r.stdout.splitlines()
    assert lines[0] == "address,stream,reason,created,detail" and len(lines) == 3
    csv_file = tmp_path / "in.csv"
    csv_file.write_text("address,reason\nd@remote.test,old list\ne@remote.test,\n")
    assert pochta(*c, "import", "example.org", str(csv_file)).stdout.strip() == \
        "2 read, 2 added"
    assert len(pochta(*c, "export", "example.org").stdout.splitlines()) == 5


def test_stats_table(inst: Path) -> None:  # noqa: F811
    async def fill() -> None:
        store = await SQLiteStore.open(load(inst).data_path)
        now = time.time()
        try:
            await store.record_sent(
                [SentMessage(f"M{n}", "example.org", "bulk", f"u{n}@r.test", "n@example.org",
                             "s", ("news",), "{}", now) for n in range(3)],
                [NewEvent(f"M{n}", EventKind.ACCEPTED, now) for n in range(3)]
                + [NewEvent("M0", EventKind.DELIVERED, now),
                   NewEvent("M1", EventKind.BOUNCED, now)])
        finally:
            await store.close()

    asyncio.run(fill())
    r = pochta("-c", str(inst), "stats", "example.org")
    assert r.returncode == 0, r.stderr
    header, _, row, _, total, delivery, bulk = r.stdout.splitlines()
    assert delivery.startswith("delivery time (accepted to delivered, 1 copies): p50 0.0 s")
    assert bulk.startswith("  bulk: 1 copies, p50 0.0 s")  # per stream
    assert header.split()[:4] == ["period", "(UTC)", "stream", "accepted"]
    assert row.split()[2:6] == ["bulk", "3", "1", "0"] and total.split()[1:5] == [
        "3", "1", "0", "1"]
    r = pochta("-c", str(inst), "stats", "example.org", "--day", "--tag", "other")
    assert len(r.stdout.splitlines()) == 4  # header, rules, total: no rows
