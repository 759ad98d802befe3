"""The IMAP server session as a sans-IO state machine (RFC 9051, RFC 3501, RFC 7888).

Bytes in (``receive_data``), events out (``next_event``), responses in (``tagged``,
``untagged``, ``fail``, ...), bytes out (``data_to_send``). The session owns what is pure
protocol: framing with literal limits checked when a literal is announced (before any of
it is buffered), continuation requests, the connection state and the commands valid in
each state (``COMMAND_STATES``, the one table), the BAD-in-a-row limit, IDLE's DONE and
SASL's response lines. The driver (``server/imap.py``) only moves bytes, runs TLS,
COMPRESS and timeouts, and answers ``Command`` events by calling the store.

Driver loop::

    conn.write(session.greeting(capabilities, hostname))
    while True:
        event = session.next_event()
        conn.write(session.data_to_send())
        if event is NEED_DATA:
            session.receive_data(await conn.read(session.timeout_kind))
        elif isinstance(event, Command):
            try: await handler(event)             # calls session.ok/no/untagged
            except ImapError as exc: session.fail(event.tag, exc)
        elif isinstance(event, Closed):
            break

Nothing here raises on client input: bad input gets BAD (or BYE and ``Closed``).
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

from pochta.proto.imap.errors import ImapError
from pochta.proto.imap.framer import (
    CommandSoFar,
    Framer,
    FramingError,
    LiteralSink,
    NeedContinuation,
    RawCommand,
    tag_of,
)
from pochta.proto.imap.parser import ParseError, Reader
from pochta.proto.imap.response import tagged

MAX_LINE = 65536  # command text after login, literals excluded
# "tag APPEND {n}": APPEND's first literal is its mailbox name, not a message
_APPEND_NAME = re.compile(rb"[^ ]+ (?:APPEND|(?:UID )?REPLACE [^ ]+) ~?\{", re.IGNORECASE)
# the commands that upload a message (their literals may be big and are spooled):
# APPEND and REPLACE (RFC 8508), which takes APPEND's message
_UPLOAD = re.compile(rb"[^ ]+ (?:APPEND|(?:UID )?REPLACE) ", re.IGNORECASE)
# "tag ID (" or "tag ID NIL": clients send ID before login (RFC 2971 §3.1)
_ID_COMMAND = re.compile(rb"[^ ]+ ID[ (]", re.IGNORECASE)
# RFC 2971 §3.3: at most 30 pairs, fields of 30 octets, values of 1024; each string may
# come as a literal ("{1024}" CRLF and a space: 16 octets at most), plus tag and name.
# Before login an ID command may be this big, a bound the RFC itself sets (Dovecot
# accepts imaptest's 32 KB ID); every other command keeps ``preauth_max_command``.
PREAUTH_MAX_ID = 30 * (30 + 1024 + 2 * 16) + 256


class State(enum.Enum):
    NOT_AUTHENTICATED = 1
    AUTHENTICATED = 2
    SELECTED = 3
    LOGOUT = 4


ANY = frozenset(State)
AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})
NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})

# Every command the server knows and the states where it is valid (RFC 9051 §6).
COMMAND_STATES: dict[str, frozenset[State]] = {
    "CAPABILITY": ANY, "NOOP": ANY, "LOGOUT": ANY, "ID": ANY,
    "STARTTLS": NOT_AUTH, "LOGIN": NOT_AUTH, "AUTHENTICATE": NOT_AUTH,
    "ENABLE": AUTH, "COMPRESS": AUTH, "SELECT": AUTH, "EXAMINE": AUTH, "CREATE": AUTH,
    "DELETE": AUTH, "RENAME": AUTH, "SUBSCRIBE": AUTH, "UNSUBSCRIBE": AUTH, "LIST": AUTH,
    "LSUB": AUTH, "NAMESPACE": AUTH, "STATUS": AUTH, "APPEND": AUTH, "IDLE": AUTH,
    "GETQUOTA": AUTH, "GETQUOTAROOT": AUTH, "SETQUOTA": AUTH,
    "GETMETADATA": AUTH, "SETMETADATA": AUTH,
    "GENURLAUTH": AUTH, "RESETKEY": AUTH, "URLFETCH": AUTH,
    "SETACL": AUTH, "DELETEACL": AUTH, "GETACL": AUTH, "LISTRIGHTS": AUTH,
    "MYRIGHTS": AUTH,
    "NOTIFY": AUTH,
    "CHECK": SELECTED, "CLOSE": SELECTED, "UNSELECT": SELECTED, "EXPUNGE": SELECTED,
    "SEARCH": SELECTED, "FETCH": SELECTED, "STORE": SELECTED, "COPY": SELECTED,
    "MOVE": SELECTED, "SORT": SELECTED, "THREAD": SELECTED, "CANCELUPDATE": SELECTED,
    "REPLACE": SELECTED,  # RFC 8508 §3.5: selected state only, unlike APPEND
}
# commands that take the UID prefix (RFC 9051 §6.4.9, RFC 5256)
UID_COMMANDS = frozenset({"FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE", "SORT",
                          "THREAD", "REPLACE"})


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Sizes the session refuses before buffering (config ``[imap]`` and ``limits``)."""

    preauth_max_command: int = 8192  # one command before login, lines and literals
    max_literal: int = 65536  # a literal other than APPEND's message, after login
    max_command: int = 1 << 20  # a command after login, besides APPEND's message
    max_literals: int = 256
    append_limit: int = 50 << 20  # APPENDLIMIT: one message
    max_errors: int = 10  # BAD (and failed logins) in a row before BYE
    spool_above: int = 65536  # APPEND messages bigger than this go to a spool sink
    max_append_total: int = 200 << 20  # all messages of one (MULTI)APPEND together


