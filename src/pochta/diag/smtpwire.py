"""SMTP replies over a ``Wire``: the reply grammar comes from the client core's parser."""

from __future__ import annotations

from pochta.proto.smtp.client import ReplyParser, ServerReply, parse_extensions

from .common import ConnectError, Wire


async def read_reply(wire: Wire) -> ServerReply:
    """One complete (possibly multi-line) reply; garbage is a ConnectError."""
    parser = ReplyParser()
    while True:
        line = await wire.read_line()
        replies = parser.feed(line.encode("utf-8", "replace") + b"\r\n")
        if parser.error is not None:
            wire.transcript.note(f"not an SMTP reply: {parser.error}")
            raise ConnectError(f"protocol error: {parser.error}")
        if replies:
            return replies[0]


async def command(wire: Wire, line: str, shown: str | None = None) -> ServerReply:
    wire.send_line(line, shown)
    await wire.drain()
    return await read_reply(wire)


async def ehlo(wire: Wire, name: str) -> tuple[ServerReply, dict[str, str]]:
    """EHLO, falling back to HELO when EHLO is refused (RFC 5321 4.1.4)."""
    reply = await command(wire, f"EHLO {name}")
    if reply.positive:
        return reply, parse_extensions(reply)
    if reply.code == 421:
        return reply, {}
    reply = await command(wire, f"HELO {name}")
    return reply, {}


def auth_mechanisms(extensions: dict[str, str]) -> list[str]:
    return extensions.get("AUTH", "").upper().split()
