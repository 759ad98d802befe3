"""Runs the queue worker inside the server (``pochta.server.app`` starts ``run_queue``).

Bounces to local senders go straight into their INBOX (resolved through the directory,
aliases included); others are queued for remote delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from pochta.queue.settings import QueueConfig, Route
from pochta.queue.worker import QueueWorker
from pochta.storage.interfaces import Envelope, LocalTarget, RemoteRecipient

if TYPE_CHECKING:
    from pochta.server.app import ServerContext

log = logging.getLogger("pochta.queue")


def settings_of(config: object) -> tuple[QueueConfig, list[Route]]:
    """``config.queue`` and ``config.routes`` (defaults until those sections exist)."""
    queue = getattr(config, "queue", None)
    routes = getattr(config, "routes", None)
    return (
        queue if isinstance(queue, QueueConfig) else QueueConfig(),
        list(routes) if isinstance(routes, list) else [],
    )


def make_worker(ctx: ServerContext) -> QueueWorker:
    qcfg, routes = settings_of(ctx.config)
    worker: QueueWorker

    async def bounce(dsn: bytes, recipient: str, envelope: Envelope) -> None:
        if sending.message_of_return_path(recipient) is not None:
            return  # the sending layer's return path: the outcome sink has recorded it
        res = await ctx.directory.resolve(recipient)
        if res is None:
            # A local domain without that user: nobody to tell (never bounce a bounce).
            log.warning("DSN for <%s> dropped: no such local recipient", recipient)
            return
        local = [LocalTarget(account_id) for account_id in res.local]
        remote = [RemoteRecipient(a, "NEVER") for a in res.remote]
        data = b"Return-Path: <>\r\n" + dsn if local else dsn
        await ctx.store.accept(data, envelope, local, remote)
        if remote:
            worker.notify()

    from pochta.sending.service import sending_of  # delivery events (issue 18)

    sending = sending_of(ctx)
    worker = QueueWorker(
        ctx.store, ctx.config.hostname, ctx.resolver, qcfg, routes,
        bounce_sink=bounce, base_dir=ctx.config.base_dir, outcome_sink=sending.outcome,
    )
    return worker


async def run_queue(ctx: ServerContext) -> None:
    worker = make_worker(ctx)
    ctx.extras["queue_worker"] = worker

    async def relay_wakeups() -> None:
        while True:
            await ctx.queue_wakeup.wait()
            ctx.queue_wakeup.clear()
            worker.notify()

    relay = asyncio.get_running_loop().create_task(relay_wakeups())
    try:
        await worker.run()
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
