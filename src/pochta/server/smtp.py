"""The SMTP driver for the ``mta`` (port 25) and ``submission`` (587/465) roles.

It moves bytes between the socket and the sans-IO core (proto/smtp/server.py) and turns
the core's events into service calls: recipient resolution, relay policy, submission
policy (RFC 6409), authentication, and the one acceptance pipeline (DeliveryService).
A ``250`` after DATA is sent only once ``MailStore.accept`` returned, i.e. fsynced.

Policy lives in services: what a submitting user may send in ``SubmissionPolicy``
(services/submission.py), who may authenticate with which mechanism in ``AuthPolicy``
(services/auth_policy.py). Every SMTP reply comes from the catalogue
(proto/smtp/replies.py).

Command boundary (``_boundary``): a Pochta error (pochta/errors.py) raised while deciding
an event is answered with its own SMTP reply; any other exception is logged with its
traceback and answered ``451 4.3.0``. Either way the pending command fails and the
session goes on; if the core cannot tell what was pending (e.g. during STARTTLS) the
session ends with ``421``.

Tarpit: past ``[smtp] soft_error_limit`` error replies, the n-th further one is delayed n
times ``error_sleep_time`` seconds (Postfix ``smtpd_error_sleep_time``); the core
closes at ``hard_error_limit``. Delays only hold the loop of this session, so pipelined
replies keep their order (RFC 2920).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pochta.policy.dmarc_reports import record_verdict_soon

from ..config import Listener
from ..errors import AuthError, PochtaError, SieveRejected, StorageFull, StoreError
from ..mail.addresses import AddressError, normalize_address, split_address
from ..metrics import METRICS
from ..policy.inbound import InboundVerdict, check_inbound
from ..proto.imap.acl import rights_for
from ..proto.sasl.base import Challenge
from ..proto.smtp import events as ev
from ..proto.smtp import replies
from ..proto.smtp.replies import Reply
from ..proto.smtp.server import LocalProtocolError, ServerSession, SessionParams
from ..services import eventlog
from ..services.auth_policy import AuthPolicy, SASLExchange
from ..services.delivery import TraceInfo
from ..services.sasl_driver import Authenticated
from ..services.spool import SPAM_SCAN_LIMIT, Spool
from ..services.submission import SubmissionLimits, SubmissionPolicy
from ..services.urlauth import Requester, resolve
from ..spam.gate import GateSession
from ..storage.interfaces import (
    Account,
    Envelope,
    LocalTarget,
    MailboxInfo,
    RemoteRecipient,
    SpooledMessage,
)
from ..storage.interfaces_ops import ACCEPTED, REFUSED, SESSION, NewMailEvent
from .context import ServerContext
from .listener import Connection, ServerShutdown, SessionExpired, SlowClient
from .trace import trace_account

log = logging.getLogger("pochta.smtp")
MAIL_LOG_RECIPIENTS = 100  # mail log events per accepted message (one per recipient)


@dataclass
class _Transaction:
    local: list[int] = field(default_factory=list)
    remote: list[RemoteRecipient] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    rcpt_of: dict[int, str] = field(default_factory=dict)  # Sieve's envelope "to"
    folders: list[MailboxInfo] = field(default_factory=list)  # public folders posted to

    def add_local(self, account_id: int) -> None:
        if account_id not in self.local:
            self.local.append(account_id)

    def add_folder(self, box: MailboxInfo) -> None:
        if all(b.id != box.id for b in self.folders):
            self.folders.append(box)

    def folder_targets(self, junk: Callable[[int], bool]) -> list[LocalTarget]:
        """A copy into each public folder (it has no Junk folder: spam is kept there with
        ``$Junk``, as Junk's copies are flagged)."""
        return [LocalTarget(b.account_id, b.name,
                            frozenset({"$Junk"}) if junk(b.account_id) else frozenset())
                for b in self.folders]


class SMTPHandler:
    def __init__(self, conn: Connection, ctx: ServerContext, listener: Listener) -> None:
        self.conn = conn
        self.ctx = ctx
        self.listener = listener
        self.config = ctx.config
        self.submission = listener.role == "submission"
        self.txn = _Transaction()
        self.account: Account | None = None
        self.owned: set[str] = set()
        self.sasl: SASLExchange | None = None
        self.auth = AuthPolicy(ctx.config.auth, ctx.authenticator, listener.role,
                               listener.tls, conn, conn.peer_ip)
        self.policy = SubmissionPolicy(
            hostname=self.config.hostname,
            limits=SubmissionLimits(self.config.submission.messages_per_hour,
                                    self.config.submission.recipients_per_hour),
            domains=ctx.directory, message_rate=ctx.message_rate,
            recipient_rate=ctx.recipient_rate,
            signer=ctx.signer if self.config.dkim.sign else None)
        self.session = ServerSession(self._params())
        self.messages = 0  # accepted, for the disconnect line
        self._spool: Spool | None = None  # the big message arriving now
        self._errors_delayed = 0  # error replies already given their tarpit delay
        self.sleep = asyncio.sleep
        self.spam: GateSession | None = ctx.spam.session(listener.role, conn.peer_ip)

    def _params(self) -> SessionParams:
        lim = self.config.limits
        # the core advertises and accepts AUTH only under TLS (RFC 4954 §4, RFC 8314)
        mechs = self.auth.offer().mechanisms
        return SessionParams(
            hostname=self.config.hostname,
            banner=self.config.smtp.banner,
            max_message_size=lim.max_message_size,
            max_recipients=(self.config.submission.recipients_per_message
                            if self.submission else lim.max_recipients),
            max_errors=lim.max_errors,
            hard_error_limit=self.config.smtp.hard_error_limit,
            bare_lf=self.config.smtp.bare_lf,
            tls_available=(self.ctx.ssl_context is not None and self.listener.tls == "starttls"
                           and not self.conn.tls_active),
            tls_active=self.conn.tls_active,
            # RFC 8689 (pochta.transport_security): honoured by the queue
            requiretls=self.config.transport_security.requiretls,
            require_tls=self.submission and self.listener.tls == "starttls",
            auth_mechanisms=mechs,
            require_auth=self.submission,
            spool_threshold=self.config.smtp.spool_threshold,
            burl=self.submission and self.config.submission.burl,  # never on 25: RFC 4468 §3.1
        )

    def _log(self, msg: str, *args: object, level: int = logging.INFO) -> None:
        if log.isEnabledFor(level):
            log.log(level, "ip=%s " + msg, self.conn.peer_ip, *args)  # conn=: logsetup

    async def run(self) -> None:
        # connect/disconnect at debug: one info line per accepted message is the mail log
        self._log("connect role=%s port=%s tls=%s", self.listener.role, self.conn.local_port,
                  self.conn.tls_active, level=logging.DEBUG)
        session = self.session
        if self.spam is not None:  # screening (spam/gate.py) may refuse before the banner
            refusal = await self.spam.connect(self.conn)
            if refusal is not None:
                self.conn.write(refusal.to_bytes())
                await self.conn.drain()
                return
        session.start()
        started = False
        started_at = time.monotonic()
        while True:
            out = session.data_to_send()
            if out:
                self.conn.write(out)
                await self.conn.drain()
            if session.closed:
                break
            event = session.next_event()
            await self._tarpit()
            if isinstance(event, ev.NeedData):
                out = session.data_to_send()
                if out:  # replies to the commands just processed
                    self.conn.write(out)
                    await self.conn.drain()
                timeout = self._read_timeout(started)
                try:
                    data = await self.conn.read(timeout)
                except TimeoutError as exc:
                    why = ("session time limit exceeded" if isinstance(exc, SessionExpired)
                           else "data rate too low" if isinstance(exc, SlowClient)
                           else "timeout exceeded")
                    self.conn.write(replies.closing(self.config.hostname, why).to_bytes())
                    self._log("%s (%s)", why, exc)
                    break
                except ServerShutdown:
                    self.conn.write(replies.shutting_down(self.config.hostname).to_bytes())
                    break
                started = True
                session.receive_data(data)
            elif isinstance(event, ev.ConnectionClosed):
                self.conn.write(session.data_to_send())
                break
            elif isinstance(event, ev.Paused):  # pragma: no cover - we always answer
                raise RuntimeError("SMTP core paused without a pending decision")
            else:
                await self._boundary(event)
        self._log_summary(started_at)

    def _log_summary(self, started_at: float) -> None:
        """One info line per session, like Postfix's ``disconnect from ... commands=``."""
        s = self.session
        tls = self.conn.tls_info()
        counts = " ".join(f"{verb}={n}" for verb, n in s.commands.items())
        self._log("disconnect helo=%s tls=%s user=%s messages=%d %s%scommands=%d errors=%d "
                  "time=%.3fs", s.helo_name or "-", tls.version if tls else "none",
                  self.account.address if self.account else "-", self.messages, counts,
                  " " if counts else "", sum(s.commands.values()), s.errors,
                  time.monotonic() - started_at)
        if s.commands:  # not port scans and health checks that never said a word
            eventlog.record(self.ctx.store, NewMailEvent(
                time.time(), SESSION, client_ip=self.conn.peer_ip,
                sender=self.account.address if self.account else "",
                detail=(f"{self.listener.role} helo={s.helo_name or '-'} "
                        f"tls={tls.version if tls else 'none'} messages={self.messages} "
                        f"commands={sum(s.commands.values())} errors={s.errors}")[:1000]))

    async def _boundary(self, event: ev.Event) -> None:
        """Decide one event. A Pochta error is answered with its own reply (counted as
        the client's error when it is a refusal); any other exception is a bug, logged
        with its traceback and answered 451 4.3.0. Either way that command alone fails."""
        try:
            await self._dispatch(event)
        except (ConnectionError, TimeoutError, ssl.SSLError, ServerShutdown,
                asyncio.CancelledError):
            raise  # the connection's end, not a bug: the listener deals with these
        except PochtaError as exc:
            self._log_refusal(event, exc)
            self._answer(event, exc.smtp_reply())
        except Exception:
            log.exception("ip=%s internal error deciding %s", self.conn.peer_ip,
                          type(event).__name__)
            self._answer(event, replies.LOCAL_ERROR, internal=True)

    def _log_refusal(self, event: ev.Event, exc: PochtaError) -> None:
        if isinstance(exc, StorageFull):
            log.error("ip=%s store full: %s", self.conn.peer_ip, exc)
        elif isinstance(exc, StoreError):
            log.error("ip=%s store failure: %s", self.conn.peer_ip, exc)
        elif isinstance(exc, AuthError):
            self._log("AUTH failed: %s", exc, level=logging.DEBUG)
        else:
            self._log("%s refused: %s", type(event).__name__, exc)

    def _answer(self, event: ev.Event, reply: Reply, internal: bool = False) -> None:
        """Fail the pending decision with ``reply``: an AUTH exchange with ``auth_failed``,
        a refusal with ``reject`` (counted, tarpitted), an internal error with
        ``abandon`` (not the client's fault)."""
        self.sasl = None
        try:
            if isinstance(event, ev.AuthStart | ev.AuthResponse):
                self.session.auth_failed(reply)
            elif internal or not isinstance(event, ev.MailFrom | ev.RcptTo | ev.MessageReady
                                                | ev.BurlFetch):
                self.session.abandon(reply)
            else:
                self.session.reject(reply)
        except LocalProtocolError:
                # the handler had answered already, so where the session stands is
                # unknown: say goodbye rather than guess
                self.conn.write(self.session.data_to_send())
                self.conn.write(replies.SERVICE_UNAVAILABLE.to_bytes())
                raise ConnectionAbortedError("state unknown after an internal error") from None

    async def _tarpit(self) -> None:
        """Delay error replies past the soft limit, more for each (see the docstring)."""
        smtp = self.config.smtp
        while self._errors_delayed < self.session.error_replies:
            self._errors_delayed += 1
            beyond = self._errors_delayed - smtp.soft_error_limit
            if beyond > 0 and smtp.error_sleep_time > 0 and not self.session.closed:
                await self.sleep(beyond * smtp.error_sleep_time)

    def _read_timeout(self, started: bool) -> float:
        lim = self.config.limits
        if not started:
            return lim.greeting_timeout
        if self.session.in_data:
            return lim.data_timeout
        return lim.command_timeout

    async def _dispatch(self, event: ev.Event) -> None:
        if isinstance(event, ev.MailFrom):
            await self._mail_from(event)
        elif isinstance(event, ev.RcptTo):
            await self._rcpt_to(event)
        elif isinstance(event, ev.MessageContent):
            self._spool_content(event)
        elif isinstance(event, ev.MessageDiscarded):
            self._drop_spool()
        elif isinstance(event, ev.MessageReady):
            started, before = time.monotonic(), self.messages
            await self._message(event)
            role = self.listener.role  # /metrics (issue 19)
            METRICS.observe("pochta_smtp_accept_seconds", time.monotonic() - started, role=role)
            METRICS.inc("pochta_messages_accepted_total" if self.messages > before
                        else "pochta_messages_refused_total", role=role)
        elif isinstance(event, ev.BurlFetch):
            await self._burl(event)
        elif isinstance(event, ev.StartTLS):
            await self._starttls()
        elif isinstance(event, ev.AuthStart):
            await self._auth_start(event)
        elif isinstance(event, ev.AuthResponse):
            await self._auth_response(event)

    async def _burl(self, event: ev.BurlFetch) -> None:
        """BURL (RFC 4468): the content of a ``submit+<this user>`` URL signed by IMAP's
        GENURLAUTH, read from the store; a refusal (554 5.7.0 / 5.6.6) is raised to the
        boundary, which fails the transaction and counts the error."""
        assert self.account is not None  # the core takes BURL only after AUTH
        found = await resolve(self.ctx.store, event.url,
                              Requester(submitter=self.account.address))
        self._log("burl %d bytes%s", len(found.data), " last" if event.last else "",
                  level=logging.DEBUG)
        self.session.burl_resolved(found.data)

    # --- TLS and AUTH ---------------------------------------------------------------

    async def _starttls(self) -> None:
        self.conn.write(self.session.data_to_send())
        await self.conn.drain()
        await self.conn.start_tls()
        self.session.tls_started()
        if self.submission:
            self.session.params = self._params_after_tls()
        self._log("starttls %s", self.conn.tls_info(), level=logging.DEBUG)

    def _params_after_tls(self) -> SessionParams:
        return self._params()

    async def _auth_start(self, event: ev.AuthStart) -> None:
        # SMTP's 235 cannot carry data: SCRAM's server-final goes in a last 334
        # challenge, answered with an empty line (RFC 4954 §4). A refusal is raised
        # (pochta/errors.py AuthError) and answered by the boundary.
        self.sasl = self.auth.begin(event.mechanism, final_as_challenge=True)
        await self._auth_outcome(await self.sasl.start(event.initial_response))

    async def _auth_response(self, event: ev.AuthResponse) -> None:
        if event.data is None or self.sasl is None:
            self.sasl = None
            return
        await self._auth_outcome(await self.sasl.respond(event.data))

    async def _auth_outcome(self, outcome: Challenge | Authenticated) -> None:
        if isinstance(outcome, Challenge):
            self.session.auth_challenge(outcome.data)
            return
        self.sasl = None
        self.account = outcome.account
        trace_account(self.conn, self.listener.role, outcome.account.address,
                      self.config.log.trace_accounts)
        self.owned = await self.ctx.directory.addresses_of(outcome.account.id)
        self.session.auth_succeeded(outcome.account.address)
        self._log("auth ok user=%s", outcome.account.address)

    # --- the mail transaction -------------------------------------------------------

    async def _mail_from(self, event: ev.MailFrom) -> None:
        self.txn = _Transaction()
        if self.submission:
            assert self.account is not None
            await self.policy.check_sender(self.account, self.owned, event.address)
        if self.spam is not None:  # screening, held accounts (spam/gate.py)
            refusal = await self.spam.mail_from(
                self.session.helo_name or "", event.address,
                self.account.address if self.account else None)
            if refusal is not None:
                self.session.reject(refusal)
                return
        self.session.accept()

    def _relay_allowed(self) -> bool:
        if self.submission:
            return self.account is not None
        try:
            ip = ipaddress.ip_address(self.conn.peer_ip)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(net, strict=False)
                   for net in self.config.trusted_networks)

    async def _rcpt_to(self, event: ev.RcptTo) -> None:
        try:
            address = normalize_address(event.address)
            _, domain = split_address(address)
        except AddressError:
            self.session.reject(replies.BAD_RECIPIENT_SYNTAX)
            return
        if self.submission and self.account is not None:
            await self.policy.check_recipient(self.account, len(self.txn.recipients))
        if await self.ctx.directory.is_local_domain(domain):
            resolution = await self.ctx.directory.resolve(address)
            if resolution is None:
                self._log("rcpt unknown to=%r", address)
                self.session.reject(replies.user_unknown(event.address))
                return
            folders = await self._may_post(resolution.folders)
            if resolution.folders and not (folders or resolution.local or resolution.remote):
                self._log("rcpt may not post to public folder to=%r", address)
                self.session.reject(replies.posting_denied(event.address))
                return
            for account_id in [*resolution.local, *(b.account_id for b in folders)]:
                if await self._over_quota(account_id, resolution.accounts.get(account_id)):
                    self.session.reject(replies.mailbox_full_at_rcpt(event.address))
                    return
            for box in folders:
                self.txn.add_folder(box)
            for account_id in resolution.local:
                self.txn.add_local(account_id)
                self.txn.rcpt_of.setdefault(account_id, address)
            for remote in resolution.remote:
                # An alias pointing elsewhere: forwarding is ours to do, no relay check.
                self.txn.remote.append(RemoteRecipient(remote, event.notify, event.orcpt))
        elif self._relay_allowed():
            self.txn.remote.append(RemoteRecipient(address, event.notify, event.orcpt))
        else:
            self._log("relay denied to=%r", address)
            self.session.reject(replies.relay_denied(event.address))
            return
        if self.spam is not None:  # greylisting (spam/gate.py)
            refusal = await self.spam.rcpt(address, self.session.helo_name or "")
            if refusal is not None:
                self.session.reject(refusal)
                return
        self.txn.recipients.append(address)
        self.session.accept()

    async def _may_post(self, folders: list[MailboxInfo]) -> list[MailboxInfo]:
        """The public folders this client may post to: RFC 4314 §2.1's ``p`` right, granted
        to ``anyone`` (mail from anywhere) or, after AUTH, to the account, its groups or
        ``authenticated``. The others are left out of the delivery."""
        allowed = []
        who = self.account.address if self.account is not None else None
        groups = await self.ctx.store.aliases_naming(who) if who is not None else []
        for box in folders:
            acl = await self.ctx.store.get_acl(box.id)
            if "p" in rights_for(acl, who, groups):
                allowed.append(box)
        return allowed

    async def _over_quota(self, account_id: int, account: Account | None = None) -> bool:
        if account is None:  # not read while resolving (an alias to it): read it now
            account = await self.ctx.store.get_account_by_id(account_id)
        if account is None or not account.quota_bytes:
            return False
        return await self.ctx.store.account_usage(account_id) >= account.quota_bytes

    # --- big messages: spooled while they arrive (services/spool.py) ------------------

    def _spool_content(self, event: ev.MessageContent) -> None:
        if event.first or self._spool is None:
            self._drop_spool()
            self._spool = Spool(self.config.data_path)
        self._spool.write(event.data)

    def _drop_spool(self) -> None:
        if self._spool is not None:
            self._spool.remove()
            self._spool = None

    async def _message(self, event: ev.MessageReady) -> None:
        spool = None
        if event.spooled:
            spool, self._spool = self._spool, None
            assert spool is not None, "spooled message without its spool"
            spool.write(event.data)
            spool.close()
        try:
            await self._handle_message(event, spool)
        finally:
            if spool is not None:
                spool.remove()

    async def _handle_message(self, event: ev.MessageReady, spool: Spool | None) -> None:
        # ``head`` is the whole message, or for a spooled one its header block: every
        # header step below changes only the header block, the body stays in the file.
        if spool is None:
            head, body_at = event.data, 0
        else:
            head, body_at = await asyncio.to_thread(spool.split_head)

        async def whole(current_head: bytes) -> bytes:
            return current_head if spool is None else await spool.read_all(current_head,
                                                                           body_at)

        if self.submission:
            assert self.account is not None
            self.policy.check_from(self.account, self.owned, head)
            api_keys = self.ctx.smtp_keys  # the sending layer (issue 18)
            if api_keys.key_of(self.account) is not None:
                code, enhanced, text = await api_keys.submit(
                    self.account, await whole(head), event.sender, self.txn.recipients,
                    self.conn.peer_ip)
                reply = replies.decided_elsewhere(code, enhanced, text)
                if code != 250:
                    self.session.reject(reply)
                    return
                self.messages += 1
                self.session.accept(reply)
                self.txn = _Transaction()
                return
            head = await self.policy.prepare(head, whole, time.time())
        envelope = Envelope(
            sender=event.sender,
            ret=event.mail_from.ret,
            envid=event.mail_from.envid,
            smtputf8=event.smtputf8,
            body_8bit=event.body_8bit,
            authenticated_as=self.account.address if self.account else None,
        )
        trace = TraceInfo(
            helo=self.session.helo_name or "unknown",
            client_ip=self.conn.peer_ip,
            esmtp=self.session.esmtp,
            tls=self.conn.tls_info(),
            smtputf8=event.smtputf8,
            authenticated_as=self.account.address if self.account else None,
            show_auth=self.config.smtp.received_show_auth,
            hide_client_ip=self.submission and self.config.smtp.received_hide_client_ip,
            requiretls=event.mail_from.requiretls,
        )
        mailbox = "INBOX"
        verdict: InboundVerdict | None = None
        if not self.submission:
            verdict = await self._inbound_checks(head, event.sender, whole)
            if verdict is not None:
                if verdict.action == "reject" and verdict.reject_reply is not None:
                    code, enhanced, text = verdict.reject_reply
                    self.session.reject(replies.decided_elsewhere(code, enhanced, text))
                    return
                head = verdict.message
                if spool is not None:  # the checks rewrite headers only: keep the body
                    head = head[: len(head) - (spool.size - body_at)]
                mailbox = verdict.mailbox or "INBOX"
        quarantined = mailbox != "INBOX"  # (the inbound checks' Junk)
        local = [LocalTarget(account_id, mailbox) for account_id in self.txn.local]
        local += self.txn.folder_targets(lambda _holder: quarantined)
        verdict_tag = ""  # not judged (submission, no spam gate)
        if self.spam is not None and not self.submission:  # rspamd, learning filter
            # a big message is judged on its headers and first SPAM_SCAN_LIMIT body bytes,
            # as SpamAssassin's size limit does; the verdict only touches the headers
            sample = head if spool is None else await asyncio.to_thread(
                spool.sample, head, body_at, SPAM_SCAN_LIMIT)
            outcome = await self.spam.message(
                sample, event.sender, self.txn.recipients,
                [*self.txn.local, *(b.account_id for b in self.txn.folders)],
                self.session.helo_name or "", None)
            if outcome.reply is not None:
                self._mail_log(REFUSED, "", event.sender, "spam", str(outcome.reply))
                self.session.reject(outcome.reply)
                return
            # each recipient's own allow/block lists over the filters (spam/senderlists.py)
            await self.spam.apply_sender_lists(outcome, head, event.sender, self.txn.local,
                                               verdict)
            verdict_tag = "spam" if outcome.junk else "ham"
            head = outcome.apply(head)
            local = outcome.targets(self.txn.local, mailbox)
            local += self.txn.folder_targets(
                lambda holder: quarantined or holder in outcome.junk)
        message: bytes | SpooledMessage = head if spool is None else spool.message(head,
                                                                                   body_at)
        size = len(head) if spool is None else len(head) + spool.size - body_at
        try:
            result = await self.ctx.delivery.deliver(
                message, envelope, local, self.txn.remote, trace, self.txn.recipients,
                recipient_of=self.txn.rcpt_of)
        except SieveRejected:  # RFC 5429 §2.1.1: refused in the protocol (the boundary)
            self._log("sieve reject from=<%s> to=%s", event.sender,
                      ",".join(f"<{r}>" for r in self.txn.recipients))
            raise
        # a store error (QuotaExceeded 552, StorageFull 452 4.3.1: RFC 5321 §4.2.3,
        # RFC 3463) goes to the boundary, which answers with the error's own reply
        if self.submission and self.account is not None:
            await self.policy.record(self.account, len(self.txn.recipients))
            if self.spam is not None:  # compromised-account volume (spam/abuse.py)
                await self.spam.accepted(self.account.address, len(self.txn.recipients))
        self.messages += 1
        self._log("accepted id=%s from=<%s> to=%s size=%d", result.message_id, event.sender,
                  ",".join(f"<{r}>" for r in self.txn.recipients), size)
        for rcpt in self.txn.recipients[:MAIL_LOG_RECIPIENTS]:
            self._mail_log(ACCEPTED, result.message_id, event.sender, verdict_tag,
                           f"{self.listener.role} size={size}", rcpt)
        self.session.accept(replies.queued(result.message_id))
        self.txn = _Transaction()

    def _mail_log(self, kind: str, message_id: str, sender: str, tag: str, detail: str,
                  recipient: str = "") -> None:
        """The searchable mail log of the web admin (services/eventlog.py)."""
        eventlog.record(self.ctx.store, NewMailEvent(
            time.time(), kind, message_id, sender, recipient, self.conn.peer_ip, tag,
            detail[:1000]))

    async def _inbound_checks(
        self, head: bytes, sender: str, whole: Callable[[bytes], Awaitable[bytes]]
    ) -> InboundVerdict | None:
        cfg = self.config
        if not (cfg.spf.check or cfg.dkim.verify or cfg.dmarc.check):
            return None
        verdict = await check_inbound(
            await whole(head), self.conn.peer_ip, self.session.helo_name or "", sender,
            self.ctx.resolver, cfg.hostname,
            dkim_settings=cfg.dkim, spf_settings=cfg.spf, dmarc_settings=cfg.dmarc,
            # ARC (pochta.policy.arc): verify chains; trusted sealers may override DMARC
            arc_trusted=(list(cfg.transport_security.arc_trusted_sealers)
                         if cfg.transport_security.arc_verify else None),
        )
        self._log("policy %s", " ".join(f"{k}={v}" for k, v in verdict.log.items()))
        # DMARC aggregate reports (pochta.policy.dmarc_reports)
        record_verdict_soon(self.ctx.store, verdict, self.conn.peer_ip, cfg)
        return verdict


async def handle_smtp(conn: Connection, ctx: ServerContext, listener: Listener) -> None:
    handler = SMTPHandler(conn, ctx, listener)
    try:
        await handler.run()
    finally:
        handler._drop_spool()  # a connection that ended mid-message leaves no file


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
