"""The socket layer: TCP listeners, implicit TLS, STARTTLS, connection limits, buffering.

``Connection`` is an asyncio ``Protocol`` with a small awaitable API (``read``, ``write``,
``drain``, ``start_tls``) that the protocol handlers (server/smtp.py, imap.py, pop3.py)
use. It exists instead of asyncio streams for one security reason: on STARTTLS every
plaintext byte already received must be thrown away (CVE-2011-0411 class), and a
``StreamReader`` would keep them and hand them out after the handshake.

Limits live here because they are about sockets and clocks, not about any one protocol:

* **Connection slots** (``ConnectionLimiter``): a pool per role (mta, submission, imap,
  pop3), each with a per-client-address limit, under a total and a per-address total
  across roles. So idle IMAP connections can fill the IMAP pool but never keep SMTP or
  POP3 closed. An IPv6 client is counted by its /64, since one host usually owns one.
* **TLS handshakes count**: implicit-TLS ports accept plain TCP, take a slot, then run
  the handshake with ``tls_handshake_timeout``; a connection that never finishes it
  holds a slot (and its descriptor) for that long at most. Over the limits such a
  connection is closed without a reply: nothing can be said before the handshake.
* **Minimum data rate** (as Postfix's ``smtpd_min_data_rate`` with
  ``smtpd_per_request_deadline``): once a client has started a request (bytes arrived
  since our last reply), every ``data_rate_window`` seconds the server spends waiting
  for the rest must bring ``min_data_rate`` bytes per second; otherwise ``read`` raises
  ``SlowClient``. A client that is silent between requests (IMAP IDLE) is not measured:
  that is the idle timeout's job. Only time spent waiting counts, so a server that is
  busy (or has paused reading) never blames the client.
* **Session deadline** (``max_session_time``): ``read`` raises ``SessionExpired`` once
  it has passed. Both subclass ``TimeoutError``, so every driver already answers them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from ..logsetup import CONNECTION, new_connection_id
from ..metrics import METRICS
from ..proto.sasl.base import ChannelBinding
from ..shutdown import ServerShutdown
from ..tlsbinding import channel_bindings
from ..tlsutil import TLSInfo
from .trace import Tracer

__all__ = [
    "Connection", "ConnectionLimiter", "ConnectionPolicy", "RoleLimits", "ServerShutdown",
    "SessionExpired", "SlowClient", "TLSInfo", "client_key", "serve",
]

log = logging.getLogger("pochta.server")

# Stop reading from a client that sends faster than its session consumes.
READ_HIGH_WATER = 256 * 1024
# Most plaintext one read of a compressed stream may produce (IMAP COMPRESS).
INFLATE_CHUNK = 256 * 1024


class SlowClient(TimeoutError):
    """The client sends the request it started slower than ``min_data_rate``."""


class SessionExpired(TimeoutError):
    """The connection reached its ``max_session_time``."""


@dataclass(frozen=True)
class ConnectionPolicy:
    """Timers of one listener's connections; see the module docstring. 0 disables."""

    tls_handshake_timeout: float = 10.0
    min_data_rate: int = 0  # bytes per second while a request is being received
    data_rate_window: float = 30.0  # seconds of waiting over which the rate is measured
    max_session_time: float = 0.0


