"""The POP3 server session as a sans-IO state machine (RFC 1939, 2449, 2595, 5034, 6856).

The driver feeds received bytes with ``receive_data``, pulls events with ``next_event``
and answers the events that need the outside world (credentials, message bodies, the
UPDATE-state expunge, the TLS handshake) by calling the matching method. Everything the
session wants to send accumulates in an output buffer that the driver empties with
``data_to_send``. Nothing here raises on client input: every bad line gets an ``-ERR``.

Driver loop::

    conn.write(session.greeting())
    while True:
        event = session.next_event()
        if event is NEED_DATA:
            conn.write(session.data_to_send()); data = await conn.read(...)
            if not data: break          # dropped connection: no UPDATE state
            session.receive_data(data)
        elif isinstance(event, Retrieve):
            session.send_message(await store.read_blob(event.message.blob_id))
        ...
        elif isinstance(event, Closed):
            conn.write(session.data_to_send()); break
"""

from __future__ import annotations

import binascii
import enum
from base64 import b64decode, b64encode
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pochta.mail.dotstuff import TERMINATOR, DotStuffer, dot_stuff
from pochta.mail.headers import header_end
from pochta.proto.pop3 import replies
from pochta.proto.pop3.replies import ErrReply

# RFC 2449 §4: a command line is at most 255 octets including CRLF.
MAX_COMMAND_LINE = 255
# RFC 5034 §4: AUTH lines (initial response) and SASL responses may be longer than 255
# octets; this bounds what one line may buffer before it is refused.
MAX_AUTH_LINE = 16384
# RFC 1939 §3: a keyword is 3 or 4 characters; arguments are short tokens.
MAX_MESSAGE_NUMBER_DIGITS = 9


