"""Sieve at final delivery: runs each local recipient's active script and carries out its
actions (the sans-IO interpreter is in pochta.sieve).

``SieveService.accept`` replaces the plain ``MailStore.accept`` of DeliveryService when a
message has local recipients:

1. every local recipient's script runs against the message (as stored: Return-Path and
   Received included) and its envelope; a script that fails to load or run falls back to
   keep in INBOX, and the log says why;
2. when every recipient rejects and nobody else gets the message, ``SieveRejected`` goes
   up to the SMTP driver, which answers the DATA with ``550 5.7.1`` (RFC 5429 §2.1.1);
3. redirected copies (their own envelope sender, see ``[sieve] redirect_sender``) are
   accepted first, then one ``accept`` files the message once per resulting mailbox,
   with flags, beside the queue entries of remote recipients: one durable transaction;
   a recipient whose script edited the header (editheader) gets its own copy;
4. then, best effort (logged when they fail): rejection MDNs/DSNs for recipients that
   could not be rejected in the protocol, vacation replies (RFC 3834 rules, once per sender per
   period, DKIM-signed), mailto notifications, and the duplicate-test memory.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path
from typing import Protocol

from .. import __version__
from ..errors import SieveLoadError as SieveLoadError
from ..errors import SieveRejected as SieveRejected
from ..mail.addresses import (
    AddressError,
    base_address,
    normalize_address,
    normalize_login,
    split_address,
)
from ..mail.flags import system_flag
from ..sieve import (
    Context,
    Limits,
    NeedLookup,
    Notify,
    Redirect,
    Reject,
    Result,
    Script,
    SieveEnvelope,
    SieveMessage,
    SieveRuntimeError,
    SieveSyntaxError,
    Store,
    Vacation,
    compile_script,
    evaluate,
)
from ..sieve.autoreply import (
    build_notification,
    build_vacation,
    notification_sender,
    notify_refusal,
    vacation_plan,
)
from ..sieve.execute import store_refusal
from ..sieve.includes import drive_async, resolve
from ..sieve.sequence import run_sequence
from ..sieve.settings import SieveConfig
from ..sieve.verdict import header_verdict
from ..storage.interfaces import (
    AcceptResult,
    AlreadyExists,
    Envelope,
    LocalTarget,
    MailboxInfo,
    MailStore,
    RemoteRecipient,
    SpecialUse,
    StoreError,
)
from ..storage.rules import new_message_id
from . import server_metadata
from .rejection import rejection_message
from .sieve_check import include_source

log = logging.getLogger("pochta.sieve")

CACHE_SIZE = 1024  # compiled scripts kept, by source digest
MAX_LOOKUP_ROUNDS = 16  # reruns for duplicate tests (one per distinct id)
_KEYWORD = re.compile(r"[^\s(){%*\"\\\]\x00-\x1f\x7f]+\Z")
REDIRECT_MARK = "X-Sieve-Redirected-From"


_LIST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}\Z")
MAX_LIST_ENTRIES = 100_000
SPAM_HEADERS = ("x-spam-bayes", "x-rspamd-score")


def _special_use(value: str | None) -> SpecialUse | None:
    if value is None:
        return None
    return next((u for u in SpecialUse if u.value.lower() == value.lower()), None)


def own_spam_score(message: SieveMessage) -> tuple[int | None, int | None]:
    """RFC 5235 spamtest values from the verdict our own SMTP server wrote (rspamd's
    score, else the learning filter's probability): only fields above our Received:
    count, a sender cannot forge them. (1..10, 0..100 percent); (None, None) untested."""
    for lower, _, raw in message.fields:
        if lower == "received":
            break
        if lower not in SPAM_HEADERS:
            continue
        value = raw.strip()
        try:
            if lower == "x-spam-bayes":  # a probability, 0..1
                p = min(max(float(value), 0.0), 1.0)
            else:  # "score / required"
                score, _, required = value.partition("/")
                p = min(max(float(score) / max(float(required), 0.1), 0.0), 1.0)
        except ValueError:
            continue
        return 1 + round(p * 9), round(p * 100)
    return None, None


def redirect_loop(message: SieveMessage, own: set[str]) -> bool:
    """Whether one of these addresses of the user redirected the message already (its
    X-Sieve-Redirected-From marks): redirecting it again would loop."""
    mine = {normalize_login(a) for a in own if a}
    return any(normalize_login(addr) in mine
               for value in message.headers(REDIRECT_MARK)
               for _, addr in getaddresses([value]) if addr)


def redirect_body(body: bytes, user: str) -> bytes:
    """The redirected copy: without our Return-Path (the next hop writes its own),
    marked with the redirecting account (as Pigeonhole: loops are recognised)."""
    if body[:12].lower() == b"return-path:":
        body = body[body.find(b"\r\n") + 2:]
    return f"{REDIRECT_MARK}: <{user}>\r\n".encode() + body


def redirect_sender(mode: str, sender: str, recipient: str, account: str) -> str:
    """The envelope sender of a redirected copy by ``[sieve] redirect_sender`` (srs is
    the caller's: the sender, rewritten when foreign); <> stays <> (no bounces to a
    bounce)."""
    if not sender or mode == "null":
        return ""
    if mode == "recipient":
        return recipient or sender
    if mode == "account":
        return account or recipient or sender
    if mode.startswith("<") and mode.endswith(">"):
        return mode[1:-1]
    return sender  # original, srs


def _same(a: str, b: str) -> bool:
    """The same mailbox, +tags aside (alice+x@ is alice@)."""
    try:
        return base_address(normalize_address(a)) == base_address(normalize_address(b))
    except AddressError:
        return a.lower() == b.lower()


Signer = Callable[[bytes, str], Awaitable[bytes]]
Resolve = Callable[[str], Awaitable[tuple[list[int], list[str]] | None]]


@dataclass
class Decision:
    """What one recipient's script decided (``pochta sieve test`` prints it)."""

    account_id: int
    recipient: str
    script: str | None
    result: Result | None
    error: str | None = None
    stores: list[Store] = field(default_factory=list)


def imap_flags(flags: frozenset[str]) -> frozenset[str]:
    """Flags a mailbox can hold: system flags by their IMAP spelling, valid keywords."""
    out = set()
    for f in flags:
        if f.startswith("\\"):
            known = system_flag(f)
            if known is not None:
                out.add(known)
        elif _KEYWORD.match(f):
            out.add(f)
    return frozenset(out)



class SenderRewriter(Protocol):
    """What redirects need of SRS (transport_security/srs.py): a foreign sender rewritten
    to an address of ours that takes its bounces back."""

    def forward(self, sender: str) -> str: ...

class SieveService:
    def __init__(
        self,
        store: MailStore,
        config: SieveConfig,
        hostname: str,
        *,
        global_dir: Path | None = None,
        lists_dir: Path | None = None,
        signer: Signer | None = None,
        resolve: Resolve | None = None,
        local_domain: Callable[[str], Awaitable[bool]] | None = None,
        on_queued: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        srs: SenderRewriter | None = None,
        admin_contact: str = "",
    ) -> None:
        self.store = store
        self.admin_contact = admin_contact  # [imap] admin_contact (server_metadata.py)
        self.config = config
        self.hostname = hostname
        self.limits: Limits = config.limits()
        self.global_dir = global_dir
        self.lists_dir = lists_dir
        self.signer = signer
        self.resolve = resolve
        self.local_domain = local_domain
        self.on_queued = on_queued
        self.clock = clock
        self.srs = srs  # redirect_sender = srs; None: the queue rewrites forwarded mail
        self._cache: collections.OrderedDict[str, Script] = collections.OrderedDict()
        # spam/virus verdict hook (RFC 5235): message -> (spam 1..10, percent, virus 1..5)
        self.verdict: Callable[[SieveMessage], tuple[int | None, int | None, int | None]] | None
        self.verdict = None
        spam, virus = config.header_verdict("spamtest"), config.header_verdict("virustest")
        if spam is not None or virus is not None:
            # [sieve] spamtest_header/virustest_header: a filter in front of Pochta
            self.verdict = functools.partial(header_verdict, spam, virus)
        self._addresses: dict[int, tuple[str, float]] = {}
        self._globals: tuple[float, list[Script], list[Script]] | None = None
        self._protected = frozenset(h.lower() for h in config.protected_headers)
        self._active: dict[int, tuple[float, tuple[str, str] | None]] = {}
        # account -> (name, text, its compiled script or why it does not compile): the
        # active script's compiled form, reused while the text read is the same
        self._compiled: dict[int, tuple[str, str, Script | str]] = {}

    # --- scripts ---------------------------------------------------------------------------

    def compile(self, source: str, name: str = "") -> Script:
        """Compile through the cache (scripts are shared by source digest)."""
        key = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        script = self._cache.get(key)
        if script is not None:
            self._cache.move_to_end(key)
            return script
        script = compile_script(source, name, self.limits)
        self._cache[key] = script
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return script

    def _compile_or_error(self, text: str, name: str) -> Script | str:
        try:
            return self.compile(text, name)
        except SieveSyntaxError as exc:
            return f"script {name!r}: {exc}"

    def _compiled_active(self, account_id: int, name: str, text: str) -> Script | str:
        """The account's active script compiled, by the text just read (``_active_script``:
        the store's, at most ``script_cache_seconds`` old): no digest of the text per
        delivery, and a script that does not compile is not compiled again until it
        changes."""
        hit = self._compiled.get(account_id)
        if hit is not None and (hit[1] is text or hit[1] == text) and hit[0] == name:
            return hit[2]
        script = self._compile_or_error(text, name)
        if len(self._compiled) > 100_000:
            self._compiled.clear()
        self._compiled[account_id] = (name, text, script)
        return script

    async def _load_includes(self, account_id: int, script: Script,
                             scripts: dict[tuple[str, str], Script | None],
                             path: tuple[tuple[str, str], ...]) -> None:
        """Every script reachable through include, compiled (sieve/includes.py): a loop,
        includes too deep or too many, an included script that does not compile is an
        error; a missing one is None, an error only when its include runs."""
        resolved = await drive_async(resolve(script, path[-1], self.limits, self.compile),
                                     functools.partial(self._include_source, account_id))
        scripts.update(resolved.scripts)
        failing = [p.message for p in resolved.problems
                   if p.kind != "missing" and not p.follow_up]
        if failing:
            raise SieveLoadError("; ".join(failing))

    async def _include_source(self, account_id: int, key: tuple[str, str]) -> str | None:
        return await include_source(self.store, self.global_dir, account_id, key)

    async def load(self, account_id: int, source: tuple[str, str] | None = None
                   ) -> tuple[str, Script, dict[tuple[str, str], Script | None]] | None:
        """The active script of the account (or ``source``: name and text) with its
        includes; None if it has none."""
        active = source or await self._active_script(account_id)
        if active is None:
            return None
        name, text = active
        script = self._compiled_active(account_id, name, text) if source is None else (
            self._compile_or_error(text, name))
        if isinstance(script, str):
            raise SieveLoadError(script)
        scripts: dict[tuple[str, str], Script | None] = {}
        if script.includes:
            await self._load_includes(account_id, script, scripts, (("personal", name),))
        return name, script, scripts

    # --- one recipient ---------------------------------------------------------------------

    async def decide(self, message: SieveMessage, envelope: Envelope, account_id: int,
                     recipient: str | None = None, client_ip: str = "",
                     source: tuple[str, str] | None = None) -> Decision:
        """Run the account's script (between the admin's ``before`` and ``after``
        scripts); on any failure the decision is keep (with the error)."""
        load_error = None
        try:
            loaded = await self.load(account_id, source)
        except SieveLoadError as exc:
            loaded, load_error = None, str(exc)
        before, after = await self._global_scripts()
        if loaded is None and not (before or after):
            # no active script: one indexed query and nothing else
            return Decision(account_id, recipient or "", None, None, load_error)
        user = await self._address_of(account_id)
        rcpt = recipient or user
        name, script, scripts = loaded if loaded is not None else ("", None, {})
        sequence = [*before, *([script] if script is not None else []), *after]
        for extra in (*before, *after):
            if extra.includes:
                try:
                    await self._load_includes(account_id, extra, scripts,
                                              (("global", extra.name),))
                except SieveLoadError as exc:
                    return Decision(account_id, rcpt, extra.name, None, str(exc))
        now = self.clock()
        ctx = Context(
            user=user,
            addresses=frozenset({user, rcpt}),
            now=now,
            tz_offset_minutes=time.localtime(now).tm_gmtoff // 60,
            environment=self._environment(client_ip),
            scripts=scripts,
            limits=self.limits,
            protected_headers=self._protected,
        )
        if self.verdict is not None:
            ctx.spam_score, ctx.spam_percent, ctx.virus_score = self.verdict(message)
        if ctx.spam_score is None:  # no configured header: Pochta's own verdict
            ctx.spam_score, ctx.spam_percent = own_spam_score(message)
        if any("mailbox" in x.requires or "special-use" in x.requires for x in sequence):
            boxes = await self.store.list_mailboxes(account_id)
            ctx.mailboxes = frozenset(b.name for b in boxes)
            ctx.special_use = {str(b.special_use).lower(): b.name for b in boxes
                               if b.special_use is not None}
        env = SieveEnvelope(envelope.sender, rcpt, envelope.authenticated_as)
        for _ in range(MAX_LOOKUP_ROUNDS):
            try:
                if len(sequence) == 1:
                    result = evaluate(sequence[0], message, env, ctx)
                else:
                    result = run_sequence(sequence, message, env, ctx)
            except NeedLookup as need:
                await self._lookup(need.key, account_id, user, ctx, now)
                continue
            except SieveRuntimeError as exc:
                label = name if len(sequence) == 1 else f"{name or '-'} (with before/after)"
                return Decision(account_id, rcpt, name, None, f"script {label!r}: {exc}")
            except RecursionError:
                return Decision(account_id, rcpt, name, None, f"script {name!r}: too deep")
            return Decision(account_id, rcpt, name or None, result, load_error)
        return Decision(account_id, rcpt, name, None, "too many duplicate tests")

    async def _lookup(self, key: str, account_id: int, user: str, ctx: Context,
                      now: float) -> None:
        """Answer what a run asked for (see ``NeedLookup``)."""
        if key.startswith("metadata:"):
            ctx.metadata[key[9:]] = await self._metadata(account_id, key[9:])
        elif key.startswith("list:"):
            ctx.lists[key[5:]] = await asyncio.to_thread(self.read_list, user, key[5:])
        else:
            ctx.known[key] = await self.store.is_remembered(f"{account_id}:{key}", now)

    async def _metadata(self, account_id: int, mailbox: str) -> dict[str, str] | None:
        """RFC 5490: the IMAP METADATA entries (RFC 5464) the account sees on a mailbox,
        or on the server for "" (as IMAP shows them: server_metadata.py); None when the
        mailbox does not exist."""
        if mailbox:
            info = await self.store.get_mailbox(account_id, mailbox)
            if info is None:
                return None
            stored = await self.store.get_metadata(account_id, info.id)
        else:
            stored = await server_metadata.server_entries(
                self.store, account_id, self.admin_contact, self.hostname)
        return {k.lower(): v.decode("utf-8", "replace") for k, v in stored.items()}

    def read_list(self, user: str, name: str) -> frozenset[str] | None:
        """RFC 6134 external lists, from files in ``[sieve] lists_dir``: the user's own
        ``<lists_dir>/<address>/<list>.txt`` first, else the shared ``<lists_dir>/<list>.txt``;
        ``<list>`` is the name with an ``:addrbook:`` prefix or the IANA
        ``urn:ietf:params:sieve:addrbook:`` prefix taken off. A line is an address or
        ``@domain``; ``#`` starts a comment. None: no such list."""
        if self.lists_dir is None:
            return None
        short = name
        for prefix in ("urn:ietf:params:sieve:addrbook:", ":addrbook:"):
            if short.lower().startswith(prefix):
                short = short[len(prefix):]
        if not _LIST_NAME.match(short):
            return None
        for folder in (self.lists_dir / user.lower(), self.lists_dir):
            path = folder / f"{short}.txt"
            try:
                text = path.read_text("utf-8")
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("sieve: list %s unreadable: %s", path, exc)
                return None
            return frozenset(line.split("#", 1)[0].strip().lower()
                             for line in text.splitlines()[:MAX_LIST_ENTRIES]
                             if line.split("#", 1)[0].strip())
        return None

    async def _active_script(self, account_id: int) -> tuple[str, str] | None:
        """The active script, reused for ``script_cache_seconds`` (one indexed query
        per account and period instead of one per delivery)."""
        ttl = self.config.script_cache_seconds
        now = time.monotonic()
        hit = self._active.get(account_id)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        value = await self.store.get_active_sieve_script(account_id)
        if ttl > 0:
            if len(self._active) > 100_000:
                self._active.clear()
            self._active[account_id] = (now, value)
        return value

    def forget(self, account_id: int) -> None:
        """The account's scripts changed (ManageSieve in this process): read them again."""
        self._active.pop(account_id, None)

    async def _address_of(self, account_id: int) -> str:
        """The account's address, cached for a minute (a removed account's id may be
        given to a new account)."""
        now = time.monotonic()
        cached = self._addresses.get(account_id)
        if cached is not None and now - cached[1] < 60:
            return cached[0]
        account = await self.store.get_account_by_id(account_id)
        address = account.address if account is not None else ""
        if len(self._addresses) > 100_000:
            self._addresses.clear()
        self._addresses[account_id] = (address, now)
        return address

    def _environment(self, client_ip: str) -> dict[str, str]:
        """RFC 5183 §4 items."""
        env = {
            "domain": self.hostname.partition(".")[2] or self.hostname,
            "host": self.hostname, "location": "MDA", "name": "Pochta",
            "phase": "during", "version": __version__,
        }
        if client_ip:
            env["remote-ip"] = client_ip
        return env

    async def _targets(self, decision: Decision, fallback: str) -> list[Store]:
        """The mailboxes of a decision; fileinto a missing mailbox without :create (and
        without fileinto_autocreate) keeps the message in INBOX instead (RFC 5490 §3.2)."""
        if decision.result is None:
            return [Store(fallback)]
        out: list[Store] = []
        boxes: list[MailboxInfo] | None = None
        for action in decision.result.actions:
            if not isinstance(action, Store):
                continue
            mailbox = action.mailbox
            use = _special_use(action.special_use)
            if use is not None:
                # RFC 8579 §4: the mailbox with the attribute, whatever its name
                if boxes is None:
                    boxes = await self.store.list_mailboxes(decision.account_id)
                mailbox = next((b.name for b in boxes if b.special_use == use), mailbox)
            may_create = action.create or self.config.fileinto_autocreate
            refused = False
            if mailbox.upper() == "INBOX":
                mailbox = fallback
            elif (refusal := store_refusal(mailbox, True, may_create)) is not None:
                log.warning("sieve user=%s script=%s: fileinto: %s", decision.recipient,
                            decision.script, refusal)
                mailbox, refused = fallback, True
            elif await self.store.get_mailbox(decision.account_id, mailbox) is None:
                if may_create:
                    try:
                        await self.store.create_mailbox(decision.account_id, mailbox,
                                                        special_use=use, subscribe=True)
                    except AlreadyExists:
                        pass  # a concurrent delivery made it
                    except StoreError as exc:
                        log.warning("sieve user=%s: fileinto :create %r failed (%s); kept "
                                    "in %s", decision.recipient, mailbox, exc, fallback)
                        mailbox, refused = fallback, True
                else:
                    log.warning("sieve user=%s script=%s: fileinto: %s", decision.recipient,
                                decision.script, store_refusal(mailbox, False, False))
                    mailbox, refused = fallback, True
            # a refused fileinto: the keep that replaces it is the error's implicit keep,
            # of the message as received (RFC 5293 §7: "the original message header MUST
            # be used"), not the one the script's editheader changed
            data = None if refused else action.data
            flags = imap_flags(action.flags)
            same = next((i for i, o in enumerate(out) if o.mailbox == mailbox), None)
            if same is not None:
                # two refused fileintos both fall back here: one copy (RFC 5228 §2.10.3),
                # with the flags of both
                first = out[same]
                out[same] = Store(mailbox, first.flags | flags, first.create, first.implicit,
                                  data=first.data)
                continue
            out.append(Store(mailbox, flags, action.create, action.implicit, data=data))
        return out

    # --- the delivery ----------------------------------------------------------------------

    async def _global_scripts(self) -> tuple[list[Script], list[Script]]:
        """The admin's ``before`` and ``after`` scripts (NAME.sieve in global_dir),
        compiled, reread every ``script_cache_seconds``; one that is missing or does
        not compile is left out (and logged): mail keeps flowing."""
        cfg = self.config
        if not (cfg.before or cfg.after):
            return [], []
        now = time.monotonic()
        if self._globals is not None and now - self._globals[0] < cfg.script_cache_seconds:
            return self._globals[1], self._globals[2]
        out: tuple[list[Script], list[Script]] = ([], [])
        for names, scripts in ((cfg.before, out[0]), (cfg.after, out[1])):
            for name in names:
                source = await self._include_source(0, ("global", name))
                if source is None:
                    log.error("sieve: global script %r: no readable %s.sieve in %s", name,
                              name, self.global_dir)
                    continue
                try:
                    scripts.append(self.compile(source, name))
                except SieveSyntaxError as exc:
                    log.error("sieve: global script %r left out: %s", name, exc)
        self._globals = (now, *out)
        return out

    async def wants(self, local: Sequence[LocalTarget]) -> bool:
        """Whether any of these recipients has an active script (or the admin's before
        or after scripts run for everyone): if not, delivery skips Sieve (and never
        needs a big spooled message in memory)."""
        if not self.config.enabled:
            return False
        if self.config.before or self.config.after:
            return any(target.mailbox == "INBOX" for target in local)
        for target in local:
            if target.mailbox == "INBOX" and await self._active_script(target.account_id):
                return True
        return False

    async def accept(
        self,
        data: bytes,
        envelope: Envelope,
        local: Sequence[LocalTarget],
        remote: Sequence[RemoteRecipient],
        queue_id: str,
        recipient_of: Mapping[int, str] | None = None,
        client_ip: str = "",
    ) -> AcceptResult:
        message = SieveMessage(data)
        decisions: list[tuple[LocalTarget, Decision]] = []
        for target in local:
            rcpt = (recipient_of or {}).get(target.account_id)
            if not self.config.enabled or target.mailbox != "INBOX":
                # policy already chose a mailbox (DMARC quarantine to Junk): no filtering
                decisions.append((target, Decision(target.account_id, rcpt or "", None, None)))
                continue
            decision = await self.decide(message, envelope, target.account_id, rcpt, client_ip)
            if decision.error:
                log.warning("sieve user=%s: %s; message kept in INBOX", decision.recipient,
                            decision.error)
            if decision.result is not None:
                for warning in decision.result.warnings:
                    log.warning("sieve user=%s script=%s: %s", decision.recipient,
                                decision.script, warning)
            if not decision.error and decision.result is not None and (
                    log.isEnabledFor(logging.DEBUG)):
                log.debug("sieve user=%s script=%s actions=%s", decision.recipient,
                          decision.script, "; ".join(decision.result.describe()))
            decisions.append((target, decision))

        rejects = [(d, a) for _, d in decisions if d.result is not None
                   for a in d.result.actions if isinstance(a, Reject)]
        if rejects and len(rejects) == len(decisions) and not remote:
            raise SieveRejected(rejects[0][1].reason)

        plain: list[LocalTarget] = []
        edited: dict[bytes, list[LocalTarget]] = {}  # copies as an action saw them
        redirects: list[tuple[Decision, Redirect, bytes]] = []
        for target, decision in decisions:
            stores = await self._targets(decision, target.mailbox)
            res = decision.result
            for redirect in (a for a in (res.actions if res else []) if isinstance(a, Redirect)):
                own = {decision.recipient, await self._address_of(decision.account_id)}
                if redirect_loop(message, own):
                    log.warning("sieve user=%s: redirect to %s refused: the message was "
                                "already redirected by this user (a loop); kept in INBOX",
                                decision.recipient, redirect.address)
                    stores.append(Store(target.mailbox))
                    continue
                # RFC 5293 §7: a redirect before an edit sends the message without it
                redirects.append((decision, redirect, redirect.data or data))
            for s in stores:
                where = LocalTarget(target.account_id, s.mailbox, s.flags | target.flags,
                                    target.internaldate)
                if s.data is None:
                    plain.append(where)
                else:
                    edited.setdefault(s.data, []).append(where)

        for decision, redirect, body in redirects:
            await self._redirect(decision, redirect, body, envelope)

        if plain or remote:
            result = await self.store.accept(data, envelope, plain, remote, message_id=queue_id)
        else:
            result = AcceptResult(queue_id, 0, ())
        for body, targets in edited.items():
            await self.store.accept(body, envelope, targets, (), message_id=new_message_id())

        for _, decision in decisions:
            if decision.result is not None:
                await self._after(message, envelope, decision, queue_id, data)
        return result

    async def _redirect(self, decision: Decision, redirect: Redirect, body: bytes,
                        envelope: Envelope) -> None:
        """RFC 5228 §4.2; the envelope sender follows ``[sieve] redirect_sender``, so the
        next hop checks SPF against our domain rather than the original sender's."""
        mode = self.config.redirect_sender
        account = await self._address_of(decision.account_id)
        sender = redirect_sender(mode, envelope.sender, decision.recipient, account)
        if sender and mode == "srs" and self.srs is not None and (
                not await self._is_ours(sender)):
            # Shevek's SRS (as postsrsd): SRS0=HHHH=TT=domain=local@<srs domain>; a
            # bounce to it is reversed by the directory (transport_security.srs_directory)
            sender = self.srs.forward(sender)
        body = redirect_body(body, account or decision.recipient)
        env = Envelope(sender=sender, smtputf8=envelope.smtputf8,
                       body_8bit=envelope.body_8bit)
        await self._send(body, env, [redirect.address], sieve_local=False)
        log.info("sieve user=%s: redirected to <%s> (envelope sender <%s>)",
                 decision.recipient, redirect.address, sender)

    async def _is_ours(self, address: str) -> bool:
        """Whether the address is in one of our domains (SPF passes for it already)."""
        domain = address.rpartition("@")[2]
        return self.local_domain is not None and await self.local_domain(domain)

    async def _send(self, data: bytes, envelope: Envelope, recipients: Sequence[str],
                    sieve_local: bool = False) -> None:
        """Accept a message for these addresses: local ones straight into INBOX (no
        script runs on it: no loops), others through the outbound queue."""
        local: list[LocalTarget] = []
        remote: list[RemoteRecipient] = []
        for address in recipients:
            try:
                address = normalize_address(address)
                _, domain = split_address(address)
            except AddressError:
                log.warning("sieve: invalid address %r dropped", address)
                continue
            if self.resolve is not None and self.local_domain is not None and (
                    await self.local_domain(domain)):
                found = await self.resolve(address)
                if found is None:
                    log.warning("sieve: no local recipient <%s>", address)
                    continue
                local.extend(LocalTarget(a) for a in found[0] if a not in
                             {t.account_id for t in local})
                remote.extend(RemoteRecipient(r, "NEVER") for r in found[1])
            else:
                remote.append(RemoteRecipient(address, "NEVER"))
        if not local and not remote:
            return
        if local:
            data = b"Return-Path: <" + envelope.sender.encode() + b">\r\n" + data
        await self.store.accept(data, envelope, local, remote)
        if remote and self.on_queued is not None:
            self.on_queued()

    async def _after(self, message: SieveMessage, envelope: Envelope, decision: Decision,
                     queue_id: str, data: bytes) -> None:
        res = decision.result
        assert res is not None
        user = decision.recipient
        notified: set[str] = set()  # RFC 5436 §2.7: one notification per address
        for action in res.actions:
            try:
                if isinstance(action, Reject):
                    await self._reject_later(action, envelope, user, queue_id, data)
                elif isinstance(action, Vacation):
                    await self._vacation(action, message, envelope, decision)
                elif isinstance(action, Notify):
                    await self._notify(action, message, envelope, decision, notified)
            except Exception:  # best effort: the message itself is stored already
                log.exception("sieve user=%s: %s failed", user, type(action).__name__)
        for key, ttl in res.track:
            try:
                await self.store.remember_once(f"{decision.account_id}:{key}", ttl)
            except Exception:
                log.exception("sieve user=%s: duplicate memory failed", user)

    async def _reject_later(self, action: Reject, envelope: Envelope, user: str,
                            queue_id: str, data: bytes) -> None:
        """RFC 5429 §2.1: a reject after the message was accepted (other recipients took
        it) becomes an MDN (reject) or a DSN (ereject) to the envelope sender
        (services/rejection.py); never to <> (no bounce of a bounce)."""
        kind = "DSN" if action.extended else "MDN"
        if not envelope.sender:
            log.info("sieve user=%s: rejected; null sender, no %s", user, kind)
            return
        answer = rejection_message(action, envelope, user, self.hostname, queue_id, data,
                                   self.clock())
        await self._send(answer, Envelope(sender=""), [envelope.sender])
        log.info("sieve user=%s: rejected with an %s to <%s>", user, kind, envelope.sender)

    async def _vacation(self, action: Vacation, message: SieveMessage, envelope: Envelope,
                        decision: Decision) -> None:
        user = decision.recipient
        account = await self.store.get_account_by_id(decision.account_id)
        cfg = self.config
        mine = [account.address] if account is not None else []
        if cfg.vacation_alias_recipient or not mine or _same(user, mine[0]):
            mine.append(user)  # the RCPT address: the account's or one of its aliases
        why, from_ = vacation_plan(message, envelope.sender, mine, action,
                                   cfg.vacation_check_recipient)
        if why is not None:
            log.info("sieve user=%s: no vacation reply to <%s>: %s", user, envelope.sender, why)
            return
        seconds = max(min(action.seconds, cfg.vacation_max_days * 86400),
                      cfg.vacation_min_days * 86400 if action.seconds else 0)
        key = (f"{decision.account_id}:vacation:{action.handle}:"
               f"{normalize_login(envelope.sender)}")
        if seconds > 0 and not await self.store.remember_once(key, seconds, self.clock()):
            log.info("sieve user=%s: vacation: <%s> already answered", user, envelope.sender)
            return
        reply = build_vacation(action, message, from_, envelope.sender, self.hostname,
                               self.clock(), cfg.vacation_rules())
        reply = await self._sign(reply, action.from_ or from_)
        # never an address the script chose (:addresses) as the envelope sender
        sender = (from_ if from_ in mine else mine[0]) if (
            cfg.vacation_send_from_recipient) else ""
        await self._send(reply, Envelope(sender=sender), [envelope.sender])
        log.info("sieve user=%s: vacation reply to <%s> from <%s>", user, envelope.sender,
                 from_)

    async def _notify(self, action: Notify, message: SieveMessage, envelope: Envelope,
                      decision: Decision, notified: set[str]) -> None:
        why = notify_refusal(message)
        if why is not None:
            log.info("sieve user=%s: no notification: %s", decision.recipient, why)
            return
        built = build_notification(action, message, decision.recipient, self.hostname,
                                   self.clock(), notified)
        if built is None:
            return
        to, data = built
        data = await self._sign(data, action.from_ or decision.recipient)
        account = await self.store.get_account_by_id(decision.account_id)
        own = [decision.recipient, *([account.address] if account is not None else [])]
        sender = notification_sender(action, envelope.sender, own, self.config.notify_sender)
        await self._send(data, Envelope(sender=sender), to)
        log.info("sieve user=%s: notification to %s (envelope sender <%s>)",
                 decision.recipient, ", ".join(f"<{a}>" for a in to), sender)

    async def _sign(self, data: bytes, from_: str) -> bytes:
        """DKIM-sign like a submission, when the From domain is ours."""
        if self.signer is None:
            return data
        address = from_.rpartition("<")[2].rstrip(">").strip()
        try:
            domain = split_address(normalize_address(address))[1]
        except AddressError:
            return data
        if self.local_domain is not None and not await self.local_domain(domain):
            return data
        return await self.signer(data, domain)
