"""What the SMTP driver calls: one ``SpamGate`` per server (built from the config, kept in
``ServerContext.spam``) and one ``GateSession`` per SMTP session.

    gate = SpamGate.install(ctx)              # at start (server/app.py)
    s = gate.session(role, peer_ip)
    refusal = await s.connect(conn)           # before the banner (mta)
    reply = await s.mail_from(helo, sender, account)
    reply = await s.rcpt(sender, recipient)   # greylisting (mta)
    outcome = await s.message(data, ...)      # DATA: learning filter, rspamd
    await s.accepted(recipients)              # submission volume (abuse)
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..mail.headers import split_header, without_fields
from ..policy import spf
from ..policy.inbound import InboundVerdict
from ..proto.smtp.replies import Reply
from ..shutdown import ServerShutdown
from ..storage.interfaces import Envelope, LocalTarget, MailStore
from . import domainlists
from .abuse import AbuseGuard, failed_recipients
from .bayes import LearningFilter, tokenize
from .clamd import ClamdClient, ClamdError
from .dnsbl import parse_site
from .greylist import Greylist
from .rspamd import RspamdClient, RspamdError, RspamdResult
from .screening import Screener, ScreenResult
from .senderlists import ALLOW, BLOCK, SenderLists, decide, from_addresses, from_authenticated
from .training import wrap

if TYPE_CHECKING:
    from ..config import Config
    from ..context import AppContext


class PeerReader(Protocol):
    """What the greet wait reads from: the listener's ``Connection``."""

    async def read(self, timeout: float | None) -> bytes: ...


log = logging.getLogger("pochta.spam")


@dataclass
class MessageOutcome:
    reply: Reply | None = None  # refuse the message with this
    headers: bytes = b""  # to prepend (X-Spam-*, Authentication-Results iprev)
    junk: set[int] = field(default_factory=set)  # local accounts whose copy goes to Junk
    junk_mailbox: str = "Junk"
    subject: str = ""  # rspamd's rewritten subject, if any

    def targets(self, accounts: Sequence[int], mailbox: str) -> list[LocalTarget]:
        """Local targets: Junk with ``$Junk`` for the accounts in ``junk``."""
        return [LocalTarget(a, self.junk_mailbox, frozenset({"$Junk"})) if a in self.junk
                else LocalTarget(a, mailbox) for a in accounts]

    def apply(self, data: bytes) -> bytes:
        if self.subject:
            data = rewrite_subject(data, self.subject)
        return self.headers + data


def rewrite_subject(data: bytes, subject: str) -> bytes:
    """Replace the Subject field (rspamd's "rewrite subject")."""
    head, rest = split_header(data)
    new = b"Subject: " + subject.replace("\r", " ").replace("\n", " ").encode("utf-8")
    return new + b"\r\n" + without_fields(head, "Subject") + rest


def _header(name: str, value: str) -> bytes:
    clean = value if value.isprintable() else "".join(
        c if c.isprintable() else " " for c in value)
    return f"{name}: {clean}\r\n".encode()


class SpamGate:
    def __init__(self, config: Config, store: MailStore, resolver: Any,
                 deliver_notice: Any = None) -> None:
        self.config = config
        self.store = store
        self.screener = Screener(config.screening, resolver, store, config.hostname)
        self.resolver = resolver
        self.greylist = Greylist(config.greylist, store) if config.greylist.enabled else None
        self.bayes = LearningFilter(store, config.spam.bayes_min_trained)
        self.sender_lists = SenderLists(store)  # each account's allow/block lists
        self.rhsbl = [parse_site(x) for x in config.spam.rhsbl_sites]  # domainlists.py
        self.uribl = [parse_site(x) for x in config.spam.uribl_sites]
        self.rspamd = (RspamdClient(config.spam.rspamd, config.spam.rspamd_timeout,
                                    config.spam.rspamd_controller, config.spam.rspamd_password)
                       if config.spam.rspamd else None)
        self.clamd = (ClamdClient(config.spam.clamd, config.spam.clamd_timeout)
                      if config.spam.clamd else None)
        self.abuse = AbuseGuard(config.abuse, store, deliver_notice)
        self.trusted = [ipaddress.ip_network(n, strict=False)
                        for n in config.trusted_networks]
        self.own_addresses = sorted({lst.address for lst in config.listeners})

    @classmethod
    def install(cls, ctx: AppContext) -> SpamGate:
        """Build the gate and wrap the context's store with the training hooks (IMAP MOVE
        into Junk trains the filter); the composition root keeps the gate."""
        gate = cls(ctx.config, ctx.store, ctx.resolver)

        async def notify(address: str, reason: str) -> None:
            await _notify_postmaster(ctx, address, reason)

        gate.abuse.notify = notify

        async def learn_rspamd(account_id: int, data: bytes, spam: bool) -> None:
            if gate.rspamd is not None:
                await gate.rspamd.learn(data, spam)

        if ctx.config.spam.bayes or gate.rspamd is not None:
            ctx.store = wrap(ctx.store, gate.bayes, learn_rspamd)
        return gate

    def session(self, role: str, ip: str) -> GateSession:
        return GateSession(self, role, ip)

    def is_trusted(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)

    async def bounce(self, sender: str, dsn: bytes) -> None:
        """The queue made a DSN for ``sender``: count its failed recipients (abuse)."""
        await self.abuse.bounced(sender, failed_recipients(dsn))


