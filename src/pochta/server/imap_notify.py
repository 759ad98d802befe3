"""NOTIFY (RFC 5465): what changes in mailboxes other than the selected one, reported as
STATUS (new, expunged, flag-changed messages) and LIST (created, deleted, renamed or
(un)subscribed mailboxes) responses, and METADATA for changed entries (§5.6, §5.7, told
by imap_metadata.py). The selected mailbox keeps its usual EXISTS / EXPUNGE / FETCH
responses (``ImapSession.sync``); with ``MessageNew (fetch-att ...)`` each new message
there is also sent as a FETCH of those attributes, after its EXISTS (§5.2).

The session keeps a snapshot of each watched mailbox's counts; every ``sync`` (each
command's end, NOOP, and IDLE wake-ups) compares it with the store. IDLE wakes on the
store's change notifier for those mailboxes (``watch``), which also sees writes by
other worker processes, and at least every ``POLL`` seconds for mailbox names and
subscriptions, which have no notifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

from ..proto.imap import bodystructure as bs
from ..proto.imap.errors import ImapError
from ..proto.imap.fetch import FetchAtt, FetchOptions, FetchRequest, render, streamable
from ..proto.imap.notify import SUPPORTED, BadEvent, NotifySpec, parse_notify, status_items
from ..proto.imap.parser import Reader
from ..storage.interfaces import (
    ChangeWatcher,
    MailboxInfo,
    MailboxStatus,
    NotFound,
    StoreError,
)
from . import imap_metadata
from .imap_message import STREAM_ABOVE, _fetch_streamed, _load
from .imap_session import ImapSession
from .imap_shared import is_shared_name, visible_shared

POLL = 5.0  # seconds: mailbox names and subscriptions have no change notifier
MAX_WATCHED = 200  # mailboxes one session watches with the store's notifier
FLUSH_ABOVE = 256 << 10  # MessageNew FETCH data held before it is written out


class NotifyState:
    def __init__(self, s: ImapSession, spec: NotifySpec) -> None:
        self.s = s
        self.spec = spec
        self.counts: dict[int, MailboxStatus] = {}
        self.names: dict[int, str] = {}  # every mailbox it knows of: id -> name
        self.subscribed: set[str] = set()
        self.watchers: dict[int, ChangeWatcher] = {}
        self._wants_names = any(g.events & {"MailboxName", "SubscriptionChange"}
                                for g in spec.groups)

    def _events(self, info: MailboxInfo) -> frozenset[str]:
        return self.spec.for_mailbox(info.name, inbox=info.name == "INBOX",
                                     subscribed=info.name in self.subscribed,
                                     personal=not is_shared_name(info.name))

    async def _mailboxes(self) -> list[MailboxInfo]:
        """The user's own mailboxes, then other users' and public ones it may read ('r':
        their events are STATUS responses, RFC 4314 §4), under the names it sees them by
        (``Other Users/...``, ``Public/...``)."""
        s = self.s
        boxes = await s.store.list_mailboxes(s.account_id)
        for grant, shown, rights in await visible_shared(s):
            if "r" in rights:
                boxes.append(MailboxInfo(grant.mailbox_id, grant.owner_id, shown, 0, 0, 0,
                                         None, False))
        return boxes

    def _watched(self, boxes: list[MailboxInfo]) -> list[MailboxInfo]:
        sel = self.s.selected
        return [b for b in boxes if (sel is None or sel.info.id != b.id)
                and self._events(b) & {"MessageNew", "MessageExpunge", "FlagChange"}]

    async def _status_line(self, name: str, st: MailboxStatus, items: list[str]) -> bytes:
        values = {"MESSAGES": st.messages, "UIDNEXT": st.uidnext,
                  "UIDVALIDITY": st.uidvalidity, "HIGHESTMODSEQ": st.highestmodseq}
        body = " ".join(f"{i} {values[i]}" for i in items)
        return b"* STATUS " + self.s.mailbox_name(name) + b" (" + body.encode() + b")\r\n"

    async def start(self) -> None:
        """Take the first snapshot; with SET STATUS send each watched mailbox's STATUS
        (RFC 5465 §3)."""
        boxes = await self._mailboxes()
        self.subscribed = set(await self.s.store.list_subscriptions(self.s.account_id))
        self.names = {b.id: b.name for b in boxes}
        if self.spec.wants_metadata:
            self._metadata_targets(boxes)  # the first look (at NOTIFY's sync) is silent
        for b in self._watched(boxes)[:MAX_WATCHED]:
            st = await self.s.store.mailbox_status(b.id)
            self.counts[b.id] = st
            self.watchers[b.id] = self.s.store.watch(b.id)
            if self.spec.status:
                self.s.send(await self._status_line(b.name, st, status_items(self._events(b))))

    async def report(self) -> None:
        """Tell the client what changed since the last report."""
        s = self.s
        try:
            boxes = await self._mailboxes()
            subscribed = set(await s.store.list_subscriptions(s.account_id))
        except StoreError:
            return
        by_id = {b.id: b for b in boxes}
        if self._wants_names:
            self._report_names(by_id, subscribed)
        self.subscribed = subscribed
        self.names = {b.id: b.name for b in boxes}
        watched = self._watched(boxes)[:MAX_WATCHED]
        for b in watched:
            try:
                st = await s.store.mailbox_status(b.id)
            except StoreError:
                continue
            old = self.counts.get(b.id)
            self.counts[b.id] = st
            if b.id not in self.watchers:
                self.watchers[b.id] = s.store.watch(b.id)
            if old is None:
                continue
            events = self._events(b)
            items: list[str] = []
            if (old.messages, old.uidnext) != (st.messages, st.uidnext) and (
                    events & {"MessageNew", "MessageExpunge"}):
                items = status_items(events & {"MessageNew", "MessageExpunge"})
            elif old.highestmodseq != st.highestmodseq and "FlagChange" in events:
                items = status_items(frozenset({"FlagChange"}))
            if items:
                s.send(await self._status_line(b.name, st, items))
        if self.spec.wants_metadata:
            self._metadata_targets(boxes)
        keep = {b.id for b in watched}
        for box_id in list(self.watchers):
            if box_id not in keep:
                self.watchers.pop(box_id).close()
                self.counts.pop(box_id, None)

    def _metadata_targets(self, boxes: list[MailboxInfo]) -> None:
        """The mailboxes (and the server, 0) whose entry changes are told (§5.6, §5.7);
        the selected one too: these are not message events."""
        targets = {b.id: b.name for b in boxes
                   if "MailboxMetadataChange" in self._events(b)}
        if self.spec.server_metadata:
            targets[0] = ""
        watch = imap_metadata.tracker(self.s)
        assert watch is not None
        watch.notify_targets = targets

    async def fetch_new(self, uids: list[int]) -> None:
        """FETCH the MessageNew attributes of new messages in the selected mailbox
        (§5.2), with UID so the client can tell them apart; \\Seen is never set."""
        s, sel = self.s, self.s.selected
        if sel is None:
            return
        req = FetchRequest([FetchAtt("UID"), *(a for a in self.spec.fetch if a.name != "UID")])
        opts = FetchOptions(utf8=s.utf8, rev1_recent=s.rev1_recent, condstore=s.condstore,
                            uidonly=s.core.uidonly)
        if req.has("SAVEDATE"):
            opts.save_dates = await s.store.save_dates(sel.info.id, uids)
        stream = req.needs_body and streamable(req)
        pending = 0  # bytes held in the core: written out as FETCH does, not all at once
        for u in uids:
            meta = sel.meta.get(u)
            if meta is None:
                continue
            await s.pause()
            if pending > FLUSH_ABOVE:
                await s.flush()
                pending = 0
            if stream and meta.size > STREAM_ABOVE:
                with contextlib.suppress(NotFound):  # expunged meanwhile: nothing to say
                    if await _fetch_streamed(s, sel.seq_of(u), meta, req, u in sel.recent,
                                             opts, False):
                        continue
            part = (await s.ctx.imap_parts.get(sel.info, meta, functools.partial(_load, s, meta))
                    if req.needs_body else None)
            if req.needs_body and part is None:
                continue  # expunged by another session meanwhile
            try:
                line = render(sel.seq_of(u), meta, req, None, u in sel.recent, opts,
                              part=part)
            except bs.UnknownCTE:
                continue  # BINARY of an unknown encoding: a FETCH would say NO
            s.send(line)
            pending += len(line)

    def _report_names(self, by_id: dict[int, MailboxInfo], subscribed: set[str]) -> None:
        """MailboxName and SubscriptionChange as LIST responses (RFC 5465 §5.4, §5.5)."""
        send, name = self.s.send, self.s.mailbox_name
        for box_id, old in self.names.items():
            info = by_id.get(box_id)
            if info is None:
                if "MailboxName" in self.spec.for_mailbox(
                        old, inbox=old == "INBOX", subscribed=old in subscribed,
                        personal=not is_shared_name(old)):
                    send(b'* LIST (\\NonExistent) "/" ' + name(old) + b"\r\n")
            elif info.name != old and "MailboxName" in self._events(info):
                send(b'* LIST () "/" ' + name(info.name) + b' ("OLDNAME" ('
                     + name(old) + b"))\r\n")
        for box_id, info in by_id.items():
            if box_id not in self.names and "MailboxName" in self._events(info):
                send(b'* LIST () "/" ' + name(info.name) + b"\r\n")
        for changed in sorted(subscribed ^ self.subscribed):
            events = self.spec.for_mailbox(changed, inbox=changed == "INBOX",
                                           subscribed=True,
                                           personal=not is_shared_name(changed))
            if "SubscriptionChange" in events:
                attrs = b"\\Subscribed" if changed in subscribed else b""
                send(b"* LIST (" + attrs + b') "/" ' + name(changed) + b"\r\n")

    async def wait(self) -> None:
        """Until a watched mailbox changes (any worker process), an entry changes (this
        process), or POLL seconds."""
        waits: list[asyncio.Future[object]] = [
            asyncio.ensure_future(w.wait(None)) for w in self.watchers.values()]
        if self.spec.wants_metadata or self.s.metadata_enabled:
            waits.append(asyncio.ensure_future(imap_metadata.changed()))
        try:
            await asyncio.wait(waits, timeout=POLL) if waits else await asyncio.sleep(POLL)
        finally:
            for t in waits:
                if not t.done():
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t

    def close(self) -> None:
        for w in self.watchers.values():
            w.close()
        self.watchers.clear()


_STATES: dict[int, NotifyState] = {}


def _stop(s: ImapSession) -> None:
    state = _STATES.pop(id(s), None)
    if state is not None:
        state.close()
    s.notifier = None
    s.notify_fetch = None
    s.notify_wait = None
    watch = imap_metadata.tracker(s, create=False)
    if watch is not None:
        watch.notify_targets = {}
        if s.metadata_enabled:  # ENABLE METADATA still wants its entries in IDLE
            s.notify_wait = watch.wait


async def cmd_notify(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    try:
        spec = parse_notify(r)
    except BadEvent as exc:
        raise ImapError(f"Unsupported event: {exc}",
                        "BADEVENT (" + " ".join(SUPPORTED) + ")") from None
    first = id(s) not in _STATES
    _stop(s)
    if spec is not None:
        state = NotifyState(s, spec)
        _STATES[id(s)] = state
        s.notifier = state.report
        s.notify_wait = state.wait
        if spec.fetch:
            s.notify_fetch = state.fetch_new
        if first:
            s.on_close.append(lambda: _stop(s))
        await state.start()
    # a successful NOTIFY SET is also a NOOP (§3.1): what changed is told now
    await s.sync(allow_expunge=True)
    s.ok(tag, "NOTIFY completed")
