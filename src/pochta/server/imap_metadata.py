"""METADATA (RFC 5464): GETMETADATA and SETMETADATA for mailboxes and the server (mailbox
name ""), entries kept by the store (storage/interfaces_imap.py), and the unsolicited
METADATA responses that tell a client of entries others changed (§4.4.2): for the server
and the selected mailbox after ENABLE METADATA (§4.1), for the mailboxes NOTIFY names
with MailboxMetadataChange and for the server with ServerMetadataChange (RFC 5465 §5.6,
§5.7; imap_notify.py sets ``notify_targets``).

Entries have no change notifier in the store. A session that watches them keeps a digest
of each watched mailbox's entries and reads them again at a command's end when a
SETMETADATA ran in this process since its last look (``_GENERATION``; IDLE wakes on it at
once), and at least every ``POLL`` seconds otherwise, which is how writes by other worker
processes are seen. Changes this session made itself are not reported (RFC 5465 §5).

Server ``/shared/`` entries are the administrator's (services/server_metadata.py): a
user's SETMETADATA of one is refused with ``NO [NOPERM]`` (RFC 5464 §4.3 "can't set
annotations"; the code is RFC 5530's), and the entry cap counts only the server entries
the user can set, the ``/private/`` ones.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Iterable, Mapping

from ..proto.imap import metadata as md
from ..proto.imap.errors import ImapError, Nonexistent, NoPerm
from ..proto.imap.metadata import parse_entries, parse_entry
from ..proto.imap.parser import ParseError, Reader
from ..proto.imap.response import astring
from ..services import server_metadata
from ..storage.interfaces import StoreError
from . import imap_auth
from .imap_session import ImapSession
from .imap_shared import is_shared_name, resolve

MAX_ENTRIES = 100  # per mailbox and account (TOOMANY)
MAX_VALUE = 64 * 1024  # octets of one value (MAXSIZE)
POLL = 5.0  # seconds: entries written by other processes are seen this late at most

# bumped by every SETMETADATA in this process; sessions in IDLE wait on _WAITERS
_GENERATION = 0
_WAITERS: set[asyncio.Future[None]] = set()


def _changed() -> None:
    global _GENERATION
    _GENERATION += 1
    for waiter in _WAITERS:
        if not waiter.done():
            waiter.set_result(None)
    _WAITERS.clear()


async def changed(timeout: float = POLL) -> None:
    """Until a SETMETADATA in this process, or ``timeout`` seconds."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    _WAITERS.add(waiter)
    try:
        await asyncio.wait([waiter], timeout=timeout)
    finally:
        _WAITERS.discard(waiter)


def _digest(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=16).digest()


class MetadataTracker:
    """What one session last saw of its account's entries (``account_metadata``: the
    server's, 0, and every own mailbox's, as digests), so that a mailbox that becomes
    watched later (SELECT, NOTIFY SET) is compared with what it had all along."""

    def __init__(self, s: ImapSession) -> None:
        self.s = s
        self.notify_targets: dict[int, str] = {}  # set by NOTIFY: mailbox id -> name
        self.seen: dict[int, dict[str, bytes]] | None = None  # mailbox id -> entry -> digest
        self.generation = -1
        self.last_read = 0.0
        self.foreign: set[int] = set()  # watched mailboxes of other accounts, last look

    def targets(self) -> dict[int, str]:
        out = dict(self.notify_targets)
        s = self.s
        if s.metadata_enabled:  # RFC 5464 §4.1: the server and what the client looks at
            out[0] = ""
            sel = s.selected
            if sel is not None:  # its own, another user's shared with it, a public one
                out[sel.info.id] = sel.info.name
        return out

    async def report(self) -> None:
        """Send ``* METADATA mailbox entry ...`` (names only, §4.4.2) for each watched
        mailbox whose entries changed since the last look; a deleted entry is named too
        (RFC 5465 §5.6). The first look only remembers."""
        s = self.s
        now = time.monotonic()
        targets = self.targets()
        # mailboxes of other accounts (shared with this user) and public folders are not
        # in account_metadata: their /shared entries and this user's /private ones are
        # read one by one (the session has r on them: it selected them, or NOTIFY named
        # them, and a name it may not see never resolves)
        foreign = {box_id for box_id, name in targets.items()
                   if box_id and is_shared_name(name)}
        if (self.seen is not None and self.generation == _GENERATION
                and now - self.last_read < POLL and foreign == self.foreign):
            return  # no SETMETADATA here since, and other processes' are polled
        try:
            entries = await s.store.account_metadata(s.account_id)
            for box_id in sorted(foreign):
                entries[box_id] = await s.store.get_metadata(s.account_id, box_id)
        except StoreError:
            return
        self.generation, self.last_read = _GENERATION, now
        fresh = {box: {k: _digest(v) for k, v in values.items()}
                 for box, values in entries.items()}
        old, self.seen = self.seen, fresh
        known, self.foreign = self.foreign, foreign
        if old is None:
            return
        for box_id, name in sorted(targets.items()):
            if box_id in foreign and box_id not in known:
                continue  # watched from now on: its entries are what it had all along
            before, after = old.get(box_id, {}), fresh.get(box_id, {})
            names = sorted(k for k in before.keys() | after.keys()
                           if before.get(k) != after.get(k))
            if names:
                shown = s.mailbox_name(name) if box_id else b'""'
                s.send(b"* METADATA " + shown + b"".join(b" " + astring(k) for k in names)
                       + b"\r\n")

    def own(self, box_id: int, values: Mapping[str, bytes | None]) -> None:
        """This session's own SETMETADATA: known, so not reported back to it."""
        if self.seen is None:
            return
        seen = self.seen.setdefault(box_id, {})
        for entry, value in values.items():
            if value is None:
                seen.pop(entry, None)
            else:
                seen[entry] = _digest(value)

    async def wait(self) -> None:
        await changed()


