"""The sending service: what the HTTP API (and SMTP with an API key) calls.

``send`` takes validated messages (compose.py) and, for each recipient: skips it with a
``suppressed`` event if the address is suppressed for the domain's stream; else gives the
copy its own queue id and signed return path (VERP), adds the bulk stream's headers
(List-Unsubscribe with an https and a mailto URI, List-Unsubscribe-Post, Precedence,
Feedback-ID), DKIM-signs it (so the signature covers those headers) and queues it through
``DeliveryService.deliver``, the one acceptance pipeline, fsynced. The messages are
recorded before they are queued (so no delivery outcome can arrive for an unknown
message) and the ``accepted`` events after.

``outcome`` is the queue worker's hook (queue/worker.py ``outcome_sink``): delivered,
deferred and bounced recipients become events, and a hard bounce a suppression.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..mail.addresses import split_address
from ..services.delivery import TraceInfo
from ..services.submission import add_missing_headers
from ..storage.interfaces import Envelope, LocalTarget, QueueItem, RemoteRecipient, StoreError
from ..storage.interfaces_sending import (
    ALL_STREAMS,
    ApiKey,
    EventKind,
    NewEvent,
    SentMessage,
    Suppression,
)
from ..storage.rules import new_message_id
from .compose import Outgoing
from .tokens import (
    hash_secret,
    load_secret,
    parse_unsubscribe_token,
    parse_verp,
    split_api_key,
    unsubscribe_token,
    verp_address,
)
from .tracking import rewriter

if TYPE_CHECKING:
    from ..context import AppContext

log = logging.getLogger("pochta.sending")

KEY_CACHE_SECONDS = 30.0
# RFC 3463 codes that say the address itself is bad: a hard bounce, suppressed.
HARD_STATUSES = ("5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1", "5.4.1", "5.5.0")


def classify(status: str, text: str = "") -> str:
    """"hard" (the address will never work) or "soft" (full mailbox, policy, timeout)."""
    if status.startswith("4"):
        return "soft"
    if status in HARD_STATUSES:
        return "hard"
    low = text.lower()
    if status.startswith("5.0") or status == "":
        words = ("user unknown", "no such user", "does not exist", "unknown user",
                 "mailbox unavailable", "recipient address rejected", "invalid recipient",
                 "no mailbox", "address rejected")
        return "hard" if any(w in low for w in words) else "soft"
    return "soft"


@dataclass(frozen=True, slots=True)
class RecipientResult:
    to: str
    id: str
    status: str  # "queued", "suppressed", "failed"
    error: str = ""

    def as_json(self) -> dict[str, str]:
        out = {"to": self.to, "id": self.id, "status": self.status}
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class _Copy:
    message_id: str
    recipient: str
    out: Outgoing
    data: bytes = b""
    local: tuple[LocalTarget, ...] = ()
    remote: tuple[RemoteRecipient, ...] = ()



class OutcomeRules(Protocol):
    """Rules that also learn from queue outcomes (smtp_suppression.py: a normal user's
    hard bounce suppresses the address)."""

    async def outcome(self, item: QueueItem, kind: str, reply: str, status: str) -> None: ...

class SendingService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.settings = ctx.config.sending
        self.secret = load_secret(ctx.config.data_path)
        self._keys: dict[str, tuple[float, ApiKey | None]] = {}
        self.clock = time.time
        self._pending: list[tuple[NewEvent, bool]] = []  # outcome events not yet written
        self._flusher: asyncio.Task[None] | None = None
        self.smtp_rules: OutcomeRules | None = None  # smtp_suppression.py
        # set when an event is recorded: wakes the webhook dispatcher (webhooks.py)
        self.webhooks_wakeup = asyncio.Event()

    # --- API keys -----------------------------------------------------------------------

    async def authenticate(self, presented: str) -> ApiKey | None:
        """The key, if ``presented`` is a genuine API key (cached briefly: a removed key
        stops working within KEY_CACHE_SECONDS)."""
        parts = split_api_key(presented)
        if parts is None:
            return None
        key_id, secret = parts
        cached = self._keys.get(key_id)
        now = time.monotonic()
        if cached is None or now - cached[0] > KEY_CACHE_SECONDS:
            cached = (now, await self.store.get_api_key(key_id))
            self._keys[key_id] = cached
        key = cached[1]
        if key is None or not hmac.compare_digest(key.secret_hash, hash_secret(secret)):
            return None
        return key

    # --- sending ------------------------------------------------------------------------

    def public_url(self) -> str:
        cfg = self.ctx.config
        if cfg.http.public_url:
            return cfg.http.public_url.rstrip("/")
        for lst in cfg.listeners:
            if lst.role == "http" and lst.tls == "implicit":
                return f"https://{cfg.hostname}" + ("" if lst.port == 443 else f":{lst.port}")
        return f"https://{cfg.hostname}"

    def _bulk_headers(self, copy: _Copy) -> bytes:
        out = copy.out
        token = unsubscribe_token(self.secret, out.domain, out.stream, copy.recipient,
                                  copy.message_id)
        https = f"{self.public_url()}/unsubscribe/{token}"
        mailto = (f"mailto:{verp_address(self.secret, self.settings.bounce_local_part, copy.message_id, out.domain)}"  # noqa: E501
                  "?subject=unsubscribe")
        campaign = out.tags[0] if out.tags else "none"
        lines = [
            f"List-Unsubscribe: <{https}>,\r\n <{mailto}>",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            "Precedence: bulk",
            f"Feedback-ID: {_fbl_part(campaign)}:{_fbl_part(out.stream)}:{out.domain}:pochta",
        ]
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    async def _sign(self, data: bytes, domain: str) -> bytes:
        if not self.ctx.config.dkim.sign:
            return data
        return await self.ctx.signer.sign(data, domain)

    async def send(self, key: ApiKey | None, domain: str, messages: Sequence[Outgoing],
                   client_ip: str = "", authenticated_as: str = "") -> list[list[RecipientResult]]:
        """Queue every message (see the module docstring); one result list per message,
        one result per recipient. ``key`` None: the caller checked the sender already
        (SMTP submission)."""
        now = self.clock()
        copies: list[list[_Copy]] = []
        sent: list[SentMessage] = []
        events: list[NewEvent] = []
        results: list[list[RecipientResult]] = []
        # suppressions of each (domain, stream), one query per stream
        wanted: dict[str, set[str]] = {}
        for out in messages:
            wanted.setdefault(out.stream, set()).update(out.recipients)
        blocked = {stream: await self.store.suppressed(domain, stream, sorted(addrs))
                   for stream, addrs in wanted.items()}
        for out in messages:
            msg_copies: list[_Copy] = []
            msg_results: list[RecipientResult] = []
            for rcpt in out.recipients:
                mid = new_message_id()
                sent.append(SentMessage(mid, domain, out.stream, rcpt, out.sender, out.subject,
                                        out.tags, json.dumps(out.metadata), now))
                if rcpt in blocked[out.stream]:
                    events.append(NewEvent(mid, EventKind.SUPPRESSED, now,
                                           '{"reason": "address is suppressed"}'))
                    msg_results.append(RecipientResult(rcpt, mid, "suppressed"))
                    continue
                msg_copies.append(_Copy(mid, rcpt, out))
                msg_results.append(RecipientResult(rcpt, mid, "queued"))
            copies.append(msg_copies)
            results.append(msg_results)
        await self._prepare(copies, now)
        # remembered before queued: an outcome can never come for an unknown message
        await self.store.record_sent(sent, events)
        flat = [c for group in copies for c in group]
        outcomes = await asyncio.gather(
            *(self._queue(c, client_ip, authenticated_as) for c in flat),
            return_exceptions=True)
        failed = {c.message_id: o for c, o in zip(flat, outcomes, strict=True)
                  if isinstance(o, BaseException)}
        if failed:
            await self.store.forget_sent(list(failed))
        accepted_at = self.clock()
        done = [NewEvent(c.message_id, EventKind.ACCEPTED, accepted_at) for c in flat
                if c.message_id not in failed]
        done += [NewEvent(c.message_id, EventKind.DELIVERED, accepted_at,
                          '{"reply": "delivered to a local mailbox"}')
                 for c in flat if c.message_id not in failed and c.local and not c.remote]
        if done:
            await self.store.record_events(done)
        if failed:
            for err in failed.values():
                log.error("sending: could not queue a message: %s", err)
            results = [[RecipientResult(r.to, r.id, "failed", "temporary storage failure")
                        if r.id in failed else r for r in rs] for rs in results]
        if flat and len(failed) < len(flat):
            self.ctx.queue_wakeup.set()
        return results

    async def _prepare(self, copies: list[list[_Copy]], now: float) -> None:
        """Each copy's bytes (headers added, DKIM-signed) and its targets."""
        hostname = self.ctx.config.hostname
        signing: list[Any] = []
        for group in copies:
            if not group:
                continue
            out = group[0].out
            base = add_missing_headers(out.data, hostname, now)
            bulk = out.stream in self.settings.bulk_streams
            rewrite = self._tracking(out)
            if rewrite is not None:  # each copy its own tracking tokens (tracking.py)
                assert out.rebuild is not None
                for c in group:
                    data = add_missing_headers(out.rebuild(rewrite(c.message_id)), hostname,
                                               now)
                    signing.append((c, (self._bulk_headers(c) if bulk else b"") + data))
            elif bulk:  # each copy its own unsubscribe token: signed one by one
                signing.extend((c, self._bulk_headers(c) + base) for c in group)
            else:
                signing.append((group, base))
        # sign concurrently (dkim.sign runs in threads)
        signed = await asyncio.gather(*(
            self._sign(data, (c if isinstance(c, _Copy) else c[0]).out.domain)
            for c, data in signing))
        for (c, _), data in zip(signing, signed, strict=True):
            for copy in ([c] if isinstance(c, _Copy) else c):
                copy.data = data
        local_domains: dict[str, bool] = {}  # one lookup per domain, not per recipient
        for group in copies:
            for c in group:
                c.local, c.remote = await self._targets(c.recipient, local_domains)

    def _tracking(self, out: Outgoing) -> Callable[[str], Callable[[str], str]] | None:
        """Per copy id, the HTML rewriter, when the message is tracked at all."""
        opens, clicks = self.settings.tracking_of(out.domain, out.stream)
        opens = opens if out.track_opens is None else out.track_opens
        clicks = clicks if out.track_clicks is None else out.track_clicks
        if out.rebuild is None or not (opens or clicks):
            return None
        base = self.public_url()
        return lambda mid: rewriter(self.secret, base, mid, opens, clicks)

    async def track(self, message_id: str, kind: EventKind, detail: dict[str, Any]) -> None:
        """An open or a click of a tracked copy (api.py's /t/ routes)."""
        await self.store.record_events([NewEvent(message_id, kind, self.clock(),
                                                 json.dumps(detail))])

    async def _targets(self, address: str, local_domains: dict[str, bool]
                       ) -> tuple[tuple[LocalTarget, ...], tuple[RemoteRecipient, ...]]:
        directory = self.ctx.directory
        domain = split_address(address)[1]
        if domain not in local_domains:
            local_domains[domain] = await directory.is_local_domain(domain)
        if local_domains[domain]:
            res = await directory.resolve(address)
            if res is None:
                return (), ()
            return (tuple(LocalTarget(a) for a in res.local),
                    tuple(RemoteRecipient(r) for r in res.remote))
        # no NOTIFY=NEVER: the next hop must send its DSNs back to the return path
        return (), (RemoteRecipient(address),)

    async def _queue(self, c: _Copy, client_ip: str, authenticated_as: str) -> None:
        if not c.local and not c.remote:
            raise StoreError(f"<{c.recipient}>: no such local recipient")
        sender = verp_address(self.secret, self.settings.bounce_local_part, c.message_id,
                              c.out.domain)
        envelope = Envelope(sender=sender, smtputf8=not c.recipient.isascii(),
                            body_8bit=not c.data.isascii(),
                            authenticated_as=authenticated_as or None,
                            stream=c.out.stream,
                            priority=self.settings.priority_of(c.out.stream))
        trace = TraceInfo(helo="api", client_ip=client_ip or "127.0.0.1", esmtp=True,
                          tls=None, authenticated_as=authenticated_as or None,
                          protocol="HTTPA" if not authenticated_as.startswith("smtp:")
                          else "ESMTPA")
        await self.ctx.delivery.deliver(c.data, envelope, c.local, c.remote, trace,
                                        [c.recipient], queue_id=c.message_id)

    # --- outcomes (the queue worker's hook) --------------------------------------------

    async def outcome(self, item: QueueItem, kind: str, reply: str, status: str,
                      next_attempt: float | None) -> None:
        """``kind``: delivered, deferred or bounced (worker.py ``_settle``). Buffered and
        written in batches by ``_flush_outcomes``: the delivery lane does not wait for an
        extra fsync per message (the queue item's own state is already durable; a crash
        can lose the events of the last few milliseconds, never a queue outcome)."""
        if self.smtp_rules is not None:  # a normal user's hard bounce (smtp_suppression.py)
            try:
                await self.smtp_rules.outcome(item, kind, reply, status)
            except StoreError as exc:
                log.error("could not record a suppression: %s", exc)
        detail: dict[str, Any] = {"reply": reply}
        if status:
            detail["status"] = status
        if kind == "deferred":
            detail["next_attempt"] = next_attempt
            event = EventKind.DEFERRED
        elif kind == "delivered":
            event = EventKind.DELIVERED
        else:
            event = EventKind.BOUNCED
            detail["type"] = classify(status, reply)
        self._pending.append((NewEvent(item.message_id, event, self.clock(),
                                       json.dumps(detail)), detail.get("type") == "hard"))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_outcomes())

    async def _flush_outcomes(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self.store.record_events([e for e, _ in batch])
                for e, hard in batch:
                    if hard:
                        await self.suppress_message(e.message_id, "bounce",
                                                    json.loads(e.detail)["reply"])
            except StoreError as exc:
                log.error("could not record %d delivery events: %s", len(batch), exc)

    async def flush(self) -> None:
        """Write buffered outcome events now (the server calls it when it stops)."""
        if self._flusher is not None and not self._flusher.done():
            await self._flusher
        await self._flush_outcomes()

    async def suppress_message(self, message_id: str, reason: str, detail: str) -> None:
        sent = await self.store.get_sent(message_id)
        if sent is None:
            return
        if reason == "bounce" and not self.settings.suppress_hard_bounces:
            return
        await self.store.add_suppressions([Suppression(
            sent.domain, ALL_STREAMS, sent.recipient, reason, self.clock(), detail[:500])])

    def message_of_return_path(self, address: str) -> str | None:
        return parse_verp(self.secret, self.settings.bounce_local_part, address)

    # --- unsubscribe --------------------------------------------------------------------

    async def unsubscribe(self, token: str, how: str) -> tuple[str, str, str, str] | None:
        """Suppress the address a genuine token names and record the event on the message
        it came with; None for a bad token."""
        parsed = parse_unsubscribe_token(self.secret, token)
        if parsed is None:
            return None
        domain, stream, address, message_id = parsed
        await self.unsubscribe_address(domain, stream, address, how, message_id)
        return parsed

    async def unsubscribe_address(self, domain: str, stream: str, address: str, how: str,
                                  message_id: str) -> None:
        now = self.clock()
        await self.store.add_suppressions([Suppression(domain, stream, address, "unsubscribe",
                                                       now, how)])
        await self.store.record_events([NewEvent(
            message_id, EventKind.UNSUBSCRIBED, now, json.dumps({"via": how}))])


def _fbl_part(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)[:40] or "x"


def key_fingerprint(key: ApiKey) -> str:
    return hashlib.sha256(key.secret_hash).hexdigest()[:8]
