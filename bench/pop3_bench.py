#!/usr/bin/env python3
"""POP3 download throughput against any server: fill a maildrop, RETR all, DELE all, QUIT.

Each pass:
  1. empties the maildrop (POP3 DELE of everything, QUIT) and fills it with ``--count``
     generated messages (``--size`` octets on average, some lines starting with "." so
     that dot-stuffing is exercised) by IMAP APPEND or SMTP; not timed;
  2. logs in (USER/PASS), STAT, then RETR 1..N with one command in flight, as ordinary
     POP3 clients do, checking each message's length against its "+OK n octets" or LIST
     size;
  3. DELE 1..N, QUIT (the server's UPDATE state), and checks the maildrop is empty.
Reported per pass as one JSON line: RETR seconds, messages/s, MB/s, DELE and QUIT seconds,
and, with ``--cpu-pid``, the CPU seconds the server's process tree used while RETR ran.

Examples (Pochta demo instance and the reference Dovecot from ../shared/bench/refstack):

  bench/pop3_bench.py --port 2995 --tls implicit --user bob@example.test \\
      --password bob-demo-pass --fill imap --imap-port 2993 --cpu-pid $(pgrep -f 'pochta demo')
  bench/pop3_bench.py --port 12995 --tls implicit --user bench@refstack.test \\
      --password bench-secret-0 --fill imap --imap-port 12993
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import json
import os
import random
import smtplib
import socket
import ssl
import sys
import time
from dataclasses import dataclass

# --- message generation ------------------------------------------------------------------


def make_messages(count: int, avg_size: int, to: str, seed: int = 1939) -> list[bytes]:
    """Deterministic messages of varying size (avg_size/5 to 9*avg_size/5), CRLF lines."""
    rnd = random.Random(seed)
    vocabulary = ("mail server post office protocol message retrieve delete update state "
                  "maildrop octets line header body transfer client session throughput")
    words = [w.encode() for w in vocabulary.split(" ")]
    out = []
    for i in range(count):
        target = rnd.randint(avg_size // 5, avg_size * 9 // 5)
        head = (
            f"From: Bench Sender <sender@bench.test>\r\nTo: <{to}>\r\n"
            f"Subject: pop3 bench message {i}\r\nMessage-ID: <bench.{seed}.{i}@bench.test>\r\n"
            f"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        ).encode()
        lines = [head]
        size = len(head)
        n = 0
        while size < target:
            n += 1
            line = b" ".join(rnd.choice(words) for _ in range(rnd.randint(6, 12)))
            if n % 17 == 0:
                line = b"." + line  # dot-stuffed on the wire
            line += b"\r\n"
            lines.append(line)
            size += len(line)
        out.append(b"".join(lines))
    return out


# --- a small POP3 client ---------------------------------------------------------------------


@dataclass
class Target:
    host: str
    port: int
    tls: str  # none, stls, implicit
    ssl_context: ssl.SSLContext | None
    server_name: str | None
    user: str
    password: str


class Pop3Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r = reader
        self.w = writer

    @classmethod
    async def connect(cls, t: Target) -> Pop3Client:
        if t.tls == "implicit":
            reader, writer = await asyncio.open_connection(
                t.host, t.port, ssl=t.ssl_context, server_hostname=t.server_name,
                limit=1 << 24)
            client = cls(reader, writer)
            await client.expect_ok(await client.line())
        elif t.tls == "stls":
            # Greeting and STLS on a blocking socket, then TLS over it (asyncio's
            # StreamWriter.start_tls in Python 3.11 can lose data sent after it).
            def plaintext() -> socket.socket:
                sock = socket.create_connection((t.host, t.port), timeout=30)
                f = sock.makefile("rb", buffering=0)
                for cmd in (None, b"STLS\r\n"):
                    if cmd:
                        sock.sendall(cmd)
                    reply = f.readline()
                    if not reply.startswith(b"+OK"):
                        raise ConnectionError(f"STLS refused: {reply!r}")
                sock.settimeout(None)
                return sock

            sock = await asyncio.to_thread(plaintext)
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=t.ssl_context, server_hostname=t.server_name, limit=1 << 24)
            client = cls(reader, writer)
        else:
            reader, writer = await asyncio.open_connection(t.host, t.port, limit=1 << 24)
            client = cls(reader, writer)
            await client.expect_ok(await client.line())
        return client

    async def line(self) -> bytes:
        line = await self.r.readline()
        if not line:
            raise ConnectionError("connection closed by the server")
        return line

    @staticmethod
    async def expect_ok(reply: bytes) -> bytes:
        if not reply.startswith(b"+OK"):
            raise ConnectionError(f"unexpected reply {reply!r}")
        return reply

    async def cmd(self, text: bytes) -> bytes:
        self.w.write(text + b"\r\n")
        return await self.expect_ok(await self.line())

    async def multi(self) -> bytes:
        return await self.r.readuntil(b"\r\n.\r\n")

    async def login(self, t: Target) -> None:
        await self.cmd(b"USER " + t.user.encode())
        await self.cmd(b"PASS " + t.password.encode())

    async def stat(self) -> tuple[int, int]:
        parts = (await self.cmd(b"STAT")).split()
        return int(parts[1]), int(parts[2])

    async def sizes(self) -> list[int]:
        await self.cmd(b"LIST")
        body = await self.multi()
        return [int(ln.split()[1]) for ln in body.split(b"\r\n")[:-2] if ln]

    async def quit(self) -> None:
        await self.cmd(b"QUIT")
        self.w.close()


# --- filling ----------------------------------------------------------------------------------


async def empty_maildrop(t: Target) -> None:
    c = await Pop3Client.connect(t)
    await c.login(t)
    count, _ = await c.stat()
    for i in range(1, count + 1):
        c.w.write(b"DELE %d\r\n" % i)
    for _ in range(count):
        await c.expect_ok(await c.line())
    await c.quit()


def fill_imap(a: argparse.Namespace, ctx: ssl.SSLContext | None, msgs: list[bytes]) -> None:
    if a.imap_tls == "implicit":
        im: imaplib.IMAP4 = imaplib.IMAP4_SSL(a.host, a.imap_port, ssl_context=ctx)
    else:
        im = imaplib.IMAP4(a.host, a.imap_port)
        if a.imap_tls == "starttls":
            im.starttls(ssl_context=ctx)
    im.login(a.user, a.password)
    for msg in msgs:
        typ, data = im.append("INBOX", None, None, msg)
        if typ != "OK":
            raise ConnectionError(f"APPEND failed: {data!r}")
    im.logout()


def fill_smtp(a: argparse.Namespace, msgs: list[bytes]) -> None:
    with smtplib.SMTP(a.host, a.smtp_port, local_hostname="bench.test") as smtp:
        for msg in msgs:
            smtp.sendmail("sender@bench.test", [a.user], msg)


async def wait_for_count(t: Target, count: int, timeout: float = 120.0) -> None:
    """SMTP delivery is asynchronous on most servers: wait until STAT shows them all."""
    deadline = time.monotonic() + timeout
    while True:
        c = await Pop3Client.connect(t)
        await c.login(t)
        have, _ = await c.stat()
        await c.quit()
        if have >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {have} of {count} messages arrived")
        await asyncio.sleep(0.5)


# --- CPU of the server's process tree ------------------------------------------------------------


def tree_cpu(pid: int) -> float:
    """utime+stime (seconds) of ``pid`` and all its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        p = int(entry)
        children.setdefault(int(fields[1]), []).append(p)
        times[p] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += times.get(p, 0.0)
        todo.extend(children.get(p, []))
    return total


