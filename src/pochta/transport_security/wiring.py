"""Builds the queue's TLS policy hook and TLS-RPT observer from the configuration."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pochta.config import Config
from pochta.dns import Resolver
from pochta.mail.addresses import domain_of
from pochta.policy import arc
from pochta.queue.dane import DANE, ValidatingResolver
from pochta.queue.routing import ConfigTLSPolicy, TLSPolicyHook
from pochta.queue.settings import QueueConfig
from pochta.queue.transport import TLSObserver
from pochta.services.signing import DKIMSigner
from pochta.storage.interfaces import MailStore
from pochta.transport_security.mtasts import MTASTS, HTTPSPolicyFetcher
from pochta.transport_security.policy import TransportSecurityPolicy
from pochta.transport_security.settings import TransportSecurityConfig
from pochta.transport_security.srs import SRS, load_secret
from pochta.transport_security.tlsrpt import TLSResultRecorder

log = logging.getLogger("pochta.transport_security")


def settings_of(config: Config) -> TransportSecurityConfig:
    return config.transport_security


def ca_file(config: Config) -> str | None:
    ts = settings_of(config)
    if not ts.ca_file:
        return None
    p = Path(ts.ca_file)
    if not p.is_absolute():
        p = config.path(str(p))
    return str(p)


def make_mtasts(config: Config, store: MailStore, resolver: Resolver,
                recorder: TLSResultRecorder | None = None) -> MTASTS:
    ts = settings_of(config)
    fetcher = HTTPSPolicyFetcher(resolver, cafile=ca_file(config), port=ts.mta_sts_port,
                                 timeout=ts.mta_sts_timeout)
    pending: set[asyncio.Task[None]] = set()

    def failed(domain: str, kind: str, lines: tuple[str, ...], host: str, result: str) -> None:
        if recorder is None:
            return
        task = asyncio.get_running_loop().create_task(
            _quiet(recorder.policy_failure(domain, kind, lines, host, result)))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return MTASTS(store, resolver, fetcher, txt_interval=ts.mta_sts_txt_interval,
                  on_failure=failed)


async def _quiet(aw: Awaitable[None]) -> None:
    try:
        await aw
    except Exception:
        log.exception("could not record a TLS-RPT result")


def outbound_tls(
    config: Config, store: MailStore, resolver: Resolver, queue: QueueConfig,
) -> tuple[TLSPolicyHook, TLSObserver | None, str | None]:
    """(the policy hook, the TLS-RPT observer or None, the CA file for verified TLS)."""
    ts = settings_of(config)
    recorder = TLSResultRecorder(store) if ts.tls_rpt else None
    mtasts = make_mtasts(config, store, resolver, recorder) if ts.mta_sts else None
    dane = DANE(ValidatingResolver(ts.dane_resolver), port=queue.smtp_port) \
        if ts.dane and ts.dane_resolver else None
    hook = TransportSecurityPolicy(ConfigTLSPolicy(queue.tls_policies), mtasts, dane)
    return hook, recorder, ca_file(config)


def make_srs(config: Config) -> SRS | None:
    ts = settings_of(config)
    if not ts.srs:
        return None
    return srs_of(config)


def srs_of(config: Config) -> SRS:
    """The SRS rewriter of this server (its secret and domain), whether or not the queue
    rewrites forwarded mail (Sieve redirects use it on their own)."""
    ts = settings_of(config)
    if ts.srs_secret_file:
        path = Path(ts.srs_secret_file)
        if not path.is_absolute():
            path = config.path(str(path))
    else:
        path = config.data_path / "srs-secret"
    domain = ts.srs_domain or config.hostname
    return SRS(load_secret(path), domain, max_age_days=ts.srs_max_age_days)


def forwarding(
    config: Config, store: MailStore, srs: SRS | None, ttl: float = 60.0,
) -> Callable[[str, bytes], Awaitable[tuple[str, bytes]]] | None:
    """For the queue: (envelope sender, message) as they leave for a message we forward
    (its sender is not in one of our domains): the sender SRS-rewritten, the message
    ARC-sealed. Our own senders and bounces leave unchanged."""
    ts = settings_of(config)
    if srs is None and not ts.arc_seal:
        return None
    local: dict[str, tuple[bool, float]] = {}
    hostname = config.hostname
    arc_domain = (ts.arc_domain or (srs.domain if srs else "") or hostname).lower()
    signer = DKIMSigner(config.data_path)

    async def forward(sender: str, data: bytes) -> tuple[str, bytes]:
        if not sender or "@" not in sender:
            return sender, data
        domain = domain_of(sender)
        now = time.monotonic()
        cached = local.get(domain)
        if cached is None or cached[1] < now:
            cached = (await store.has_domain(domain), now + ttl)
            local[domain] = cached
        if cached[0]:
            return sender, data
        if ts.arc_seal:
            keys = [k for k in await signer.keys_for(arc_domain) if k.algorithm == "rsa"]
            if keys:
                data = await arc.seal(data, keys[0], hostname)
            else:
                log.warning("ARC: no DKIM RSA key for %s (pochta dkim); not sealed",
                            arc_domain)
        return (srs.forward(sender) if srs is not None else sender), data

    return forward