async def _notify_postmaster(ctx: AppContext, address: str, reason: str) -> None:
    target = ctx.config.abuse.notify or f"postmaster@{address.rpartition('@')[2]}"
    res = await ctx.directory.resolve(target)
    if res is None or not res.local:
        log.warning("no local postmaster (%s) to tell about the hold of %s", target, address)
        return
    now = time.time()
    body = (f"From: Pochta <MAILER-DAEMON@{ctx.config.hostname}>\r\n"
            f"To: <{target}>\r\n"
            f"Subject: Account {address} held: unusual sending\r\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(now))}\r\n"
            "Auto-Submitted: auto-generated\r\n"
            "\r\n"
            f"The outbound mail of {address} is held: {reason}.\r\n"
            "Its new submissions are refused (451 4.7.1) and its queued mail waits.\r\n"
            "If the account is safe again (password changed), release it with:\r\n\r\n"
            f"    pochta user release {address}\r\n")
    await ctx.store.accept(b"Return-Path: <>\r\n" + body.encode(), Envelope(sender=""),
                           [LocalTarget(a) for a in res.local])


class GateSession:
    def __init__(self, gate: SpamGate, role: str, ip: str) -> None:
        self.gate = gate
        self.mta = role == "mta"
        self.ip = ip
        self.result = ScreenResult()
        self.trusted = gate.is_trusted(ip)
        self._spf: dict[str, str] = {}
        self.sender = ""

    @property
    def exempt(self) -> bool:
        """Trusted networks and allowlisted clients skip the later tests."""
        return self.trusted or bool(self.result.allowlisted)

    # --- connect --------------------------------------------------------------------------

    async def connect(self, conn: PeerReader) -> Reply | None:
        if not self.mta or self.trusted:
            return None
        scr = self.gate.screener
        refusal = await scr.connection_rate(self.ip)
        if refusal is None:
            refusal = await scr.lists(self.ip, self.result)
        if refusal is not None:
            log.info("ip=%s screening refused: %s (%s)", self.ip, refusal.text,
                     self.result.summary())
            return refusal
        if self.result.allowlisted:
            return None
        wait = scr.config.pregreet_wait
        if wait > 0 and not await scr.greeted(self.ip):
            try:
                early = await conn.read(wait)
            except TimeoutError:
                await scr.remember_greeted(self.ip)
            except ServerShutdown:
                return Reply(421, "4.3.2", "Service shutting down", close=True)
            else:
                if not early:  # the client left before the banner: nothing to answer
                    log.info("ip=%s screening: client left during the greet wait", self.ip)
                    return Reply(421, "4.4.2", "Bye", close=True)
                # RFC 5321 §3.1: the client waits for the greeting; one that talks first
                # is a bot (postscreen's PREGREET).
                log.info("ip=%s screening refused: PREGREET %d bytes after 0 s: %r",
                         self.ip, len(early), early[:40])
                return Reply(554, "5.5.1", "Protocol error: client spoke before the "
                             "greeting", close=True)
        await scr.fcrdns(self.ip, self.result)
        return None

    # --- transaction ----------------------------------------------------------------------

    async def mail_from(self, helo: str, sender: str, account: str | None) -> Reply | None:
        self.sender = sender
        if not self.mta:
            return await self.gate.abuse.check(account) if account else None
        if self.exempt:
            return None
        scr = self.gate.screener
        await scr.helo(helo, self.gate.own_addresses, self.result)
        refusal = await scr.message_rate(self.ip)
        if refusal is not None:
            return refusal
        limit = scr.config.reject_score
        if limit > 0 and self.result.score >= limit:
            log.info("ip=%s screening refused at MAIL: %s", self.ip, self.result.summary())
            return Reply(550, "5.7.1", f"Client [{self.ip}] refused by screening "
                         f"(score {self.result.score:g})")
        return None

    async def rcpt(self, recipient: str, helo: str) -> Reply | None:
        sender = self.sender
        grey = self.gate.greylist
        if grey is None or not self.mta or self.exempt:
            return None
        if (self.gate.config.greylist.exempt_spf_pass and sender
                and await self._spf_result(sender, helo) == "pass"):
            return None
        reply = await grey.check(self.ip, sender, recipient)
        if reply is not None:
            log.info("ip=%s greylisted from=<%s> to=<%s>", self.ip, sender, recipient)
        return reply

    async def _spf_result(self, sender: str, helo: str) -> str:
        if sender not in self._spf:
            res = await spf.check_spf(self.ip, sender, helo, self.gate.resolver,
                                      receiver=self.gate.config.hostname)
            self._spf[sender] = res.result
        return self._spf[sender]

    async def message(self, data: bytes, sender: str, recipients: Sequence[str],
                      local: Sequence[int], helo: str, user: str | None) -> MessageOutcome:
        """After DATA on the mta role: rspamd, then the learning filter per account."""
        cfg = self.gate.config
        out = MessageOutcome(junk_mailbox=cfg.spam.junk_mailbox)
        if not self.mta:
            return out
        status: list[str] = []
        if self.result.fcrdns:
            name = f" ({self.result.ptr_name})" if self.result.ptr_name else ""
            out.headers += _header("Authentication-Results", f"{cfg.hostname}; iprev="
                                   f"{self.result.fcrdns} policy.iprev={self.ip}{name}")
        if self.result.score or self.result.blocklisted or self.result.allowlisted:
            out.headers += _header("X-Spam-Screening", self.result.summary())
            log.info("ip=%s screening %s", self.ip, self.result.summary())
        if self.gate.clamd is not None and await self._virus(data, out):
            return out
        if self.gate.rspamd is not None and not self.trusted:
            refused = await self._rspamd(data, sender, recipients, helo, user, local, out,
                                         status)
            if refused:
                return out
        if cfg.spam.bayes and local:
            await self._bayes(data, local, out, status)
            if out.reply is not None:
                return out
        if (self.gate.rhsbl or self.gate.uribl) and not self.trusted:
            await self._domain_lists(data, sender, local, out, status)
            if out.reply is not None:
                return out
        if status:
            flag = "Yes" if out.junk and len(out.junk) == len(set(local)) else "No"
            out.headers += _header("X-Spam-Status", f"{flag}, " + " ".join(status))
        return out

    async def apply_sender_lists(self, out: MessageOutcome, head: bytes, sender: str,
                                 local: Sequence[int], verdict: InboundVerdict | None) -> None:
        """Each recipient's own lists (spam/senderlists.py) over the filters' verdict: a
        blocked sender's mail to Junk, a proven allowed sender's out of it."""
        if not self.mta or not local:
            return
        lists = await self.gate.sender_lists.rules(local)
        if not lists:
            return
        froms = from_addresses(head)
        proven = bool(froms) and all(
            from_authenticated(verdict, a.rpartition("@")[2]) for a in froms)
        for account_id, rules in lists.items():
            action = decide(rules, froms, sender, proven)
            if action == BLOCK:
                out.junk.add(account_id)
            elif action == ALLOW:
                out.junk.discard(account_id)
            if action is not None:
                log.info("ip=%s sender list of account %d: %s (from=%s sender=<%s>)",
                         self.ip, account_id, action, ",".join(froms) or "-", sender)

    async def _domain_lists(self, data: bytes, sender: str, local: Sequence[int],
                            out: MessageOutcome, status: list[str]) -> None:
        """RHSBL and URIBL (spam/domainlists.py): Junk or a refusal at the threshold."""
        gate = self.gate
        cfg = gate.config.spam
        head, _ = split_header(data)
        links = domainlists.link_domains(data) if gate.uribl else []
        verdict = await domainlists.check(
            domainlists.sender_domains(sender, from_addresses(head)), links, gate.rhsbl,
            gate.uribl, gate.screener.cache)
        if not verdict.hits:
            return
        log.info("ip=%s domain lists: %s score=%g", self.ip, verdict.summary(), verdict.score)
        out.headers += _header("X-Spam-Domain-Lists", verdict.summary()[:900])
        status.append(f"domainlists={verdict.score:g}")
        if verdict.score < cfg.domain_list_threshold:
            return
        if cfg.domain_list_action == "reject":
            first = verdict.hits[0]
            out.reply = Reply(550, "5.7.1", f"Message refused: {first.domain} is listed by "
                                            f"{first.zone}")
            return
        out.junk.update(local)

    async def _virus(self, data: bytes, out: MessageOutcome) -> bool:
        """clamd: infected mail is refused at DATA; True when the message is refused."""
        client = self.gate.clamd
        assert client is not None
        try:
            res = await client.scan(data)
        except ClamdError as exc:
            log.warning("ip=%s clamd unavailable (failures=%d): %s", self.ip, client.failures,
                        exc)
            if self.gate.config.spam.clamd_failure == "tempfail":
                out.reply = Reply(451, "4.7.1", "Virus scanner unavailable, try again later")
                return True
            return False
        if res.infected:
            log.info("ip=%s virus refused: %s", self.ip, res.signature)
            out.reply = Reply(554, "5.7.1", f"Virus found: {res.signature}")
            return True
        return False

    async def _rspamd(self, data: bytes, sender: str, recipients: Sequence[str], helo: str,
                      user: str | None, local: Sequence[int], out: MessageOutcome,
                      status: list[str]) -> bool:
        client = self.gate.rspamd
        assert client is not None
        cfg = self.gate.config.spam
        try:
            res = await client.check(data, sender=sender, recipients=recipients, ip=self.ip,
                                     helo=helo, user=user, hostname=self.gate.config.hostname)
        except RspamdError as exc:
            log.warning("ip=%s rspamd unavailable (failures=%d): %s", self.ip, client.failures,
                        exc)
            if cfg.rspamd_failure == "tempfail":
                out.reply = Reply(451, "4.7.1", "Content scanner unavailable, try again later")
                return True
            return False
        log.info("ip=%s rspamd action=%r score=%.2f/%.2f symbols=%s", self.ip, res.action,
                 res.score, res.required_score, ",".join(res.symbols[:20]))
        out.headers += _header("X-Rspamd-Action", res.action)
        out.headers += _header("X-Rspamd-Score", f"{res.score:.2f} / {res.required_score:.2f}")
        if res.symbols:
            out.headers += _header("X-Rspamd-Symbols", ",".join(res.symbols[:40]))
        status.append(f"rspamd={res.score:.2f}")
        return await self._rspamd_action(res, sender, local, out)

    async def _rspamd_action(self, res: RspamdResult, sender: str, local: Sequence[int],
                             out: MessageOutcome) -> bool:
        action = res.action
        if action == "reject":
            out.reply = Reply(550, "5.7.1", res.smtp_message or "Spam message rejected")
            return True
        if action == "soft reject":
            out.reply = Reply(451, "4.7.1", res.smtp_message or "Try again later")
            return True
        if action == "greylist":
            grey = self.gate.greylist or Greylist(self.gate.config.greylist, self.gate.store)
            reply = await grey.check(self.ip, sender, "*")
            if reply is not None:
                out.reply = reply
                return True
        elif action == "rewrite subject" and res.subject:
            out.subject = res.subject
        elif action == "add header":
            out.junk.update(local)
        return False

    async def _bayes(self, data: bytes, local: Sequence[int], out: MessageOutcome,
                     status: list[str]) -> None:
        cfg = self.gate.config.spam
        tokens: list[str] | None = None
        scores: list[float] = []
        for account_id in dict.fromkeys(local):
            if not await self.gate.bayes.ready(account_id):
                continue
            if tokens is None:
                tokens = tokenize(data)
            verdict = await self.gate.bayes.score(account_id, data, tokens)
            if verdict.score is None:
                continue
            scores.append(verdict.score)
            if verdict.score >= cfg.bayes_junk_threshold:
                out.junk.add(account_id)
        if not scores:
            return
        if (cfg.bayes_reject_threshold > 0 and len(scores) == len(set(local))
                and min(scores) >= cfg.bayes_reject_threshold):
            log.info("ip=%s learning filter refused: scores=%s", self.ip, scores)
            out.reply = Reply(550, "5.7.1", "Message refused as spam")
            return
        if len(set(local)) == 1:  # several recipients: one header would tell each the others'
            status.append(f"bayes={scores[0]:.3f}")
            out.headers += _header("X-Spam-Bayes", f"{scores[0]:.4f}")

    async def accepted(self, account: str | None, recipients: int) -> None:
        """After ``250`` on submission: count the account's volume."""
        if not self.mta and account:
            await self.gate.abuse.submitted(account, recipients)
