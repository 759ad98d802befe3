"""Shared by the transfer tests: an instance config file and the ``pochta`` command."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path

from pochta.storage.factory import open_store
from tests.conftest import Instance, populate, storage_toml

POCHTA = str(Path(sys.executable).parent / "pochta")


def write_config(instance: Instance) -> Path:
    """pochta.toml for the instance (same data directory and store as instance.config())
    with alice and bob created."""
    raw = instance.raw_config
    path = instance.dir / "pochta.toml"
    path.write_text(
        f'hostname = "{raw["hostname"]}"\ndata_dir = "data"\n'
        f'[tls]\ncert = "{instance.cert}"\nkey = "{instance.key}"\n'
        + storage_toml(raw.get("storage", {})), encoding="utf-8")

    async def setup() -> None:
        store = await open_store(instance.config())
        try:
            if not await store.list_domains():
                await populate(store)
        finally:
            await store.close()

    asyncio.run(setup())
    return path


def pochta(config: Path, *argv: str, timeout: float = 120
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([POCHTA, "-c", str(config), *argv], capture_output=True,
                          text=True, timeout=timeout)


async def mailbox_view(instance: Instance, address: str
                       ) -> dict[str, list[tuple[str, frozenset[str], int, str]]]:
    """mailbox -> [(subject, flags, INTERNALDATE second, SHA-256 of the bytes)]."""
    store = await open_store(instance.config())
    try:
        account = await store.get_account(address)
        assert account is not None
        out = {}
        for box in await store.list_mailboxes(account.id):
            rows = []
            for meta in await store.list_messages(box.id):
                data = await store.read_blob(meta.blob_id)
                subject = next((line[9:].decode() for line in data.split(b"\r\n")
                                if line.startswith(b"Subject: ")), "")
                rows.append((subject, meta.flags, int(meta.internaldate),
                             hashlib.sha256(data).hexdigest()))
            out[box.name] = sorted(rows)
        return out
    finally:
        await store.close()


def message(subject: str, body: str = "hello\n", date: str = "Mon, 1 Jan 2024 10:00:00 +0000"
            ) -> bytes:
    return (f"From: Old <old@example.org>\nTo: alice@example.test\nSubject: {subject}\n"
            f"Date: {date}\nMessage-ID: <{subject.replace(' ', '.')}@example.org>\n\n"
            f"{body}").encode()
