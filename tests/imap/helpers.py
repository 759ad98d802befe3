"""A tiny async IMAP test client over a real socket (the server runs in the same loop)."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from tests.conftest import Instance, Server, start_instance

PLAIN_LISTENERS = [
    {"role": "imap", "port": 0, "tls": "none", "address": "127.0.0.1"},
    {"role": "imap", "port": 0, "tls": "starttls", "address": "127.0.0.1"},
    {"role": "imap", "port": 0, "tls": "implicit", "address": "127.0.0.1"},
    {"role": "mta", "port": 0, "tls": "starttls", "address": "127.0.0.1"},
]


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.n = 0

    async def line(self, timeout: float = 5.0) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), timeout)

    async def read_response(self, tag: str, timeout: float = 5.0) -> list[bytes]:
        """Lines up to and including the tagged one; literals are inlined."""
        out: list[bytes] = []
        while True:
            line = await self.line(timeout)
            if not line:
                raise ConnectionError(f"closed; got {out!r}")
            while True:
                m = re.search(rb"\{(\d+)\}\r\n\Z", line)
                if not m:
                    break
                data = await asyncio.wait_for(self.reader.readexactly(int(m.group(1))), timeout)
                line += data + await self.line(timeout)
            out.append(line)
            if line.startswith(tag.encode() + b" "):
                return out

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def cmd(self, text: str | bytes, timeout: float = 5.0) -> list[bytes]:
        self.n += 1
        tag = f"t{self.n}"
        data = text.encode() if isinstance(text, str) else text
        self.writer.write(tag.encode() + b" " + data + b"\r\n")
        return await self.read_response(tag, timeout)

    async def login(self, user: str = "alice@example.test", pw: str = "alice-pass") -> None:
        resp = await self.cmd(f"LOGIN {user} {pw}")
        assert b"OK" in resp[-1], resp

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


@asynccontextmanager
async def connect(server: Server, tls: str = "none",
                  ssl_ctx: ssl.SSLContext | None = None) -> AsyncIterator[Client]:
    port = server.port("imap", tls)
    if tls == "implicit":
        reader, writer = await asyncio.open_connection(
            server.host, port, ssl=ssl_ctx or server.client_ssl())
    else:
        reader, writer = await asyncio.open_connection(server.host, port)
    c = Client(reader, writer)
    greeting = await c.line()
    assert greeting.startswith(b"* OK"), greeting
    try:
        yield c
    finally:
        await c.close()


async def start(instance: Instance, **limits: Any) -> Server:
    overrides: dict[str, Any] = {"listeners": PLAIN_LISTENERS}
    if limits:
        overrides["limits"] = limits
    return await start_instance(instance, **overrides)


def st(resp: list[bytes]) -> bytes:
    """The tagged status line without its tag: b"OK [...] text\r\n"."""
    return resp[-1].split(b" ", 1)[1]


def joined(resp: list[bytes]) -> bytes:
    return b"".join(resp)


MESSAGE = (
    b"From: Bob <bob@example.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Subject: Hello there\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"Message-ID: <m1@example.test>\r\n"
    b"\r\n"
    b"Body text line one.\r\n"
)
