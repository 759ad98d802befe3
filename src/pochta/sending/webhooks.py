"""Webhooks: every event of a domain POSTed, in order, to each of its webhook URLs.

Each webhook keeps a cursor in the store (the id of the last event its endpoint
acknowledged with a 2xx). The dispatcher sends the events after the cursor in batches
(``{"events": [...]}``, oldest first) and moves the cursor only on success, so nothing is
skipped and order is kept, across restarts too. A failing endpoint is retried with
exponential backoff (30 s doubling to an hour, with jitter) for ``webhook_retry_hours``;
then that batch is skipped and logged, and the next is tried. Every attempt is in the
webhook's delivery log; replay moves the cursor back.

Signature (docs/api.md has the verification recipe)::

    X-Pochta-Timestamp: 1767225600
    X-Pochta-Signature: v1=hex(HMAC-SHA256(secret, timestamp + "." + body))

Requests go only to globally routable addresses, checked at every request, and
redirects are not followed (urlguard.py: server-side request forgery).

Several server processes: a webhook is served by whichever holds its lock
(``CoordinationStore.try_lock``), so no batch is sent twice concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..mail.tls import client_context
from ..storage.interfaces import StoreError
from ..storage.interfaces_sending import EventQuery, SendingEvent, Webhook, WebhookAttempt
from .service import SendingService
from .urlguard import Target, UrlGuard, UrlRefused

if TYPE_CHECKING:
    from ..context import AppContext

log = logging.getLogger("pochta.sending.webhooks")

POLL_INTERVAL = 1.0
BACKOFF_FIRST = 30.0
BACKOFF_MAX = 3600.0
LOCK_TTL = 60.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body,
                   hashlib.sha256).hexdigest()
    return f"v1={mac}"


def event_payload(e: SendingEvent) -> dict[str, Any]:
    return {"id": e.id, "time": e.time, "event": str(e.kind), "message_id": e.message_id,
            "recipient": e.recipient, "domain": e.domain, "stream": e.stream,
            "tags": list(e.tags), "detail": json.loads(e.detail)}


@dataclass
class _State:
    failures: int = 0
    first_failure: float = 0.0
    next_try: float = 0.0


class WebhookDispatcher:
    def __init__(self, ctx: AppContext, service: SendingService, clock: Any = time.time,
                 backoff_first: float | None = None) -> None:
        self.store = ctx.store
        self.settings = ctx.config.sending
        self.clock = clock
        self.backoff_first = backoff_first  # None: BACKOFF_FIRST
        self.wakeup = service.webhooks_wakeup  # set by the API when events are recorded
        self.owner = f"{socket.gethostname()}:{os.getpid()}:webhooks"
        self._state: dict[int, _State] = {}
        self.guard = UrlGuard(ctx.resolver, self.settings.webhook_allow_networks)

    async def run(self) -> None:
        while True:
            try:
                await self.pass_once()
            except StoreError as exc:
                log.warning("webhook pass failed: %s", exc)
            except Exception:
                log.exception("webhook pass failed")
            self.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), POLL_INTERVAL)

    async def pass_once(self) -> None:
        hooks = await self.store.list_webhooks()
        await asyncio.gather(*(self._serve(h) for h in hooks))

    async def _serve(self, hook: Webhook) -> None:
        state = self._state.setdefault(hook.id, _State())
        if self.clock() < state.next_try:
            return
        name = f"webhook:{hook.id}"
        if not await self.store.try_lock(name, self.owner, LOCK_TTL):
            return
        cursor = hook.cursor
        try:
            while True:
                events = await self.store.query_events(EventQuery(
                    hook.domain, after_id=cursor, limit=self.settings.webhook_batch))
                if not events:
                    return
                ok = await self._post(hook, events, state)
                if not ok:
                    retry_for = self.settings.webhook_retry_hours * 3600
                    if self.clock() - state.first_failure < retry_for:
                        return
                    log.warning("webhook %d: gave up on events %d-%d after %g hours",
                                hook.id, events[0].id, events[-1].id,
                                self.settings.webhook_retry_hours)
                    state.failures, state.next_try = 0, 0.0
                cursor = events[-1].id
                await self.store.set_webhook_cursor(hook.id, cursor)
                await self.store.try_lock(name, self.owner, LOCK_TTL)  # renew
        finally:
            await self.store.unlock(name, self.owner)

    async def _post(self, hook: Webhook, events: list[SendingEvent], state: _State) -> bool:
        body = json.dumps({"events": [event_payload(e) for e in events]},
                          separators=(",", ":")).encode("utf-8")
        ts = int(self.clock())
        headers = {"Content-Type": "application/json", "User-Agent": "Pochta-Webhooks/1",
                   "X-Pochta-Timestamp": str(ts), "X-Pochta-Signature": sign(hook.secret, ts,
                                                                             body)}
        try:
            target = await self.guard.target(hook.url)  # resolved and checked each time
        except UrlRefused as exc:
            status, detail = 0, f"refused: {exc}"
        else:
            status, detail = await asyncio.to_thread(_post, target, body, headers,
                                                     self.settings.webhook_timeout)
        await self.store.log_webhook_attempt(WebhookAttempt(
            hook.id, self.clock(), events[0].id, events[-1].id, status, detail[:500]))
        if 200 <= status < 300:
            state.failures, state.next_try = 0, 0.0
            return True
        if state.failures == 0:
            state.first_failure = self.clock()
        state.failures += 1
        first = BACKOFF_FIRST if self.backoff_first is None else self.backoff_first
        delay = min(first * 2 ** (state.failures - 1), BACKOFF_MAX)
        state.next_try = self.clock() + delay * random.uniform(0.8, 1.2)
        log.info("webhook %d: %s answered %s (%s); retry in %.0f s", hook.id, hook.url,
                 status or "nothing", detail[:100], state.next_try - self.clock())
        return False


def _post(target: Target, body: bytes, headers: dict[str, str], timeout: float
          ) -> tuple[int, str]:
    """POST to the checked address (the URL's host in Host and, for https, as the TLS
    server name whose certificate must be valid). A redirect is an answer like any
    non-2xx: never followed."""
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = http.client.HTTPSConnection(target.host, target.port, timeout=timeout,
                                           context=client_context())
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    address = target.address

    def pinned(_: tuple[str, int], timeout: float | None = None,
               source: tuple[str, int] | None = None) -> socket.socket:
        return socket.create_connection((address, target.port), timeout, source)

    conn._create_connection = pinned  # type: ignore[attr-defined]  # no second lookup
    try:
        conn.request("POST", target.path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read(65536)
        location = resp.getheader("Location")
        detail = "" if 200 <= resp.status < 300 else (
            f"{resp.reason}" + (f" (redirect to {location[:200]} not followed)"
                                if location else ""))
        return int(resp.status), detail
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return 0, str(exc) or type(exc).__name__
    finally:
        conn.close()


async def run_sending(ctx: AppContext, service: SendingService) -> None:
    """The sending layer's background work beside the listeners: webhooks, and forgetting
    idempotency keys older than ``idempotency_hours``."""
    dispatcher = WebhookDispatcher(ctx, service)
    purge = asyncio.get_running_loop().create_task(_purge_forever(ctx))
    try:
        await dispatcher.run()
    finally:
        purge.cancel()
        await service.flush()


async def _purge_forever(ctx: AppContext) -> None:
    while True:
        try:
            hours = ctx.config.sending.idempotency_hours
            await ctx.store.purge_idempotency_keys(time.time() - hours * 3600)
        except StoreError as exc:
            log.warning("purging idempotency keys failed: %s", exc)
        await asyncio.sleep(3600)