class Connection(asyncio.Protocol):
    """One client connection; see the module docstring."""

    def __init__(self, ssl_context: ssl.SSLContext | None, implicit_tls: bool,
                 policy: ConnectionPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.conn_id = new_connection_id()  # one format in every log line (logsetup)
        self.peer_ip = ""
        self.peer_port = 0
        self.local_port = 0
        # Implicit TLS: True only once the handshake in ``serve`` has finished.
        self.tls_active = False
        self.implicit_tls = implicit_tls
        self.policy = policy or ConnectionPolicy()
        self._clock = clock
        self.opened_at = clock()
        # the request being received (see "Minimum data rate"): bytes since our last
        # write, and the window of waiting time being measured
        self._request_bytes = 0
        self._window_start_bytes = 0
        self._window_waited = 0.0
        self._in_request = False
        self._handshake_pending = False
        self._before_tls = bytearray()
        self._ssl_context = ssl_context
        self._transport: asyncio.Transport | None = None
        # The transport whose reading is paused when the buffer is full: the TCP one, also
        # under TLS. Pausing uvloop's TLS transport instead could wedge a connection: after
        # resume_reading it delivered nothing more while the peer, its window full, waited
        # (a refused 21 MB upload over HTTPS hung ~1 run in 12 under load).
        self._flow: asyncio.Transport | None = None
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
        self._transport = self._flow = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        sock = transport.get_extra_info("sockname") or ("", 0)
        self.peer_ip, self.peer_port = str(peer[0]), int(peer[1])
        self.local_port = int(sock[1])
        self.opened_at = self._clock()
        if self.implicit_tls and self._ssl_context is not None:
            # The ClientHello should stay in the kernel until ``start_tls`` hands the
            # socket to the TLS layer. (uvloop may still deliver a first chunk: it is
            # kept in _before_tls and replayed into the TLS layer.)
            self._handshake_pending = True
            self._transport.pause_reading()
        if self.on_open is not None:
            self.on_open(self)

    def data_received(self, data: bytes) -> None:
        if self._handshake_pending:
            self._before_tls += data
            if self._transport is not None:
                self._transport.pause_reading()
            return
        self._buffer += data
        self._in_request = True
        self._request_bytes += len(data)
        if len(self._buffer) > READ_HIGH_WATER and self._flow is not None:
            self._flow.pause_reading()
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
            await self._wait_for_data(timeout)
        if not self._buffer:
            if self._shutdown:
                raise ServerShutdown
            return b""
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._reading_paused and self._flow is not None:
            self._reading_paused = False
            if not self._flow.is_closing():
                self._flow.resume_reading()
        return data

    async def _wait_for_data(self, timeout: float | None) -> None:
        """Wait for bytes, EOF or shutdown under three clocks: the driver's ``timeout``,
        the session deadline and the minimum data rate."""
        policy = self.policy
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            now = self._clock()
            rate_checked = self._in_request and policy.min_data_rate > 0
            if rate_checked and self._window_waited >= policy.data_rate_window:
                self._check_rate()
            limit = None if deadline is None else deadline - now
            cause: type[TimeoutError] = TimeoutError
            if policy.max_session_time > 0:
                left = self.opened_at + policy.max_session_time - now
                if limit is None or left <= limit:
                    limit, cause = left, SessionExpired
            if limit is not None and limit <= 0:
                raise cause("session time limit reached" if cause is SessionExpired
                            else "timeout")
            if rate_checked:
                left = policy.data_rate_window - self._window_waited
                if limit is None or left < limit:
                    limit, cause = left, SlowClient
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._read_waiter, limit)
                return
            except TimeoutError:
                if cause is not SlowClient:
                    raise cause("session time limit reached" if cause is SessionExpired
                                else "timeout") from None
            finally:
                self._read_waiter = None
                if rate_checked:
                    self._window_waited += self._clock() - now

    def _check_rate(self) -> None:
        """A full window of waiting passed inside one request: did enough bytes arrive?"""
        policy = self.policy
        received = self._request_bytes - self._window_start_bytes
        if received < policy.min_data_rate * policy.data_rate_window:
            raise SlowClient(f"{received} bytes in {policy.data_rate_window:g} s of waiting")
        self._window_start_bytes = self._request_bytes
        self._window_waited = 0.0

    def _request_answered(self) -> None:
        """We wrote something: the client's request is over, the next one starts fresh."""
        self._in_request = False
        self._request_bytes = self._window_start_bytes = 0
        self._window_waited = 0.0

    def write(self, data: bytes) -> None:
        if data:
            self._request_answered()
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

    async def start_tls(self, handshake_timeout: float | None = None) -> None:
        """Server-side TLS handshake on this connection.

        Every plaintext byte received so far is discarded first: a client (or a man in
        the middle) may have pipelined commands after STARTTLS, and they must never be
        executed as if they had arrived over TLS (RFC 3207 §4.2, CVE-2011-0411 class).
        """
        if self._ssl_context is None:
            raise RuntimeError("no TLS certificate configured")
        assert self._transport is not None
        self._buffer.clear()
        self._handshake_pending = True  # see below
        await self.drain()
        loop = asyncio.get_running_loop()
        timeout = handshake_timeout or self.policy.tls_handshake_timeout
        # From here until start_tls has installed its TLS protocol (in its first step),
        # bytes the loop reads go to _before_tls and are then replayed into the TLS
        # layer, queued behind its connection_made. With implicit TLS this began in
        # connection_made: the loop (uvloop) may read the ClientHello before anyone
        # could stop it. Plaintext injected after STARTTLS ends there too, as a broken
        # handshake, never as a command.
        handshake = asyncio.ensure_future(loop.start_tls(
            self._transport, self, self._ssl_context, server_side=True,
            ssl_handshake_timeout=timeout,
        ))
        await asyncio.sleep(0)
        self._handshake_pending = False
        early, self._before_tls = bytes(self._before_tls), bytearray()
        if early:
            loop.call_soon(_replay, self._transport, early)
        new = await asyncio.wait_for(handshake, timeout + 1.0)
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


def _replay(transport: asyncio.Transport | None, data: bytes) -> None:
    """Feed bytes read too early to the protocol now installed on ``transport``."""
    if transport is None or transport.is_closing():
        return
    # duck-typed: uvloop's TLS protocol is a BufferedProtocol without subclassing it
    protocol: Any = transport.get_protocol()
    if hasattr(protocol, "get_buffer"):
        view = memoryview(data)
        while view:
            buf = memoryview(protocol.get_buffer(len(view)))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
    else:
        protocol.data_received(data)


