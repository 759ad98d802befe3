"""Suppressions for ordinary SMTP accounts (issue 18), per sending domain.

The API and API-key SMTP sessions skip suppressed recipients in ``SendingService.send``.
Mail that a normal user submits takes the ordinary path; for the domains listed in
``[sending] smtp_suppression`` (``"*"``: every domain) two hooks apply the same rules:

* At acceptance (``DeliveryService.remote_filter``): a remote recipient on the sender
  domain's suppression list (entries for every stream, ``*``: hard bounces, complaints,
  manual additions; unsubscribes belong to their bulk stream and do not stop a person's
  mail) is dropped before the message is queued. The copy is recorded with a
  ``suppressed`` event (stream ``smtp``), and the sender gets a DSN in their INBOX
  (RFC 3464, ``Action: failed``, ``Status: 5.7.1``) naming the recipient and why, so a
  person learns it at once; the other recipients are delivered as usual.
* At delivery (the queue worker's outcome sink): a hard bounce of a normal user's message
  (5.1.1 and the other statuses of ``service.classify``) adds the recipient to the sender
  domain's list, as a bounce of an API message does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..mail.addresses import split_address
from ..mail.headers import header_values, split_header
from ..services.dsn import RecipientReport, build_dsn
from ..services.spool import read_spooled
from ..storage.interfaces import (
    Envelope,
    LocalTarget,
    QueueItem,
    RemoteRecipient,
    SpooledMessage,
    StoreError,
)
from ..storage.interfaces_sending import (
    ALL_STREAMS,
    EventKind,
    NewEvent,
    SentMessage,
    Suppression,
)
from ..storage.rules import new_message_id
from .service import SendingService, classify

if TYPE_CHECKING:
    from ..context import AppContext

log = logging.getLogger("pochta.sending")

SMTP_STREAM = "smtp"  # the stream name of ordinary submissions' events
HEAD_SAMPLE = 64 * 1024


class SMTPSuppression:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.domains = {d.lower() for d in ctx.config.sending.smtp_suppression}

    def applies(self, envelope: Envelope) -> bool:
        """A normal user's submission from a domain that has the rules on."""
        who = envelope.authenticated_as or ""
        if not who or who.startswith("smtp:") or envelope.stream or not envelope.sender:
            return False
        domain = split_address(envelope.sender)[1].lower()
        return "*" in self.domains or domain in self.domains

    async def filter_remote(self, body: bytes | SpooledMessage, envelope: Envelope,
                            remote: Sequence[RemoteRecipient], queue_id: str
                            ) -> list[RemoteRecipient]:
        """The remote recipients that may be sent to; the others are recorded and
        reported to the sender (see the module docstring)."""
        if not remote or not self.applies(envelope):
            return list(remote)
        domain = split_address(envelope.sender)[1].lower()
        addresses = [r.address for r in remote]
        blocked = await self.store.suppressed(domain, SMTP_STREAM, addresses)
        if not blocked:
            return list(remote)
        head = body if isinstance(body, bytes) else await asyncio.to_thread(
            read_spooled, body, HEAD_SAMPLE)
        headers, _ = split_header(head)
        subject = (header_values(headers, "Subject") or [""])[0][:500]
        now = time.time()
        sent, events, reports = [], [], []
        for r in remote:
            if r.address not in blocked:
                continue
            mid = new_message_id()
            sent.append(SentMessage(mid, domain, SMTP_STREAM, r.address, envelope.sender,
                                    subject, (), json.dumps({"queue_id": queue_id}), now))
            events.append(NewEvent(mid, EventKind.SUPPRESSED, now, json.dumps(
                {"reason": "address is suppressed", "via": "smtp"})))
            reports.append(RecipientReport(
                r, "failed", "5.7.1",
                f"not sent: <{r.address}> is on {domain}'s suppression list (an earlier "
                "hard bounce or complaint)", self.ctx.config.hostname, now))
        log.info("%s: from=<%s> suppressed %s", queue_id, envelope.sender,
                 ",".join(f"<{r.recipient.address}>" for r in reports))
        await self.store.record_sent(sent, events)
        await self._tell_sender(envelope, queue_id, headers + b"\r\n", reports, now)
        return [r for r in remote if r.address not in blocked]

    async def _tell_sender(self, envelope: Envelope, queue_id: str, original: bytes,
                           reports: list[RecipientReport], now: float) -> None:
        """A DSN to the (local) sender's INBOX; never a reason to refuse the message."""
        dsn = build_dsn(reporting_mta=self.ctx.config.hostname, envelope=envelope,
                        queue_id=queue_id, original=original, reports=reports,
                        arrival=now, now=now)
        try:
            res = await self.ctx.directory.resolve(envelope.sender)
            if res is None or not res.local:
                return
            await self.store.accept(b"Return-Path: <>\r\n" + dsn, Envelope(sender=""),
                                    [LocalTarget(a) for a in res.local])
        except StoreError as exc:
            log.error("%s: could not store the suppression DSN: %s", queue_id, exc)

    async def outcome(self, item: QueueItem, kind: str, reply: str, status: str) -> None:
        """A hard bounce of a normal user's message suppresses the address."""
        if kind != "bounced" or not self.applies(item.envelope):
            return
        if classify(status, reply) != "hard":
            return
        if not self.ctx.config.sending.suppress_hard_bounces:
            return
        domain = split_address(item.envelope.sender)[1].lower()
        await self.store.add_suppressions([Suppression(
            domain, ALL_STREAMS, item.recipient.address, "bounce", time.time(),
            reply[:500])])
        log.info("%s: <%s> suppressed for %s after a hard bounce", item.message_id,
                 item.recipient.address, domain)


def install(ctx: AppContext, service: SendingService) -> SMTPSuppression | None:
    """Hook into acceptance and the queue's outcomes when any domain has the rules on."""
    if not ctx.config.sending.smtp_suppression:
        return None
    rules = SMTPSuppression(ctx)
    ctx.delivery.remote_filter = rules.filter_remote
    service.smtp_rules = rules
    return rules
