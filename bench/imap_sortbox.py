"""SORT, THREAD and SEARCH TEXT on a 100,000-message mailbox, Pochta and Dovecot side by
side (IMAP issue, item 4).

The messages vary in date, sender and subject, and come in reply chains of five
(`References:`, `Re:`), so that every ordering and both threading algorithms have work.

  # Pochta (server stopped, or another data directory; the store is opened directly)
  python bench/imap_sortbox.py fill --data-dir DIR/data --user big@example.test
  # optional: keep the SEARCH texts now, as the server's background keeper would
  python bench/imap_sortbox.py keep --data-dir DIR/data
  # Dovecot: the same messages as Maildir files (Dovecot indexes them on first SELECT)
  python bench/imap_sortbox.py maildir --dir /tmp/refstack/mail/refstack.test/bench/Maildir \
      --owner vmail
  # then, against each server (TLS with --tls; the first SELECT builds any index)
  python bench/imap_sortbox.py measure --port 37144 --user big@example.test --password P
  python bench/imap_sortbox.py measure --port 12993 --tls --user bench@refstack.test \
      --password bench-secret-0

`measure` runs each command twice (`--repeat`) and prints every time (the first is cold:
a view the server has not answered for yet; later ones may use kept answers); `--only
"SORT,THREAD"` runs the commands starting with either prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import ssl
import time
from pathlib import Path

BODY_LINE = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
EPOCH = 1_704_067_200  # 2024-01-01 00:00:00 UTC
COMMANDS = (
    "SORT (DATE) UTF-8 ALL",
    "SORT (REVERSE ARRIVAL) UTF-8 ALL",
    "SORT (SUBJECT) UTF-8 ALL",
    "SORT (FROM) UTF-8 ALL",
    "THREAD ORDEREDSUBJECT UTF-8 ALL",
    "THREAD REFERENCES UTF-8 ALL",
    'SEARCH TEXT "needle"',
    "SEARCH FROM sender17",
    "SEARCH TO big@example",
    'SEARCH SUBJECT "topic 1234"',
)


def message(i: int) -> bytes:
    """Chains of five: i % 5 == 0 starts a thread, the others reply to its first."""
    root = i - i % 5
    when = EPOCH + ((i * 7919) % 100_000) * 60  # dates out of arrival order
    t = time.gmtime(when)
    date = b"%s, %d %s %d %02d:%02d:%02d +0000" % (
        DAYS[t.tm_wday].encode(), t.tm_mday,
        time.strftime("%b", t).encode(), t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)
    subject = b"topic %d" % (root * 31 % 20011)
    head = (b"From: Sender %d <sender%d@example.org>\r\n" % (i % 97, i % 97)
            + b"To: big@example.test\r\n"
            + b"Subject: " + (b"Re: " if i % 5 else b"") + subject + b"\r\n"
            + b"Date: " + date + b"\r\nMessage-ID: <%d@bench>\r\n" % i)
    if i % 5:
        head += b"In-Reply-To: <%d@bench>\r\nReferences: <%d@bench>\r\n" % (root, root)
    body = BODY_LINE * 25
    if i % 1000 == 7:
        body += b"the needle is here\r\n"
    return head + b"\r\n" + body


async def fill(data_dir: Path, user: str, count: int, batch: int) -> None:
    from pochta.storage.interfaces import Envelope, LocalTarget
    from pochta.storage.sqlite import SQLiteStore

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
        print(f"filled {count} messages in {time.monotonic() - t0:.1f} s")
    finally:
        await store.close()


async def keep(data_dir: Path) -> None:
    """What the server's background keeper does after a fill (server/imap_searchkeep.py),
    run alone: the SEARCH texts of every message, batch after batch; prints the wall and
    CPU time per message (the keeper's cost per delivered message)."""
    from pochta.server.imap_searchkeep import keep_once
    from pochta.storage.sqlite import SQLiteStore

    store = await SQLiteStore.open(data_dir, commit_interval=0.05)
    try:
        t0, c0 = time.monotonic(), time.process_time()
        after, total = 0, 0
        more = True
        while more:
            after, kept, more = await keep_once(store, after)
            total += kept
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
        print(f"kept the texts of {total} messages in {wall:.1f} s "
              f"({wall / max(total, 1) * 1e6:.0f} us wall, {cpu / max(total, 1) * 1e6:.0f} us "
              "CPU per message, this process's threads included)")
    finally:
        await store.close()


def maildir(path: Path, count: int, owner: str) -> None:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        data = message(i)
        (path / "cur" / f"{EPOCH + i}.M{i}P1.bench,S={len(data)}:2,").write_bytes(data)
    if owner:
        for root, dirs, files in os.walk(path.parent):
            for name in dirs + files:
                shutil.chown(os.path.join(root, name), owner, owner)
        shutil.chown(path.parent, owner, owner)
    print(f"wrote {count} messages to {path}")


class Conn:
    def __init__(self, host: str, port: int, tls: bool) -> None:
        sock = socket.create_connection((host, port))
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)
        self.sock = sock
        self.f = sock.makefile("rb")
        self.f.readline()
        self.n = 0
        self.untagged = b""

    def cmd(self, text: str) -> tuple[float, int, bytes]:
        """(seconds, octets of untagged response, tagged line)."""
        self.n += 1
        tag = b"b%d" % self.n
        t0 = time.perf_counter()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        size = 0
        self.untagged = b""  # (the last command's, when small)
        while True:
            line = self.f.readline()
            if not line:
                raise ConnectionError("closed")
            if line.startswith(tag + b" "):
                return time.perf_counter() - t0, size, line.strip()
            size += len(line)
            if size < 4096:
                self.untagged += line