class State(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"
    CLOSED = "CLOSED"


class ProtocolUsageError(Exception):
    """The driver called the session in a way its state does not allow (a bug in the
    driver, never caused by client input)."""


@dataclass(frozen=True, slots=True)
class DropMessage:
    """One message of the maildrop snapshot taken at login (RFC 1939 §8: the maildrop
    does not change during a session)."""

    uid: int
    blob_id: int
    size: int  # exact octets of the stored message (LIST/STAT)
    uidl: str  # RFC 1939 §7: 1-70 characters 0x21-0x7E, stable across sessions


# --- events ----------------------------------------------------------------------------


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
_TOO_LONG = b"\x00line too long"  # marker from _take_line, compared by identity


@dataclass(frozen=True, slots=True)
class PasswordLogin:
    """USER/PASS: verify; answer ``accept_login`` or ``reject_login``."""

    username: str
    password: str


@dataclass(frozen=True, slots=True)
class ApopLogin:
    """APOP (RFC 1939 §7): the driver checks ``digest`` == MD5(timestamp + secret) for an
    account that has an APOP secret; answer ``accept_login`` or ``reject_login``."""

    username: str
    timestamp: str
    digest: str  # 32 lower-case hex digits


@dataclass(frozen=True, slots=True)
class AuthStart:
    """AUTH (RFC 5034): ``initial_response`` is None when absent, b"" for "="; answer
    ``auth_challenge``, ``accept_login`` or ``reject_login``."""

    mechanism: str
    initial_response: bytes | None


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """A decoded client response to the last ``auth_challenge``; same answers."""

    data: bytes


@dataclass(frozen=True, slots=True)
class AuthAborted:
    """The client cancelled with "*" (or sent bad base64); the session already answered
    -ERR. The driver drops its SASL state; no answer."""


@dataclass(frozen=True, slots=True)
class StartTLS:
    """STLS accepted and "+OK" queued: flush, do the handshake, call ``tls_started``."""


@dataclass(frozen=True, slots=True)
class Retrieve:
    """RETR (``top_lines`` None) or TOP: answer ``send_message`` with the stored bytes,
    or ``message_unavailable``."""

    number: int
    message: DropMessage
    top_lines: int | None


@dataclass(frozen=True, slots=True)
class Update:
    """QUIT in TRANSACTION (RFC 1939 §6, the UPDATE state): expunge ``deleted``, mark
    ``retrieved`` (RETR'd and kept) as seen, then call ``update_done``."""

    deleted: tuple[DropMessage, ...]
    retrieved: tuple[DropMessage, ...]


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over (QUIT, too many errors): flush output and close."""


Event = (
    _NeedData
    | PasswordLogin
    | ApopLogin
    | AuthStart
    | AuthResponse
    | AuthAborted
    | StartTLS
    | Retrieve
    | Update
    | Closed
)


# --- message encoding ------------------------------------------------------------------


def top_of(data: bytes, lines: int) -> bytes:
    """The header, the blank line and the first ``lines`` body lines (RFC 1939 §7 TOP)."""
    _, pos = header_end(data)  # no body: the whole message is header
    for _ in range(lines):
        nl = data.find(b"\r\n", pos)
        if nl < 0:
            return data
        pos = nl + 2
    return data[:pos]


# RFC 6856 §3: the languages of our replies, as LANG lists them (tag, name in itself)
LANGUAGES = (("en", "English"),)


def _ok(text: str) -> bytes:
    return b"+OK " + text.encode("utf-8") + b"\r\n" if text else b"+OK\r\n"


def _err(text: str, code: str | None = None) -> bytes:
    # RFC 2449 §8: an extended response code in brackets right after "-ERR".
    prefix = f"[{code}] " if code else ""
    return b"-ERR " + (prefix + text).encode("utf-8") + b"\r\n"


def _multiline(first: bytes, lines: Iterable[str]) -> bytes:
    body = "".join(f"{line}\r\n" for line in lines)
    return first + body.encode("utf-8") + b".\r\n"


# --- the session -----------------------------------------------------------------------


class _Wait(enum.Enum):
    NONE = 0
    LOGIN = 1  # PasswordLogin/ApopLogin/AuthStart/AuthResponse
    RETRIEVE = 2
    UPDATE = 3
    TLS = 4


class Pop3Session:
    """One POP3 server session."""

    def __init__(
        self,
        *,
        hostname: str,
        tls_active: bool = False,
        tls_available: bool = False,
        plaintext_auth: bool = False,
        mechanisms: Sequence[str] = ("PLAIN",),
        apop_timestamp: str | None = None,
        implementation: str = "Pochta",
        max_errors: int = 10,
    ) -> None:
        """``plaintext_auth``: allow USER/PASS/APOP/AUTH without TLS (only for listeners
        the operator configured without TLS); ``mechanisms``: SASL mechanisms on offer
        once TLS is active; ``apop_timestamp``: put this "<...>" in the greeting and
        accept APOP."""
        self.hostname = hostname
        self.tls_active = tls_active
        self.tls_available = tls_available
        self.plaintext_auth = plaintext_auth
        self.mechanisms = tuple(m.upper() for m in mechanisms)
        self.apop_timestamp = apop_timestamp
        self.implementation = implementation
        self.max_errors = max_errors

        self.state = State.AUTHORIZATION
        self.utf8 = False  # RFC 6856 UTF8 command issued
        self.username: str | None = None  # the logged-in user
        self.errors = 0
        self.messages: list[DropMessage] = []
        self.deleted: set[int] = set()  # 1-based message numbers marked deleted
        self.retrieved: set[int] = set()  # 1-based message numbers sent by RETR

        self._in = bytearray()
        self._out: list[bytes] = []
        self._out_size = 0
        self._wait = _Wait.NONE
        self._user_arg: str | None = None  # from USER, waiting for PASS
        self._in_sasl = False  # the next line is a SASL response
        self._retrieve_top: int | None = None
        self._retrieve_number = 0
        self._stuffer: DotStuffer | None = None  # a message being sent in pieces

    # -- I/O plumbing ---------------------------------------------------------------

    def greeting(self) -> bytes:
        text = f"{self.hostname} POP3 server ready"
        if self.apop_timestamp:
            text += f" {self.apop_timestamp}"
        return _ok(text)

    def receive_data(self, data: bytes) -> None:
        if self._wait is _Wait.TLS:
            return  # RFC 2595 §4 (and CVE-2011-0411): nothing sent before TLS counts
        self._in += data

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        return out

    @property
    def pending_output(self) -> int:
        """Octets waiting in ``data_to_send`` (drivers flush early past a threshold)."""
        return self._out_size

    @property
    def deleted_count(self) -> int:
        return len(self.deleted)

    def _send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    def _error(self, text: str, code: str | None = None) -> Event | None:
        """Reply -ERR and count it; past the limit, say so and close."""
        self._send(_err(text, code))
        self.errors += 1
        if self.errors >= self.max_errors:
            self._send(_err("Too many errors, closing connection"))
            self.state = State.CLOSED
            return Closed()
        return None

    def _take_line(self) -> bytes | None:
        """The next complete line; ``_TOO_LONG`` for one past ``MAX_AUTH_LINE``."""
        nl = self._in.find(b"\n")
        if nl < 0:
            return _TOO_LONG if len(self._in) > MAX_AUTH_LINE else None
        if nl + 1 > MAX_AUTH_LINE:
            return _TOO_LONG
        line = bytes(self._in[: nl + 1])
        del self._in[: nl + 1]
        return line

    # -- events -----------------------------------------------------------------------

    def next_event(self) -> Event:
        if self._wait is not _Wait.NONE:
            raise ProtocolUsageError(f"waiting for the driver's answer ({self._wait.name})")
        if self.state is State.CLOSED:
            return Closed()
        while True:
            line = self._take_line()
            if line is None:
                return NEED_DATA
            event = self._handle_line(line)
            if event is not None:
                return event

    def _handle_line(self, raw: bytes) -> Event | None:
        if raw is _TOO_LONG:
            # No client sends 16 KB lines: this is garbage or an attack on memory, and
            # waiting for its end would let it hold the connection forever.
            self._in.clear()
            self._send(_err("Line too long, closing connection"))
            self.state = State.CLOSED
            return Closed()
        line = raw.rstrip(b"\r\n")
        if self._in_sasl:
            return self._sasl_line(line)
        if b"\x00" in line:
            return self._error("NUL in command line")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._error("Command line is not valid UTF-8")
        if not text.strip():
            return self._error("Empty command")
        keyword, _, rest = text.partition(" ")
        keyword = keyword.upper()
        lenient = keyword in ("AUTH", "PASS")
        if len(raw) > MAX_COMMAND_LINE and not lenient:
            return self._error(f"Line too long (RFC 2449: at most {MAX_COMMAND_LINE} octets)")
        handler = _COMMANDS.get(keyword)
        if handler is None:
            shown = keyword if keyword.isascii() and keyword.isalnum() else "?"
            return self._error(f"Unknown command {shown[:8]}")
        states = _STATES[keyword]
        if self.state not in states:
            return self._error(f"{keyword} is not valid in the {self.state.value} state")
        return handler(self, rest)

    # -- AUTHORIZATION ----------------------------------------------------------------

    def _may_authenticate(self) -> bool:
        return self.tls_active or self.plaintext_auth

    def _plaintext_refused(self) -> Event | None:
        # RFC 2595 §2.1/RFC 8314 §3: credentials only on a protected connection.
        if self.tls_available:
            return self._error(
                "Plaintext authentication disallowed on non-secure connections; use STLS",
                "AUTH",
            )
        return self._error("Plaintext authentication disallowed on this connection", "AUTH")

    def _cmd_user(self, arg: str) -> Event | None:
        if not self._may_authenticate():
            return self._plaintext_refused()
        if not arg or " " in arg:
            return self._error("Syntax: USER name")
        if not arg.isascii() and not self.utf8:
            return self._error("Non-ASCII user names need the UTF8 command first")
        self._user_arg = arg
        # RFC 1939 §7 permits refusing an unknown name here; we never do, so that
        # replies do not reveal whether an account exists.
        self._send(_ok("Send your password"))
        return None

    def _cmd_pass(self, arg: str) -> Event | None:
        if not self._may_authenticate():
            return self._plaintext_refused()
        user = self._user_arg
        self._user_arg = None
        if user is None:
            return self._error("USER first")
        if not arg:
            return self._error("Syntax: PASS password")
        # RFC 1939 §7: the password may contain spaces; the whole rest is the password.
        self._wait = _Wait.LOGIN
        return PasswordLogin(user, arg)

    def _cmd_apop(self, arg: str) -> Event | None:
        self._user_arg = None
        if self.apop_timestamp is None:
            return self._error("APOP is not available")
        if not self._may_authenticate():
            return self._plaintext_refused()
        name, _, digest = arg.rpartition(" ")
        digest = digest.lower()
        if not name or len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
            return self._error("Syntax: APOP name digest")
        if not name.isascii() and not self.utf8:
            return self._error("Non-ASCII user names need the UTF8 command first")
        self._wait = _Wait.LOGIN
        return ApopLogin(name, self.apop_timestamp, digest)

    def _cmd_auth(self, arg: str) -> Event | None:
        self._user_arg = None
        if not arg:
            # RFC 1734 style "AUTH" without arguments lists mechanisms; clients
            # (Outlook, fetchmail) still probe with it.
            mechs = self.mechanisms if self._may_authenticate() else ()
            self._send(_multiline(_ok("Supported mechanisms follow"), mechs))
            return None
        if not self._may_authenticate():
            return self._plaintext_refused()
        parts = arg.split(" ")
        if len(parts) > 2 or not parts[0]:
            return self._error("Syntax: AUTH mechanism [initial-response]")
        mech = parts[0].upper()
        if mech not in self.mechanisms:
            return self._error(f"Unsupported authentication mechanism {mech[:30]}")
        initial: bytes | None = None
        if len(parts) == 2:
            # RFC 5034 §4: "=" is an empty initial response.
            if parts[1] == "=":
                initial = b""
            else:
                decoded = _b64(parts[1])
                if decoded is None:
                    return self._error("Invalid base64 in initial response", "AUTH")
                initial = decoded
        self._wait = _Wait.LOGIN
        return AuthStart(mech, initial)

    def _sasl_line(self, line: bytes) -> Event | None:
        self._in_sasl = False
        if line == b"*":
            # RFC 5034 §4: the client cancels; the server rejects the AUTH command.
            return self._abort_sasl("Authentication cancelled")
        decoded = _b64(line.decode("ascii", "replace"))
        if decoded is None:
            return self._abort_sasl("Invalid base64 in authentication response")
        self._wait = _Wait.LOGIN
        return AuthResponse(decoded)

    def _abort_sasl(self, text: str) -> Event | None:
        self._in_sasl = False
        closed = self._error(text, "AUTH")
        if closed is not None:
            return closed
        return AuthAborted()

    def _cmd_stls(self, arg: str) -> Event | None:
        if arg:
            return self._error("Syntax: STLS takes no arguments")
        if self.tls_active:
            return self._error("Command not permitted when TLS active")
        if not self.tls_available:
            return self._error("TLS is not available")
        self._send(_ok("Begin TLS negotiation"))
        # RFC 2595 §4 (and CVE-2011-0411): whatever the client pipelined after STLS is
        # discarded, never executed after the handshake.
        self._in.clear()
        self._wait = _Wait.TLS
        return StartTLS()

    def _cmd_utf8(self, arg: str) -> Event | None:
        if arg:
            return self._error("Syntax: UTF8 takes no arguments")
        # RFC 6856 §2: valid in AUTHORIZATION state only; enables UTF-8 user names,
        # passwords and messages (we never downgrade: messages go out as stored).
        self.utf8 = True
        self._send(_ok("UTF8 enabled"))
        return None

    def _cmd_lang(self, arg: str) -> Event | None:
        """RFC 6856 §3: ``LANG`` lists the languages of our replies, ``LANG range`` picks
        one by RFC 4647 lookup (``en-GB`` falls back to ``en``; ``*`` is the default)."""
        if not arg:
            self._send(_multiline(_ok("Language listing follows"),
                                  (f"{tag} {name}" for tag, name in LANGUAGES)))
            return None
        if " " in arg:
            return self._error("Syntax: LANG [language-range]")
        wanted = arg.lower()
        tags = [tag for tag, _ in LANGUAGES]
        while wanted not in tags and wanted != "*" and "-" in wanted:
            wanted = wanted.rsplit("-", 1)[0]
            if "-" in wanted and len(wanted.rsplit("-", 1)[1]) == 1:
                wanted = wanted.rsplit("-", 1)[0]  # a singleton (x-...) goes too (§3.4)
        if wanted == "*":
            wanted = tags[0]
        if wanted not in tags:
            return self._error("Invalid language")  # in the language still in use
        self._send(_ok(f"{wanted} Language changed"))
        return None

    # -- driver answers for AUTHORIZATION ---------------------------------------------

    def _expect(self, wait: _Wait) -> None:
        if self._wait is not wait:
            raise ProtocolUsageError(f"not waiting for {wait.name} (waiting: {self._wait.name})")
        self._wait = _Wait.NONE

    def accept_login(self, username: str, messages: Sequence[DropMessage]) -> None:
        """Credentials verified and the maildrop locked: enter TRANSACTION with the
        maildrop snapshot ``messages`` (message n is ``messages[n-1]``)."""
        self._expect(_Wait.LOGIN)
        self._in_sasl = False
        self.username = username
        self.messages = list(messages)
        self.deleted = set()
        self.state = State.TRANSACTION
        count, size = self._stat()
        self._send(_ok(f"Logged in, maildrop has {count} messages ({size} octets)"))

    def reject_login(self, reply: ErrReply = replies.AUTH_FAILED) -> Event | None:
        """Login refused (``[AUTH]`` for credentials, ``[IN-USE]`` for a locked
        maildrop, ``[SYS/TEMP]`` for a store failure). Returns ``Closed`` when the error
        limit was reached."""
        self._expect(_Wait.LOGIN)
        self._in_sasl = False
        return self._error(reply.text, reply.code)

    def auth_challenge(self, data: bytes) -> None:
        """Send a SASL challenge (RFC 5034 §4: "+ " and base64); the next line is the
        client's response."""
        self._expect(_Wait.LOGIN)
        self._send(b"+ " + b64encode(data) + b"\r\n")
        self._in_sasl = True

    def tls_started(self) -> None:
        """The handshake succeeded. RFC 2595 §4: back to a fresh AUTHORIZATION state."""
        self._expect(_Wait.TLS)
        self.tls_active = True
        self._in.clear()
        self._user_arg = None

    # -- TRANSACTION ------------------------------------------------------------------

    def _stat(self) -> tuple[int, int]:
        count = 0
        size = 0
        for i, m in enumerate(self.messages, 1):
            if i not in self.deleted:
                count += 1
                size += m.size
        return count, size

    def _message_number(self, text: str) -> int | None:
        """The 1-based number of a message that exists and is not deleted; None after
        replying -ERR (RFC 1939 §5: a deleted message may not be referred to)."""
        if not text.isdigit() or not text.isascii() or len(text) > MAX_MESSAGE_NUMBER_DIGITS:
            self._error("Invalid message number")
            return None
        n = int(text)
        if not 1 <= n <= len(self.messages):
            self._error(f"No such message {n}")
            return None
        if n in self.deleted:
            self._error(f"Message {n} is deleted")
            return None
        return n

    def _after_error(self) -> Event | None:
        return Closed() if self.state is State.CLOSED else None

    def _cmd_stat(self, arg: str) -> Event | None:
        if arg:
            return self._error("Syntax: STAT takes no arguments")
        count, size = self._stat()
        self._send(_ok(f"{count} {size}"))
        return None

    def _cmd_list(self, arg: str) -> Event | None:
        if arg:
            n = self._message_number(arg)
            if n is None:
                return self._after_error()
            self._send(_ok(f"{n} {self.messages[n - 1].size}"))
            return None
        count, size = self._stat()
        lines = (
            f"{i} {m.size}" for i, m in enumerate(self.messages, 1) if i not in self.deleted
        )
        self._send(_multiline(_ok(f"{count} messages ({size} octets)"), lines))
        return None

    def _cmd_uidl(self, arg: str) -> Event | None:
        if arg:
            n = self._message_number(arg)
            if n is None:
                return self._after_error()
            self._send(_ok(f"{n} {self.messages[n - 1].uidl}"))
            return None
        lines = (f"{i} {m.uidl}" for i, m in enumerate(self.messages, 1) if i not in self.deleted)
        self._send(_multiline(_ok("Unique-ID listing follows"), lines))
        return None

    def _cmd_retr(self, arg: str) -> Event | None:
        if not arg or " " in arg:
            return self._error("Syntax: RETR message-number")
        n = self._message_number(arg)
        if n is None:
            return self._after_error()
        self._wait = _Wait.RETRIEVE
        self._retrieve_top = None
        self._retrieve_number = n
        return Retrieve(n, self.messages[n - 1], None)

    def _cmd_top(self, arg: str) -> Event | None:
        parts = arg.split(" ")
        if len(parts) != 2 or not parts[1].isdigit() or not parts[1].isascii():
            return self._error("Syntax: TOP message-number lines")
        n = self._message_number(parts[0])
        if n is None:
            return self._after_error()
        lines = int(parts[1]) if len(parts[1]) <= MAX_MESSAGE_NUMBER_DIGITS else 10**9
        self._wait = _Wait.RETRIEVE
        self._retrieve_top = lines
        return Retrieve(n, self.messages[n - 1], lines)

    def _cmd_dele(self, arg: str) -> Event | None:
        if not arg or " " in arg:
            return self._error("Syntax: DELE message-number")
        n = self._message_number(arg)
        if n is None:
            return self._after_error()
        # RFC 1939 §6: only marked; removed in the UPDATE state.
        self.deleted.add(n)
        self._send(_ok(f"Message {n} deleted"))
        return None

    def _cmd_rset(self, arg: str) -> Event | None:
        if arg:
            return self._error("Syntax: RSET takes no arguments")
        self.deleted.clear()
        count, size = self._stat()
        self._send(_ok(f"Maildrop has {count} messages ({size} octets)"))
        return None

    def _cmd_noop(self, arg: str) -> Event | None:
        if arg:
            return self._error("Syntax: NOOP takes no arguments")
        self._send(_ok(""))
        return None

    def _cmd_capa(self, arg: str) -> Event | None:
        if arg:
            return self._error("Syntax: CAPA takes no arguments")
        self._send(_multiline(_ok("Capability list follows"), self.capabilities()))
        return None

    def capabilities(self) -> list[str]:
        """RFC 2449 §5 capabilities for the current state."""
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION:
            if self._may_authenticate():
                caps.append("USER")
                if self.mechanisms:
                    caps.append("SASL " + " ".join(self.mechanisms))
            if self.tls_available and not self.tls_active:
                caps.append("STLS")
            caps.append("UTF8")
        caps.append("LANG")  # RFC 6856 §3: in both states
        caps.append("EXPIRE NEVER")
        caps.append(f"IMPLEMENTATION {self.implementation}")
        return caps

    def _cmd_quit(self, arg: str) -> Event | None:
        if self.state is State.TRANSACTION:
            # RFC 1939 §6: deletions happen in the UPDATE state only, entered by QUIT.
            seen = self.retrieved - self.deleted
            if self.deleted or seen:
                self.state = State.UPDATE
                self._wait = _Wait.UPDATE
                return Update(
                    tuple(self.messages[n - 1] for n in sorted(self.deleted)),
                    tuple(self.messages[n - 1] for n in sorted(seen)),
                )
            left = len(self.messages)
            self._send(_ok(f"{self.hostname} POP3 server signing off ({left} messages left)"))
        else:
            self._send(_ok(f"{self.hostname} POP3 server signing off"))
        self.state = State.CLOSED
        return Closed()

    # -- driver answers for TRANSACTION/UPDATE ----------------------------------------

    def send_message(self, data: bytes) -> None:
        """The stored bytes of the message a ``Retrieve`` asked for."""
        self._expect(_Wait.RETRIEVE)
        top = self._retrieve_top
        if top is None:
            self.retrieved.add(self._retrieve_number)
            self._send(b"+OK %d octets\r\n" % len(data))
        else:
            data = top_of(data, top)
            self._send(b"+OK Top of message follows\r\n")
        self._send(dot_stuff(data))
        self._send(TERMINATOR)

    # A big message for RETR goes out in pieces, so it is never whole in memory:
    # start_message, message_chunk for each piece in order, end_message.

    def start_message(self, size: int) -> None:
        if self._wait is not _Wait.RETRIEVE or self._retrieve_top is not None:
            raise ProtocolUsageError("start_message answers a RETR")
        self.retrieved.add(self._retrieve_number)
        self._send(b"+OK %d octets\r\n" % size)
        self._stuffer = DotStuffer()  # RFC 1939 §3

    def message_chunk(self, chunk: bytes) -> None:
        """Dot-stuff one piece, including a line start that falls between two pieces."""
        if self._stuffer is None:
            raise ProtocolUsageError("message_chunk comes after start_message")
        self._send(self._stuffer.feed(chunk))

    def end_message(self) -> None:
        self._expect(_Wait.RETRIEVE)
        if self._stuffer is None:
            raise ProtocolUsageError("end_message comes after start_message")
        self._send(self._stuffer.end())
        self._stuffer = None

    def message_unavailable(self, reply: ErrReply = replies.MESSAGE_UNAVAILABLE) -> None:
        """The message could not be read: a store error (``[SYS/TEMP]``, RFC 3206 §4:
        trying again later may work) or removed through IMAP meanwhile
        (``DELETED_ELSEWHERE``, permanent). The session goes on."""
        self._expect(_Wait.RETRIEVE)
        self._send(reply.to_bytes())

    def update_done(self, ok: bool, error: ErrReply = replies.NOT_REMOVED) -> Closed:
        """The expunge of the UPDATE state finished (``ok``) or failed (``error``, e.g.
        ``INSUFFICIENT_STORAGE`` when the disk is full)."""
        self._expect(_Wait.UPDATE)
        left = len(self.messages) - len(self.deleted)
        if ok:
            self._send(_ok(f"{self.hostname} POP3 server signing off ({left} messages left)"))
        else:
            # RFC 1939 §6 QUIT: -ERR "some deleted messages not removed"; RFC 3206 §4
            # [SYS/TEMP]: the client may try again later.
            self._send(error.to_bytes())
        self.state = State.CLOSED
        return Closed()

    def abandon(self, reply: ErrReply = replies.TEMPORARY_FAILURE) -> Event | None:
        """Answer the pending decision, whatever it is, with ``reply``: the driver's
        command boundary after an error. Not the client's fault, so not counted.
        Raises ``ProtocolUsageError`` when nothing is pending or the answer had begun
        (a message half sent, a TLS handshake): the driver then closes."""
        wait = self._wait
        if wait is _Wait.LOGIN:
            self._wait = _Wait.NONE
            self._in_sasl = False
            self._send(reply.to_bytes())
            return None
        if wait is _Wait.RETRIEVE and self._stuffer is None:
            self.message_unavailable(reply)
            return None
        if wait is _Wait.UPDATE:
            return self.update_done(False, reply)
        raise ProtocolUsageError(f"nothing to abandon (waiting: {wait.name})")

    def autologout(self) -> bytes:
        """The idle timer fired (RFC 1939 §3): no UPDATE state; what to send."""
        self.state = State.CLOSED
        self._wait = _Wait.NONE
        return _err("Autologout; idle for too long")


def _b64(text: str) -> bytes | None:
    try:
        return b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


_AUTH = frozenset({State.AUTHORIZATION})
_TRANS = frozenset({State.TRANSACTION})
_BOTH = frozenset({State.AUTHORIZATION, State.TRANSACTION})

_COMMANDS = {
    "USER": Pop3Session._cmd_user,
    "PASS": Pop3Session._cmd_pass,
    "APOP": Pop3Session._cmd_apop,
    "AUTH": Pop3Session._cmd_auth,
    "STLS": Pop3Session._cmd_stls,
    "UTF8": Pop3Session._cmd_utf8,
    "LANG": Pop3Session._cmd_lang,
    "STAT": Pop3Session._cmd_stat,
    "LIST": Pop3Session._cmd_list,
    "UIDL": Pop3Session._cmd_uidl,
    "RETR": Pop3Session._cmd_retr,
    "TOP": Pop3Session._cmd_top,
    "DELE": Pop3Session._cmd_dele,
    "RSET": Pop3Session._cmd_rset,
    "NOOP": Pop3Session._cmd_noop,
    "CAPA": Pop3Session._cmd_capa,
    "QUIT": Pop3Session._cmd_quit,
}

_STATES = {
    "USER": _AUTH,
    "PASS": _AUTH,
    "APOP": _AUTH,
    "AUTH": _AUTH,
    "STLS": _AUTH,
    "UTF8": _AUTH,
    "LANG": _BOTH,
    "STAT": _TRANS,
    "LIST": _TRANS,
    "UIDL": _TRANS,
    "RETR": _TRANS,
    "TOP": _TRANS,
    "DELE": _TRANS,
    "RSET": _TRANS,
    "NOOP": _TRANS,
    "CAPA": _BOTH,
    "QUIT": _BOTH,
}
