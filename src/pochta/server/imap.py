"""The IMAP server driver: one ``ImapSession`` per connection, turning framed commands
into store calls. The grammar, responses and mailbox-state rules live in proto/imap;
commands are grouped in imap_auth (any state), imap_mailbox (mailboxes, APPEND) and
imap_message (FETCH, STORE, SEARCH, COPY/MOVE, EXPUNGE, IDLE).

Entry point: ``handle_imap(conn, ctx, listener)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..config import Listener
from ..proto.imap.framer import (
    CommandSoFar,
    Framer,
    FramingError,
    NeedContinuation,
    RawCommand,
    tag_of,
)
from ..proto.imap.mutf7 import encode_mutf7
from ..proto.imap.parser import ParseError, Reader
from ..proto.imap.response import astring, tagged
from ..proto.imap.selected import Selected
from ..storage.interfaces import Account, ChangeWatcher, StorageFull, StoreError
from .listener import Connection

if TYPE_CHECKING:
    from .app import ServerContext

log = logging.getLogger("pochta.imap")

MAX_LINE = 65536  # command text, literals excluded
# a command in progress gives the event loop back at least this often (seconds)
YIELD_INTERVAL = 0.01


class State(enum.Enum):
    NOT_AUTHENTICATED = 1
    AUTHENTICATED = 2
    SELECTED = 3
    LOGOUT = 4


class CloseSession(Exception):
    """Stop the session (after LOGOUT, BYE or a lost connection)."""


Handler = Callable[["ImapSession", str, Reader, bool], Awaitable[None]]
ANY = frozenset(State)
AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})
NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})


class ImapSession:
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
        self.max_errors = limits.max_errors
        self.framer = Framer(max_line=min(MAX_LINE, self.limits.preauth_max_command),
                             literal_limit=self._literal_limit)
        self._state = State.NOT_AUTHENTICATED
        self._last_yield = time.monotonic()
        self.account: Account | None = None
        self.selected: Selected | None = None
        self.watcher: ChangeWatcher | None = None
        self.errors = 0
        self.rev2 = False  # ENABLE IMAP4rev2
        self.utf8 = False  # ENABLE UTF8=ACCEPT (or IMAP4rev2)
        self.condstore = False
        self.qresync = False

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        self._state = value
        # before login a command is as small as LOGIN needs (as Dovecot's imap-login)
        self.framer.max_line = (min(MAX_LINE, self.limits.preauth_max_command)
                                if value is State.NOT_AUTHENTICATED else MAX_LINE)

    @property
    def timeout(self) -> float:
        """How long to wait for the client: short before login, the autologout after."""
        if self._state is State.NOT_AUTHENTICATED:
            return self.preauth_timeout
        return self.idle_timeout

    async def pause(self) -> None:
        """Called between messages by long commands (SEARCH, FETCH, STORE): gives the event
        loop to other connections every YIELD_INTERVAL, so no command holds it for long."""
        now = time.monotonic()
        if now - self._last_yield >= YIELD_INTERVAL:
            await asyncio.sleep(0)
            self._last_yield = time.monotonic()

    # --- output ----------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if data:
            self.conn.write(data)

    def ok(self, tag: str, text: str, code: str | None = None) -> None:
        self.errors = 0  # the limit is on errors in a row, as Dovecot counts them
        self.send(tagged(tag, "OK", text, code))

    def no(self, tag: str, text: str, code: str | None = None) -> None:
        self.send(tagged(tag, "NO", text, code))

    def bad(self, tag: str, text: str) -> None:
        self.errors += 1
        self.send(tagged(tag, "BAD", text))

    def mailbox_name(self, name: str) -> bytes:
        """A mailbox name for responses: UTF-8 after ENABLE, else modified UTF-7."""
        return astring(name if self.utf8 else encode_mutf7(name), self.utf8)

    def reader(self, raw: RawCommand) -> Reader:
        return Reader(raw, utf8=self.utf8)

    @property
    def rev1_recent(self) -> bool:
        return not self.rev2

    @property
    def account_id(self) -> int:
        assert self.account is not None
        return self.account.id

    # --- selected-mailbox bookkeeping --------------------------------------------------
    async def sync(self, allow_expunge: bool) -> None:
        """Send what changed in the selected mailbox since we last looked (§7.5.1)."""
        sel = self.selected
        if sel is None:
            return
        try:
            changes = await self.store.changes_since(sel.info.id, sel.modseq)
        except StoreError:
            return  # the mailbox was deleted under us; next command will see it
        first_recent: int | None = None
        if not sel.readonly and any(m.uid > sel.top_uid for m in changes.changed):
            first_recent = await self.claim_recent(sel.info.id)
        out, _ = sel.apply(changes, first_recent, self.rev1_recent, self.condstore,
                           flush=allow_expunge, qresync=self.qresync)
        for line in out:
            self.send(line)

    async def claim_recent(self, mailbox_id: int) -> int | None:
        """The store's claim_recent, a write: when it fails (a full disk), reading goes on
        without \\Recent for this session (None)."""
        try:
            return await self.store.claim_recent(mailbox_id)
        except StoreError as exc:
            log.warning("conn %s: cannot claim \\Recent in mailbox %d: %s",
                        self.conn.conn_id, mailbox_id, exc)
            return None

    def unselect(self) -> None:
        self.selected = None
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    # --- input -----------------------------------------------------------------------
    def _literal_limit(self, so_far: CommandSoFar, size: int) -> bytes | None:
        """Checked when a literal is announced, before any of it is read (RFC 7888 §4)."""
        lim = self.limits
        if so_far.literals >= lim.max_literals:
            return b"BAD [LIMIT] Too many literals in one command"
        if self._state is State.NOT_AUTHENTICATED:
            # LOGIN needs two short strings: nothing bigger is buffered for a stranger
            if so_far.size + size > lim.preauth_max_command:
                return b"BAD [TOOBIG] Literal too large before login"
            return None
        words = so_far.first_line.split(b" ", 3)
        command = words[1].upper() if len(words) > 1 else b""
        big = so_far.largest if so_far.largest > lim.max_literal else 0  # APPEND's message
        if command == b"APPEND" and size > lim.max_literal and not big:
            if size > self.append_limit:
                # RFC 7889 / RFC 9051 §7.1: refuse before the client uploads it
                return b"NO [TOOBIG] Message exceeds APPENDLIMIT %d" % self.append_limit
            return None
        if size > lim.max_literal:
            return b"BAD [TOOBIG] Literal too large"
        if so_far.size - big + size > lim.max_command:
            return b"BAD [TOOBIG] Command too large"
        return None

    async def read_more(self) -> None:
        data = await self.conn.read(self.timeout)
        if not data:
            raise CloseSession
        self.framer.feed(data)

    async def read_line(self) -> bytes:
        """A raw line (AUTHENTICATE responses, DONE)."""
        while True:
            line = self.framer.next_line()
            if line is not None:
                return line
            await self.read_more()

    # --- the loop ----------------------------------------------------------------------
    async def run(self) -> None:
        from .imap_auth import capabilities

        caps = " ".join(capabilities(self))
        self.send(f"* OK [CAPABILITY {caps}] {self.ctx.config.hostname} Pochta ready\r\n".encode())
        try:
            while self.state is not State.LOGOUT:
                event = self.framer.next_event()
                if event is None:
                    await self.conn.drain()
                    try:
                        await self.read_more()
                    except TimeoutError:
                        self._timed_out()
                        return
                    continue
                if isinstance(event, NeedContinuation):
                    self.send(b"+ Ready for literal data\r\n")
                elif isinstance(event, FramingError):
                    self.errors += 1
                    self.send(event.tag + b" " + event.response + b"\r\n")
                    if event.close:
                        self.send(b"* BYE Literal refused\r\n")
                        return
                else:
                    await self.dispatch(event)
                    await self.conn.drain()  # a pipelining client must read what it asked for
                if self.errors >= self.max_errors:
                    self.send(b"* BYE Too many errors\r\n")
                    return
        except CloseSession:
            return
        except TimeoutError:
            self._timed_out()
            return
        finally:
            if self.watcher is not None:
                self.watcher.close()
            await self._flush_quietly()

    def _timed_out(self) -> None:
        if self._state is State.NOT_AUTHENTICATED:
            self.send(b"* BYE Timed out waiting for login\r\n")
        else:
            self.send(b"* BYE Autologout; idle for too long\r\n")

    async def _flush_quietly(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self.conn.drain()

    async def dispatch(self, raw: RawCommand) -> None:
        from .imap_commands import COMMANDS, UID_COMMANDS

        tag = tag_of(raw.first_line).decode("ascii", "replace")
        try:
            r = self.reader(raw)
            tag = r.tag()
            r.sp()
            name = r.atom().upper()
            uid = False
            if name == "UID":
                r.sp()
                name = r.atom().upper()
                uid = True
                if name not in UID_COMMANDS:
                    self.bad(tag, "Unknown UID command")
                    return
            entry = COMMANDS.get(name)
            if entry is None:
                self.bad(tag, "Unknown command")
                return
            handler, states = entry
            if self.state not in states:
                if self.state is State.NOT_AUTHENTICATED:
                    self.bad(tag, "Log in first")
                elif states == SELECTED:
                    self.bad(tag, "No mailbox selected")
                else:
                    self.bad(tag, "Command not valid in this state")
                return
            if not r.at_end():
                r.sp()
            await handler(self, tag, r, uid)
        except ParseError as exc:
            self.bad(tag, f"Syntax error: {exc}")
        except StorageFull as exc:
            # a write failed for lack of space: temporary, and not a bug (RFC 5530 §3)
            log.warning("conn %s: storage full: %s", self.conn.conn_id, exc)
            self.no(tag, "Insufficient system storage", "LIMIT")
        except StoreError as exc:
            log.info("store error: %s", exc)
            self.no(tag, "Operation failed", "SERVERBUG")
        except (CloseSession, TimeoutError, ConnectionError):
            raise
        except Exception:
            # a bug must not take the connection down without a word (RFC 9051 §7.1.3)
            log.exception("IMAP command failed")
            self.no(tag, "Internal error", "SERVERBUG")


async def handle_imap(
    conn: Connection, ctx: ServerContext, listener: Listener
) -> None:
    """The asyncio entry point registered for the ``imap`` role. Tests may shorten the
    autologout with ``ctx.extras["imap_idle_timeout"]`` (config insists on >= 30 min)."""
    override = ctx.extras.get("imap_idle_timeout")
    timeout = float(override) if isinstance(override, int | float) else None
    await ImapSession(conn, ctx, listener, idle_timeout=timeout).run()
