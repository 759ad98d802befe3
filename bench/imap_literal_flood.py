"""Server memory under IMAP literal floods (the hardening issue's item 1).

Starts a test server (as tests/conftest.py does) and, in the same process, a client that
sends non-synchronizing literals without waiting: first 20 literals of 10 MB before login
(`a APPEND INBOX {10000000+}` ...), then 1,500 literals of 64 KB in one SEARCH after
login. Prints the process's RSS. Run from the repository root:

    .venv/bin/python bench/imap_literal_flood.py [--no-preauth]
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pochta.tlsutil import generate_self_signed
from tests.conftest import HOSTNAME, Instance, start_instance
from tests.imap.helpers import PLAIN_LISTENERS


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


async def flood(port: int, login: bool, count: int, size: int) -> str:
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    await loop.sock_recv(sock, 65536)
    if login:
        await loop.sock_sendall(sock, b"l LOGIN alice@example.test alice-pass\r\n")
        buf = b""
        while b"l OK" not in buf:
            buf += await loop.sock_recv(sock, 65536)
    answer = bytearray()

    async def read() -> None:
        try:
            while data := await loop.sock_recv(sock, 65536):
                answer.extend(data)
        except OSError:
            return

    reader = asyncio.create_task(read())
    sent = 0
    more = b" TEXT {%d+}\r\n" % size
    try:
        head = b"a SEARCH TEXT {%d+}\r\n" if login else b"a APPEND INBOX {%d+}\r\n"
        await loop.sock_sendall(sock, head % size)
        for i in range(count):
            await loop.sock_sendall(sock, b"x" * size + (more if i < count - 1 else b"\r\n"))
            sent += 1
    except OSError:
        pass
    await asyncio.sleep(0.5)
    peak = rss_mb()
    try:
        await asyncio.wait_for(reader, 60)
    except TimeoutError:
        reader.cancel()
    sock.close()
    return f"sent {sent} literals, answer {bytes(answer[:70])!r}, RSS {peak:.0f} MB"


async def main() -> None:
    d = Path(tempfile.mkdtemp())
    cert, key = d / "cert.pem", d / "key.pem"
    generate_self_signed(HOSTNAME, cert, key)
    instance = Instance(d, cert, key, {"hostname": HOSTNAME, "data_dir": "data",
                                       "tls": {"cert": str(cert), "key": str(key)}})
    server = await start_instance(instance, listeners=PLAIN_LISTENERS)
    port = server.port("imap", "none")
    print(f"start: RSS {rss_mb():.0f} MB")
    if "--no-preauth" not in sys.argv:
        print("before login, 20 x 10 MB:", await flood(port, False, 20, 10_000_000))
    print("after login, 1,500 x 64 KB:", await flood(port, True, 1500, 65536))
    await server.running.close(grace=1.0)
    await server.store.close()


if __name__ == "__main__":
    uvloop.run(main())
