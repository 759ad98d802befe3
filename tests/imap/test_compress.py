"""COMPRESS=DEFLATE (RFC 4978) over a real socket, with a client that compresses itself."""

from __future__ import annotations

import asyncio
import zlib

from tests.conftest import Server
from tests.imap.helpers import MESSAGE, connect, joined, st


class Deflated:
    """Both directions of a raw-DEFLATE IMAP stream, on top of the helper's socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inp = zlib.decompressobj(-15)
        self.text = b""
        self.wire_in = 0

    async def cmd(self, tag: str, line: bytes) -> bytes:
        data = self.out.compress(tag.encode() + b" " + line + b"\r\n")
        self.writer.write(data + self.out.flush(zlib.Z_SYNC_FLUSH))
        while f"\r\n{tag} ".encode() not in b"\r\n" + self.text:
            chunk = await asyncio.wait_for(self.reader.read(65536), 5)
            assert chunk, "server closed the connection"
            self.wire_in += len(chunk)
            self.text += self.inp.decompress(chunk)
        reply, self.text = self.text, b""
        return reply


async def test_compress_deflate_session(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        caps = joined(await c.cmd("CAPABILITY"))
        assert b"COMPRESS=DEFLATE" in caps
        for _ in range(20):
            await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)
        assert st(await c.cmd("COMPRESS BOGUS")).startswith(b"BAD")
        assert st(await c.cmd("COMPRESS DEFLATE")) == b"OK DEFLATE active\r\n"
        z = Deflated(c.reader, c.writer)
        reply = await z.cmd("z1", b"SELECT INBOX")
        assert b"* 20 EXISTS" in reply and b"z1 OK" in reply
        reply = await z.cmd("z2", b"FETCH 1:* (BODY.PEEK[])")
        assert reply.count(b"Body text line one.") == 20
        assert z.wire_in < len(reply) / 3, "responses really are compressed"
        reply = await z.cmd("z3", b"COMPRESS DEFLATE")
        assert b"z3 NO [COMPRESSIONACTIVE]" in reply
        assert b"COMPRESS=DEFLATE" not in await z.cmd("z4", b"CAPABILITY")
        assert b"z5 OK" in await z.cmd("z5", b"LOGOUT")


async def test_corrupt_deflate_stream_ends_only_that_session(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        assert st(await c.cmd("COMPRESS DEFLATE")).startswith(b"OK")
        c.writer.write(b"\xff\xff\xff\xff garbage that is not deflate\r\n")
        assert await asyncio.wait_for(c.reader.read(), 5) == b""
    async with connect(imap_server) as other:
        await other.login()
        assert st(await other.cmd("NOOP")).startswith(b"OK")
