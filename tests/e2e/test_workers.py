"""``pochta serve --workers 2`` on the embedded store: two processes share the listeners
(SO_REUSEPORT) and behave as one server. IMAP IDLE in one worker sees mail delivered by
the other within a second, the POP3 maildrop lock holds across them, and mail sent to
both is stored exactly once each. Which worker serves a connection is read from the
kernel (``ss -tnp``), so each check really crosses processes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
import socket
import sys
import time
from pathlib import Path

from pochta.server.workers import worker_cpu
from pochta.storage.sqlite import SQLiteStore
from tests.conftest import Instance, populate

SRC = str(Path(__file__).parents[2] / "src")


def test_worker_cpu_gives_each_worker_its_own_cpu_or_none() -> None:
    assert [worker_cpu(i, 2, {0, 1, 2, 3}) for i in range(2)] == [0, 1]
    assert [worker_cpu(i, 3, {5, 2, 7}) for i in range(3)] == [2, 5, 7]
    assert worker_cpu(0, 1, {0, 1}) is None  # one worker: the kernel places it
    assert worker_cpu(1, 3, {0, 1}) is None  # more workers than CPUs: no pinning


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_pid(server_port: int, client_port: int) -> int | None:
    """The pid of the process holding the server end of a loopback connection."""
    out = os.popen("ss -tnpH state established").read()  # noqa: S605
    for line in out.splitlines():
        if f"127.0.0.1:{server_port} 127.0.0.1:{client_port} " in line + " ":
            m = re.search(r"pid=(\d+)", line)
            return int(m.group(1)) if m else None
    return None


class Line:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 port: int) -> None:
        self.reader, self.writer = reader, writer
        self.local_port = writer.get_extra_info("sockname")[1]
        self.port = port

    @classmethod
    async def open(cls, port: int) -> Line:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        line = cls(reader, writer, port)
        await line.read()  # greeting
        return line

    async def read(self, timeout: float = 5.0) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), timeout)

    async def send(self, text: str) -> bytes:
        self.writer.write(text.encode() + b"\r\n")
        return await self.read()

    def worker(self) -> int | None:
        return server_pid(self.port, self.local_port)

    def close(self) -> None:
        self.writer.close()


async def until_both_workers(port: int, want: int = 2) -> list[Line]:
    """Open connections until at least one is served by each of ``want`` workers."""
    lines: list[Line] = []
    for _ in range(40):
        line = await Line.open(port)
        lines.append(line)
        if len({x.worker() for x in lines} - {None}) >= want:
            return lines
    raise AssertionError("every connection went to one worker")


async def test_two_workers_act_as_one_server(instance: Instance) -> None:
    smtp_port, imap_port, pop_port = free_port(), free_port(), free_port()
    cfg = instance.dir / "pochta.toml"
    cfg.write_text(
        'hostname = "mail.example.test"\ndata_dir = "data"\nworkers = 2\n'
        + "".join(
            f'[[listeners]]\nrole = "{role}"\naddress = "127.0.0.1"\nport = {port}\n'
            'tls = "none"\n'
            for role, port in (("mta", smtp_port), ("imap", imap_port), ("pop3", pop_port))
        )
        + "[spf]\ncheck = false\n[dkim]\nverify = false\nsign = false\n"
        "[dmarc]\ncheck = false\n[limits]\nmax_connections_per_ip = 200\n"
    )
    store = await SQLiteStore.open(instance.config().data_path)
    await populate(store)
    await store.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pochta", "-c", str(cfg), "serve",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    lines: list[Line] = []
    try:
        for _ in range(600):  # 30 s: two workers importing at once on a loaded machine
            try:
                (await Line.open(pop_port)).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the workers did not start within 30 s")
        await asyncio.sleep(1.0)  # the second worker binds too

        # IMAP IDLE on both workers, then a delivery: everyone sees it within a second
        idlers = await until_both_workers(imap_port)
        lines += idlers
        # pin_workers (on by default): with a CPU each, each worker runs on its own
        if len(os.sched_getaffinity(0)) >= 2:
            pids = {line.worker() for line in idlers} - {None}
            pinned = [os.sched_getaffinity(pid) for pid in pids if pid is not None]
            assert [len(cpus) for cpus in pinned] == [1, 1], pinned
            assert pinned[0] != pinned[1]
        for n, line in enumerate(idlers):
            assert b"OK" in await line.send(f"l{n} LOGIN alice@example.test alice-pass")
            line.writer.write(f"s{n} SELECT INBOX\r\n".encode())
            while not (await line.read()).startswith(f"s{n} ".encode()):
                pass
            assert (await line.send(f"i{n} IDLE")).startswith(b"+")
        sent = time.monotonic()
        await asyncio.to_thread(
            lambda: smtplib.SMTP("127.0.0.1", smtp_port).sendmail(
                "x@elsewhere.test", ["alice@example.test"], b"Subject: hi\r\n\r\nhi\r\n"))
        for line in idlers:
            # a FLAGS update may come first: the message brought a new keyword
            # ($HasNoAttachment, [imap] attachment_keywords; RFC 9051 §7.3.5)
            got = await line.read(timeout=3.0)
            for _ in range(2):  # FLAGS and PERMANENTFLAGS first
                if b"* 1 EXISTS" not in got:
                    got = await line.read(timeout=3.0)
            assert b"* 1 EXISTS" in got
        took = time.monotonic() - sent
        assert took < 1.5, took

        # the POP3 maildrop lock holds across the workers
        pops = await until_both_workers(pop_port)
        lines += pops
        first = pops[0]
        other = next(p for p in pops if p.worker() != first.worker())
        assert (await first.send("USER bob@example.test")).startswith(b"+OK")
        assert (await first.send("PASS bob-pass")).startswith(b"+OK")
        assert (await other.send("USER bob@example.test")).startswith(b"+OK")
        assert b"[IN-USE]" in await other.send("PASS bob-pass")
        assert (await first.send("QUIT")).startswith(b"+OK")
        await asyncio.sleep(0.3)
        retry = await Line.open(pop_port)
        lines.append(retry)
        assert (await retry.send("USER bob@example.test")).startswith(b"+OK")
        assert (await retry.send("PASS bob-pass")).startswith(b"+OK")

        # 40 messages over 10 connections: each stored exactly once
        def send_batch(k: int) -> None:
            with smtplib.SMTP("127.0.0.1", smtp_port) as client:
                for j in range(4):
                    client.sendmail("x@elsewhere.test", ["bob@example.test"],
                                    f"Subject: m{k}-{j}\r\n\r\nbody\r\n".encode())

        await asyncio.gather(*(asyncio.to_thread(send_batch, k) for k in range(10)))
    finally:
        for line in lines:
            line.close()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
    store = await SQLiteStore.open(instance.config().data_path)
    try:
        bob = await store.get_account("bob@example.test")
        assert bob is not None
        box = await store.get_mailbox(bob.id, "INBOX")
        assert box is not None
        subjects = []
        for m in await store.list_messages(box.id):
            data = await store.read_blob(m.blob_id)
            subjects.append(data.split(b"Subject: ")[1].split(b"\r\n")[0])
        subjects.sort()
        assert subjects == sorted(f"m{k}-{j}".encode() for k in range(10) for j in range(4))
    finally:
        await store.close()