def measure(host: str, port: int, tls: bool, user: str, password: str,
            only: str = "", repeat: int = 2, server_pid: int = 0,
            arrival: bool = False, arrival_from: int = 1_000_000,
            expunge: str = "", expunge_from: int = 50_000) -> None:
    from imap_stress import tree_cpu  # (bench/, next to this script)

    def cpu() -> float:
        return tree_cpu(server_pid) if server_pid else 0.0

    c = Conn(host, port, tls)
    for text in (f"LOGIN {user} {password}", "SELECT INBOX"):
        dt, _, tagged = c.cmd(text)
        print(f"{text.split()[0]:34s} {dt * 1000:9.0f} ms  {tagged[:50].decode()}")
    other = None
    if arrival:  # a second session delivers one message before every run
        other = Conn(host, port, tls)
        other.cmd(f"LOGIN {user} {password}")
    arrived = 0
    gone = expunge_from
    if expunge:  # a second session expunges one message before every run
        other = other or Conn(host, port, tls)
        if not arrival:
            other.cmd(f"LOGIN {user} {password}")
        other.cmd("SELECT INBOX")

    def expunge_one() -> None:
        """The next message from UID ``gone`` on that is a reply (has References) or
        a thread root (has none), as ``expunge`` asks."""
        nonlocal gone
        assert other is not None
        while True:
            _, size, _ = other.cmd(f"UID FETCH {gone} (BODY.PEEK[HEADER.FIELDS "
                                        "(REFERENCES)])")
            uid, gone = gone, gone + 1
            if size == 0:
                continue  # no such UID (expunged already)
            if (b"References:" in other.untagged) == (expunge == "reply"):
                break
        other.cmd(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)")
        other.cmd(f"UID EXPUNGE {uid}")
        c.cmd("NOOP")

    for text in COMMANDS:
        if only and not any(text.startswith(p) for p in only.split(",")):
            continue
        times = []
        cpus = []
        for _ in range(repeat):
            if expunge:
                expunge_one()
            if arrival and other is not None:  # a new view: the next of the chain pattern
                data = message(arrival_from + arrived)
                arrived += 1
                other.cmd(f"APPEND INBOX {{{len(data)}+}}\r\n" + data.decode())
                c.cmd("NOOP")
            before = cpu()
            dt, size, tagged = c.cmd(text)
            times.append(dt)
            cpus.append(cpu() - before)
        shown = " ".join(f"{t * 1000:9.0f} ms" for t in times)
        if server_pid:  # the server's CPU per run (clock ticks: 10 ms steps)
            shown += "  CPU " + " ".join(f"{t * 1000:.0f}" for t in cpus) + " ms"
        print(f"{text:34s} {shown}  {size / 1e6:6.2f} MB  {tagged[:30].decode()}")
    c.cmd("LOGOUT")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fill")
    f.add_argument("--data-dir", type=Path, required=True)
    f.add_argument("--user", required=True)
    f.add_argument("--count", type=int, default=100_000)
    f.add_argument("--batch", type=int, default=1000)
    k = sub.add_parser("keep", help="keep the SEARCH texts of every message (after fill)")
    k.add_argument("--data-dir", type=Path, required=True)
    d = sub.add_parser("maildir")
    d.add_argument("--dir", type=Path, required=True)
    d.add_argument("--count", type=int, default=100_000)
    d.add_argument("--owner", default="")
    m = sub.add_parser("measure")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--tls", action="store_true")
    m.add_argument("--user", required=True)
    m.add_argument("--password", required=True)
    m.add_argument("--only", default="",
                   help="run only the commands starting with this (several: comma-separated)")
    m.add_argument("--repeat", type=int, default=2, help="runs of each command")
    m.add_argument("--arrival", action="store_true",
                   help="APPEND one message from a second session before every run (each "
                        "run sees a mailbox view not seen before); changes the mailbox")
    m.add_argument("--arrival-from", type=int, default=1_000_000,
                   help="the pattern number of the first message --arrival APPENDs (give "
                        "each run its own range: new Message-IDs, as new mail has)")
    m.add_argument("--expunge", choices=("reply", "root"), default="",
                   help="expunge one message (a reply, or a thread root) from a second "
                        "session before every run; changes the mailbox")
    m.add_argument("--expunge-from", type=int, default=50_000,
                   help="the UID from which --expunge looks for its messages")
    m.add_argument("--server-pid", type=int, default=0,
                   help="also print the CPU time of this process tree per run")
    a = ap.parse_args()
    if a.what == "fill":
        asyncio.run(fill(a.data_dir, a.user, a.count, a.batch))
    elif a.what == "keep":
        asyncio.run(keep(a.data_dir))
    elif a.what == "maildir":
        maildir(a.dir, a.count, a.owner)
    else:
        measure(a.host, a.port, a.tls, a.user, a.password, a.only, a.repeat, a.server_pid,
                a.arrival, a.arrival_from, a.expunge, a.expunge_from)


if __name__ == "__main__":
    main()
