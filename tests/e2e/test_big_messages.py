"""Big messages over SMTP are spooled while they arrive, never held whole: they are stored
byte for byte (DATA and BDAT, inbound checks and DKIM signing included), the spool is
empty afterwards (also when the client vanishes mid-message), and receiving 25 MB grows
the server's peak RSS by a few MB (storage v2 issue, item 2)."""

from __future__ import annotations

import asyncio
import json
import os
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

from pochta.policy import dkim
from tests.conftest import Instance, Server, populate
from tests.e2e.test_mta import inbox

SRC = str(Path(__file__).parents[2] / "src")


def big_message(size: int, tag: str) -> bytes:
    head = f"From: someone@elsewhere.test\r\nTo: bob@example.test\r\nSubject: {tag}\r\n\r\n"
    line = (tag.encode() + b" " + b"q" * 76)[:76] + b"\r\n"
    return head.encode() + line * (size // len(line))


def spool_files(server: Server) -> list[Path]:
    spool = server.ctx.config.data_path / "spool"
    return list(spool.iterdir()) if spool.exists() else []


async def test_big_data_and_bdat_messages_are_stored_whole(running_server: Server) -> None:
    port = running_server.port("mta")
    data = big_message(5_000_000, "big-data")

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail("someone@elsewhere.test", ["bob@example.test"], data)

    await asyncio.to_thread(send)
    chunks = big_message(3_000_000, "big-bdat")

    async def bdat() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        writer.write(b"EHLO c.test\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        writer.write(b"MAIL FROM:<someone@elsewhere.test>\r\nRCPT TO:<bob@example.test>\r\n")
        await reader.readline()
        await reader.readline()
        half = len(chunks) // 2 + 1  # a CRLF may fall across the two chunks
        writer.write(b"BDAT %d\r\n" % half + chunks[:half])
        assert (await reader.readline()).startswith(b"250")
        rest = chunks[half:]
        writer.write(b"BDAT %d LAST\r\n" % len(rest) + rest)
        assert (await reader.readline()).startswith(b"250 2.0.0 Ok: queued")
        writer.close()

    await bdat()
    stored = await inbox(running_server, "bob@example.test")
    assert [m.endswith(x) for m, x in zip(stored, (data, chunks), strict=True)] == [True, True]
    assert b"Authentication-Results:" in stored[0]  # the inbound checks saw the message
    assert spool_files(running_server) == []


async def test_big_submission_is_signed_over_the_whole_message(running_server: Server) -> None:
    data_dir = running_server.ctx.config.data_path
    keys = await asyncio.to_thread(dkim.ensure_domain_keys, data_dir, "example.test",
                                   ("rsa", "ed25519"), 1024)
    for key in keys:
        running_server.resolver.txt_records[key.dns_name] = [dkim.dns_txt_record(key)]
    port = running_server.port("submission", "implicit")
    data = big_message(2_500_000, "signed").replace(
        b"From: someone@elsewhere.test", b"From: alice@example.test")

    def send() -> None:
        with smtplib.SMTP_SSL("127.0.0.1", port, context=running_server.client_ssl(),
                              timeout=30) as client:
            client.login("alice@example.test", "alice-pass")
            client.sendmail("alice@example.test", ["bob@example.test"], data)

    await asyncio.to_thread(send)
    (stored,) = await inbox(running_server, "bob@example.test")
    assert stored.endswith(data[data.index(b"\r\n\r\n"):])
    assert stored.count(b"DKIM-Signature:") == 2
    results = await dkim.verify(stored, running_server.resolver)
    assert results and all(r.result == "pass" for r in results), results
    assert spool_files(running_server) == []


async def test_client_vanishing_mid_message_leaves_no_spool(running_server: Server) -> None:
    port = running_server.port("mta")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    writer.write(b"HELO c.test\r\nMAIL FROM:<a@elsewhere.test>\r\nRCPT TO:<bob@example.test>\r\n"
                 b"DATA\r\n")
    for _ in range(4):
        await reader.readline()
    writer.write(b"x" * 70 + b"\r\n")
    writer.write((b"y" * 78 + b"\r\n") * 40_000)  # 3.2 MB: spooled
    await writer.drain()
    for _ in range(50):
        if spool_files(running_server):
            break
        await asyncio.sleep(0.05)
    assert spool_files(running_server)
    writer.transport.abort()
    for _ in range(100):
        if not spool_files(running_server):
            break
        await asyncio.sleep(0.05)
    assert spool_files(running_server) == []


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def test_receiving_25_mb_grows_peak_rss_by_a_few_mb(instance: Instance) -> None:
    """A real server process (checks off, as in the benchmark instance): its peak RSS
    after warming up with a small message, then after a 24 MiB one (25 MB, just under
    the default size limit)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = instance.dir / "pochta.toml"
    cfg.write_text(
        f'hostname = "mail.example.test"\ndata_dir = "data"\n'
        f'[[listeners]]\nrole = "mta"\naddress = "127.0.0.1"\nport = {port}\ntls = "none"\n'
        "[spf]\ncheck = false\n[dkim]\nverify = false\nsign = false\n"
        "[dmarc]\ncheck = false\n")
    from pochta.storage.sqlite import SQLiteStore

    store = await SQLiteStore.open(instance.config().data_path)
    await populate(store)
    await store.close()
    proc = subprocess.Popen([sys.executable, "-m", "pochta", "-c", str(cfg), "serve"],
                            env={**os.environ, "PYTHONPATH": SRC},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                await asyncio.sleep(0.05)

        def send(data: bytes) -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                client.sendmail("a@elsewhere.test", ["bob@example.test"], data)

        await asyncio.to_thread(send, big_message(200_000, "warm-up"))
        before = vm_hwm_kb(proc.pid)
        await asyncio.to_thread(send, big_message(24 * 1024 * 1024, "huge"))
        after = vm_hwm_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    grown = (after - before) / 1024
    print(json.dumps({"peak_rss_before_kb": before, "after_kb": after,
                      "grown_mb": round(grown, 1)}))
    assert grown < 10, (before, after)