Handler = Callable[[Connection], Awaitable[None]]


def client_key(ip: str) -> str:
    """The address a client is counted under: IPv4 as it is, IPv6 by its /64 (one host
    usually owns a whole /64, so per-address limits would mean nothing otherwise)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(addr), 64), strict=False))
    return str(addr)


@dataclass(frozen=True)
class RoleLimits:
    """Connection slots of one role: in total and per client address."""

    max_connections: int
    max_connections_per_ip: int


class ConnectionLimiter:
    """Counts open connections (TLS handshakes included) in total, per client address,
    and per role; see the module docstring. One instance is shared by all listeners."""

    def __init__(self, max_total: int, max_per_ip: int,
                 roles: Mapping[str, RoleLimits] | None = None) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.roles = dict(roles or {})
        self.total = 0
        self.per_ip: dict[str, int] = {}
        self.per_role: dict[str, int] = {}
        self.per_role_ip: dict[tuple[str, str], int] = {}

    def acquire(self, ip: str, role: str = "") -> str | None:
        """None if admitted, else why not."""
        key = client_key(ip)
        limits = self.roles.get(role)
        if limits is not None:
            if self.per_role.get(role, 0) >= limits.max_connections:
                return "too many connections"
            if self.per_role_ip.get((role, key), 0) >= limits.max_connections_per_ip:
                return "too many connections from your address"
        if self.total >= self.max_total:
            return "too many connections"
        if self.per_ip.get(key, 0) >= self.max_per_ip:
            return "too many connections from your address"
        self.total += 1
        self.per_ip[key] = self.per_ip.get(key, 0) + 1
        self.per_role[role] = self.per_role.get(role, 0) + 1
        self.per_role_ip[(role, key)] = self.per_role_ip.get((role, key), 0) + 1
        return None

    def release(self, ip: str, role: str = "") -> None:
        key = client_key(ip)
        self.total -= 1
        _decrement(self.per_ip, key)
        _decrement(self.per_role, role)
        _decrement(self.per_role_ip, (role, key))


def _decrement(counts: dict[Any, int], key: Any) -> None:
    left = counts.get(key, 1) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


async def serve(
    address: str | None,
    port: int,
    handler: Handler,
    *,
    ssl_context: ssl.SSLContext | None,
    implicit_tls: bool,
    limiter: ConnectionLimiter,
    refuse: Callable[[str], bytes],
    role: str = "",
    policy: ConnectionPolicy | None = None,
    tasks: set[asyncio.Task[None]],
    connections: set[Connection] | None = None,
    trace: Callable[[Connection], Tracer | None] | None = None,
    reuse_port: bool = False,
) -> asyncio.Server:
    """Listen on ``address:port`` and run ``handler`` for each admitted connection.

    ``refuse(reason)`` gives the protocol's greeting-time refusal (SMTP 421, IMAP BYE,
    POP3 -ERR) for a connection over the limits. ``role`` picks the limiter's pool.

    Implicit TLS is not left to ``create_server(ssl=...)``: that would run the handshake
    before the connection exists for us, uncounted. The socket is accepted as plain TCP,
    counted, and the handshake runs here under ``policy.tls_handshake_timeout``.
    """
    loop = asyncio.get_running_loop()
    policy = policy or ConnectionPolicy()

    live = connections if connections is not None else set()

    async def run(conn: Connection) -> None:
        # this task's own context: every line it logs names the connection
        CONNECTION.set((conn.conn_id, role))
        live.add(conn)
        METRICS.inc("pochta_connections_total", role=role)  # /metrics (issue 19)
        METRICS.add_gauge("pochta_connections_open", 1, role=role)
        try:
            if implicit_tls:
                await conn.start_tls()
            await handler(conn)
        except ServerShutdown:
            if conn.tls_active or not implicit_tls:  # never plaintext on a TLS port
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
            limiter.release(conn.peer_ip, role)
            conn.close()

    def on_open(conn: Connection) -> None:
        why = limiter.acquire(conn.peer_ip, role)
        if why is not None:
            log.info("conn=%s ip=%s refused on %s: %s", conn.conn_id, conn.peer_ip,
                     role or "listener", why)
            METRICS.inc("pochta_connections_refused_total", role=role)
            if implicit_tls:
                conn.abort()  # no TLS yet, so no protocol reply can be sent
            else:
                conn.write(refuse(why))
                conn.close()
            return
        if trace is not None:
            conn.tracer = trace(conn)
        task = loop.create_task(run(conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def factory() -> Connection:
        conn = Connection(ssl_context, implicit_tls, policy)
        conn.on_open = on_open
        return conn

    # TLS of implicit-TLS ports starts in ``run`` after a slot was taken (handshakes count)
    return await loop.create_server(factory, address, port, reuse_address=True,
                                    reuse_port=reuse_port or None, backlog=1024)
