"""The one acceptance pipeline: trace headers, then ``MailStore.accept`` (fsynced).

SMTP (MTA and submission) and any other entry point that receives a message over the
network call ``DeliveryService.deliver``; IMAP APPEND stores directly with
``MailStore.accept`` because it adds no trace. Local copies and queue entries are written
by one ``accept`` call, so a message is stored once.

``Return-Path:`` (RFC 5321 §4.4) belongs to final delivery. The blob is shared by the
local copies and the queue entries, so it carries ``Return-Path:`` as its first line and
the outbound queue removes it (``strip_return_path``) before relaying.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..mail.attachments import attachment_keyword, attachment_keyword_of_file
from ..maildate import mail_date
from ..storage.interfaces import (
    AcceptResult,
    Envelope,
    LocalTarget,
    MailStore,
    RemoteRecipient,
    SpooledMessage,
)
from ..storage.rules import new_message_id
from ..tlsutil import TLSInfo
from .spool import read_spooled

if TYPE_CHECKING:
    from .sieve import SieveService


@dataclass(frozen=True, slots=True)
class TraceInfo:
    """What the Received: header says about the hop (RFC 5321 §4.4, RFC 3848)."""

    helo: str
    client_ip: str
    esmtp: bool
    tls: TLSInfo | None
    smtputf8: bool = False
    authenticated_as: str | None = None  # set => protocol gets the A suffix
    show_auth: bool = False  # name the user in the header
    hide_client_ip: bool = False
    requiretls: bool = False  # MAIL FROM ... REQUIRETLS (RFC 8689): the queue honours it
    protocol: str | None = None  # instead of the SMTP names (the sending API: "HTTPA")


REQUIRETLS_MARK = "(REQUIRETLS)"


def protocol_name(trace: TraceInfo) -> str:
    """RFC 3848 / RFC 6531 §4.3: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA, UTF8SMTP(S)(A)."""
    if trace.protocol:
        return trace.protocol
    if not trace.esmtp:
        return "SMTP"
    name = "UTF8SMTP" if trace.smtputf8 else "ESMTP"
    if trace.tls is not None:
        name += "S"
    if trace.authenticated_as:
        name += "A"
    return name


def received_header(
    hostname: str, trace: TraceInfo, queue_id: str, recipients: Sequence[str], now: float
) -> bytes:
    helo = "".join(c for c in trace.helo if c.isprintable() and c not in "()\\")[:255] or "unknown"
    if trace.hide_client_ip:
        lines = [f"Received: from {helo}"]
    else:
        lines = [f"Received: from {helo} ([{trace.client_ip}])"]
    if trace.tls is not None:
        lines.append(
            f"\t(using {trace.tls.version} with cipher {trace.tls.cipher}"
            f" ({trace.tls.bits} bits))"
        )
    if trace.authenticated_as and trace.show_auth:
        lines.append(f"\t(Authenticated sender: {trace.authenticated_as})")
    if trace.requiretls:
        # the queue reads this from our own (topmost) Received: field
        lines.append(f"\t{REQUIRETLS_MARK}")
    lines.append(f"\tby {hostname} (Pochta) with {protocol_name(trace)} id {queue_id}")
    date = mail_date(now)
    if len(recipients) == 1:
        # One recipient only: naming several would disclose Bcc recipients to each other.
        lines.append(f"\tfor <{recipients[0]}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def strip_return_path(data: bytes) -> bytes:
    """The message without a leading Return-Path: line (before relaying it onwards)."""
    if data[:12].lower() == b"return-path:":
        end = data.find(b"\r\n")
        return data[end + 2:] if end >= 0 else b""
    return data


SYSTEM_SAMPLE = 512 * 1024
INLINE_SCAN = 256 * 1024  # bytes of a message scanned for attachments on the event loop


async def attachment_flag(data: bytes | SpooledMessage) -> str:
    """``$HasAttachment`` or ``$HasNoAttachment`` (mail/attachments.py): a big message
    is scanned in a thread, a spooled one in chunks from its file."""
    if isinstance(data, SpooledMessage):
        return await asyncio.to_thread(attachment_keyword_of_file, data.path, data.offset,
                                       data.size, data.prefix)
    if len(data) > INLINE_SCAN:
        return await asyncio.to_thread(attachment_keyword, data)
    return attachment_keyword(data)

# (message, envelope, recipients): returns once what it learnt is durable
SystemSink = Callable[[bytes, Envelope, Sequence[str]], Awaitable[None]]
# (message, envelope, remote recipients, queue id) -> the remote recipients to queue
RemoteFilter = Callable[[bytes | SpooledMessage, Envelope, Sequence[RemoteRecipient], str],
                        Awaitable[Sequence[RemoteRecipient]]]


class DeliveryService:
    def __init__(
        self,
        store: MailStore,
        hostname: str,
        on_queued: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.hostname = hostname
        self.on_queued = on_queued
        self.clock = clock
        self.attachment_keywords = False  # [imap] attachment_keywords, set by server/app.py
        self.sieve: SieveService | None = None  # services/sieve.py, set by server/app.py
        # Mail to addresses the server reads itself (Directory.system_recipient: the sending
        # layer's bounces and complaints), handed over before anything is stored.
        self.system_sink: SystemSink | None = None
        # Suppressions for ordinary submissions (sending/smtp_suppression.py, issue 18)
        self.remote_filter: RemoteFilter | None = None

    async def deliver(
        self,
        body: bytes | SpooledMessage,
        envelope: Envelope,
        local: Sequence[LocalTarget],
        remote: Sequence[RemoteRecipient],
        trace: TraceInfo,
        recipients: Sequence[str],
        extra_headers: bytes = b"",
        recipient_of: Mapping[int, str] | None = None,
        queue_id: str | None = None,
    ) -> AcceptResult:
        """Store ``body`` for every target; returns once it is durable. With Sieve, each
        local target's script decides its mailboxes (``recipient_of``: the RCPT address
        per account, the envelope "to" of RFC 5228 §5.4); it may raise ``SieveRejected``.
        ``queue_id``: one the caller already recorded (the sending API tracks each copy
        by it)."""
        queue_id = queue_id or new_message_id()
        if self.system_sink is not None:
            # bounces and complaints to our return paths: a big message is read by its
            # first SYSTEM_SAMPLE bytes (the DSN's status parts come first)
            sample = body if isinstance(body, bytes) else await asyncio.to_thread(
                read_spooled, body, SYSTEM_SAMPLE)
            await self.system_sink(sample, envelope, recipients)
            if not local and not remote:
                return AcceptResult(queue_id, 0, ())
        if self.remote_filter is not None and remote:
            remote = await self.remote_filter(body, envelope, remote, queue_id)
            if not local and not remote:
                return AcceptResult(queue_id, 0, ())
        now = self.clock()
        received = received_header(self.hostname, trace, queue_id, recipients, now)
        return_path = b""
        if local:
            return_path = b"Return-Path: <" + envelope.sender.encode("utf-8") + b">\r\n"
        trace_headers = return_path + extra_headers + received
        data: bytes | SpooledMessage
        if isinstance(body, SpooledMessage):  # a big message: its bytes stay in the file
            data = dataclasses.replace(body, prefix=trace_headers + body.prefix)
        else:
            data = trace_headers + body
        if local and self.attachment_keywords:
            keyword = await attachment_flag(data)
            local = [dataclasses.replace(t, flags=t.flags | {keyword}) for t in local]
        if self.sieve is not None and local and await self.sieve.wants(local):
            if isinstance(data, SpooledMessage):
                # Sieve looks at the whole message (body tests, editheader): a big one is
                # read into memory for its delivery
                data = await asyncio.to_thread(read_spooled, data)
            result = await self.sieve.accept(data, envelope, local, remote, queue_id,
                                             recipient_of, trace.client_ip)
        else:
            result = await self.store.accept(data, envelope, local, remote,
                                             message_id=queue_id)
        if remote and self.on_queued is not None:
            self.on_queued()
        return result
