"""The outbound queue inside the server: builds the queue worker from the application
context (its bounce sink, the sending layer's outcome sink, MTA-STS/DANE/TLS-RPT) and runs
it beside the listeners (``server/app.py`` starts ``run_queue``).

Bounces to local senders go straight into their INBOX (resolved through the directory,
aliases included); others are queued for remote delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..queue.requiretls import message_policy
from ..queue.routing import Router
from ..queue.worker import QueueWorker
from ..services.sieve import SieveRejected
from ..storage.interfaces import Envelope, LocalTarget, RemoteRecipient
from ..storage.rules import new_message_id
from ..transport_security.reporter import run_reports
from ..transport_security.srs_directory import SRSDirectory
from ..transport_security.wiring import forwarding, outbound_tls
from .context import ServerContext

log = logging.getLogger("pochta.queue")


def make_worker(ctx: ServerContext) -> QueueWorker:
    qcfg, routes = ctx.config.queue, list(ctx.config.routes)
    sending = ctx.sending
    worker: QueueWorker

    async def bounce(dsn: bytes, recipient: str, envelope: Envelope) -> None:
        if sending.message_of_return_path(recipient) is not None:
            return  # the sending layer's return path: the outcome sink has recorded it
        await ctx.spam.bounce(recipient, dsn)  # bounces of a local sender count (abuse)
        res = await ctx.directory.resolve(recipient)
        if res is None:
            # A local domain without that user: nobody to tell (never bounce a bounce).
            log.warning("DSN for <%s> dropped: no such local recipient", recipient)
            return
        local = [LocalTarget(account_id) for account_id in res.local]
        remote = [RemoteRecipient(a, "NEVER") for a in res.remote]
        data = b"Return-Path: <>\r\n" + dsn if local else dsn
        sieve = ctx.delivery.sieve
        if local and sieve is not None:  # the recipient's Sieve script files bounces too
            try:
                await sieve.accept(data, envelope, local, remote, new_message_id())
            except SieveRejected:  # never bounce a bounce: a rejected DSN is dropped
                log.info("DSN for <%s> rejected by the recipient's Sieve script", recipient)
                return
        else:
            await ctx.store.accept(data, envelope, local, remote)
        if remote:
            worker.notify()

    # MTA-STS, DANE and TLS-RPT (pochta.transport_security.wiring)
    srs = ctx.directory.srs if isinstance(ctx.directory, SRSDirectory) else None
    tls_policy, tls_observer, cafile = outbound_tls(ctx.config, ctx.store, ctx.resolver, qcfg)
    from pochta.queue.shaping import StreamLimits

    streams = {lim.stream: StreamLimits(lim.connections, lim.rate, lim.concurrency)
               for lim in ctx.config.sending.stream_limits}  # issue 18
    worker = QueueWorker(
        ctx.store, ctx.config.hostname, ctx.resolver, qcfg, routes, stream_limits=streams,
        bounce_sink=bounce, base_dir=ctx.config.base_dir, outcome_sink=sending.outcome,
        tls_policy=tls_policy, tls_observer=tls_observer, cafile=cafile,
        forwarding=forwarding(ctx.config, ctx.store, srs),
        message_policy=message_policy(ctx.store, Router(
            ctx.resolver, qcfg, routes, local_hostname=ctx.config.hostname), ctx.config.hostname),
    )
    return worker


async def run_queue(ctx: ServerContext) -> None:
    worker = make_worker(ctx)
    ctx.queue_worker = worker

    async def relay_wakeups() -> None:
        while True:
            await ctx.queue_wakeup.wait()
            ctx.queue_wakeup.clear()
            worker.notify()

    relay = asyncio.get_running_loop().create_task(relay_wakeups())
    # daily TLS-RPT reports (pochta.transport_security.reporter)
    reports = asyncio.get_running_loop().create_task(run_reports(ctx, worker))
    try:
        await worker.run()
    finally:
        reports.cancel()
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
