"""Sieve in IMAP (RFC 6785): a mailbox whose ``/shared/imapsieve/script`` METADATA entry
(RFC 5464, set with SETMETADATA) names one of its owner's Sieve scripts runs that
script on every message an IMAP client APPENDs to it, COPYs or MOVEs into it, or
changes the flags of (STORE).

The script sees the message and the environment items ``imap.cause`` (APPEND, COPY or
FLAG), ``imap.mailbox``, ``imap.changedflags``, ``imap.user`` and ``imap.email``
(location ``MS``, phase ``post``); its flags start as the message's own (RFC 6785
§3.3). Then:

- keep (explicit or implicit): the message stays, with the flags the script left;
- fileinto: a copy goes to that mailbox (with ``:flags``, or the script's flags);
- an implicit keep that was cancelled (discard, fileinto without :copy, redirect): the
  message is flagged ``\\Deleted`` and expunged from this mailbox;
- redirect: sent as delivery's redirects are (SRS rules included);
- reject, ereject and vacation are errors here (§3.6): nothing is done, the log says why.

The changes the script makes do not run a script again (no loops). At most
``MAX_MESSAGES`` messages of one command are filtered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from ..sieve import (
    Context,
    NeedLookup,
    Redirect,
    Reject,
    SieveEnvelope,
    SieveMessage,
    SieveRuntimeError,
    Store,
    Vacation,
    evaluate,
)
from ..sieve.execute import store_refusal
from ..storage.interfaces import (
    AlreadyExists,
    Envelope,
    FlagMode,
    MailboxInfo,
    MailStore,
    StoreError,
)
from .sieve import MAX_LOOKUP_ROUNDS, Decision, SieveLoadError, SieveService, imap_flags

log = logging.getLogger("pochta.sieve")

SCRIPT_ENTRY = "/shared/imapsieve/script"  # RFC 6785 §3.2
MAX_MESSAGES = 100


async def script_for(store: MailStore, account_id: int, mailbox: MailboxInfo
                     ) -> str | None:
    """The name of the script the mailbox runs, or None."""
    entries = await store.get_metadata(account_id, mailbox.id)
    value = entries.get(SCRIPT_ENTRY)
    name = value.decode("utf-8", "replace").strip() if value else ""
    return name or None


async def run(service: SieveService, account_id: int, user: str, mailbox: MailboxInfo,
              uids: Sequence[int], cause: str, changed: Sequence[str] = ()) -> None:
    """Run the mailbox's script (if it has one) on these messages; never raises."""
    try:
        await _run(service, account_id, user, mailbox, uids, cause, changed)
    except Exception:  # the IMAP command itself succeeded: a failing filter is logged
        log.exception("imapsieve user=%s mailbox=%s: failed", user, mailbox.name)


async def _run(service: SieveService, account_id: int, user: str, mailbox: MailboxInfo,
               uids: Sequence[int], cause: str, changed: Sequence[str]) -> None:
    store = service.store
    if not service.config.enabled or not uids:
        return
    name = await script_for(store, account_id, mailbox)
    if name is None:
        return
    source = await store.get_sieve_script(account_id, name)
    if source is None:
        log.warning("imapsieve user=%s mailbox=%s: no script %r", user, mailbox.name, name)
        return
    try:
        loaded = await service.load(account_id, (name, source))
    except SieveLoadError as exc:
        log.warning("imapsieve user=%s mailbox=%s: %s", user, mailbox.name, exc)
        return
    assert loaded is not None
    _, script, scripts = loaded
    wanted = set(uids[:MAX_MESSAGES])
    metas = [m for m in await store.list_messages(mailbox.id) if m.uid in wanted]
    for meta in metas:
        message = SieveMessage(await store.read_blob(meta.blob_id))
        now = service.clock()
        environment = {**service._environment(""), "location": "MS", "phase": "post",
                       "imap.cause": cause, "imap.mailbox": mailbox.name,
                       "imap.changedflags": " ".join(changed), "imap.user": user,
                       "imap.email": user}
        ctx = Context(user=user, addresses=frozenset({user}), now=now,
                      tz_offset_minutes=time.localtime(now).tm_gmtoff // 60,
                      environment=environment, scripts=scripts, limits=service.limits,
                      flags=meta.flags)
        env = SieveEnvelope("", "")  # no SMTP envelope in IMAP (RFC 6785 §4.1)
        result = None
        for _ in range(MAX_LOOKUP_ROUNDS):
            try:
                result = evaluate(script, message, env, ctx)
                break
            except NeedLookup as need:
                await service._lookup(need.key, account_id, user, ctx, now)
            except SieveRuntimeError as exc:
                log.warning("imapsieve user=%s mailbox=%s uid=%d: script %r: %s", user,
                            mailbox.name, meta.uid, name, exc)
                break
        if result is None:
            continue
        bad = [a for a in result.actions if isinstance(a, (Reject, Vacation))]
        if bad:
            log.warning("imapsieve user=%s mailbox=%s uid=%d: script %r: %s is not "
                        "allowed in IMAP (RFC 6785 §3.6); nothing done", user, mailbox.name,
                        meta.uid, name, type(bad[0]).__name__.lower())
            continue
        decision = Decision(account_id, user, name, result)
        await _apply(service, decision, mailbox, meta.uid, meta.flags, message.data)


async def _apply(service: SieveService, decision: Decision, mailbox: MailboxInfo, uid: int,
                 flags: frozenset[str], original: bytes) -> None:
    store = service.store
    result = decision.result
    assert result is not None
    kept = False
    for action in result.actions:
        if isinstance(action, Store):
            target = mailbox.name if action.mailbox.upper() == "INBOX" and (
                action.implicit or mailbox.name.upper() == "INBOX") else action.mailbox
            if action.implicit or target == mailbox.name:
                kept = True
                new = imap_flags(action.flags)
                if new != flags:
                    await store.store_flags(mailbox.id, [uid], new, FlagMode.REPLACE)
                continue
            refusal = store_refusal(target, True, True)  # a name IMAP could not show
            if refusal is not None:
                log.warning("imapsieve user=%s: fileinto: %s", decision.recipient,
                            refusal.replace("kept in INBOX", "the message stays"))
                kept = True
                continue
            info = await store.get_mailbox(decision.account_id, target)
            if info is None and (action.create or service.config.fileinto_autocreate):
                try:
                    info = await store.create_mailbox(decision.account_id, target,
                                                      subscribe=True)
                except AlreadyExists:
                    info = await store.get_mailbox(decision.account_id, target)
                except StoreError as exc:
                    log.warning("imapsieve user=%s: fileinto %r: %s", decision.recipient,
                                target, exc)
            if info is None:
                log.warning("imapsieve user=%s: fileinto %r: no such mailbox; the message "
                            "stays", decision.recipient, target)
                kept = True
                continue
            pairs = await store.copy_messages(mailbox.id, [uid], info.id)
            if pairs:
                await store.store_flags(info.id, [pairs[0][1]], imap_flags(action.flags),
                                        FlagMode.REPLACE)
        elif isinstance(action, Redirect):
            # RFC 5293 §7: the message as it was when the redirect ran
            body = action.data if action.data is not None else original
            await service._redirect(decision, action, body,
                                    Envelope(sender=decision.recipient))
    if not kept:
        await store.store_flags(mailbox.id, [uid], frozenset({"\\Deleted"}), FlagMode.ADD)
        await store.expunge(mailbox.id, [uid])
        log.info("imapsieve user=%s mailbox=%s uid=%d: removed by script %r",
                 decision.recipient, mailbox.name, uid, decision.script)
