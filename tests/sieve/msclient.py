"""A small ManageSieve client for tests (RFC 5804): exact responses, literals, STARTTLS."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl


class MSClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> tuple[MSClient, list[str]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        lines, _ = await client.response()
        return client, lines

    async def line(self, timeout: float = 10.0) -> bytes:
        data = await asyncio.wait_for(self.reader.readline(), timeout)
        if not data:
            raise ConnectionError("closed")
        if data.rstrip(b"\r\n").endswith(b"}") and b"{" in data:
            n = int(data[data.rindex(b"{") + 1:data.rindex(b"}")].rstrip(b"+"))
            body = await asyncio.wait_for(self.reader.readexactly(n), timeout)
            rest = await asyncio.wait_for(self.reader.readline(), timeout)
            return data[:data.rindex(b"{")] + b"<<" + body + b">>" + rest
        return data

    async def response(self) -> tuple[list[str], str]:
        """(data lines, the final OK/NO/BYE line)."""
        lines: list[str] = []
        while True:
            text = (await self.line()).decode("utf-8", "replace").rstrip("\r\n")
            if text.split(" ", 1)[0] in ("OK", "NO", "BYE"):
                return lines, text
            lines.append(text)

    async def cmd(self, line: str | bytes) -> tuple[list[str], str]:
        data = line.encode() if isinstance(line, str) else line
        self.writer.write(data + b"\r\n")
        await self.writer.drain()
        return await self.response()

    async def starttls(self, ctx: ssl.SSLContext) -> list[str]:
        _, final = await self.cmd("STARTTLS")
        assert final.startswith("OK"), final
        await self.writer.start_tls(ctx)
        lines, final = await self.response()
        assert final.startswith("OK"), final
        return lines

    async def login(self, user: str, password: str) -> str:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        _, final = await self.cmd(f'AUTHENTICATE "PLAIN" "{token}"')
        return final

    async def put(self, name: str, script: str | bytes) -> str:
        raw = script.encode() if isinstance(script, str) else script
        _, final = await self.cmd(f'PUTSCRIPT "{name}" {{{len(raw)}+}}\r\n'.encode() + raw)
        return final

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()
