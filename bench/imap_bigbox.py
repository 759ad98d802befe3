"""SELECT and FETCH 1:* FLAGS of a large mailbox, and proof that they read no bodies.

Fill (server stopped, or another data directory; the store is opened directly):
  python bench/imap_bigbox.py fill --data-dir /tmp/pochta-imap/data --user big@example.test \
      --count 100000
Measure (server running with a plaintext listener for the benchmark):
  python bench/imap_bigbox.py measure --port 34144 --user big@example.test \
      --password pass-12345 --server-pid PID

`measure` times LOGIN, SELECT INBOX, FETCH 1:* (FLAGS) and UID FETCH 1:* (UID FLAGS), and
reads the server's /proc/PID/io `rchar` (bytes the process read through syscalls, page
cache included) around each command: reading 100,000 bodies would show as hundreds of MB.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from pathlib import Path

from pochta.storage.interfaces import Envelope, LocalTarget
from pochta.storage.sqlite import SQLiteStore

BODY_LINE = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"


def message(i: int) -> bytes:
    return (b"From: Sender %d <sender%d@example.org>\r\n" % (i % 97, i % 97)
            + b"To: big@example.test\r\nSubject: message number %d\r\n" % i
            + b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <%d@bench>\r\n\r\n" % i
            + BODY_LINE * 25)


async def fill(data_dir: Path, user: str, count: int, batch: int) -> None:
    store = await SQLiteStore.open(data_dir, commit_interval=0.05)
    try:
        account = await store.get_account(user)
        if account is None:
            raise SystemExit(f"no account {user}: add it with `pochta user add` first")
        target = [LocalTarget(account.id, "INBOX")]
        t0 = time.monotonic()
        for start in range(0, count, batch):
            await asyncio.gather(*(store.accept(message(i), Envelope(sender=""), target)
                                   for i in range(start, min(count, start + batch))))
        dt = time.monotonic() - t0
        print(f"filled {count} messages in {dt:.1f} s ({count / dt:.0f} msg/s)")
    finally:
        await store.close()


def rchar(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar")


class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.f = self.sock.makefile("rb")
        self.f.readline()
        self.n = 0

    def cmd(self, text: str) -> tuple[float, int, bytes]:
        """(seconds, untagged line count, tagged line)."""
        self.n += 1
        tag = b"b%d" % self.n
        t0 = time.perf_counter()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        lines = 0
        while True:
            line = self.f.readline()
            if line.startswith(tag + b" "):
                return time.perf_counter() - t0, lines, line.strip()
            lines += 1


def measure(host: str, port: int, user: str, password: str, pid: int) -> None:
    c = Conn(host, port)
    for text in (f"LOGIN {user} {password}", "SELECT INBOX", "FETCH 1:* (FLAGS)",
                 "UID FETCH 1:* (UID FLAGS)", "SELECT INBOX", "FETCH 1:* (FLAGS)"):
        before = rchar(pid) if pid else 0
        dt, n, tagged = c.cmd(text)
        read = (rchar(pid) - before) if pid else 0
        label = "LOGIN" if text.startswith("LOGIN") else text
        print(f"{label:28s} {dt * 1000:9.1f} ms  {n:7d} untagged  server read "
              f"{read / 1e6:8.2f} MB  {tagged[:60].decode(errors='replace')}")
    c.cmd("LOGOUT")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fill")
    f.add_argument("--data-dir", type=Path, required=True)
    f.add_argument("--user", required=True)
    f.add_argument("--count", type=int, default=100_000)
    f.add_argument("--batch", type=int, default=1000)
    m = sub.add_parser("measure")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--user", required=True)
    m.add_argument("--password", required=True)
    m.add_argument("--server-pid", type=int, default=0)
    a = ap.parse_args()
    if a.what == "fill":
        asyncio.run(fill(a.data_dir, a.user, a.count, a.batch))
    else:
        measure(a.host, a.port, a.user, a.password, a.server_pid)


if __name__ == "__main__":
    main()
