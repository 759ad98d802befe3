"""No IMAP command may hold the event loop: while one connection runs a heavy command,
another client's NOOPs (and a new SMTP client's banner) must still come promptly.

The NOOP client runs in a thread with a blocking socket, so it measures wall-clock delays
independently of the event loop the server (and this test) run on. The bound is generous
(0.5 s) because this machine is shared and noisy; the measured figures are printed
(``pytest -s``)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from pochta.storage.interfaces import Envelope, LocalTarget
from tests.conftest import Server
from tests.imap.helpers import MESSAGE, connect, st

MAX_DELAY = 0.5  # seconds a NOOP may wait
MESSAGES = 300


class NoopProbe(threading.Thread):
    """Sends NOOP after NOOP on its own logged-in connection; keeps the slowest."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self._cmd(b"LOGIN alice@example.test alice-pass")
        self.stop = threading.Event()
        self.worst = 0.0
        self.count = 0

    def _cmd(self, command: bytes) -> None:
        self.sock.sendall(b"p " + command + b"\r\n")
        while not self.file.readline().startswith(b"p "):
            pass

    def reset(self) -> None:
        self.worst = 0.0
        self.count = 0

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            self._cmd(b"NOOP")
            self.worst = max(self.worst, time.monotonic() - t0)
            self.count += 1
            time.sleep(0.005)

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        self.sock.close()


class BannerProbe(threading.Thread):
    """Connects to the SMTP port again and again and times the 220 banner."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.worst = 0.0

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
                banner = sock.makefile("rb").readline()
                assert banner.startswith(b"220"), banner
                self.worst = max(self.worst, time.monotonic() - t0)
                sock.sendall(b"QUIT\r\n")
            time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        self.join(5)


HEAVY = [
    # refused by the parser's limits (before: 10-23 s each in the parse alone)
    ("FETCH 1 BODY.PEEK[HEADER.FIELDS (" + " ".join(["a"] * 30000) + ")]", b"BAD"),
    ("SEARCH " + " ".join(["ALL"] * 10000), b"BAD"),
    ("SEARCH " + " ".join(str(n) for n in range(1, 10001)), b"BAD"),
    ("SEARCH " + " ".join(["BODY q"] * 9000), b"BAD"),
    ("SEARCH " + " ".join(["FROM q"] * 9000), b"BAD"),
    # within the limits, over every message: the command yields as it goes
    ("SEARCH " + " ".join(["BODY body"] * 999), b"OK"),
    ("SEARCH " + " ".join(["FROM bob"] * 999), b"OK"),
    ("SEARCH " + " ".join(["NOT TEXT zzz"] * 499), b"OK"),
    ("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (" + " ".join(["a"] * 999) + ")])", b"OK"),
    ("FETCH 1:* (BODY.PEEK[] BODYSTRUCTURE ENVELOPE)", b"OK"),
]


async def _fill(server: Server) -> None:
    account = await server.store.get_account("alice@example.test")
    assert account is not None
    filler = b"".join(b"line %d of some body text with words\r\n" % i for i in range(60))

    async def put(i: int) -> None:
        data = MESSAGE.replace(b"Hello there", b"Message %d" % i) + filler
        await server.store.accept(data, Envelope(sender=""),
                                  [LocalTarget(account.id, "INBOX")])

    for start in range(0, MESSAGES, 50):
        await asyncio.gather(*(put(i) for i in range(start, min(start + 50, MESSAGES))))


async def test_heavy_commands_do_not_block_other_clients(imap_server: Server) -> None:
    await _fill(imap_server)
    probe = await asyncio.to_thread(NoopProbe, imap_server.port("imap", "none"))
    probe.start()
    banner = BannerProbe(imap_server.port("mta"))
    banner.start()
    report: list[str] = []
    failures: list[str] = []
    try:
        async with connect(imap_server) as c:
            await c.login()
            assert st(await c.cmd("SELECT INBOX")).startswith(b"OK")
            for command, expected in HEAVY:
                await asyncio.sleep(0.05)
                probe.reset()
                banner.worst = 0.0
                t0 = time.monotonic()
                resp = await c.cmd(command, timeout=120)
                took = time.monotonic() - t0
                await asyncio.sleep(0.05)  # let the probe finish a NOOP that was waiting
                worst, count, smtp = probe.worst, probe.count, banner.worst
                status = st(resp)
                report.append(f"{command[:60]!r}...: {status[:40]!r} in {took:.2f} s, "
                              f"{count} NOOPs, slowest {worst * 1000:.0f} ms, "
                              f"slowest SMTP banner {smtp * 1000:.0f} ms")
                if not status.startswith(expected):
                    failures.append(f"{command[:60]!r}: {status!r}")
                if worst > MAX_DELAY:
                    failures.append(f"{command[:60]!r}: a NOOP waited {worst:.2f} s")
                if smtp > MAX_DELAY:
                    failures.append(f"{command[:60]!r}: an SMTP banner waited {smtp:.2f} s")
    finally:
        await asyncio.to_thread(probe.close)
        await asyncio.to_thread(banner.close)
    print("\n" + "\n".join(report))
    assert not failures, failures
