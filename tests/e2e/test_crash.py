"""kill -9 during a load of concurrent sessions loses no acknowledged message.

The server runs as a real process (`python -m pochta serve`); clients send distinct
messages concurrently; the server is killed with SIGKILL mid-load; then the store is
opened again and every message whose 250 reached a client must be there, byte for byte,
and nothing that is not one of the sent messages (no half message) may be there.
With POCHTA_TEST_BACKEND=postgresql the store is a PostgreSQL schema (make test runs both).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

from pochta.storage.factory import open_store
from tests.conftest import Instance, populate, storage_toml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def body(n: int) -> bytes:
    line = f"message {n:06d} ".encode() * 10
    return (f"From: load@elsewhere.test\r\nSubject: load {n}\r\n\r\n".encode()
            + (line + b"\r\n") * 20)


async def client(port: int, start: int, acked: set[int], stop: asyncio.Event) -> None:
    n = start
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        try:
            await reader.readline()
            writer.write(b"HELO load\r\nMAIL FROM:<load@elsewhere.test>\r\n"
                         b"RCPT TO:<bob@example.test>\r\nDATA\r\n")
            for _ in range(4):
                await reader.readline()
            writer.write(body(n) + b".\r\n")
            reply = await asyncio.wait_for(reader.readline(), 10)
            if reply.startswith(b"250 "):
                acked.add(n)
            writer.write(b"QUIT\r\n")
            writer.close()
        except (OSError, TimeoutError):
            return
        n += 1000


async def test_kill_9_under_load_loses_no_acknowledged_message(instance: Instance) -> None:
    port = free_port()
    config = instance.config(listeners=[{"role": "mta", "port": port,
                                          "address": "127.0.0.1", "tls": "none"}],
                             spf={"check": False}, dmarc={"check": False},
                             dkim={"verify": False, "sign": False},
                             limits={"max_connections_per_ip": 100})
    cfg_file = instance.dir / "pochta.toml"
    cfg_file.write_text(
        f'hostname = "mail.example.test"\ndata_dir = "data"\n'
        f'[[listeners]]\nrole = "mta"\naddress = "127.0.0.1"\nport = {port}\ntls = "none"\n'
        "[spf]\ncheck = false\n[dkim]\nverify = false\nsign = false\n[dmarc]\ncheck = false\n"
        "[limits]\nmax_connections_per_ip = 100\n"
        + storage_toml(instance.raw_config.get("storage", {})))
    store = await open_store(config)
    await populate(store)
    await store.close()

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pochta", "-c", str(cfg_file), "serve",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
    )
    for _ in range(100):
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.1)
    acked: set[int] = set()
    stop = asyncio.Event()
    clients = [asyncio.create_task(client(port, i, acked, stop)) for i in range(20)]
    while len(acked) < 200:
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    stop.set()
    await asyncio.gather(*clients)

    store = await open_store(config)
    try:
        account = await store.get_account("bob@example.test")
        assert account is not None
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        stored: dict[int, bytes] = {}
        for meta in await store.list_messages(box.id):
            data = await store.read_blob(meta.blob_id)
            subject = data.split(b"Subject: load ", 1)[1].split(b"\r\n", 1)[0]
            stored[int(subject)] = data
    finally:
        await store.close()
    missing = acked - stored.keys()
    assert not missing, f"{len(missing)} acknowledged messages lost: {sorted(missing)[:10]}"
    for n, data in stored.items():
        assert data.endswith(body(n)), f"message {n} is damaged"
    assert len(acked) >= 200
