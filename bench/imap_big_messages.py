"""Server memory while clients APPEND and FETCH big messages at once (IMAP issue, item 2).

Starts a test server (as tests/conftest.py does) in a child process, then N clients at
once each LOGIN, APPEND a message of M MB (a synchronizing literal, sent in 1 MB pieces),
SELECT INBOX and UID FETCH its BODY.PEEK[] (checked by SHA-256). The child's VmRSS is
sampled every 20 ms; the figure is the peak growth over its RSS after start-up and one
LOGIN (argon2id's 64 MiB is paid once, then the auth cache answers). Run from
the repository root:

    .venv/bin/python bench/imap_big_messages.py --clients 10 --mb 25
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVE = r"""
import asyncio, json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from pochta.tlsutil import generate_self_signed
from tests.conftest import HOSTNAME, Instance, start_instance
from tests.imap.helpers import PLAIN_LISTENERS

async def main():
    d = Path(sys.argv[1])
    cert, key = d / "cert.pem", d / "key.pem"
    generate_self_signed(HOSTNAME, cert, key)
    instance = Instance(d, cert, key, {"hostname": HOSTNAME, "data_dir": "data",
                                       "tls": {"cert": str(cert), "key": str(key)}})
    server = await start_instance(instance, listeners=PLAIN_LISTENERS,
                                  limits={"max_message_size": 100 * 1024 * 1024})
    print(json.dumps({"port": server.port("imap", "none")}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.running.close(grace=1.0)
    await server.store.close()

asyncio.run(main())
"""


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def piece(n: int, i: int) -> bytes:
    return (b"%07d line of client %02d " % (i, n)).ljust(1022, b"x") + b"\r\n"


async def client(port: int, n: int, size: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    await reader.readline()

    async def cmd(text: bytes, tag: bytes) -> list[bytes]:
        writer.write(tag + b" " + text + b"\r\n")
        lines = []
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("closed")
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    await cmd(b"LOGIN alice@example.test alice-pass", b"l")
    header = b"From: c%d@example.test\r\nSubject: big %d\r\n\r\n" % (n, n)
    lines = (size - len(header)) // 1024
    total = len(header) + lines * 1024
    digest = hashlib.sha256(header)
    writer.write(b"a APPEND INBOX {%d}\r\n" % total)
    assert (await reader.readline()).startswith(b"+")
    writer.write(header)
    buf = []
    for i in range(lines):
        p = piece(n, i)
        digest.update(p)
        buf.append(p)
        if len(buf) == 1024:
            writer.write(b"".join(buf))
            buf.clear()
            await writer.drain()
    writer.write(b"".join(buf) + b"\r\n")
    ok = (await reader.readline())
    m = re.search(rb"APPENDUID \d+ (\d+)", ok)
    if m is None:
        raise RuntimeError(ok)
    await cmd(b"SELECT INBOX", b"s")
    writer.write(b"f UID FETCH %s (BODY.PEEK[])\r\n" % m.group(1))
    got = hashlib.sha256()
    while True:
        line = await reader.readline()
        lit = re.search(rb"\{(\d+)\}\r\n\Z", line)
        if lit:
            left = int(lit.group(1))
            while left:
                chunk = await reader.read(min(left, 1 << 20))
                got.update(chunk)
                left -= len(chunk)
            continue
        if line.startswith(b"f "):
            break
    await cmd(b"LOGOUT", b"o")
    writer.close()
    return got.digest() == digest.digest()


async def run(child: subprocess.Popen[str], port: int, clients: int, mb: int
              ) -> dict[str, object]:
    # one LOGIN first: argon2id's 64 MiB (then the auth cache) is not the messages' cost
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    writer.write(b"l LOGIN alice@example.test alice-pass\r\nq LOGOUT\r\n")
    while await reader.readline():
        pass
    writer.close()
    await asyncio.sleep(0.5)
    base = status_kb(child.pid, "VmRSS")
    peak = base
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, status_kb(child.pid, "VmRSS"))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    t0 = time.monotonic()
    results = await asyncio.gather(*(client(port, n, mb << 20) for n in range(clients)))
    elapsed = time.monotonic() - t0
    done = True
    await sampler
    hwm = status_kb(child.pid, "VmHWM")
    return {"ok": all(results), "clients": clients, "mb": mb, "seconds": round(elapsed, 1),
            "base_rss_mb": round(base / 1024, 1), "peak_rss_mb": round(peak / 1024, 1),
            "peak_growth_mb": round((peak - base) / 1024, 1),
            "vmhwm_mb": round(hwm / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--mb", type=int, default=25)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="imapbig-"))
    child = subprocess.Popen([sys.executable, "-c", SERVE, str(d), str(ROOT)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    port = json.loads(child.stdout.readline())["port"]
    try:
        result = asyncio.run(run(child, port, args.clients, args.mb))
    finally:
        child.stdin.close()
        child.wait(30)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
