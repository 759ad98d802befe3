"""Builds the queue's TLS policy hook and TLS-RPT observer from the configuration."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from pathlib import Path

from pochta.dns import Resolver
from pochta.queue.routing import ConfigTLSPolicy, TLSPolicyHook
from pochta.queue.settings import QueueConfig
from pochta.queue.transport import TLSObserver
from pochta.storage.interfaces import MailStore
from pochta.transport_security.dane import DANE, ValidatingResolver
from pochta.transport_security.mtasts import MTASTS, HTTPSPolicyFetcher
from pochta.transport_security.policy import TransportSecurityPolicy
from pochta.transport_security.settings import TransportSecurityConfig
from pochta.transport_security.tlsrpt import TLSResultRecorder

log = logging.getLogger("pochta.transport_security")


def settings_of(config: object) -> TransportSecurityConfig:
    ts = getattr(config, "transport_security", None)
    return ts if isinstance(ts, TransportSecurityConfig) else TransportSecurityConfig()


def ca_file(config: object) -> str | None:
    ts = settings_of(config)
    if not ts.ca_file:
        return None
    p = Path(ts.ca_file)
    if not p.is_absolute():
        p = Path(str(getattr(config, "base_dir", "."))) / p
    return str(p)


def make_mtasts(config: object, store: MailStore, resolver: Resolver,
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
    config: object, store: MailStore, resolver: Resolver, queue: QueueConfig,
) -> tuple[TLSPolicyHook, TLSObserver | None, str | None]:
    """(the policy hook, the TLS-RPT observer or None, the CA file for verified TLS)."""
    ts = settings_of(config)
    recorder = TLSResultRecorder(store) if ts.tls_rpt else None
    mtasts = make_mtasts(config, store, resolver, recorder) if ts.mta_sts else None
    dane = DANE(ValidatingResolver(ts.dane_resolver), port=queue.smtp_port) \
        if ts.dane and ts.dane_resolver else None
    hook = TransportSecurityPolicy(ConfigTLSPolicy(queue.tls_policies), mtasts, dane)
    return hook, recorder, ca_file(config)
