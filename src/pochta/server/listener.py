"""The socket layer: TCP listeners, implicit TLS, STARTTLS, connection limits, buffering.

``Connection`` is an asyncio ``Protocol`` with a small awaitable API (``read``, ``write``,
``drain``, ``start_tls``) that the protocol handlers (server/smtp.py, imap.py, pop3.py)
use. It exists instead of asyncio streams for one security reason: on STARTTLS every
plaintext byte already received must be thrown away (CVE-2011-0411 class), and a
``StreamReader`` would keep them and hand them out after the handshake.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, cast

from ..logsetup import CONNECTION, new_connection_id
from ..metrics import METRICS
from ..proto.sasl.base import ChannelBinding
from ..tlsbinding import channel_bindings
from ..tlsutil import TLSInfo
from .trace import Tracer

__all__ = ["Connection", "ConnectionLimiter", "ServerShutdown", "TLSInfo", "serve"]

log = logging.getLogger("pochta.server")

# Stop reading from a client that sends faster than its session consumes.
READ_HIGH_WATER = 256 * 1024
# Most plaintext one read of a compressed stream may produce (IMAP COMPRESS).
INFLATE_CHUNK = 256 * 1024


class ServerShutdown(Exception):
    """Raised by ``Connection.read`` when the server is stopping: the session ends at a
    point where it was waiting for the client, never in the middle of storing mail."""


class Connection(asyncio.Protocol):
    """One client connection; see the module docstring."""

    def __init__(self, ssl_context: ssl.SSLContext | None, implicit_tls: bool) -> None:
        self.conn_id = new_connection_id()  # one format in every log line (logsetup)
        self.peer_ip = ""
        self.peer_port = 0
        self.local_port = 0
        self.tls_active = implicit_tls
        self._ssl_context = ssl_context
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._eof = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed = asyncio.Event()
        self._channel_bindings: tuple[ChannelBinding, ...] | None = None
        self.on_open: Callable[[Connection], None] | None = None
        self._shutdown = False
        self.tracer: Tracer | None = None
        self._inflate: Any = None  # zlib decompress/compress objects once COMPRESS is on
        self._deflate: Any = None

    # --- asyncio.Protocol callbacks --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.Transport subclasses
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        sock = transport.get_extra_info("sockname") or ("", 0)
        self.peer_ip, self.peer_port = str(peer[0]), int(peer[1])
        self.local_port = int(sock[1])
        if self.on_open is not None:
            self.on_open(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > READ_HIGH_WATER and self._transport is not None:
            self._transport.pause_reading()
            self._reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake_reader()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake_reader()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        self.closed.set()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def _wake_reader(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    # --- the API the handlers use ----------------------------------------------------

    def request_shutdown(self) -> None:
        self._shutdown = True
        self._wake_reader()

    def start_deflate(self) -> None:
        """From now on both directions are raw DEFLATE streams (IMAP COMPRESS, RFC 4978).
        Bytes already buffered were sent before the client saw our OK: a client that
        pipelines past COMPRESS breaks the RFC (§3), and they are dropped."""
        self._buffer.clear()
        self._inflate = zlib.decompressobj(-15)
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)

    @property
    def compressed(self) -> bool:
        return self._deflate is not None

    async def read(self, timeout: float | None) -> bytes:
        """The next chunk received; b"" at EOF. Raises TimeoutError after ``timeout`` and
        ServerShutdown once the server is stopping and no input is waiting."""
        while True:
            inflate = self._inflate
            if inflate is not None and inflate.unconsumed_tail:
                raw = b""  # work off what the last call left compressed
            else:
                raw = await self._read_raw(timeout)
                if not raw or inflate is None:
                    break
            try:
                # at most INFLATE_CHUNK per call: a small input may expand enormously
                data = inflate.decompress(inflate.unconsumed_tail + raw, INFLATE_CHUNK)
            except zlib.error as exc:
                raise ConnectionError(f"corrupt DEFLATE stream: {exc}") from None
            if data:
                raw = data
                break
        if self.tracer is not None and raw:
            self.tracer.client(raw)
        return raw

    async def _read_raw(self, timeout: float | None) -> bytes:
        if self._shutdown and not self._buffer:
            raise ServerShutdown
        if not self._buffer and not self._eof:
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._read_waiter, timeout)
            finally:
                self._read_waiter = None
        if not self._buffer:
            if self._shutdown:
                raise ServerShutdown
            return b""
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        if data and self._transport is not None and not self._transport.is_closing():
            if self.tracer is not None:
                self.tracer.server(data)
            if self._deflate is not None:
                # a sync flush per write: the client can decode every reply at once
                data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
            self._transport.write(data)

    async def drain(self) -> None:
        if self._write_paused and not self.closed.is_set():
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    @property
    def is_closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    async def start_tls(self, handshake_timeout: float = 30.0) -> None:
        """Server-side TLS handshake on this connection.

        Every plaintext byte received so far is discarded first: a client (or a man in
        the middle) may have pipelined commands after STARTTLS, and they must never be
        executed as if they had arrived over TLS (RFC 3207 §4.2, CVE-2011-0411 class).
        """
        if self._ssl_context is None:
            raise RuntimeError("no TLS certificate configured")
        assert self._transport is not None
        self._buffer.clear()
        await self.drain()
        loop = asyncio.get_running_loop()
        new = await loop.start_tls(
            self._transport, self, self._ssl_context, server_side=True,
            ssl_handshake_timeout=handshake_timeout,
        )
        if new is None:
            raise ConnectionError("connection closed during the TLS handshake")
        # Not cleared again here: bytes that arrived through TLS while this coroutine
        # was being resumed are the client's first protected command.
        self._transport = new
        self.tls_active = True
        self._channel_bindings = None

    def _ssl_object(self) -> ssl.SSLObject | None:
        if self._transport is None:
            return None
        obj = self._transport.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None

    def tls_info(self) -> TLSInfo | None:
        obj = self._ssl_object()
        if obj is None:
            return None
        cipher = obj.cipher()
        if cipher is None:
            return None
        return TLSInfo(obj.version() or "TLS", cipher[0], int(cipher[2]))

    def channel_bindings(self) -> tuple[ChannelBinding, ...]:
        """Channel bindings SCRAM-SHA-256-PLUS may use on this connection: tls-exporter
        (RFC 9266) where OpenSSL's exporter is reachable, tls-unique on TLS 1.2."""
        if self._channel_bindings is None:
            obj = self._ssl_object()
            self._channel_bindings = channel_bindings(obj) if obj is not None else ()
        return self._channel_bindings

    def channel_binding(self, kind: str) -> bytes | None:
        """The data of one channel-binding type, or None."""
        for binding in self.channel_bindings():
            if binding.type == kind:
                return binding.data
        return None

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


