"""The outbound queue worker: fetch due recipients, route them, deliver them grouped by
destination over reused connections, record every outcome, send DSNs.

Durability: the store holds every recipient's state. An item moves to ``delivered`` right
after the server's 2xx to the message, before anything else happens, so a restart
(even ``kill -9``) resumes every pending/deferred item and never resends to a recipient
whose delivery was confirmed. (A crash between the 2xx and that update can still cause one
duplicate: SMTP has no way to avoid that window, RFC 1047.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pochta.dns import Resolver
from pochta.mail.addresses import domain_of
from pochta.metrics import METRICS
from pochta.proto.smtp.client import Recipient, ServerReply, Transaction, has_8bit
from pochta.queue.requiretls import refusal as requiretls_refusal
from pochta.queue.requiretls import requested as requiretls_requested
from pochta.queue.routing import Destination, RouteFailure, Router, TLSPolicyHook
from pochta.queue.schedule import next_retry
from pochta.queue.settings import QueueConfig, Route
from pochta.queue.shaping import Gate, Shaper, StreamLimits, is_throttle
from pochta.queue.transport import (
    ConnectFailed,
    Connector,
    SMTPConnection,
    TCPConnector,
    Timeouts,
    TLSObserver,
)
from pochta.services import eventlog
from pochta.services.delivery import strip_return_path
from pochta.services.dsn import RecipientReport, build_dsn, status_of, wants
from pochta.storage.interfaces import (
    ChangeWatcher,
    Envelope,
    MailStore,
    QueueItem,
    QueueState,
    RemoteRecipient,
    StoreError,
)
from pochta.storage.interfaces_ops import BOUNCED, DEFERRED, DELIVERED, NewMailEvent

log = logging.getLogger("pochta.queue")

# (DSN message bytes, the address it goes to, its envelope)
BounceSink = Callable[[bytes, str, Envelope], Awaitable[None]]
# Told every recipient's outcome (the sending layer's delivery events, issue 18):
# (item, "delivered" | "deferred" | "bounced", reply text, RFC 3463 status, next attempt)
OutcomeSink = Callable[[QueueItem, str, str, str, float | None], Awaitable[None]]


class _Inflight:
    """The items this worker holds claims on, each with the task delivering it. A task
    lets go of its own items only: one it deferred may be due again soon (a throttled
    recipient) and claimed by a later pass for another task, which must keep it."""

    def __init__(self) -> None:
        self._by_id: dict[int, object] = {}

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._by_id

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._by_id))

    def __len__(self) -> int:
        return len(self._by_id)

    def hold(self, item_ids: Iterable[int], task: object) -> None:
        for i in item_ids:
            self._by_id[i] = task

    def owned(self, item_ids: Iterable[int], task: object) -> list[int]:
        return [i for i in item_ids if self._by_id.get(i) is task]

    def difference_update(self, item_ids: Iterable[int]) -> None:
        """Done with these items (the calling task's own)."""
        task = asyncio.current_task()
        for i in item_ids:
            if self._by_id.get(i) is task:
                del self._by_id[i]


@dataclass(slots=True)
class _Outcome:
    item: QueueItem
    report: RecipientReport | None
    next_attempt: float | None = None  # deferred: when it is tried again


class QueueWorker:
    def __init__(
        self,
        store: MailStore,
        hostname: str,
        resolver: Resolver,
        config: QueueConfig | None = None,
        routes: Sequence[Route] = (),
        *,
        connector: Connector | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        tls_policy: TLSPolicyHook | None = None,
        bounce_sink: BounceSink | None = None,
        base_dir: str | Path = ".",
        cafile: str | None = None,
        tls_observer: TLSObserver | None = None,
        forwarding: Callable[[str, bytes], Awaitable[tuple[str, bytes]]] | None = None,
        message_policy: Callable[[QueueItem, Destination], Awaitable[Destination]]
        | None = None,
        outcome_sink: OutcomeSink | None = None,
        stream_limits: Mapping[str, StreamLimits] | None = None,
    ) -> None:
        self.store = store
        self.hostname = hostname
        self.config = config or QueueConfig()
        self.router = Router(
            resolver, self.config, routes, local_hostname=hostname, tls_policy=tls_policy,
            rng=rng,
        )
        self.connector: Connector = connector or TCPConnector()
        self.clock = clock
        self.bounce_sink: BounceSink = bounce_sink or self._enqueue_bounce
        self.outcome_sink = outcome_sink
        self.base_dir = Path(base_dir)
        self.cafile = cafile
        self.tls_observer = tls_observer  # TLS-RPT results (pochta.transport_security)
        self.forwarding = forwarding  # SRS and ARC for forwarded mail (same package)
        self.message_policy = message_policy  # TLS-Required: No (RFC 8689), same package
        self.timeouts = Timeouts(
            self.config.connect_timeout, self.config.command_timeout, self.config.data_timeout
        )
        self._wake = asyncio.Event()
        # Items this worker holds a claim on (in the store), until their outcome is written.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._inflight = _Inflight()
        self._tasks: set[asyncio.Task[None]] = set()
        # Connections per stream and destination, and per stream in total (shaping.py)
        self.stream_limits = dict(stream_limits or {})
        self._gate = Gate()
        self._shapers: dict[str, Shaper] = {}  # by destination key, shared by streams
        self._last_send: dict[str, float] = {}
        self._stopping = False

    # -- control ------------------------------------------------------------------------

    def notify(self) -> None:
        """New remote recipients were queued (or an admin asked for a flush)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled or ``stop()``; wakes on ``notify()`` and every
        ``poll_interval`` seconds (to pick up retries); ``pochta queue retry|flush`` from
        another process wakes it through the store (``watch_queue``)."""
        await self._release_dead_local_claims()
        watcher = self.store.watch_queue()
        loop = asyncio.get_running_loop()
        relay = loop.create_task(self._relay_wakeups(watcher))
        renew = loop.create_task(self._renew_claims())
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    await self._pass(wait=False)
                except Exception:
                    log.exception("queue pass failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.poll_interval)
        finally:
            relay.cancel()
            renew.cancel()
            watcher.close()
            await self._cancel_tasks()

    async def _renew_claims(self) -> None:
        """Deliveries can wait behind per-destination limits: keep their claims alive."""
        while True:
            await asyncio.sleep(self.config.lease / 3)
            if self._inflight:
                try:
                    await self.store.renew_queue_claims(
                        list(self._inflight), self.owner, self.clock() + self.config.lease
                    )
                except StoreError as exc:
                    log.warning("could not renew queue claims: %s", exc)

    async def _relay_wakeups(self, watcher: ChangeWatcher) -> None:
        while True:
            if await watcher.wait(None):
                self._wake.set()

    async def run_once(self) -> int:
        """One pass over the due items, waiting until every delivery is finished;
        returns how many items were processed."""
        await self._release_dead_local_claims()
        return await self._pass(wait=True)

    async def _release_dead_local_claims(self) -> None:
        """A process of this host that died (kill -9, crash) left claims behind: take its
        items back now instead of after their lease (other hosts' wait for the lease)."""
        host = socket.gethostname()
        for owner in await self.store.queue_claim_owners():
            parts = owner.rsplit(":", 2)  # host:pid:token (see self.owner)
            if len(parts) != 3 or parts[0] != host or owner == self.owner:
                continue
            try:
                os.kill(int(parts[1]), 0)
                continue  # that process is alive (a sibling worker): leave its claims
            except ProcessLookupError:
                pass
            except (PermissionError, ValueError):
                continue
            released = await self.store.release_queue_claims_of(owner)
            log.info("took back %d queue item(s) from %s, which is no longer running",
                     released, owner)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        await self._cancel_tasks()

    async def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- one pass -----------------------------------------------------------------------

    async def _pass(self, wait: bool) -> int:
        now = self.clock()
        items = [
            i for i in await self.store.claim_queue_items(
                now, 1000, self.owner, self.config.lease)
            if i.id not in self._inflight
        ]
        if not items:
            return 0
        destinations: dict[str, Destination | RouteFailure] = {}
        # by (stream, destination): each stream has its own lanes (shaping.py)
        jobs: dict[tuple[str, str], tuple[Destination, dict[str, list[QueueItem]]]] = {}
        unroutable: dict[str, list[tuple[QueueItem, ServerReply]]] = {}
        for item in items:
            domain = domain_of(item.recipient.address)
            if domain not in destinations:
                try:
                    destinations[domain] = await self.router.destination(domain)
                except RouteFailure as exc:
                    destinations[domain] = exc
            dest = destinations[domain]
            if isinstance(dest, RouteFailure):
                unroutable.setdefault(item.message_id, []).append((item, dest.reply))
                continue
            if self.message_policy is not None:
                dest = await self.message_policy(item, dest)
            job = jobs.setdefault((item.envelope.stream, dest.key), (dest, {}))
            job[1].setdefault(item.message_id, []).append(item)
        new_tasks: list[asyncio.Task[None]] = []
        for message_id, failures in unroutable.items():
            new_tasks.append(self._spawn(self._settle_unroutable(message_id, failures),
                                         [item for item, _ in failures]))
        for (stream, _), (dest, messages) in jobs.items():
            lanes = min(self._limits(stream)[0], len(messages))
            groups = list(messages.values())
            for n in range(lanes):
                lane = groups[n::lanes]
                new_tasks.append(self._spawn(self._lane(dest, lane),
                                             [i for group in lane for i in group]))
        if wait:
            await asyncio.gather(*new_tasks, return_exceptions=True)
        return len(items)

    def _spawn(self, coro: Awaitable[None], items: list[QueueItem]) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                # The items stay pending/deferred and are tried again on the next pass.
                log.exception("queue delivery task failed")
            finally:
                left = self._inflight.owned((i.id for i in items), asyncio.current_task())
                if left:
                    self._inflight.difference_update(left)
                    with contextlib.suppress(StoreError):
                        await self.store.release_queue_items(left, self.owner)
                # A pass takes at most 1,000 due items: when a delivery ends, look again at
                # once, or a backlog would drain one batch per poll_interval.
                self._wake.set()

        task = asyncio.get_running_loop().create_task(guarded())
        self._inflight.hold((i.id for i in items), task)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _settle_unroutable(
        self, message_id: str, failures: list[tuple[QueueItem, ServerReply]]
    ) -> None:
        try:
            outcomes = [await self._settle(item, reply, "") for item, reply in failures]
            await self._notify_sender(outcomes)
        finally:
            self._inflight.difference_update(item.id for item, _ in failures)

    def _limits(self, stream: str) -> tuple[int, float, int]:
        """(connections per destination, messages per minute per destination, connections
        in total) of ``stream``."""
        lim = self.stream_limits.get(stream, StreamLimits())
        cfg = self.config
        return (lim.connections or cfg.per_destination, lim.rate or cfg.per_destination_rate,
                lim.concurrency or cfg.concurrency)

    def shaper(self, key: str) -> Shaper:
        shaper = self._shapers.get(key)
        if shaper is None:
            cfg = self.config
            shaper = Shaper(cfg.per_destination, first_delay=cfg.throttle_first_delay,
                            max_delay=cfg.throttle_max_delay, recover=cfg.throttle_recover)
            self._shapers[key] = shaper
        return shaper

    async def _lane(self, dest: Destination, messages: list[list[QueueItem]]) -> None:
        """Send messages one after another over (re)used connections to ``dest``, within
        the stream's connection limits and the destination's shaping."""
        stream = messages[0][0].envelope.stream
        per_dest, rate, total = self._limits(stream)
        shaper = self.shaper(dest.key)
        dest_key, total_key = f"{stream}\0{dest.key}", f"{stream}\0"

        def allowed() -> int:
            return min(per_dest, shaper.allowed)

        slot = [(dest_key, allowed), (total_key, lambda: total)]
        holding = False
        conn: SMTPConnection | None = None
        remaining = list(messages)
        try:
            while remaining:
                group = remaining[0]
                if holding and self._gate.over(dest_key, allowed()):
                    # the destination slowed us down: give the connection back, wait
                    if conn is not None:
                        await conn.quit()
                        conn = None
                    await self._gate.release([dest_key, total_key])
                    holding = False
                if not holding:
                    await self._gate.acquire(slot)
                    holding = True
                if conn is not None and (
                    not conn.usable
                    or conn.transactions >= self.config.messages_per_connection
                ):
                    await conn.quit()
                    conn = None
                if conn is None:
                    await self._pace(dest.key, stream, rate, shaper)
                    started = self.clock()
                    try:
                        conn = await SMTPConnection.open(
                            dest, self.router, self.connector, self.hostname,
                            self.timeouts, self._password, self.cafile,
                            self.tls_observer,
                        )
                    except ConnectFailed as exc:
                        if is_throttle(exc.reply):
                            self._throttled(dest.key, shaper, exc.reply, started)
                            # only the next message pays for a throttled greeting; the
                            # others wait for the slower pace
                            outcomes = [await self._settle(i, exc.reply, "") for i in group]
                            self._inflight.difference_update(i.id for i in group)
                            await self._notify_sender(outcomes)
                            remaining.pop(0)
                            continue
                        # No hop works now: everything left for it waits (or bounces).
                        for g in remaining:
                            outcomes = [await self._settle(i, exc.reply, "") for i in g]
                            self._inflight.difference_update(i.id for i in g)
                            await self._notify_sender(outcomes)
                        remaining = []
                        break
                else:
                    await self._pace(dest.key, stream, rate, shaper)
                    started = self.clock()
                replies = await self._send_one(conn, group)
                self._inflight.difference_update(i.id for i in group)
                remaining.pop(0)
                throttle = next((r for r in replies if is_throttle(r)), None)
                if throttle is not None:
                    self._throttled(dest.key, shaper, throttle, started)
                elif any(r.positive for r in replies) and shaper.succeeded(self.clock()):
                    log.info("shaping: %s back to %d connection(s), %.3f s between messages",
                             dest.key, shaper.allowed, shaper.delay)
                    await self._gate.poke()
        finally:
            for g in remaining:
                self._inflight.difference_update(i.id for i in g)
            if conn is not None:
                await conn.quit()
            if holding:
                await self._gate.release([dest_key, total_key])

    def _throttled(self, key: str, shaper: Shaper, reply: ServerReply, started: float) -> None:
        if shaper.throttled(self.clock(), started):
            METRICS.inc("pochta_queue_throttled_total")
            log.info("shaping: %s asked us to slow down (%s): %d connection(s), %.3f s "
                     "between messages", key, reply, shaper.allowed, shaper.delay)

    async def _pace(self, key: str, stream: str, rate: float, shaper: Shaper) -> None:
        """The destination's backoff pause, then the stream's configured rate."""
        wait = shaper.reserve(self.clock())
        if wait > 0:
            await asyncio.sleep(wait)
        if rate <= 0:
            return
        interval = 60.0 / rate
        rate_key = f"{stream}\0{key}"
        now = self.clock()
        start = max(now, self._last_send.get(rate_key, now - interval) + interval)
        self._last_send[rate_key] = start  # reserved: parallel lanes take turns
        if start > now:
            await asyncio.sleep(start - now)

    async def _send_one(self, conn: SMTPConnection, group: list[QueueItem]) -> list[ServerReply]:
        """Deliver one message to its recipients in ``group``; their replies."""
        first = group[0]
        env = first.envelope
        # The shared blob starts with the Return-Path: of local delivery; it is not ours
        # to relay (RFC 5321 §4.4: added only at final delivery).
        data = strip_return_path(await self.store.read_blob(first.blob_id))
        requiretls = requiretls_requested(data, self.hostname)
        if requiretls:
            refused = requiretls_refusal(conn)
            if refused is not None:  # RFC 8689 §5.1: not over this connection, ever
                outcomes = [await self._settle(i, refused, conn.remote) for i in group]
                await self._notify_sender(outcomes, data)
                return [refused]
        sender, wire = env.sender, data
        if self.forwarding is not None:
            sender, wire = await self.forwarding(sender, data)
        tx = Transaction(
            sender=sender,
            recipients=tuple(
                Recipient(i.recipient.address, i.recipient.notify, i.recipient.orcpt)
                for i in group
            ),
            message=wire,
            body_8bit=env.body_8bit,
            smtputf8=env.smtputf8,
            ret=env.ret,
            envid=env.envid,
            requiretls=requiretls,
        )
        result = await conn.deliver(tx)
        peer_dsn = conn.session.supports("DSN")
        outcomes = []
        replies = []
        for item, (_, reply) in zip(group, result.outcomes(), strict=True):
            replies.append(reply)
            outcomes.append(await self._settle(item, reply, conn.remote, peer_dsn, data,
                                               conn.tls_log))
        await self._notify_sender(outcomes, data)
        return replies

    # -- outcomes -----------------------------------------------------------------------

    async def _settle(
        self, item: QueueItem, reply: ServerReply, remote: str, peer_dsn: bool = False,
        data: bytes | None = None, tls_log: str = "",
    ) -> _Outcome:
        outcome = await self._settle_item(item, reply, remote, peer_dsn, data, tls_log)
        METRICS.inc("pochta_deliveries_total", result="delivered" if reply.positive else (
            "bounced" if outcome.report is not None and outcome.report.action == "failed"
            else "deferred"))  # /metrics (issue 19)
        if self.outcome_sink is not None:
            report = outcome.report
            if reply.positive:
                kind, status = "delivered", status_of(reply)
            elif report is not None and report.action == "failed":
                kind, status = "bounced", report.status  # 5.4.7 when the queue gave up
            else:
                kind, status = "deferred", status_of(reply)
            where = f" ({remote})" if remote else ""
            try:
                await self.outcome_sink(item, kind, f"{reply}{where}", status,
                                        outcome.next_attempt)
            except Exception:
                log.exception("%s: outcome sink failed", item.message_id)
        return outcome

    async def _settle_item(
        self, item: QueueItem, reply: ServerReply, remote: str, peer_dsn: bool = False,
        data: bytes | None = None, tls_log: str = "",
    ) -> _Outcome:
        now = self.clock()
        where = f" ({remote})" if remote else ""
        text = f"{reply}{where}"
        host = remote.split(" ", 1)[0]
        to = item.recipient.address
        if reply.positive:
            await self.store.update_queue_item(item.id, QueueState.DELIVERED, now, text)
            # tls=TLSv1.3 cert=verified|unverified, or tls=none: a downgrade shows here
            log.info("%s: to=<%s> status=sent %s %s", item.message_id, to, tls_log or "tls=?",
                     text)
            self._mail_log(item, DELIVERED, "", f"{tls_log or 'tls=?'} {text}")
            report = None
            if not peer_dsn and "SUCCESS" in (item.recipient.notify or "").upper():
                # RFC 3461 §5.2.2.2: the next hop cannot carry the request; say "relayed".
                report = RecipientReport(item.recipient, "relayed", status_of(reply),
                                         str(reply), host, now)
            return _Outcome(item, report)
        if reply.permanent:
            await self.store.update_queue_item(item.id, QueueState.FAILED, now, text)
            log.info("%s: to=<%s> status=bounced %s", item.message_id, to, text)
            self._mail_log(item, BOUNCED, "bounced", text)
            return _Outcome(item, RecipientReport(
                item.recipient, "failed", status_of(reply), str(reply), host, now))
        decision = next_retry(self.config, item.created, item.next_attempt, now)
        if not decision.give_up and is_throttle(reply):
            # the receiver asked us to slow down, not to wait hours (shaping.py)
            decision = replace(decision, next_attempt=min(
                decision.next_attempt, now + self.config.throttle_retry))
        if decision.give_up:
            text = f"{text}; gave up after {self.config.max_age / 86400:g} days"
            await self.store.update_queue_item(item.id, QueueState.FAILED, now, text)
            log.info("%s: to=<%s> status=expired %s", item.message_id, to, text)
            self._mail_log(item, BOUNCED, "expired", text)
            # RFC 3463 X.4.7: delivery time expired; the last reply is the diagnostic.
            return _Outcome(item, RecipientReport(
                item.recipient, "failed", "5.4.7", str(reply), host, now))
        await self.store.update_queue_item(
            item.id, QueueState.DEFERRED, decision.next_attempt, text
        )
        log.info("%s: to=<%s> status=deferred %s", item.message_id, to, text)
        self._mail_log(item, DEFERRED, "", text)
        report = None
        if decision.warn:
            report = RecipientReport(
                item.recipient, "delayed", status_of(reply), str(reply), host, now,
                will_retry_until=item.created + self.config.max_age,
            )
        return _Outcome(item, report, decision.next_attempt)

    def _mail_log(self, item: QueueItem, kind: str, tag: str, text: str) -> None:
        """The searchable mail log of the web admin (services/eventlog.py)."""
        eventlog.record(self.store, NewMailEvent(
            self.clock(), kind, item.message_id, item.envelope.sender,
            item.recipient.address, tag=tag, detail=f"status={kind} {text}"[:1000]))

    async def _notify_sender(self, outcomes: list[_Outcome], data: bytes | None = None) -> None:
        """One DSN per action for the message's recipients that asked for it."""
        reports = [o for o in outcomes if o.report is not None]
        if not reports:
            return
        first = reports[0].item
        env = first.envelope
        for action in ("failed", "delayed", "relayed"):
            chosen = [
                o.report for o in reports
                if o.report is not None and o.report.action == action
                and wants(env, o.item.recipient, action)
            ]
            if not chosen:
                continue
            if data is None:
                data = await self.store.read_blob(first.blob_id)
            dsn = build_dsn(
                reporting_mta=self.hostname, envelope=env, queue_id=first.message_id,
                original=data, reports=chosen, arrival=first.created, now=self.clock(),
                size_limit=self.config.bounce_size_limit,
            )
            bounce_env = Envelope(
                sender="", body_8bit=has_8bit(dsn), smtputf8=not env.sender.isascii()
            )
            try:
                await self.bounce_sink(dsn, env.sender, bounce_env)
            except Exception:
                log.exception("%s: could not queue the %s DSN", first.message_id, action)

    async def _enqueue_bounce(self, dsn: bytes, recipient: str, envelope: Envelope) -> None:
        """Default sink: queue the DSN for remote delivery (the server replaces this with
        one that delivers local senders' bounces into their INBOX)."""
        await self.store.accept(dsn, envelope, [], [RemoteRecipient(recipient, "NEVER")])
        self.notify()

    def _password(self, path: str) -> str:
        p = Path(path)
        if not p.is_absolute():
            p = self.base_dir / p
        return p.read_text(encoding="utf-8").strip()