# --- one pass ------------------------------------------------------------------------------------


async def run_pass(a: argparse.Namespace, t: Target, msgs: list[bytes], number: int) -> dict[
        str, object]:
    ctx = t.ssl_context
    await empty_maildrop(t)
    if a.fill == "imap":
        await asyncio.to_thread(fill_imap, a, ctx, msgs)
    else:
        await asyncio.to_thread(fill_smtp, a, msgs)
        await wait_for_count(t, len(msgs))

    t0 = time.perf_counter()
    c = await Pop3Client.connect(t)
    await c.login(t)
    t_login = time.perf_counter() - t0
    count, total = await c.stat()
    if count != len(msgs):
        raise RuntimeError(f"maildrop has {count} messages, expected {len(msgs)}")
    sizes = await c.sizes()
    cpu0 = tree_cpu(a.cpu_pid) if a.cpu_pid else 0.0
    t1 = time.perf_counter()
    received = 0
    for i in range(1, count + 1):
        c.w.write(b"RETR %d\r\n" % i)
        await c.expect_ok(await c.line())
        body = await c.multi()
        received += len(body)
        # unstuffed length = wire length - terminator - one per stuffed line
        unstuffed = len(body) - 3 - body.count(b"\r\n..") - body.startswith(b"..")
        if unstuffed != sizes[i - 1]:
            raise RuntimeError(f"RETR {i}: {unstuffed} octets, LIST said {sizes[i - 1]}")
    t_retr = time.perf_counter() - t1
    cpu = tree_cpu(a.cpu_pid) - cpu0 if a.cpu_pid else None
    t2 = time.perf_counter()
    for i in range(1, count + 1):
        await c.cmd(b"DELE %d" % i)
    t_dele = time.perf_counter() - t2
    t3 = time.perf_counter()
    await c.quit()
    t_quit = time.perf_counter() - t3
    c2 = await Pop3Client.connect(t)
    await c2.login(t)
    left, _ = await c2.stat()
    await c2.quit()
    if left:
        raise RuntimeError(f"{left} messages left after DELE all + QUIT")
    result: dict[str, object] = {
        "pass": number, "messages": count, "bytes": total,
        "login_s": round(t_login, 4), "retr_s": round(t_retr, 3),
        "msgs_per_s": round(count / t_retr, 1), "mb_per_s": round(received / t_retr / 1e6, 2),
        "dele_s": round(t_dele, 3), "quit_s": round(t_quit, 3),
    }
    if cpu is not None:
        result["server_cpu_s"] = round(cpu, 2)
    return result


