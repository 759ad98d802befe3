"""A client of clamd's socket protocol (clamd(8)): ``zINSTREAM``, the message in chunks of
a 4-byte big-endian length and the bytes, ended by a zero length; the reply is
``stream: OK``, ``stream: NAME FOUND`` or ``... ERROR``. The socket is a Unix path
(``/run/clamav/clamd.ctl``) or ``tcp://host:port``.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

CHUNK = 64 * 1024


class ClamdError(Exception):
    """clamd could not be asked, or answered with an error."""


@dataclass(frozen=True, slots=True)
class ScanResult:
    infected: bool
    signature: str = ""


class ClamdClient:
    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self.failures = 0

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.address.startswith("tcp://"):
            host, _, port = self.address[6:].rpartition(":")
            return await asyncio.open_connection(host or "127.0.0.1", int(port))
        return await asyncio.open_unix_connection(self.address)

    async def scan(self, data: bytes) -> ScanResult:
        async def run() -> bytes:
            reader, writer = await self._open()
            try:
                writer.write(b"zINSTREAM\0")
                for i in range(0, len(data), CHUNK):
                    part = data[i:i + CHUNK]
                    writer.write(struct.pack("!I", len(part)) + part)
                    await writer.drain()
                writer.write(struct.pack("!I", 0))
                await writer.drain()
                return await reader.readuntil(b"\0")
            finally:
                writer.close()

        try:
            reply = (await asyncio.wait_for(run(), self.timeout)).rstrip(b"\0").decode(
                "utf-8", "replace")
        except (OSError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            self.failures += 1
            raise ClamdError(f"clamd {self.address}: {exc or type(exc).__name__}") from exc
        if reply.endswith(" FOUND"):
            name = reply.removeprefix("stream:").strip().removesuffix(" FOUND")
            return ScanResult(True, name)
        if reply.endswith("OK"):
            return ScanResult(False)
        self.failures += 1
        raise ClamdError(f"clamd {self.address}: {reply}")
