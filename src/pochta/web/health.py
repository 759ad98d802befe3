"""``/metrics`` (Prometheus text format), ``/healthz`` and ``/readyz``.

``/metrics`` answers loopback clients, or anyone with ``Authorization: Bearer`` the
``[web] metrics_token``; others get 403. The process counters come from pochta/metrics.py;
the queue and store gauges are read from the store at scrape time (count queries; the
store size at most once a minute, refreshed in the background: it walks the blob files).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from typing import TYPE_CHECKING

from ..http.core import Request, Response
from ..http.router import Router
from ..metrics import METRICS, Labels
from ..storage.interfaces import QueueState, StoreStats

if TYPE_CHECKING:
    from ..context import AppContext

log = logging.getLogger(__name__)
STATS_MAX_AGE = 60.0
READY_TIMEOUT = 2.0
TEXT = "text/plain; version=0.0.4; charset=utf-8"


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def bearer(request: Request) -> str:
    value = request.header("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class Health:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._stats: tuple[float, StoreStats] | None = None
        self._refreshing: asyncio.Future[None] | None = None
        self.started = time.time()

    def _allowed(self, request: Request) -> bool:
        token = self.ctx.config.web.metrics_token
        if token:
            return hmac.compare_digest(bearer(request).encode(), token.encode())
        return is_loopback(request.peer_ip)

    async def _refresh_stats(self) -> None:
        try:
            self._stats = (time.monotonic(), await self.ctx.store.store_stats())
        except Exception as exc:  # the scrape still answers, with the last figures
            log.warning("metrics: store size not read: %s", exc)
            if self._stats is None:
                raise

    async def _store_stats(self) -> StoreStats:
        """The store's size, read at most once a minute. Reading it costs a walk over
        the store (~0.3 s with a million messages), so a scrape that finds it stale gets
        the last figures and starts a refresh in the background: only the first scrape
        after the start waits for it."""
        refreshing = self._refreshing
        if self._stats is None:
            if refreshing is None or refreshing.done():
                refreshing = self._refreshing = asyncio.ensure_future(self._refresh_stats())
            await asyncio.shield(refreshing)
        elif time.monotonic() - self._stats[0] > STATS_MAX_AGE and (
                refreshing is None or refreshing.done()):
            self._refreshing = asyncio.ensure_future(self._refresh_stats())
        assert self._stats is not None
        return self._stats[1]

    async def gauges(self) -> list[tuple[str, str, Labels, float]]:
        store = self.ctx.store
        now = time.time()
        out: list[tuple[str, str, Labels, float]] = []
        # aggregates in the store (one GROUP BY), not a list of every item
        states, first = await store.queue_summary()
        depth = {st: states.get(st, 0) for st in (QueueState.PENDING.value,
                                                  QueueState.DEFERRED.value)}
        oldest = now if first is None else min(now, first)
        for state, n in sorted(depth.items()):
            out.append(("pochta_queue_depth", "queued recipients waiting for delivery",
                        (("state", state),), n))
        out.append(("pochta_queue_oldest_age_seconds",
                    "age of the oldest recipient still queued (0: queue empty)", (),
                    round(now - oldest, 3)))
        stats = await self._store_stats()
        size = "store size in bytes: live blobs, reclaimable blobs, on disk"
        out.append(("pochta_store_bytes", size, (("kind", "live"),), stats.live_bytes))
        out.append(("pochta_store_bytes", size, (("kind", "reclaimable"),),
                    stats.reclaimable_bytes))
        out.append(("pochta_store_bytes", size, (("kind", "disk"),), stats.disk_bytes))
        out.append(("pochta_store_blobs", "message blobs stored", (), stats.blobs))
        out.append(("pochta_domains", "local domains", (), await store.count_domains()))
        out.append(("pochta_accounts", "accounts", (), await store.count_accounts()))
        out.append(("pochta_start_time_seconds", "when this process started (Unix time)", (),
                    round(self.started, 3)))
        return out

    async def metrics(self, request: Request, _: dict[str, str]) -> Response:
        if not self._allowed(request):
            return Response(403, b"metrics: loopback only, or a bearer token\n",
                            "text/plain; charset=utf-8")
        text = METRICS.render(await self.gauges())
        return Response(200, text.encode(), TEXT, [("Cache-Control", "no-store")])

    async def healthz(self, request: Request, _: dict[str, str]) -> Response:
        """Liveness: the event loop answers."""
        return Response(200, b"ok\n", "text/plain; charset=utf-8",
                        [("Cache-Control", "no-store")])

    async def readyz(self, request: Request, _: dict[str, str]) -> Response:
        """Readiness: the store answers a query in time."""
        try:
            await asyncio.wait_for(self.ctx.store.list_domains(), READY_TIMEOUT)
        except Exception as exc:  # any failure: not ready
            return Response(503, f"store not ready: {type(exc).__name__}\n".encode(),
                            "text/plain; charset=utf-8", [("Cache-Control", "no-store")])
        return Response(200, b"ready\n", "text/plain; charset=utf-8",
                        [("Cache-Control", "no-store")])


def register(router: Router, ctx: AppContext) -> None:
    health = Health(ctx)
    router.add("GET", "/metrics", health.metrics)
    router.add("GET", "/healthz", health.healthz)
    router.add("GET", "/readyz", health.readyz)