Handler = Callable[[Connection], Awaitable[None]]


class ConnectionLimiter:
    """Counts open connections in total and per client IP."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = {}

    def acquire(self, ip: str) -> str | None:
        """None if admitted, else why not."""
        if self.total >= self.max_total:
            return "too many connections"
        if self.per_ip.get(ip, 0) >= self.max_per_ip:
            return "too many connections from your address"
        self.total += 1
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return None

    def release(self, ip: str) -> None:
        self.total -= 1
        left = self.per_ip.get(ip, 1) - 1
        if left:
            self.per_ip[ip] = left
        else:
            self.per_ip.pop(ip, None)


async def serve(
    address: str | None,
    port: int,
    handler: Handler,
    *,
    ssl_context: ssl.SSLContext | None,
    implicit_tls: bool,
    limiter: ConnectionLimiter,
    refuse: Callable[[str], bytes],
    tasks: set[asyncio.Task[None]],
    connections: set[Connection] | None = None,
    trace: Callable[[Connection], Tracer | None] | None = None,
    role: str = "",
    reuse_port: bool = False,
) -> asyncio.Server:
    """Listen on ``address:port`` and run ``handler`` for each admitted connection.

    ``refuse(reason)`` gives the protocol's greeting-time refusal (SMTP 421, IMAP BYE,
    POP3 -ERR) for a connection over the limits.
    """
    loop = asyncio.get_running_loop()

    live = connections if connections is not None else set()

    async def run(conn: Connection) -> None:
        # this task's own context: every line it logs names the connection
        CONNECTION.set((conn.conn_id, role))
        live.add(conn)
        METRICS.inc("pochta_connections_total", role=role)  # /metrics (issue 19)
        METRICS.add_gauge("pochta_connections_open", 1, role=role)
        try:
            await handler(conn)
        except ServerShutdown:
            conn.write(refuse("server shutting down"))
        except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
            log.debug("connection ended: %s", exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed")
        finally:
            METRICS.add_gauge("pochta_connections_open", -1, role=role)
            live.discard(conn)
            limiter.release(conn.peer_ip)
            conn.close()

    def on_open(conn: Connection) -> None:
        why = limiter.acquire(conn.peer_ip)
        if why is not None:
            log.info("conn=%s ip=%s refused: %s", conn.conn_id, conn.peer_ip, why)
            METRICS.inc("pochta_connections_refused_total", role=role)
            conn.write(refuse(why))
            conn.close()
            return
        if trace is not None:
            conn.tracer = trace(conn)
        task = loop.create_task(run(conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def factory() -> Connection:
        conn = Connection(ssl_context, implicit_tls)
        conn.on_open = on_open
        return conn

    return await loop.create_server(
        factory, address, port, ssl=ssl_context if implicit_tls else None,
        reuse_address=True, reuse_port=reuse_port or None, backlog=1024,
        ssl_handshake_timeout=30.0 if implicit_tls else None,
    )