# --- events ----------------------------------------------------------------------------


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(frozen=True, slots=True)
class Command:
    """A complete command valid in the current state: ``args`` is positioned at its
    arguments (after the name and one space, if any)."""

    tag: str
    name: str  # upper case, without the UID prefix
    uid: bool
    args: Reader
    raw: RawCommand


@dataclass(frozen=True, slots=True)
class IdleDone:
    """IDLE ended: ``ok`` after DONE (the session answered ``tag OK``), else after a line
    that was not DONE (the session answered ``tag BAD``)."""

    tag: str
    ok: bool


@dataclass(frozen=True, slots=True)
class SaslResponse:
    """A line answering ``sasl_challenge``: ``data`` decoded, or None when the client
    cancelled (``*``) or sent bad base64 (``error`` says which); the session has
    already answered BAD in those cases."""

    tag: str
    data: bytes | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over (LOGOUT, too many errors, a refused non-synchronizing
    literal): flush output and close."""


Event = _NeedData | Command | IdleDone | SaslResponse | Closed


class _Mode(enum.Enum):
    COMMAND = 1
    IDLE = 2
    SASL = 3


class ImapServerSession:
    """One IMAP server session: framing, state and responses, no I/O."""

    def __init__(
        self,
        limits: SessionLimits | None = None,
        spool: Callable[[int], LiteralSink] | None = None,
    ) -> None:
        """``spool(size)``: a sink for an APPEND message above ``limits.spool_above``
        octets (the driver's temporary file), so it is never whole in memory."""
        self.limits = limits or SessionLimits()
        self._spool_factory = spool
        self.framer = Framer(max_line=min(MAX_LINE, self.limits.preauth_max_command),
                             literal_limit=self._literal_limit,
                             line_limit=self._line_limit,
                             spool=self._spool if spool is not None else None)
        self._state = State.NOT_AUTHENTICATED
        self._mode = _Mode.COMMAND
        self._mode_tag = ""
        self._out: list[bytes] = []
        self._out_size = 0
        self.errors = 0  # BAD replies (and failed logins) in a row
        self.rev2 = False  # ENABLE IMAP4rev2
        self.utf8 = False  # ENABLE UTF8=ACCEPT (or IMAP4rev2)
        self.condstore = False
        self.qresync = False
        self.uidonly = False  # ENABLE UIDONLY (RFC 9586)

    # -- state ------------------------------------------------------------------------

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
    def authenticated(self) -> bool:
        return self._state in AUTH

    # -- output -----------------------------------------------------------------------

    def greeting(self, capabilities: list[str], hostname: str) -> bytes:
        caps = " ".join(capabilities)
        return f"* OK [CAPABILITY {caps}] {hostname} Pochta ready\r\n".encode()

    def send(self, data: bytes) -> None:
        """Raw response bytes (untagged data the handlers format with response.py)."""
        if data:
            self._out.append(data)
            self._out_size += len(data)

    def untagged(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.send(b"* " + data + b"\r\n")

    def continuation(self, text: str = "Ready for literal data") -> None:
        self.send(b"+ " + text.encode() + b"\r\n")

    def tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        if status == "OK":
            self.errors = 0  # the limit is on errors in a row, as Dovecot counts them
        elif status == "BAD":
            self.errors += 1
        self.send(tagged(tag, status, text, code))

    def ok(self, tag: str, text: str, code: str | None = None) -> None:
        self.tagged(tag, "OK", text, code)

    def no(self, tag: str, text: str, code: str | None = None) -> None:
        self.tagged(tag, "NO", text, code)

    def bad(self, tag: str, text: str) -> None:
        self.tagged(tag, "BAD", text)

    def fail(self, tag: str, exc: ImapError | ParseError) -> None:
        """The one place a failed command becomes its tagged response."""
        if isinstance(exc, ParseError):
            self.bad(tag, f"Syntax error: {exc}")
        else:
            self.tagged(tag, exc.status, exc.text, exc.code)

    def count_error(self) -> None:
        """A failed login counts like a BAD towards ``max_errors``."""
        self.errors += 1

    def bye(self, text: str) -> None:
        self.untagged(b"BYE " + text.encode())

    def timed_out(self) -> None:
        """The driver's read timed out: before login the short pre-auth timeout, after it
        the autologout (RFC 9051 §5.4)."""
        if self._state is State.NOT_AUTHENTICATED:
            self.bye("Timed out waiting for login")
        else:
            self.bye("Autologout; idle for too long")
        self._state = State.LOGOUT

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        return out

    @property
    def pending_output(self) -> int:
        return self._out_size

    # -- input ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        self.framer.feed(data)

    def discard_buffered(self) -> None:
        """STARTTLS and COMPRESS: what the client pipelined after the command must not be
        used (RFC 9051 §6.2.1, RFC 4978 §3)."""
        self.framer.discard_buffer()

    def begin_idle(self, tag: str) -> None:
        """IDLE accepted (RFC 2177): ``+ idling``; the next event is ``IdleDone``."""
        self.continuation("idling")
        self._mode, self._mode_tag = _Mode.IDLE, tag

    def sasl_challenge(self, tag: str, data: bytes) -> None:
        """A SASL challenge; the next event is the client's ``SaslResponse``."""
        self.send(b"+ " + base64.b64encode(data) + b"\r\n")
        self._mode, self._mode_tag = _Mode.SASL, tag

    def next_event(self) -> Event:
        while True:
            if self._state is State.LOGOUT:
                return Closed()
            if self._mode is not _Mode.COMMAND:
                line = self.framer.next_line()
                if line is None:
                    return NEED_DATA
                return self._mode_line(line)
            event = self.framer.next_event()
            if event is None:
                return NEED_DATA
            if isinstance(event, NeedContinuation):
                self.continuation()
                continue
            if isinstance(event, FramingError):
                self.errors += 1
                self.send(event.tag + b" " + event.response + b"\r\n")
                if event.close:
                    self.bye("Literal refused")
                    return self._close()
            else:
                command = self._command(event)
                if command is not None:
                    return command
            if self.errors >= self.limits.max_errors:
                self.bye("Too many errors")
                return self._close()

    def after_command(self) -> Closed | None:
        """Called by the driver after each command: too many errors end the session."""
        if self.errors >= self.limits.max_errors and self._state is not State.LOGOUT:
            self.bye("Too many errors")
            return self._close()
        return None

    def _close(self) -> Closed:
        self._state = State.LOGOUT
        return Closed()

    def _mode_line(self, line: bytes) -> Event:
        tag, mode = self._mode_tag, self._mode
        self._mode = _Mode.COMMAND
        if mode is _Mode.IDLE:
            if line.strip().upper() == b"DONE":
                self.ok(tag, "IDLE terminated")
                return IdleDone(tag, True)
            self.bad(tag, "Expected DONE")
            return IdleDone(tag, False)
        text = line.strip()
        if text == b"*":
            self.bad(tag, "Authentication cancelled")
            return SaslResponse(tag, None, "cancelled")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self.bad(tag, "Invalid base64 in response")
            return SaslResponse(tag, None, "bad base64")
        return SaslResponse(tag, data)

    def _command(self, raw: RawCommand) -> Command | None:
        tag = tag_of(raw.first_line).decode("ascii", "replace")
        try:
            r = Reader(raw, utf8=self.utf8)
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
                    return None
            if self.uidonly and not uid and name in UID_COMMANDS - {"EXPUNGE"}:
                # RFC 9586 §3: no message sequence numbers after ENABLE UIDONLY
                self.tagged(tag, "BAD", "Use the UID form of the command", "UIDREQUIRED")
                return None
            states = COMMAND_STATES.get(name)
            if states is None:
                self.bad(tag, "Unknown command")
                return None
            if self._state not in states:
                if self._state is State.NOT_AUTHENTICATED:
                    self.bad(tag, "Log in first")
                elif states == SELECTED:
                    self.bad(tag, "No mailbox selected")
                else:
                    self.bad(tag, "Command not valid in this state")
                return None
            if not r.at_end():
                r.sp()
        except ParseError as exc:
            self.fail(tag, exc)
            return None
        return Command(tag, name, uid, r, raw)

    def _spool(self, so_far: CommandSoFar, size: int) -> LiteralSink | None:
        if (self._spool_factory is None or size <= self.limits.spool_above
                or self._state is State.NOT_AUTHENTICATED):
            return None
        if not _UPLOAD.match(so_far.first_line):
            return None
        return self._spool_factory(size)

    def connection_lost(self) -> None:
        """Drop a command in progress (a spooled literal's file goes too)."""
        self.framer.abandon()

    def _line_limit(self, first: bytes) -> int:
        """ID before login may be as big as RFC 2971 allows (``PREAUTH_MAX_ID``)."""
        if self._state is State.NOT_AUTHENTICATED and _ID_COMMAND.match(first):
            return min(MAX_LINE, PREAUTH_MAX_ID)
        return 0

    def _literal_limit(self, so_far: CommandSoFar, size: int) -> bytes | None:
        """Checked when a literal is announced, before any of it is read (RFC 7888 §4)."""
        lim = self.limits
        if so_far.literals >= lim.max_literals:
            return b"BAD [LIMIT] Too many literals in one command"
        if self._state is State.NOT_AUTHENTICATED:
            # LOGIN needs two short strings: nothing bigger is buffered for a stranger
            cap = (max(PREAUTH_MAX_ID, lim.preauth_max_command)
                   if _ID_COMMAND.match(so_far.first_line) else lim.preauth_max_command)
            if so_far.size + size > cap:
                return b"BAD [TOOBIG] Literal too large before login"
            return None
        upload = _UPLOAD.match(so_far.first_line) is not None  # APPEND, REPLACE
        mailbox_literal = so_far.literals == 0 and _APPEND_NAME.match(so_far.first_line)
        if upload and self._spool_factory is not None and not mailbox_literal:
            # MULTIAPPEND (RFC 3502): each message up to APPENDLIMIT; those above
            # spool_above go to disk, so only the small ones count as command bytes
            if size > lim.append_limit:
                return b"NO [TOOBIG] Message exceeds APPENDLIMIT %d" % lim.append_limit
            if so_far.size + size > lim.max_append_total:
                return b"NO [TOOBIG] Messages exceed %d octets in total" % lim.max_append_total
            if size > lim.spool_above:
                return None
            if so_far.size - so_far.spooled + size > lim.max_command:
                return b"BAD [TOOBIG] Command too large"
            return None
        big = so_far.largest if so_far.largest > lim.max_literal else 0  # APPEND's message
        if upload and size > lim.max_literal and not big and not mailbox_literal:
            if size > lim.append_limit:
                # RFC 7889 / RFC 9051 §7.1: refuse before the client uploads it
                return b"NO [TOOBIG] Message exceeds APPENDLIMIT %d" % lim.append_limit
            return None
        if size > lim.max_literal:
            return b"BAD [TOOBIG] Literal too large"
        if so_far.size - big + size > lim.max_command:
            return b"BAD [TOOBIG] Command too large"
        return None


__all__ = [
    "ANY", "AUTH", "COMMAND_STATES", "NEED_DATA", "NOT_AUTH", "SELECTED", "UID_COMMANDS",
    "Closed", "Command", "Event", "IdleDone", "ImapServerSession", "SaslResponse",
    "SessionLimits", "State",
]
