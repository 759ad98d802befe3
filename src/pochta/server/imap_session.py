"""What IMAP command handlers work with: ``ImapSession``, one per connection, joining the
sans-IO core (``proto/imap/session.py``: framing, state, responses) to the connection and
the store. A store error becomes an IMAP failure in one place, the command boundary
(``imap.dispatch``, with the error's own ``imap_error``: pochta/errors.py).

Module order (no import cycles): proto/imap → imap_session → the handler modules
(imap_auth, imap_mailbox, imap_message, imap_sort) → imap_commands (the handler table) →
imap (the connection loop, ``handle_imap``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..config import Listener
from ..proto.imap.acl import OWNER_RIGHTS
from ..proto.imap.mutf7 import encode_mutf7
from ..proto.imap.parser import Reader
from ..proto.imap.response import astring, seq_set
from ..proto.imap.search import Candidate, SearchContext, SearchProgram, matches
from ..proto.imap.selected import Selected
from ..proto.imap.session import (
    NEED_DATA,
    Event,
    ImapServerSession,
    SessionLimits,
    State,
)
from ..storage.interfaces import (
    Account,
    ChangeWatcher,
    MessageMeta,
    StoreError,
)
from .listener import Connection

if TYPE_CHECKING:
    from .context import ServerContext

log = logging.getLogger("pochta.imap")

# a command in progress gives the event loop back at least this often (seconds)
YIELD_INTERVAL = 0.01


class SpoolFile:
    """A private temporary file (0600) that a big APPEND literal is written to as it
    arrives (``LiteralSink``), then given to ``accept`` as a ``SpooledMessage``. A write
    that fails (a full disk) does not break the session: the rest of the literal is read
    and dropped, and APPEND answers ``NO [LIMIT]`` (``failed``)."""

    def __init__(self, directory: Path, size: int) -> None:
        self.size = size
        self.written = 0
        self.failed = False
        self.path = ""
        self._file: BinaryIO | None = None
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, self.path = tempfile.mkstemp(prefix="append-", dir=directory)
            self._file = os.fdopen(fd, "wb")
        except OSError as exc:
            log.warning("cannot spool an APPEND literal in %s: %s", directory, exc)
            self.failed = True

    def write(self, data: bytes) -> None:
        if self.failed or self._file is None:
            return
        try:
            self._file.write(data)
        except OSError as exc:
            log.warning("cannot spool an APPEND literal to %s: %s", self.path, exc)
            self.failed = True
            return
        self.written += len(data)

    def finish(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                self.failed = True

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        if self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


@dataclass(slots=True)
class SearchUpdate:
    """A search the client asked to keep up to date (CONTEXT=SEARCH, RFC 5267 §4)."""

    prog: SearchProgram
    uid: bool
    uids: set[int]
    # CONTEXT=SORT (RFC 5267 §4.3): the result's UIDs in sort order, and how to sort a
    # set of UIDs again; None for a SEARCH context (positions are then 0)
    order: list[int] | None = None
    sorter: Callable[[set[int]], Awaitable[list[int]]] | None = None


class CloseSession(Exception):
    """Stop the session (after LOGOUT, BYE or a lost connection)."""


class ImapSession:
    """The per-connection context of the handlers: the core, the connection, the store,
    the account and the selected mailbox."""

    def __init__(
        self,
        conn: Connection,
        ctx: ServerContext,
        listener: Listener,
        idle_timeout: float | None = None,
    ) -> None:
        self.conn = conn
        self.ctx = ctx
        self.store = ctx.store
        self.listener = listener
        limits = ctx.config.limits
        self.idle_timeout = idle_timeout if idle_timeout is not None else limits.imap_idle_timeout
        self.limits = ctx.config.imap
        self.preauth_timeout = min(self.limits.preauth_timeout, self.idle_timeout)
        self.append_limit = limits.max_message_size
        self.core = ImapServerSession(SessionLimits(
            preauth_max_command=self.limits.preauth_max_command,
            max_literal=self.limits.max_literal,
            max_command=self.limits.max_command,
            max_literals=self.limits.max_literals,
            append_limit=self.append_limit,
            max_errors=limits.max_errors,
        ), spool=self._spool_file)
        self._last_yield = time.monotonic()
        self.account: Account | None = None
        self.selected: Selected | None = None
        self.watcher: ChangeWatcher | None = None
        self.contexts: dict[str, SearchUpdate] = {}  # SEARCH RETURN (UPDATE), by tag
        # ACL (RFC 4314) rights on the selected mailbox: all of them on the user's own
        self.rights = OWNER_RIGHTS
        # the aliases listing the user, its ACL groups: read once, when first needed
        self.acl_groups: list[str] | None = None
        # NOTIFY (RFC 5465, imap_notify.py): reports other mailboxes' changes at each
        # sync; IDLE also waits for notify_wait; on_close runs when the session ends
        self.notifier: Callable[[], Awaitable[None]] | None = None
        self.notify_wait: Callable[[], Awaitable[None]] | None = None
        self.on_close: list[Callable[[], None]] = []
        # NOTIFY's MessageNew fetch attributes (RFC 5465 §5.2): called with the UIDs of
        # new messages in the selected mailbox that this session did not add itself
        self.notify_fetch: Callable[[list[int]], Awaitable[None]] | None = None
        # UIDs this session APPENDed/COPYed there (None, not an empty set: idle sessions
        # stay small)
        self.added_here: set[int] | None = None
        # METADATA changes made by others (imap_metadata.py): ENABLE METADATA (RFC 5464
        # §4.1) or NOTIFY's metadata events (RFC 5465 §5.6, §5.7)
        self.metadata_enabled = False
        self.metadata_report: Callable[[], Awaitable[None]] | None = None

    def _spool_file(self, size: int) -> SpoolFile:
        return SpoolFile(self.ctx.config.data_path / "tmp", size)

    # --- protocol state lives in the core ----------------------------------------------
    @property
    def state(self) -> State:
        return self.core.state

    @state.setter
    def state(self, value: State) -> None:
        self.core.state = value

    @property
    def rev2(self) -> bool:
        return self.core.rev2

    @property
    def utf8(self) -> bool:
        return self.core.utf8

    @property
    def condstore(self) -> bool:
        return self.core.condstore

    @condstore.setter
    def condstore(self, value: bool) -> None:
        self.core.condstore = value

    @property
    def qresync(self) -> bool:
        return self.core.qresync

    @property
    def rev1_recent(self) -> bool:
        return not self.core.rev2

    @property
    def timeout(self) -> float:
        """How long to wait for the client: short before login, the autologout after."""
        if self.core.state is State.NOT_AUTHENTICATED:
            return self.preauth_timeout
        return self.idle_timeout

    @property
    def account_id(self) -> int:
        assert self.account is not None
        return self.account.id

    async def pause(self) -> None:
        """Called between messages by long commands (SEARCH, FETCH, STORE, SORT): gives
        the event loop to other connections every YIELD_INTERVAL, so no command holds it
        for long."""
        now = time.monotonic()
        if now - self._last_yield >= YIELD_INTERVAL:
            await asyncio.sleep(0)
            self._last_yield = time.monotonic()

    # --- output (buffered in the core) ---------------------------------------------------
    def send(self, data: bytes) -> None:
        self.core.send(data)

    def ok(self, tag: str, text: str, code: str | None = None) -> None:
        self.core.ok(tag, text, code)

    def no(self, tag: str, text: str, code: str | None = None) -> None:
        self.core.no(tag, text, code)

    def bad(self, tag: str, text: str) -> None:
        self.core.bad(tag, text)

    def write_out(self) -> None:
        data = self.core.data_to_send()
        if data:
            self.conn.write(data)

    async def flush(self) -> None:
        """Write what the core holds and wait until the socket took it."""
        self.write_out()
        await self.conn.drain()

    def mailbox_name(self, name: str) -> bytes:
        """A mailbox name for responses: UTF-8 after ENABLE, else modified UTF-7."""
        return astring(name if self.utf8 else encode_mutf7(name), self.utf8)

    # --- input ---------------------------------------------------------------------------
    async def read_more(self, timeout: float | None) -> None:
        data = await self.conn.read(timeout)
        if not data:
            raise CloseSession
        self.core.receive_data(data)

    async def next_event(self) -> Event:
        """The core's next event, reading from the connection as needed (AUTHENTICATE's
        responses)."""
        while True:
            event = self.core.next_event()
            if event is not NEED_DATA:
                return event
            await self.flush()
            await self.read_more(self.timeout)

    # --- selected-mailbox bookkeeping --------------------------------------------------
    async def sync(self, allow_expunge: bool) -> None:
        """Send what changed in the selected mailbox since we last looked (§7.5.1), after
        what NOTIFY reports of the others."""
        if self.notifier is not None:
            await self.notifier()
        if self.metadata_report is not None:
            await self.metadata_report()
        sel = self.selected
        if sel is None:
            return
        top = sel.top_uid
        try:
            changes = await self.store.changes_since(sel.info.id, sel.modseq)
        except StoreError:
            return  # the mailbox was deleted under us; next command will see it
        first_recent: int | None = None
        newest = max((m.uid for m in changes.changed if m.uid > top), default=0)
        if newest and not sel.readonly:
            first_recent = await self.claim_new(sel, newest)
        removed: list[bytes] = []
        if self.contexts and allow_expunge:
            # CONTEXT=SEARCH: expunged results leave the context before the EXPUNGE
            # responses renumber the messages (RFC 5267 §4.4)
            doomed = (sel.pending_expunge | set(changes.expunged)) & set(sel.meta)
            removed = self._context_removals(doomed)
        out, _ = sel.apply(changes, first_recent, self.rev1_recent, self.condstore,
                           flush=allow_expunge, qresync=self.qresync)
        for line in removed + out:
            self.send(line)
        if self.notify_fetch is not None and sel.top_uid > top:
            own = self.added_here or set()
            fresh = [u for u in sel.uids[bisect.bisect_right(sel.uids, top):] if u not in own]
            self.added_here = None
            if fresh:
                await self.notify_fetch(fresh)
        if self.contexts and changes.changed:
            await self._context_updates(changes.changed)

    # --- CONTEXT=SEARCH (RFC 5267 §4): SEARCH RETURN (UPDATE) -----------------------------
    def _context_line(self, tag: str, ctx: SearchUpdate, what: bytes, uids: list[int]
                      ) -> bytes:
        sel = self.selected
        assert sel is not None
        numbers = sorted(uids) if ctx.uid else sorted(sel.seq_of(u) for u in uids)
        return (b'* ESEARCH (TAG "' + tag.encode() + b'")' + (b" UID" if ctx.uid else b"")
                + b" " + what + b" (0 " + seq_set(numbers) + b")\r\n")

    def _sorted_line(self, tag: str, ctx: SearchUpdate, what: bytes,
                     placed: list[tuple[int, int]]) -> bytes:
        """A sorted context's ADDTO/REMOVEFROM: a (position, message) pair per message,
        positions counted from 1 in the order the client applies them (RFC 5267 §4.3)."""
        sel = self.selected
        assert sel is not None
        pairs = b" ".join(b"%d %d" % (pos, uid if ctx.uid else sel.seq_of(uid))
                          for pos, uid in placed)
        return (b'* ESEARCH (TAG "' + tag.encode() + b'")' + (b" UID" if ctx.uid else b"")
                + b" " + what + b" (" + pairs + b")\r\n")

    def _remove_sorted(self, tag: str, ctx: SearchUpdate, gone: set[int]) -> bytes:
        assert ctx.order is not None
        # from the end, so each position is still right when the client applies it
        placed = [(i + 1, u) for i, u in reversed(list(enumerate(ctx.order))) if u in gone]
        ctx.order = [u for u in ctx.order if u not in gone]
        return self._sorted_line(tag, ctx, b"REMOVEFROM", placed)

    def _context_removals(self, doomed: set[int]) -> list[bytes]:
        out: list[bytes] = []
        for tag, ctx in self.contexts.items():
            gone = sorted(ctx.uids & doomed)
            if gone:
                if ctx.order is not None:
                    out.append(self._remove_sorted(tag, ctx, set(gone)))
                else:
                    out.append(self._context_line(tag, ctx, b"REMOVEFROM", gone))
                ctx.uids -= set(gone)
        return out

    async def _context_updates(self, changed: tuple[MessageMeta, ...]) -> None:
        sel = self.selected
        assert sel is not None
        live = [m for m in changed if m.uid in sel.meta and m.uid not in sel.pending_expunge]
        if not live:
            return
        for tag, ctx in list(self.contexts.items()):
            search = SearchContext(sel.count, sel.top_uid, sel.saved_uids)
            now: set[int] = set()
            for m in live:
                c = Candidate(sel.seq_of(m.uid), sel.meta[m.uid], m.uid in sel.recent)
                if ctx.prog.needs_body:
                    try:
                        c.data = await self.store.read_blob(m.blob_id)
                    except StoreError:
                        continue
                if matches(ctx.prog.key, c, search):
                    now.add(m.uid)
            considered = {m.uid for m in live}
            added = sorted(now - ctx.uids)
            dropped = sorted((ctx.uids & considered) - now)
            if ctx.order is not None and ctx.sorter is not None:
                if dropped:
                    self.send(self._remove_sorted(tag, ctx, set(dropped)))
                ctx.uids = (ctx.uids - set(dropped)) | set(added)
                if added:
                    new_order = await ctx.sorter(ctx.uids)
                    fresh = set(added)
                    # in ascending position: each insert lands where it belongs
                    placed = [(i + 1, u) for i, u in enumerate(new_order) if u in fresh]
                    ctx.order = new_order
                    self.send(self._sorted_line(tag, ctx, b"ADDTO", placed))
                continue
            if dropped:
                self.send(self._context_line(tag, ctx, b"REMOVEFROM", dropped))
            if added:
                self.send(self._context_line(tag, ctx, b"ADDTO", added))
            ctx.uids = (ctx.uids - set(dropped)) | set(added)

    async def claim_recent(self, mailbox_id: int) -> int | None:
        """The store's claim_recent, a write: when it fails (a full disk), reading goes on
        without \\Recent for this session (None)."""
        try:
            return await self.store.claim_recent(mailbox_id)
        except StoreError as exc:
            log.warning("conn %s: cannot claim \\Recent in mailbox %d: %s",
                        self.conn.conn_id, mailbox_id, exc)
            return None

    async def claim_new(self, sel: Selected, newest: int) -> int | None:
        """Claim \\Recent for the new messages up to ``newest``, unless a session of this
        process already does (imap_recent.py): then none of them is recent here."""
        claims = self.ctx.imap_recent
        floor = claims.claim(sel.info, newest)
        if floor is None:
            return None
        first = await self.claim_recent(sel.info.id)
        if first is None:
            claims.failed(sel.info, newest, floor)
        return first

    def added(self, mailbox_id: int, uids: list[int]) -> None:
        """This session APPENDed or COPYed these messages: NOTIFY sends no FETCH for
        them when they are in the selected mailbox (RFC 5465 §5.2)."""
        if (self.notify_fetch is not None and self.selected is not None
                and self.selected.info.id == mailbox_id):
            self.added_here = (self.added_here or set()) | set(uids)

    def unselect(self) -> None:
        self.selected = None
        self.added_here = None
        self.contexts.clear()
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED


Handler = Callable[[ImapSession, str, Reader, bool], Awaitable[None]]