_TRACKERS: dict[int, MetadataTracker] = {}


def _forget(key: int) -> None:
    _TRACKERS.pop(key, None)


def tracker(s: ImapSession, create: bool = True) -> MetadataTracker | None:
    """The session's tracker; made (and hooked to the session's sync and IDLE) on first
    use with ``create``."""
    found = _TRACKERS.get(id(s))
    if found is not None or not create:
        return found
    made = _TRACKERS[id(s)] = MetadataTracker(s)
    s.metadata_report = made.report
    if s.notify_wait is None:
        s.notify_wait = made.wait
    s.on_close.append(functools.partial(_forget, id(s)))
    return made


async def cmd_enable(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    """ENABLE (imap_auth), then watch entries if it enabled METADATA (RFC 5464 §4.1)."""
    first = tracker(s, create=False) is None
    await imap_auth.cmd_enable(s, tag, r, uid)
    watch = tracker(s) if s.metadata_enabled else None
    if watch is not None and first:
        await watch.report()  # the first look, from which changes are told


async def _mailbox_id(s: ImapSession, name: str, entries: Iterable[str] = (),
                      setting: bool = False) -> int:
    """The mailbox's id (0: the server's own entries), also of another user's mailbox
    shared with this one or of a public folder (imap_shared.resolve), whose rights
    decide (RFC 5464 §3.3 with RFC 4314): reading any entry needs ``r``, setting a
    ``/private`` entry (the user's own) ``r`` too, setting a ``/shared`` one (every
    reader sees it) ``w``. A mailbox the user may not know of is NONEXISTENT."""
    if name == "":
        return 0  # the server's own entries
    box = await resolve(s, name)
    if box is None:
        raise Nonexistent
    need = {"r"}
    if setting and any(e.lower().startswith("/shared") for e in entries):
        need.add("w")
    if not need <= set(box.rights):
        raise NoPerm(f"Needs the {''.join(sorted(need))} rights on this mailbox")
    return box.info.id


async def cmd_getmetadata(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    maxsize: int | None = None
    depth = 0
    if r.accept("("):
        while not r.accept(")"):
            r.maybe_sp()
            opt = r.atom().upper()
            r.sp()
            if opt == "MAXSIZE":
                maxsize = r.number()
            elif opt == "DEPTH":
                word = r.atom().lower()
                if word not in ("0", "1", "infinity"):
                    raise ParseError("DEPTH is 0, 1 or infinity")
                depth = -1 if word == "infinity" else int(word)
            else:
                raise ParseError(f"unknown GETMETADATA option {opt}")
        r.sp()
    name = r.mailbox()  # "" names the server
    r.sp()
    wanted = parse_entries(r)
    r.end()
    mailbox_id = await _mailbox_id(s, name)
    if mailbox_id == server_metadata.SERVER:
        config = s.ctx.config
        stored = await server_metadata.server_entries(
            s.store, s.account_id, config.imap.admin_contact, config.hostname)
    else:
        stored = await s.store.get_metadata(s.account_id, mailbox_id)
    found = md.select(stored, wanted, depth)
    longest = max((len(v) for v in found.values() if maxsize is not None and len(v) > maxsize),
                  default=0)
    shown = {k: v for k, v in found.items() if maxsize is None or len(v) <= maxsize}
    if shown:
        s.send(md.response(s.mailbox_name(name) if name else b'""', shown))
    code = f"METADATA LONGENTRIES {longest}" if longest else None
    s.ok(tag, "GETMETADATA completed", code)


async def cmd_setmetadata(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    name = r.mailbox()  # "" names the server
    r.sp()
    r.expect("(")
    values: dict[str, bytes | None] = {}
    while True:
        entry = parse_entry(r)
        r.sp()
        if r.accept("NIL"):
            values[entry] = None
        else:
            values[entry] = r.string_bytes()
        if r.accept(")"):
            break
        r.sp()
    r.end()
    too_big = max((len(v) for v in values.values() if v is not None), default=0)
    if too_big > MAX_VALUE:
        raise ImapError("Value too large", f"METADATA MAXSIZE {MAX_VALUE}")
    mailbox_id = await _mailbox_id(s, name, values, setting=True)
    server = mailbox_id == server_metadata.SERVER
    if server and any(server_metadata.is_admin_entry(k) for k in values):
        raise ImapError("Server /shared entries are set by the administrator", "NOPERM")
    stored = await s.store.get_metadata(s.account_id, mailbox_id)
    after = set(stored) | {k for k, v in values.items() if v is not None}
    after -= {k for k, v in values.items() if v is None}
    if server:  # the administrator's entries are not this user's to count
        after = {k for k in after if not server_metadata.is_admin_entry(k)}
    if len(after) > MAX_ENTRIES:
        raise ImapError("Too many entries", "METADATA TOOMANY")
    await s.store.set_metadata(s.account_id, mailbox_id, values)
    mine = tracker(s, create=False)
    if mine is not None:
        mine.own(mailbox_id, values)
    _changed()
    s.ok(tag, "SETMETADATA completed")