async def amain(a: argparse.Namespace) -> dict[str, object]:
    ctx: ssl.SSLContext | None = None
    if a.tls != "none" or a.imap_tls != "none":
        if a.cafile:
            ctx = ssl.create_default_context(cafile=a.cafile)
        else:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    t = Target(a.host, a.port, a.tls, ctx if a.tls != "none" else None,
               a.server_name or a.host, a.user, a.password)
    msgs = make_messages(a.count, a.size, a.user)
    passes = []
    for p in range(1, a.passes + 1):
        res = await run_pass(a, t, msgs, p)
        print(json.dumps(res), flush=True)
        passes.append(res)
    rates = sorted(float(str(r["msgs_per_s"])) for r in passes)
    summary = {"label": a.label, "host": a.host, "port": a.port, "tls": a.tls,
               "count": a.count, "avg_size": a.size, "median_msgs_per_s": rates[len(rates) // 2],
               "passes": passes}
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--label", default="server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=995)
    ap.add_argument("--tls", choices=("none", "stls", "implicit"), default="implicit")
    ap.add_argument("--cafile", help="verify the certificate (default: not verified)")
    ap.add_argument("--server-name", default=None, help="name to verify with --cafile")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--fill", choices=("imap", "smtp"), default="imap")
    ap.add_argument("--imap-port", type=int, default=993)
    ap.add_argument("--imap-tls", choices=("none", "starttls", "implicit"), default="implicit")
    ap.add_argument("--smtp-port", type=int, default=25)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--size", type=int, default=10240, help="average message size")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--cpu-pid", type=int, help="server PID: report its tree's CPU time")
    ap.add_argument("--json", help="also write the summary here")
    a = ap.parse_args()
    try:
        import uvloop

        summary = uvloop.run(amain(a))
    except ImportError:
        summary = asyncio.run(amain(a))
    print(json.dumps({k: v for k, v in summary.items() if k != "passes"}), file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
