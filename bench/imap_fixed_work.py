"""A fixed IMAP workload in imaptest stress's mix, for counting what a server spends on it.

imaptest stress runs for a time and reports operations per second, which on a shared
2-core machine moves by 10-20 % from one run to the next. This client instead sends a fixed
number of commands (seeded: the same commands every run) over `--clients` TLS connections
to one folder, the way imaptest's `logout=0` profile does: FETCH of ranges with random
items (ENVELOPE, BODYSTRUCTURE, HEADER.FIELDS ...), FETCH of one body section, STORE of
flags, STORE +\\Deleted then EXPUNGE, APPEND, LIST and STATUS. Run the server under
`valgrind --tool=callgrind --collect-atstart=no` and switch collection on around the run
(`--callgrind-pid`), and its instruction count compares two versions of the code to a
fraction of a per cent; or give `--server-pid` for the server's CPU seconds.

  python bench/imap_fixed_work.py --port 62993 --user bench@example.test \\
      --password bench-pass-123 --mbox /tmp/bench.mbox [--clients 10] [--commands 200]
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import mailbox
import os
import random
import ssl
import subprocess
import threading
import time
from pathlib import Path

FIELDS = ("UID", "FLAGS", "ENVELOPE", "INTERNALDATE", "BODY", "BODYSTRUCTURE", "RFC822.SIZE")
HEADER_FIELDS = ("From", "To", "Cc", "Subject", "References", "In-Reply-To", "Message-ID")
SECTIONS = ("BODY.PEEK[HEADER]", "RFC822.HEADER", "BODY.PEEK[]", "BODY.PEEK[1]",
            "BODY.PEEK[TEXT]")
FLAGS = ("\\Seen", "\\Flagged", "\\Answered", "$Label1", "$Label2")


class Counting(imaplib.IMAP4_SSL):
    """imaplib with the selected mailbox's message count kept from the untagged EXISTS and
    EXPUNGE responses in the order they come (imaplib's own store loses the order)."""

    exists = 0

    def _append_untagged(self, typ: str, dat: bytes) -> None:
        if typ == "EXISTS" and dat:
            self.exists = int(dat)
        elif typ == "EXPUNGE":
            self.exists = max(self.exists - 1, 0)
        super()._append_untagged(typ, dat)  # type: ignore[misc]


def connect(host: str, port: int, user: str, password: str) -> Counting:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    m = Counting(host, port, ssl_context=ctx)
    m.login(user, password)
    return m


def fetch_items(rng: random.Random) -> str:
    items = ["UID", "FLAGS"]
    for _ in range(rng.randrange(4) + 1):
        if rng.randrange(4):
            items.append(rng.choice(FIELDS))
        else:
            names = " ".join(rng.choice(HEADER_FIELDS) for _ in range(rng.randrange(4) + 1))
            items.append(f"BODY.PEEK[HEADER.FIELDS ({names})]")
    return "(" + " ".join(items) + ")"


def client(n: int, args: argparse.Namespace, messages: list[bytes], errors: list[str],
           start: threading.Barrier) -> None:
    rng = random.Random(1000 + n)
    m = connect(args.host, args.port, args.user, args.password)
    try:
        m.select(args.box)
        start.wait()
        for _ in range(args.commands):
            kind = rng.randrange(100)
            try:
                one(m, rng, kind, m.exists, args, messages)
            except imaplib.IMAP4.error as exc:  # a number just expunged by another client
                errors.append(f"client {n}: {exc!r}")
    finally:
        with contextlib.suppress(Exception):
            m.logout()


def one(m: Counting, rng: random.Random, kind: int, total: int,
        args: argparse.Namespace, messages: list[bytes]) -> None:
    if kind < 25 and total:
        lo = rng.randrange(total) + 1
        hi = min(total, lo + rng.randrange(30))
        m.fetch(f"{lo}:{hi}", fetch_items(rng))
    elif kind < 50 and total:
        m.fetch(str(rng.randrange(total) + 1), f"(UID {rng.choice(SECTIONS)})")
    elif kind < 60 and total:
        sign = rng.choice("+-")
        m.store(str(rng.randrange(total) + 1), f"{sign}FLAGS",
                f"({rng.choice(FLAGS)})")
    elif kind < 70 and total:
        m.store(str(rng.randrange(total) + 1), "+FLAGS", "(\\Deleted)")
    elif kind < 80:
        m.expunge()
    elif kind < 90:
        m.append(args.box, None, None, rng.choice(messages))
    elif kind < 95:
        m.list('""', "*")
    else:
        m.status(args.box, "(MESSAGES UNSEEN UIDNEXT)")


def tree_cpu(pid: int) -> float:
    total = 0.0
    for task in os.listdir(f"/proc/{pid}/task"):
        f = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        parts = f[f.rfind(")") + 2:].split()
        total += int(parts[11]) + int(parts[12])
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--mbox", required=True)
    ap.add_argument("--box", default="fixedbox")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--commands", type=int, default=200, help="per client")
    ap.add_argument("--prefill", type=int, default=30)
    ap.add_argument("--server-pid", type=int, default=0)
    ap.add_argument("--callgrind-pid", type=int, default=0)
    a = ap.parse_args()
    messages = [bytes(msg) for msg in mailbox.mbox(a.mbox)]
    setup = connect(a.host, a.port, a.user, a.password)
    setup.delete(a.box)
    setup.create(a.box)
    for i in range(a.prefill):
        setup.append(a.box, None, None, messages[i % len(messages)])
    setup.logout()
    errors: list[str] = []
    start = threading.Barrier(a.clients + 1)
    threads = [threading.Thread(target=client, args=(i, a, messages, errors, start))
               for i in range(a.clients)]
    for t in threads:
        t.start()
    start.wait()
    if a.callgrind_pid:
        subprocess.run(["callgrind_control", "-i", "on", str(a.callgrind_pid)], check=True,
                       stdout=subprocess.DEVNULL)
    cpu0 = tree_cpu(a.server_pid) if a.server_pid else 0.0
    t0 = time.monotonic()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    cpu = tree_cpu(a.server_pid) - cpu0 if a.server_pid else 0.0
    if a.callgrind_pid:
        subprocess.run(["callgrind_control", "-i", "off", str(a.callgrind_pid)], check=True,
                       stdout=subprocess.DEVNULL)
    ops = a.clients * a.commands
    print(f"{ops} commands in {wall:.1f} s ({ops / wall:.0f}/s), {len(errors)} client errors")
    for e in errors[:5]:
        print("  ", e)
    if a.server_pid:
        print(f"server CPU {cpu:.2f} s, {cpu * 1000 / ops:.3f} CPU-ms per command")


if __name__ == "__main__":
    main()
