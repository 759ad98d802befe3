"""Wiring: build the services from the config, start one listener per configured port,
run the outbound queue, and shut down cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import errno
import importlib
import ipaddress
import logging
import os
import signal
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..config import ALL_ADDRESSES, Config, ConfigError, Listener
from ..dns import DNSPythonResolver, Resolver
from ..logsetup import setup_logging
from ..services.auth import Authenticator
from ..services.delivery import DeliveryService
from ..services.directory import Directory
from ..services.ratelimit import HourlyCounter
from ..services.signing import DKIMSigner
from ..storage.factory import open_store
from ..storage.interfaces import MailStore
from ..tlsutil import env_keylog, server_context
from .listener import Connection, ConnectionLimiter, ConnectionPolicy, RoleLimits, serve
from .trace import Tracer

log = logging.getLogger("pochta.server")

# role -> (module, handler function, refusal bytes for a connection over the limits)
HANDLERS: dict[str, tuple[str, str, Callable[[str], bytes]]] = {
    "mta": ("pochta.server.smtp", "handle_smtp",
            lambda why: f"421 4.7.0 {why}, try again later\r\n".encode()),
    "submission": ("pochta.server.smtp", "handle_smtp",
                   lambda why: f"421 4.7.0 {why}, try again later\r\n".encode()),
    "imap": ("pochta.server.imap", "handle_imap",
             lambda why: f"* BYE {why}, try again later\r\n".encode()),
    "pop3": ("pochta.server.pop3", "handle_pop3",
             lambda why: f"-ERR [SYS/TEMP] {why}, try again later\r\n".encode()),
    "managesieve": ("pochta.server.managesieve", "handle_managesieve",
                    lambda why: f'BYE "{why}, try again later"\r\n'.encode()),
    "http": ("pochta.http.server", "handle_http",
             lambda why: (f"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                          f"Retry-After: 5\r\nX-Reason: {why}\r\nConnection: close\r\n\r\n"
                          ).encode()),
}


@dataclass
class ServerContext:
    """Everything a protocol handler needs; built once per server."""

    config: Config
    store: MailStore
    ssl_context: ssl.SSLContext | None
    resolver: Resolver
    authenticator: Authenticator
    directory: Directory
    delivery: DeliveryService
    signer: DKIMSigner
    pop3_locks: set[int] = field(default_factory=set)
    # submission rate limits per account (sliding hour; in the store when shared)
    message_rate: HourlyCounter = field(default_factory=lambda: HourlyCounter("msg"))
    recipient_rate: HourlyCounter = field(default_factory=lambda: HourlyCounter("rcpt"))
    queue_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # services plugged in by later layers (queue worker, policy), by name
    extras: dict[str, Any] = field(default_factory=dict)


def build_ssl_context(config: Config) -> ssl.SSLContext | None:
    cert, key = config.path(config.tls.cert), config.path(config.tls.key)
    needs_tls = any(lst.tls != "none" for lst in config.listeners)
    if not cert.exists() or not key.exists():
        if needs_tls:
            raise ConfigError(f"tls.cert/tls.key: {cert} or {key} does not exist "
                              "(pochta init creates a self-signed pair)")
        return None
    try:
        return server_context(cert, key, config.tls.min_version)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"tls.cert/tls.key: cannot load {cert} / {key}: {exc}") from None


async def build_context(
    config: Config, store: MailStore | None = None, resolver: Resolver | None = None
) -> ServerContext:
    if store is None:
        store = await open_store(config)
    wakeup = asyncio.Event()
    # Several processes on one store: counters that must hold across them live there.
    shared = config.workers > 1 or config.storage.backend != "sqlite"
    ctx = ServerContext(
        config=config,
        store=store,
        ssl_context=build_ssl_context(config),
        resolver=resolver or DNSPythonResolver(config.dns.nameservers, config.dns.timeout),
        authenticator=Authenticator(store, config.auth, secret=_auth_secret(config),
                                    shared=shared),
        directory=Directory(store),
        delivery=DeliveryService(store, config.hostname, on_queued=wakeup.set),
        queue_wakeup=wakeup,
        signer=DKIMSigner(config.data_path),
        message_rate=HourlyCounter("msg", store if shared else None),
        recipient_rate=HourlyCounter("rcpt", store if shared else None),
    )
    # SRS: bounces to rewritten senders (pochta.transport_security.srs)
    from pochta.transport_security.srs_directory import SRSDirectory
    from pochta.transport_security.wiring import make_srs

    srs = make_srs(config)
    if srs is not None:
        ctx.directory = SRSDirectory(ctx.store, srs)
    _attach_sieve(ctx)
    # spam and abuse defence (spam/gate.py): screening, greylisting, learning filter
    from ..spam.gate import SpamGate

    SpamGate.install(ctx)
    from ..sending.bounces import install  # return paths and bounces (issue 18)

    install(ctx)
    return ctx


def _attach_sieve(ctx: ServerContext) -> None:
    """Sieve at final delivery (services/sieve.py), for every path through delivery."""
    from ..services.sieve import SieveService, redirect_srs

    config = ctx.config

    async def resolve(address: str) -> tuple[list[int], list[str]] | None:
        res = await ctx.directory.resolve(address)
        return None if res is None else (res.local, res.remote)

    ctx.delivery.sieve = SieveService(
        ctx.store, config.sieve, config.hostname,
        global_dir=config.path(config.sieve.global_dir),
        lists_dir=config.path(config.sieve.lists_dir),
        signer=ctx.signer.sign if config.dkim.sign else None,
        resolve=resolve, local_domain=ctx.directory.is_local_domain,
        on_queued=ctx.queue_wakeup.set, srs=redirect_srs(ctx),
    )
    ctx.extras["sieve"] = ctx.delivery.sieve


def _auth_secret(config: Config) -> bytes:
    """A persistent secret for the fake SCRAM keys of unknown users: if it changed on
    restart, a changing salt would tell an attacker that an account does not exist."""
    path = config.data_path / "auth-secret"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    config.data_path.mkdir(parents=True, exist_ok=True)
    secret = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


@dataclass
class RunningServer:
    ctx: ServerContext
    servers: list[tuple[Listener, asyncio.Server]]
    tasks: set[asyncio.Task[None]]
    background: list[asyncio.Task[None]]
    connections: set[Connection] = field(default_factory=set)

    def port(self, role: str, tls: str | None = None) -> int:
        """The bound port of the first listener with this role (and TLS mode)."""
        for lst, srv in self.servers:
            if lst.role == role and (tls is None or lst.tls == tls):
                return int(srv.sockets[0].getsockname()[1])
        raise KeyError(f"no {role} listener with tls={tls}")

    async def close(self, grace: float = 5.0) -> None:
        for _, srv in self.servers:
            srv.close()
        for task in self.background:
            task.cancel()
        # Sessions waiting for their client say goodbye (SMTP 421, IMAP BYE, POP3 -ERR);
        # busy ones finish the command at hand first.
        for conn in list(self.connections):
            conn.request_shutdown()
        if self.tasks:
            _done, pending = await asyncio.wait(list(self.tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for _, srv in self.servers:
            await srv.wait_closed()
        for task in self.background:
            if not task.done():
                await asyncio.wait([task], timeout=1.0)
        from ..services.eventlog import flush_store  # the mail log's last events

        await flush_store(self.ctx.store)


def _handler_for(role: str) -> Callable[[Connection, ServerContext, Listener], Awaitable[None]]:
    module_name, func_name, _ = HANDLERS[role]
    module = importlib.import_module(module_name)
    handler: Callable[[Connection, ServerContext, Listener], Awaitable[None]] = getattr(
        module, func_name)
    return handler


def _start_queue_worker(ctx: ServerContext) -> asyncio.Task[None] | None:
    """The outbound queue runs beside the listeners when its module is present."""
    try:
        runner = importlib.import_module("pochta.queue.runner")
    except ImportError:
        log.warning("outbound queue not available: remote mail stays queued")
        return None
    start: Callable[[ServerContext], Coroutine[Any, Any, None]] = runner.run_queue
    return asyncio.get_running_loop().create_task(start(ctx))


def _tracer_factory(config: Config, role: str) -> Callable[[Connection], Tracer | None] | None:
    if not config.log.trace_ips:
        return None
    networks = [ipaddress.ip_network(n, strict=False) for n in config.log.trace_ips]

    def make(conn: Connection) -> Tracer | None:
        try:
            ip = ipaddress.ip_address(conn.peer_ip)
        except ValueError:
            return None
        if any(ip in net for net in networks):
            return Tracer(role, conn.conn_id, conn.peer_ip)
        return None

    return make


def connection_limiter(config: Config) -> ConnectionLimiter:
    """One limiter for every listener: a pool per role under the totals."""
    lim = config.limits
    roles = {
        role: RoleLimits(getattr(lim, f"{role}_max_connections"),
                         getattr(lim, f"{role}_max_connections_per_ip"))
        for role in HANDLERS
    }
    return ConnectionLimiter(lim.max_connections, lim.max_connections_per_ip, roles)


def connection_policy(config: Config, role: str) -> ConnectionPolicy:
    lim = config.limits
    smtp = role in ("mta", "submission")
    return ConnectionPolicy(
        tls_handshake_timeout=lim.tls_handshake_timeout,
        min_data_rate=lim.min_data_rate,
        data_rate_window=lim.data_rate_window,
        max_session_time=lim.smtp_max_session_time if smtp else 0.0,
    )


async def start_server(
    ctx: ServerContext, run_queue: bool = True, reuse_port: bool = False
) -> RunningServer:
    tasks: set[asyncio.Task[None]] = set()
    connections: set[Connection] = set()
    limiter = connection_limiter(ctx.config)
    servers: list[tuple[Listener, asyncio.Server]] = []
    if ctx.config.auth.scram_plus and ctx.ssl_context is not None:
        # Self-test the tls-exporter now (tlsbinding.py), so a failure is logged at start
        # and the first client does not wait for the test.
        from ..tlsbinding import exporter

        exporter()
    for lst in ctx.config.listeners:
        try:
            handler = _handler_for(lst.role)
        except ImportError as exc:
            log.error("role %s is not available (%s); listener %s:%s not started",
                      lst.role, exc, lst.address, lst.port)
            continue
        if lst.tls != "none" and ctx.ssl_context is None:
            raise ConfigError(f"listener {lst.role}:{lst.port} needs TLS but none is configured")

        def bound(conn: Connection, lst: Listener = lst, handler: Any = handler) -> Awaitable[None]:
            result: Awaitable[None] = handler(conn, ctx, lst)
            return result

        # "*": every address of both families (asyncio binds one socket per family);
        # a host without IPv6 falls back to IPv4 alone
        hosts: list[str | None] = ([None, "0.0.0.0"] if lst.address == ALL_ADDRESSES
                                   else [lst.address])
        try:
            for i, host in enumerate(hosts):
                try:
                    srv = await serve(
                        host, lst.port, bound,
                        ssl_context=ctx.ssl_context, implicit_tls=lst.tls == "implicit",
                        limiter=limiter, refuse=HANDLERS[lst.role][2], tasks=tasks,
                        connections=connections, trace=_tracer_factory(ctx.config, lst.role),
                        role=lst.role, policy=connection_policy(ctx.config, lst.role),
                        reuse_port=reuse_port,
                    )
                    break
                except OSError as exc:
                    if i + 1 == len(hosts) or exc.errno not in (errno.EADDRNOTAVAIL,
                                                                errno.EAFNOSUPPORT):
                        raise
                    log.warning("listener %s:%s: IPv6 is not available (%s); IPv4 only",
                                lst.role, lst.port, exc.strerror)
        except OSError as exc:
            for _, started in servers:
                started.close()
            raise ConfigError(f"listener {lst.role} {lst.address}:{lst.port}: {exc.strerror}"
                              ) from None
        servers.append((lst, srv))
        # the bound port of each listener (port 0 in tests), for autoconfig (issue 19)
        ctx.extras.setdefault("bound_ports", {})[lst] = srv.sockets[0].getsockname()[1]
    background: list[asyncio.Task[None]] = []
    if run_queue:
        worker = _start_queue_worker(ctx)
        if worker is not None:
            background.append(worker)
    if ctx.config.storage.compact_interval > 0:
        background.append(asyncio.get_running_loop().create_task(_compact_forever(ctx)))
    if run_queue:  # the sending layer's webhooks and housekeeping (issue 18)
        from ..sending.webhooks import run_sending

        background.append(asyncio.get_running_loop().create_task(run_sending(ctx)))
    if ctx.config.acme.directory_url:  # certificates from ACME (issue 19)
        from ..web.acme import run_acme

        background.append(asyncio.get_running_loop().create_task(run_acme(ctx)))
    return RunningServer(ctx, servers, tasks, background, connections)


async def _compact_forever(ctx: ServerContext) -> None:
    """Give back the space of expunged and deleted messages, in the background."""
    cfg = ctx.config.storage
    while True:
        await asyncio.sleep(cfg.compact_interval)
        try:
            reclaimed = await ctx.store.compact(min_age=cfg.compact_min_age)
        except Exception:
            log.exception("background compaction failed")
            continue
        if reclaimed:
            log.info("compaction gave back %d bytes", reclaimed)


async def serve_forever(config: Config, worker: int | None = None) -> int:
    """Run until SIGTERM/SIGINT; ``worker`` is this process's index when ``pochta serve
    --workers`` runs several (they bind the same ports with SO_REUSEPORT)."""
    setup_logging(config.log.level, config.log.format)
    from .preflight import unsafe_choices

    for problem in unsafe_choices(config):
        log.warning("config %s", problem)
    keylog = env_keylog()
    if keylog:
        log.warning("SSLKEYLOGFILE=%s: the TLS secrets of every session (clients and "
                    "outbound) are written to this file (mode 0600); whoever reads it can "
                    "decrypt the recorded traffic. Unset SSLKEYLOGFILE unless you are "
                    "debugging", keylog)
    ctx = await build_context(config)
    try:
        running = await start_server(ctx, reuse_port=worker is not None)
    except ConfigError:
        await ctx.store.close()
        raise
    for lst, srv in running.servers:
        port = srv.sockets[0].getsockname()[1]
        log.info("listening role=%s address=%s port=%s tls=%s%s", lst.role, lst.address, port,
                 lst.tls, "" if worker is None else f" worker={worker}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await running.close()
    await ctx.store.close()
    return 0
