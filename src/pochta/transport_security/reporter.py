"""The server's daily report task: TLS-RPT aggregate reports (RFC 8460) and DMARC
aggregate reports (RFC 7489 §7.2) for every past UTC day that has recorded results, sent
once (a store lock keeps sibling workers and nodes from sending twice), through the queue
like any other mail."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pochta.mail.addresses import domain_of
from pochta.policy import dmarc_reports
from pochta.storage.interfaces import Envelope, LocalTarget, MailStore, RemoteRecipient
from pochta.transport_security.records import own_tlsa
from pochta.transport_security.tlsrpt import https_post, send_reports, utc_day
from pochta.transport_security.wiring import settings_of

if TYPE_CHECKING:
    from pochta.context import AppContext
    from pochta.queue.worker import QueueWorker

log = logging.getLogger("pochta.tlsrpt")
LOCK = "reports-daily"


async def send_due_tls_reports(
    store: MailStore, ctx: AppContext, notify: Callable[[], None],
    clock: Callable[[], float] = time.time,
) -> int:
    ts = settings_of(ctx.config)
    hostname = str(ctx.config.hostname)
    sender = ts.report_from or f"noreply-reports@{hostname}"
    today = utc_day(clock())
    days = sorted({r.day for r in await store.tls_results()} - {today})
    dmarc_days = sorted({r.day for r in await store.dmarc_results()} - {today})
    if not days and not dmarc_days:
        return 0
    owner = f"{socket.gethostname()}:{os.getpid()}"
    if not await store.try_lock(LOCK, owner, 900):
        return 0

    async def enqueue(data: bytes, env_from: str, to: str) -> None:
        # DKIM-signed when the report sender is in one of our domains (RFC 8460 §5.3)
        signer = ctx.signer
        from_domain = domain_of(env_from)
        if signer is not None and await store.has_domain(from_domain):
            data = await signer.sign(data, from_domain)
        res = await ctx.directory.resolve(to)
        local = [LocalTarget(a) for a in res.local] if res is not None else []
        remote = ([RemoteRecipient(a, "NEVER") for a in res.remote] if res is not None
                  else [RemoteRecipient(to, "NEVER")])
        await store.accept(data, Envelope(sender=env_from), local, remote)
        if remote:
            notify()

    sent = 0
    try:
        for day in days:
            if not ts.tls_rpt_send:
                await store.delete_tls_results(day)
                continue
            done = await send_reports(store, ctx.resolver, day, enqueue, reporter=hostname,
                                      sender=sender, organization=ts.organization or hostname,
                                      post=https_post)
            sent += len(done)
        for day in dmarc_days:
            if not ts.dmarc_reports:
                await store.delete_dmarc_results(day)
                continue
            done = await dmarc_reports.send_reports(
                store, ctx.resolver, day, enqueue, reporter=hostname, sender=sender,
                organization=ts.organization or hostname)
            sent += len(done)
    finally:
        await store.unlock(LOCK, owner)
    return sent


async def run_reports(ctx: AppContext, worker: QueueWorker,
                      interval: float = 3600.0) -> None:
    _, warning = own_tlsa(ctx.config, remember=False)
    if warning:
        log.warning("DANE: %s (see `pochta dns records`)", warning)
    while True:
        try:
            await send_due_tls_reports(ctx.store, ctx, worker.notify)
        except Exception:
            log.exception("TLS-RPT reports failed; trying again later")
        await asyncio.sleep(interval)
