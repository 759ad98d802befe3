"""A small asyncio SMTP server for the queue tests: records what it receives and answers
as configured (per-recipient replies, STARTTLS, AUTH PLAIN, CHUNKING, dropped sessions)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from dataclasses import dataclass, field


@dataclass
class Received:
    sender: str
    mail_line: str
    rcpts: list[str]
    rcpt_lines: list[str]
    data: bytes
    tls: bool
    auth: str | None


@dataclass
class Sink:
    host: str = "127.0.0.1"
    extensions: tuple[str, ...] = ("PIPELINING", "8BITMIME", "SIZE 10000000", "ENHANCEDSTATUSCODES")
    greeting: bytes = b"220 sink.example.test ESMTP\r\n"
    rcpt_replies: dict[str, bytes] = field(default_factory=dict)
    data_reply: bytes = b"250 2.0.0 Ok: queued\r\n"
    tls_context: ssl.SSLContext | None = None  # offer STARTTLS
    implicit_tls: bool = False
    auth: tuple[str, str] | None = None  # offer AUTH PLAIN and require it
    drop_after_data: bool = False  # close without answering the message (lost 250)
    hold: asyncio.Event | None = None  # wait for this before answering the message
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    commands: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(
            self._handle, self.host, port,
            ssl=self.tls_context if self.implicit_tls else None,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()

    def recipients(self) -> list[str]:
        return [r for m in self.messages for r in m.rcpts]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = self.implicit_tls
        authed: str | None = None
        sender: str | None = None
        mail_line = ""
        rcpts: list[str] = []
        rcpt_lines: list[str] = []
        bdat = bytearray()
        writer.write(self.greeting)
        if not self.greeting.startswith(b"2"):
            await writer.drain()
            await reader.readline()
            writer.write(b"221 bye\r\n")
            return
        while True:
            raw = await reader.readline()
            if not raw:
                return
            line = raw.decode("utf-8").rstrip("\r\n")
            self.commands.append(line)
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                ext = list(self.extensions)
                if self.tls_context is not None and not tls:
                    ext.append("STARTTLS")
                if self.auth is not None:
                    ext.append("AUTH PLAIN")
                lines = ["sink.example.test", *ext]
                writer.write("".join(
                    f"250{'-' if i < len(lines) - 1 else ' '}{t}\r\n" for i, t in enumerate(lines)
                ).encode())
            elif verb == "STARTTLS" and self.tls_context is not None:
                writer.write(b"220 2.0.0 go ahead\r\n")
                await writer.drain()
                await writer.start_tls(self.tls_context)
                tls = True
            elif verb == "AUTH" and self.auth is not None:
                creds = base64.b64decode(line.split()[2]).split(b"\0")
                if (creds[1].decode(), creds[2].decode()) == self.auth:
                    authed = creds[1].decode()
                    writer.write(b"235 2.7.0 ok\r\n")
                else:
                    writer.write(b"535 5.7.8 bad credentials\r\n")
            elif verb == "MAIL":
                if self.auth is not None and authed is None:
                    writer.write(b"530 5.7.0 authentication required\r\n")
                    continue
                sender = line.split("<", 1)[1].split(">", 1)[0]
                mail_line = line
                rcpts, rcpt_lines = [], []
                writer.write(b"250 2.1.0 Ok\r\n")
            elif verb == "RCPT":
                addr = line.split("<", 1)[1].split(">", 1)[0]
                reply = self.rcpt_replies.get(addr, b"250 2.1.5 Ok\r\n")
                if reply.startswith(b"2"):
                    rcpts.append(addr)
                    rcpt_lines.append(line)
                writer.write(reply)
            elif verb == "DATA":
                if not rcpts:
                    writer.write(b"554 5.5.1 no valid recipients\r\n")
                    continue
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                body = bytearray()
                while True:
                    chunk = await reader.readline()
                    if chunk == b".\r\n" or not chunk:
                        break
                    body += chunk[1:] if chunk.startswith(b".") else chunk
                if await self._finish(writer, sender, mail_line, rcpts, rcpt_lines, bytes(body),
                                      tls, authed):
                    return
                rcpts = []
            elif verb == "BDAT":
                parts = line.split()
                bdat += await reader.readexactly(int(parts[1]))
                if len(parts) > 2:
                    if await self._finish(writer, sender, mail_line, rcpts, rcpt_lines,
                                          bytes(bdat), tls, authed):
                        return
                    rcpts = []
                    bdat.clear()
                else:
                    writer.write(b"250 2.0.0 chunk\r\n")
            elif verb == "RSET":
                rcpts = []
                writer.write(b"250 2.0.0 Ok\r\n")
            elif verb == "NOOP":
                writer.write(b"250 2.0.0 Ok\r\n")
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"502 5.5.2 unknown\r\n")
            await writer.drain()

    async def _finish(
        self, writer: asyncio.StreamWriter, sender: str | None, mail_line: str,
        rcpts: list[str], rcpt_lines: list[str], body: bytes, tls: bool, authed: str | None,
    ) -> bool:
        if self.drop_after_data:
            self.messages.append(Received(sender or "", mail_line, list(rcpts), rcpt_lines,
                                          body, tls, authed))
            writer.close()
            return True
        if self.data_reply.startswith(b"2"):
            self.messages.append(Received(sender or "", mail_line, list(rcpts), rcpt_lines,
                                          body, tls, authed))
        if self.hold is not None:
            await self.hold.wait()
        writer.write(self.data_reply)
        await writer.drain()
        return False
