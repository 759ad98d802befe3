"""The composition root: builds the application context from the config (every part
named here, statically: a missing part is an import error at start, never a silent
fallback), starts one listener per configured port, runs the outbound queue and the
background tasks, and shuts down cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..config import ALL_ADDRESSES, Config, ConfigError, Listener
from ..dns import DNSPythonResolver, Resolver
from ..http.router import Router
from ..logsetup import setup_logging
from ..passwords import password_hasher
from ..sending import api as sending_api
from ..sending.bounces import install as install_bounces
from ..sending.service import SendingService
from ..sending.smtp_keys import install as install_smtp_keys
from ..sending.smtp_suppression import install as install_smtp_suppression
from ..sending.webhooks import run_sending
from ..services.auth import Authenticator
from ..services.delivery import DeliveryService
from ..services.directory import Directory
from ..services.ratelimit import HourlyCounter
from ..services.sieve import SieveService
from ..services.signing import DKIMSigner
from ..spam.gate import SpamGate
from ..storage.factory import open_store
from ..storage.interfaces import MailStore
from ..tlsbinding import exporter
from ..tlsutil import env_keylog
from ..transport_security.srs import SRS
from ..transport_security.srs_directory import SRSDirectory
from ..transport_security.wiring import make_srs, srs_of
from ..web import acme, admin, autoconfig, health
from . import imap_searchkeep, outbound
from .context import ServerContext
from .http import handle_http
from .imap import handle_imap
from .listener import Connection, ConnectionLimiter, ConnectionPolicy, RoleLimits, serve
from .managesieve import handle_managesieve
from .pop3 import handle_pop3
from .preflight import build_ssl_context, unsafe_choices
from .smtp import handle_smtp
from .trace import Tracer

log = logging.getLogger("pochta.server")

Handler = Callable[[Connection, ServerContext, Listener], Awaitable[None]]


def _http(conn: Connection, ctx: ServerContext, listener: Listener) -> Awaitable[None]:
    return handle_http(conn, ctx.router, ctx.config.http, listener)


# role -> (the driver, refusal bytes for a connection over the limits)
HANDLERS: dict[str, tuple[Handler, Callable[[str], bytes]]] = {
    "mta": (handle_smtp, lambda why: f"421 4.7.0 {why}, try again later\r\n".encode()),
    "submission": (handle_smtp,
                   lambda why: f"421 4.7.0 {why}, try again later\r\n".encode()),
    "imap": (handle_imap, lambda why: f"* BYE {why}, try again later\r\n".encode()),
    "pop3": (handle_pop3,
             lambda why: f"-ERR [SYS/TEMP] {why}, try again later\r\n".encode()),
    "managesieve": (handle_managesieve,
                    lambda why: f'BYE "{why}, try again later"\r\n'.encode()),
    "http": (_http,
             lambda why: (f"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                          f"Retry-After: 5\r\nX-Reason: {why}\r\nConnection: close\r\n\r\n"
                          ).encode()),
}


async def build_context(
    config: Config, store: MailStore | None = None, resolver: Resolver | None = None
) -> ServerContext:
    """The whole application, in the order the parts depend on each other."""
    if store is None:
        store = await open_store(config)
    wakeup = asyncio.Event()
    # Several processes on one store: counters that must hold across them live there.
    shared = config.workers > 1 or config.storage.backend != "sqlite"
    srs = make_srs(config)  # bounces to rewritten senders (transport_security/srs.py)
    ctx = ServerContext(
        config=config,
        store=store,
        ssl_context=build_ssl_context(config),
        resolver=resolver or DNSPythonResolver(config.dns.nameservers, config.dns.timeout),
        authenticator=Authenticator(store, config.auth, secret=_auth_secret(config),
                                    shared=shared, hasher=password_hasher(config)),
        directory=Directory(store) if srs is None else SRSDirectory(store, srs),
        delivery=DeliveryService(store, config.hostname, on_queued=wakeup.set),
        queue_wakeup=wakeup,
        signer=DKIMSigner(config.data_path),
        message_rate=HourlyCounter("msg", store if shared else None),
        recipient_rate=HourlyCounter("rcpt", store if shared else None),
    )
    ctx.delivery.attachment_keywords = config.imap.attachment_keywords
    if config.sieve.enabled:  # Sieve at final delivery and in IMAP (RFC 6785)
        ctx.delivery.sieve = _sieve_service(ctx)
    # spam and abuse defence: screening, greylisting, learning filter (wraps ctx.store)
    ctx.spam = SpamGate.install(ctx)
    # the sending layer (issue 18): return paths and bounces, API keys as SMTP passwords
    ctx.sending = SendingService(ctx)
    ctx.bounces = install_bounces(ctx, ctx.sending)
    ctx.smtp_keys = install_smtp_keys(ctx, ctx.sending)
    install_smtp_suppression(ctx, ctx.sending)  # ordinary SMTP accounts (issue 18)
    ctx.acme_challenges = acme.Challenges()
    ctx.router = _router(ctx)
    return ctx


def _router(ctx: ServerContext) -> Router:
    """The http role's applications: the sending API, then (issue 19) metrics and
    health, autoconfig and MTA-STS, the web admin, ACME challenges."""
    router = Router()
    sending_api.register(router, ctx.sending)
    health.register(router, ctx)
    autoconfig.register(router, ctx)
    admin.register(router, ctx)
    acme.register(router, ctx.acme_challenges)
    return router


def _sieve_service(ctx: ServerContext) -> SieveService:
    """Sieve at final delivery (services/sieve.py), for every path through delivery."""
    config = ctx.config

    async def resolve(address: str) -> tuple[list[int], list[str]] | None:
        res = await ctx.directory.resolve(address)
        return None if res is None else (res.local, res.remote)

    return SieveService(
        ctx.store, config.sieve, config.hostname,
        global_dir=config.path(config.sieve.global_dir),
        lists_dir=config.path(config.sieve.lists_dir),
        signer=ctx.signer.sign if config.dkim.sign else None,
        resolve=resolve, local_domain=ctx.directory.is_local_domain,
        on_queued=ctx.queue_wakeup.set, srs=_redirect_srs(ctx),
        admin_contact=config.imap.admin_contact,
    )


def _redirect_srs(ctx: ServerContext) -> SRS | None:
    """The SRS rewriter for Sieve redirect senders (``[sieve] redirect_sender = "srs"``),
    and the directory that takes their bounces back. None when the queue already rewrites
    every forwarded message (``[transport_security] srs``), or Sieve does not use SRS."""
    config = ctx.config
    if not config.sieve.enabled or config.sieve.redirect_sender != "srs":
        return None
    if isinstance(ctx.directory, SRSDirectory) and ctx.directory.srs is not None:
        return None  # the queue's forwarding rewrites redirected mail too
    srs = srs_of(config)
    ctx.directory = SRSDirectory(ctx.store, srs, forwarding=False)
    return srs


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
        exporter()
    for lst in ctx.config.listeners:
        handler = HANDLERS[lst.role][0]
        if lst.tls != "none" and ctx.ssl_context is None:
            raise ConfigError(f"listener {lst.role}:{lst.port} needs TLS but none is configured")

        def bound(conn: Connection, lst: Listener = lst,
                  handler: Handler = handler) -> Awaitable[None]:
            return handler(conn, ctx, lst)

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
                        limiter=limiter, refuse=HANDLERS[lst.role][1], tasks=tasks,
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
        ctx.bound_ports[lst] = srv.sockets[0].getsockname()[1]
    background: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    if run_queue:  # the outbound queue (server/outbound.py)
        background.append(loop.create_task(outbound.run_queue(ctx)))
    if ctx.config.storage.compact_interval > 0:
        background.append(asyncio.get_running_loop().create_task(_compact_forever(ctx)))
    if run_queue:  # the sending layer's webhooks and housekeeping (issue 18)
        background.append(loop.create_task(run_sending(ctx, ctx.sending)))
    # SEARCH texts of new and old messages (server/imap_searchkeep.py)
    background.append(loop.create_task(imap_searchkeep.keep_forever(ctx.store)))
    if ctx.config.acme.directory_url:  # certificates from ACME (issue 19)
        background.append(loop.create_task(acme.run_acme(ctx, ctx.acme_challenges)))
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
