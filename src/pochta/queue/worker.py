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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pochta.dns import Resolver
from pochta.metrics import METRICS
from pochta.proto.smtp.client import Recipient, Reply, Transaction, has_8bit
from pochta.queue.routing import Destination, RouteFailure, Router, TLSPolicyHook
from pochta.queue.schedule import next_retry
from pochta.queue.settings import QueueConfig, Route
from pochta.queue.transport import (
    ConnectFailed,
    Connector,
    SMTPConnection,
    TCPConnector,
    Timeouts,
    TLSObserver,
)
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
from pochta.transport_security.requiretls import refusal as requiretls_refusal
from pochta.transport_security.requiretls import requested as requiretls_requested

log = logging.getLogger("pochta.queue")

# (DSN message bytes, the address it goes to, its envelope)
BounceSink = Callable[[bytes, str, Envelope], Awaitable[None]]
# Told every recipient's outcome (the sending layer's delivery events, issue 18):
# (item, "delivered" | "deferred" | "bounced", reply text, RFC 3463 status, next attempt)
OutcomeSink = Callable[[QueueItem, str, str, str, float | None], Awaitable[None]]


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
        self._inflight: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._global = asyncio.Semaphore(self.config.concurrency)
        self._per_dest: dict[str, asyncio.Semaphore] = {}
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
        jobs: dict[str, tuple[Destination, dict[str, list[QueueItem]]]] = {}
        unroutable: dict[str, list[tuple[QueueItem, Reply]]] = {}
        for item in items:
            domain = item.recipient.address.rpartition("@")[2].lower()
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
            job = jobs.setdefault(dest.key, (dest, {}))
            job[1].setdefault(item.message_id, []).append(item)
        self._inflight.update(i.id for i in items)
        new_tasks: list[asyncio.Task[None]] = []
        for message_id, failures in unroutable.items():
            new_tasks.append(self._spawn(self._settle_unroutable(message_id, failures),
                                         [item for item, _ in failures]))
        for dest, messages in jobs.values():
            lanes = min(self.config.per_destination, len(messages))
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
                left = [i.id for i in items if i.id in self._inflight]
                if left:
                    self._inflight.difference_update(left)
                    with contextlib.suppress(StoreError):
                        await self.store.release_queue_items(left, self.owner)
                # A pass takes at most 1,000 due items: when a delivery ends, look again at
                # once, or a backlog would drain one batch per poll_interval.
                self._wake.set()

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _settle_unroutable(
        self, message_id: str, failures: list[tuple[QueueItem, Reply]]
    ) -> None:
        try:
            outcomes = [await self._settle(item, reply, "") for item, reply in failures]
            await self._notify_sender(outcomes)
        finally:
            self._inflight.difference_update(item.id for item, _ in failures)

    async def _lane(self, dest: Destination, messages: list[list[QueueItem]]) -> None:
        """Send messages one after another over (re)used connections to ``dest``."""
        sem = self._per_dest.setdefault(dest.key, asyncio.Semaphore(self.config.per_destination))
        conn: SMTPConnection | None = None
        remaining = list(messages)
        try:
            async with sem, self._global:
                while remaining:
                    group = remaining[0]
                    if conn is not None and (
                        not conn.usable
                        or conn.transactions >= self.config.messages_per_connection
                    ):
                        await conn.quit()
                        conn = None
                    if conn is None:
                        try:
                            conn = await SMTPConnection.open(
                                dest, self.router, self.connector, self.hostname,
                                self.timeouts, self._password, self.cafile,
                                self.tls_observer,
                            )
                        except ConnectFailed as exc:
                            # No hop works now: everything left for it waits (or bounces).
                            for g in remaining:
                                outcomes = [await self._settle(i, exc.reply, "") for i in g]
                                self._inflight.difference_update(i.id for i in g)
                                await self._notify_sender(outcomes)
                            remaining = []
                            break
                    await self._rate_limit(dest.key)
                    await self._send_one(conn, group)
                    self._inflight.difference_update(i.id for i in group)
                    remaining.pop(0)
        finally:
            for g in remaining:
                self._inflight.difference_update(i.id for i in g)
            if conn is not None:
                await conn.quit()

    async def _rate_limit(self, key: str) -> None:
        rate = self.config.per_destination_rate
        if rate <= 0:
            return
        interval = 60.0 / rate
        last = self._last_send.get(key)
        now = self.clock()
        if last is not None and now < last + interval:
            await asyncio.sleep(last + interval - now)
        self._last_send[key] = self.clock()

    async def _send_one(self, conn: SMTPConnection, group: list[QueueItem]) -> None:
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
                return
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
        for item, (_, reply) in zip(group, result.outcomes(), strict=True):
            outcomes.append(await self._settle(item, reply, conn.remote, peer_dsn, data,
                                               conn.tls_log))
        await self._notify_sender(outcomes, data)

    # -- outcomes -----------------------------------------------------------------------

    async def _settle(
        self, item: QueueItem, reply: Reply, remote: str, peer_dsn: bool = False,
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
        self, item: QueueItem, reply: Reply, remote: str, peer_dsn: bool = False,
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
            report = None
            if not peer_dsn and "SUCCESS" in (item.recipient.notify or "").upper():
                # RFC 3461 §5.2.2.2: the next hop cannot carry the request; say "relayed".
                report = RecipientReport(item.recipient, "relayed", status_of(reply),
                                         str(reply), host, now)
            return _Outcome(item, report)
        if reply.permanent:
            await self.store.update_queue_item(item.id, QueueState.FAILED, now, text)
            log.info("%s: to=<%s> status=bounced %s", item.message_id, to, text)
            return _Outcome(item, RecipientReport(
                item.recipient, "failed", status_of(reply), str(reply), host, now))
        decision = next_retry(self.config, item.created, item.next_attempt, now)
        if decision.give_up:
            text = f"{text}; gave up after {self.config.max_age / 86400:g} days"
            await self.store.update_queue_item(item.id, QueueState.FAILED, now, text)
            log.info("%s: to=<%s> status=expired %s", item.message_id, to, text)
            # RFC 3463 X.4.7: delivery time expired; the last reply is the diagnostic.
            return _Outcome(item, RecipientReport(
                item.recipient, "failed", "5.4.7", str(reply), host, now))
        await self.store.update_queue_item(
            item.id, QueueState.DEFERRED, decision.next_attempt, text
        )
        log.info("%s: to=<%s> status=deferred %s", item.message_id, to, text)
        report = None
        if decision.warn:
            report = RecipientReport(
                item.recipient, "delayed", status_of(reply), str(reply), host, now,
                will_retry_until=item.created + self.config.max_age,
            )
        return _Outcome(item, report, decision.next_attempt)

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
