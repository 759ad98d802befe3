"""Outbound delivery to real peers: a second Pochta (with STARTTLS) and Postfix's own
smtp-sink, both on loopback and reached through static routes."""

from __future__ import annotations

import asyncio
import os
import shutil
import smtplib
import socket
import tempfile
from pathlib import Path

from pochta import passwords
from pochta.storage.sqlite import SQLiteStore
from tests.conftest import CHEAP_HASHER, Instance, Server, need_tool, start_instance
from tests.e2e.test_mta import inbox


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def submit(server: Server, rcpt: str, body: bytes) -> None:
    port = server.port("submission", "implicit")
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=server.client_ssl()) as c:
        c.login("alice@example.test", "alice-pass")
        c.sendmail("alice@example.test", [rcpt], body)


async def wait_delivered(server: Server, timeout: float = 10.0) -> str:
    for _ in range(int(timeout / 0.05)):
        items = await server.store.list_queue()
        if items and all(i.state.value in ("delivered", "failed") for i in items):
            return ",".join(i.state.value for i in items)
        await asyncio.sleep(0.05)
    raise AssertionError(f"queue not done: {await server.store.list_queue()}")


async def test_second_pochta_receives_over_starttls(instance: Instance, tmp_path: Path) -> None:
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = Instance(other_dir, instance.cert, instance.key,
                     {**instance.raw_config, "hostname": "mx.other.test"})
    store = await SQLiteStore.open(other.config().data_path)
    await store.add_domain("other.test")
    await store.add_account("carol@other.test",
                            passwords.hash_password("carol-pass", hasher=CHEAP_HASHER), None)
    await store.close()
    receiver = await start_instance(other, spf={"check": False}, dmarc={"check": False})
    sender = await start_instance(instance, run_queue=True, routes=[{
        "domain": "other.test", "host": "127.0.0.1", "port": receiver.port("mta"),
        "tls": "opportunistic"}])
    try:
        await asyncio.to_thread(submit, sender, "carol@other.test",
                                b"From: alice@example.test\r\nTo: carol@other.test\r\n"
                                b"Subject: across\r\n\r\nbetween two servers\r\n")
        assert await wait_delivered(sender) == "delivered"
        [stored] = await inbox(receiver, "carol@other.test")
        assert stored.startswith(b"Return-Path: <alice@example.test>\r\n")
        # the hop between the two servers was encrypted, and the submission hop is kept
        assert b"by mx.other.test (Pochta) with ESMTPS" in stored
        assert b"with ESMTPSA" in stored
        assert stored.endswith(b"between two servers\r\n")
    finally:
        for s in (sender, receiver):
            await s.running.close(grace=1.0)
            await s.store.close()


async def test_postfix_smtp_sink_as_receiver(instance: Instance) -> None:
    sink = need_tool("smtp-sink")
    # smtp-sink run as root drops privileges to "postfix": the dump file must be reachable
    # by that user, which pytest's private temporary folders are not
    fd, name = tempfile.mkstemp(prefix="pochta-sink-", dir="/tmp")
    os.close(fd)
    dump = Path(name)
    user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(dump, "postfix")
        user = ["-u", "postfix"]
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sink, *user, "-D", str(dump), f"127.0.0.1:{port}", "10",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    sender = await start_instance(instance, run_queue=True, routes=[{
        "domain": "*", "host": "127.0.0.1", "port": port, "tls": "opportunistic"}])
    try:
        await asyncio.to_thread(submit, sender, "dave@far.test",
                                b"From: alice@example.test\r\nSubject: to postfix\r\n\r\nhi\r\n")
        assert await wait_delivered(sender) == "delivered"
        for _ in range(40):
            if b"X-Rcpt-Args: <dave@far.test>" in dump.read_bytes():
                break
            await asyncio.sleep(0.05)
        text = dump.read_bytes()
        assert b"X-Mail-Args: <alice@example.test>" in text
        assert b"X-Rcpt-Args: <dave@far.test>" in text
        assert b"Subject: to postfix" in text
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        dump.unlink()
        await sender.running.close(grace=1.0)
        await sender.store.close()
