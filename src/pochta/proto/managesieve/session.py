"""The ManageSieve server session (RFC 5804) as a sans-IO state machine.

The driver feeds bytes with ``receive_data``, takes events from ``next_event`` and
answers each event that needs the outside world (credentials, scripts in the store, the
TLS handshake) with ``ok``/``no``/``send_*``. Output accumulates for ``data_to_send``.
Client input never raises: a bad line gets ``NO``, too many get ``BYE``.

Commands the core answers alone: CAPABILITY, NOOP, LOGOUT, and every error (syntax,
state, unknown command). Everything else becomes an event.

Driver loop::

    conn.write(session.greeting())
    while not session.closed:
        event = session.next_event()
        if event is NEED_DATA:
            conn.write(session.data_to_send()); session.receive_data(await conn.read())
        elif isinstance(event, PutScript):
            ... store ...; session.ok()      # or session.no("QUOTA/MAXSIZE", "...")
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

MAX_LINE = 8192  # octets of a command outside its literals
MAX_ERRORS = 10  # bad commands before BYE


class State(enum.Enum):
    NOT_AUTHENTICATED = "NOT_AUTHENTICATED"
    AUTHENTICATING = "AUTHENTICATING"
    AUTHENTICATED = "AUTHENTICATED"
    CLOSED = "CLOSED"


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(frozen=True, slots=True)
class Authenticate:
    mechanism: str  # upper case
    initial: bytes | None  # decoded initial response (RFC 5804 §2.1), or None


@dataclass(frozen=True, slots=True)
class AuthResponse:
    data: bytes | None  # None: the client cancelled ("*")


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Answer with ``tls_started()`` after the handshake (the core re-sends capabilities,
    RFC 5804 §2.2)."""


@dataclass(frozen=True, slots=True)
class HaveSpace:
    name: str
    size: int


@dataclass(frozen=True, slots=True)
class PutScript:
    name: str
    content: bytes


@dataclass(frozen=True, slots=True)
class CheckScript:
    content: bytes


@dataclass(frozen=True, slots=True)
class ListScripts:
    pass


@dataclass(frozen=True, slots=True)
class SetActive:
    name: str  # "" deactivates every script


@dataclass(frozen=True, slots=True)
class GetScript:
    name: str


@dataclass(frozen=True, slots=True)
class DeleteScript:
    name: str


@dataclass(frozen=True, slots=True)
class RenameScript:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Unauthenticate:
    """The driver forgets the account; the core is back in NOT_AUTHENTICATED."""


@dataclass(frozen=True, slots=True)
class Closed:
    """LOGOUT (answered) or too many errors (BYE sent): close the connection."""


Event = (Authenticate | AuthResponse | StartTLS | HaveSpace | PutScript | CheckScript
         | ListScripts | SetActive | GetScript | DeleteScript | RenameScript | Unauthenticate
         | Closed)


class ProtocolUsageError(Exception):
    """The driver called the session in a way its state does not allow."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    implementation: str
    sieve_extensions: Sequence[str]
    sasl: Sequence[str]  # mechanisms offered now ("" before TLS on a STARTTLS port)
    starttls: bool  # offer STARTTLS now
    max_redirects: int
    notify: Sequence[str] = ("mailto",)
    owner: str | None = None  # RFC 5804 §1.7: the authenticated user


class _Literal(Exception):
    pass


class SyntaxProblem(Exception):
    pass


_ATOM = re.compile(rb"[A-Za-z][A-Za-z0-9_-]*")
_NUMBER = re.compile(rb"[0-9]+")
_LITERAL = re.compile(rb"\{([0-9]{1,10})(\+?)\}\r\n")


def quote(s: str) -> bytes:
    """A string as RFC 5804 §4 sends it: quoted when it can be, else a literal."""
    raw = s.encode("utf-8")
    if b"\r" in raw or b"\n" in raw or b"\x00" in raw or len(raw) > 1024:
        return b"{%d}\r\n" % len(raw) + raw
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class ManageSieveSession:
    def __init__(self, capabilities: Capabilities, max_literal: int = 1 << 20,
                 tls_required: bool = False) -> None:
        self.capabilities = capabilities
        self.max_literal = max_literal  # larger scripts are read and refused
        self.tls_required = tls_required  # AUTHENTICATE only under TLS
        self.tls_active = False
        self.state = State.NOT_AUTHENTICATED
        self._in = bytearray()
        self._out = bytearray()
        self._pending: str | None = None  # command awaiting the driver's answer
        self._discard = 0  # octets of an oversized literal still to skip
        self._skip_line_after = False  # then the rest of its command line
        self.errors = 0
        self.closed = False

    # --- bytes in and out --------------------------------------------------------------

    def greeting(self) -> bytes:
        self._capability_lines()
        self._out += b'OK "Pochta ManageSieve ready"\r\n'
        return self.data_to_send()

    def receive_data(self, data: bytes) -> None:
        if not data:
            self.closed = True
            self.state = State.CLOSED
        self._in += data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    # --- events ------------------------------------------------------------------------

    def next_event(self) -> Event | _NeedData:
        while True:
            if self.closed:
                return Closed()
            if self._pending is not None:
                raise ProtocolUsageError(f"{self._pending} has not been answered")
            if self._discard:
                n = min(self._discard, len(self._in))
                del self._in[:n]
                self._discard -= n
                if self._discard:
                    return NEED_DATA
            try:
                parsed = self._parse()
            except SyntaxProblem as exc:
                self._error(str(exc))
                continue
            if parsed is None:
                return NEED_DATA
            tokens = parsed
            if self.state is State.AUTHENTICATING:
                event = self._auth_line(tokens)
            else:
                event = self._command(tokens)
            if event is not None:
                return event

    def _parse(self) -> list[bytes | int | str] | None:
        """One complete command line (with its literals) from the buffer, or None.

        Tokens: ``str`` for strings (quoted or literal, decoded), ``bytes`` for atoms,
        ``int`` for numbers."""
        buf = self._in
        i = 0
        tokens: list[bytes | int | str] = []
        line_octets = 0
        while True:
            if i >= len(buf):
                if len(buf) - line_octets > MAX_LINE:
                    self._in.clear()
                    raise SyntaxProblem("line too long")
                return None
            c = buf[i]
            if c == 0x0D:
                if i + 1 >= len(buf):
                    return None
                if buf[i + 1] != 0x0A:
                    self._drop_line()
                    raise SyntaxProblem("bare CR")
                del self._in[:i + 2]
                return tokens
            if c == 0x0A:
                del self._in[:i + 1]
                raise SyntaxProblem("bare LF: lines end with CRLF")
            if c == 0x20:
                i += 1
                continue
            if c == 0x22:  # quoted string
                j = i + 1
                out = bytearray()
                while True:
                    if j >= len(buf):
                        if j - line_octets > MAX_LINE:
                            self._in.clear()
                            raise SyntaxProblem("line too long")
                        return None
                    ch = buf[j]
                    if ch == 0x5C and j + 1 < len(buf):
                        out.append(buf[j + 1])
                        j += 2
                        continue
                    if ch == 0x5C:
                        return None
                    if ch == 0x22:
                        break
                    if ch in (0x0D, 0x0A):
                        self._drop_line()
                        raise SyntaxProblem("line break inside a quoted string")
                    out.append(ch)
                    j += 1
                tokens.append(self._utf8(bytes(out)))
                i = j + 1
                continue
            if c == 0x7B:  # literal {N+} or {N}
                m = _LITERAL.match(buf, i)
                if m is None:
                    if b"\n" in buf[i:i + 16] or len(buf) - i >= 16:
                        self._drop_line()
                        raise SyntaxProblem("bad literal")
                    return None
                n = int(m.group(1))
                start = m.end()
                if n > self.max_literal:
                    # read it and refuse it (a non-synchronizing literal is on its way)
                    self._discard = max(0, n - (len(buf) - start))
                    skip_to = min(len(buf), start + n)
                    del self._in[:skip_to]
                    raise SyntaxProblem("too big")
                if len(buf) < start + n:
                    return None
                tokens.append(self._utf8(bytes(buf[start:start + n])))
                line_octets += n
                i = start + n
                continue
            m = _NUMBER.match(buf, i)
            if m is not None and (m.end() >= len(buf) or buf[m.end()] in b" \r"):
                tokens.append(int(m.group()))
                i = m.end()
                continue
            m = _ATOM.match(buf, i)
            if m is not None:
                tokens.append(bytes(m.group()))
                i = m.end()
                continue
            self._drop_line()
            raise SyntaxProblem("unexpected character")

    def _drop_line(self) -> None:
        end = self._in.find(b"\n")
        if end < 0:
            self._in.clear()
        else:
            del self._in[:end + 1]

    @staticmethod
    def _utf8(raw: bytes) -> str:
        return raw.decode("utf-8", "surrogateescape")

    def _error(self, text: str) -> None:
        if text == "too big":
            # the rest of the command line follows the literal; drop it
            self._out += (b'NO (QUOTA/MAXSIZE) "Script is larger than the limit of '
                          + str(self.max_literal).encode() + b' octets"\r\n')
            if not self._discard:
                self._drop_line()
            else:
                self._skip_line_after = True
            return
        self.errors += 1
        self._out += b"NO " + quote(f"Syntax error: {text}") + b"\r\n"
        if self.errors >= MAX_ERRORS:
            self._bye("Too many errors")

    def _bye(self, text: str) -> None:
        self._out += b"BYE " + quote(text) + b"\r\n"
        self.closed = True
        self.state = State.CLOSED

    # --- commands ----------------------------------------------------------------------

    def _command(self, tokens: list[bytes | int | str]) -> Event | None:
        if self._skip_line_after:
            self._skip_line_after = False
            return None  # the tail of an oversized PUTSCRIPT line
        if not tokens:
            self._no("Empty command")
            return None
        verb = tokens[0]
        if not isinstance(verb, bytes):
            self._no("Expected a command name")
            return None
        name = verb.decode().upper()
        args = tokens[1:]
        handler = _COMMANDS.get(name)
        if handler is None:
            self._no(f"Unknown command {name[:32]}")
            return None
        needs_auth, kinds = handler
        if not _fits(args, kinds):
            self._no(f"{name}: wrong arguments")
            return None
        if needs_auth is True and self.state is not State.AUTHENTICATED:
            self._no(f"{name}: authenticate first")
            return None
        if needs_auth is False and self.state is State.AUTHENTICATED:
            self._no(f"{name}: already authenticated")
            return None
        return getattr(self, "_cmd_" + name.lower())(args)  # type: ignore[no-any-return]

    def _no(self, text: str, code: str | None = None) -> None:
        self.errors += 1
        self.no(code, text)
        if self.errors >= MAX_ERRORS:
            self._bye("Too many errors")

    def _cmd_capability(self, args: list[object]) -> None:
        self._capability_lines()
        self.ok(None, "Capability completed")

    def _cmd_noop(self, args: list[object]) -> None:
        if args:
            self.ok("TAG " + quote(str(args[0])).decode("utf-8", "replace"), "Done")
        else:
            self.ok(None, "Done")

    def _cmd_logout(self, args: list[object]) -> Event:
        self.ok(None, "Logout completed")
        self.closed = True
        self.state = State.CLOSED
        return Closed()

    def _cmd_starttls(self, args: list[object]) -> Event | None:
        if not self.capabilities.starttls or self.tls_active:
            self._no("STARTTLS is not available")
            return None
        self.ok(None, "Begin TLS negotiation now")
        self._in.clear()  # nothing pipelined in clear text survives (RFC 5804 §2.2)
        self._pending = "STARTTLS"
        return StartTLS()

    def tls_started(self, capabilities: Capabilities) -> None:
        """After the handshake: the capabilities again, without STARTTLS (§2.2)."""
        self._answered("STARTTLS")
        self.tls_active = True
        self.capabilities = capabilities
        self._capability_lines()
        self.ok(None, "TLS negotiation successful")

    def _cmd_authenticate(self, args: list[object]) -> Event | None:
        mechanism = str(args[0]).upper()
        initial = None
        if len(args) > 1:
            initial = _b64(str(args[1]))
            if initial is None:
                self._no("Invalid base64 in the initial response")
                return None
        if self.tls_required and not self.tls_active:
            self._no("Use STARTTLS first", "ENCRYPT-NEEDED")
            return None
        self.state = State.AUTHENTICATING
        self._pending = "AUTHENTICATE"
        return Authenticate(mechanism, initial)

    def _auth_line(self, tokens: list[bytes | int | str]) -> Event | None:
        if len(tokens) != 1 or not isinstance(tokens[0], str):
            self.state = State.NOT_AUTHENTICATED
            self._no("Expected a base64 string in the SASL exchange")
            return AuthResponse(None)
        if tokens[0] == "*":
            self.state = State.NOT_AUTHENTICATED
            self.no(None, "Authentication cancelled")
            return AuthResponse(None)
        data = _b64(tokens[0])
        if data is None:
            self.state = State.NOT_AUTHENTICATED
            self._no("Invalid base64")
            return AuthResponse(None)
        self._pending = "AUTHENTICATE"
        return AuthResponse(data)

    def challenge(self, data: bytes) -> None:
        """A SASL server challenge; the client's answer becomes ``AuthResponse``."""
        self._answered("AUTHENTICATE")
        self._out += quote(base64.b64encode(data).decode()) + b"\r\n"

    def auth_succeeded(self, user: str, server_final: bytes | None = None) -> None:
        self._answered("AUTHENTICATE")
        self.state = State.AUTHENTICATED
        self.errors = 0
        code = None
        if server_final:
            code = "SASL " + quote(base64.b64encode(server_final).decode()).decode()
        self.ok(code, "Logged in")

    def auth_failed(self, text: str = "Authentication failed", code: str | None = None,
                    count: bool = True) -> None:
        self._answered("AUTHENTICATE")
        self.state = State.NOT_AUTHENTICATED
        if count:
            self._no(text, code)
        else:
            self.no(code, text)

    def auth_aborted(self) -> None:
        """After ``AuthResponse(None)``: the core already answered."""

    def _cmd_unauthenticate(self, args: list[object]) -> Event:
        self.state = State.NOT_AUTHENTICATED
        self.ok(None, "Unauthenticate completed")
        return Unauthenticate()

    def _cmd_havespace(self, args: list[object]) -> Event:
        self._pending = "HAVESPACE"
        return HaveSpace(str(args[0]), int(str(args[1])))

    def _cmd_putscript(self, args: list[object]) -> Event:
        self._pending = "PUTSCRIPT"
        return PutScript(str(args[0]), str(args[1]).encode("utf-8", "surrogateescape"))

    def _cmd_checkscript(self, args: list[object]) -> Event:
        self._pending = "CHECKSCRIPT"
        return CheckScript(str(args[0]).encode("utf-8", "surrogateescape"))

    def _cmd_listscripts(self, args: list[object]) -> Event:
        self._pending = "LISTSCRIPTS"
        return ListScripts()

    def _cmd_setactive(self, args: list[object]) -> Event:
        self._pending = "SETACTIVE"
        return SetActive(str(args[0]))

    def _cmd_getscript(self, args: list[object]) -> Event:
        self._pending = "GETSCRIPT"
        return GetScript(str(args[0]))

    def _cmd_deletescript(self, args: list[object]) -> Event:
        self._pending = "DELETESCRIPT"
        return DeleteScript(str(args[0]))

    def _cmd_renamescript(self, args: list[object]) -> Event:
        self._pending = "RENAMESCRIPT"
        return RenameScript(str(args[0]), str(args[1]))

    # --- answers from the driver -------------------------------------------------------

    def _answered(self, expected: str | None = None) -> None:
        if self._pending is None or (expected is not None and self._pending != expected):
            raise ProtocolUsageError(f"no {expected or 'command'} is waiting for an answer")
        self._pending = None

    def ok(self, code: str | None = None, text: str | None = None) -> None:
        self._pending = None
        self._out += self._response(b"OK", code, text)

    def no(self, code: str | None = None, text: str | None = None) -> None:
        self._pending = None
        self._out += self._response(b"NO", code, text)

    def send_script(self, content: bytes) -> None:
        """GETSCRIPT: the script as a literal, then OK (RFC 5804 §2.9)."""
        self._answered("GETSCRIPT")
        self._out += b"{%d}\r\n" % len(content) + content + b"\r\n"
        self.ok(None, "Getscript completed")

    def send_list(self, scripts: Sequence[tuple[str, bool]]) -> None:
        """LISTSCRIPTS: one line per script, ACTIVE after the active one (§2.7)."""
        self._answered("LISTSCRIPTS")
        for name, active in scripts:
            self._out += quote(name) + (b" ACTIVE" if active else b"") + b"\r\n"
        self.ok(None, "Listscripts completed")

    @staticmethod
    def _response(kind: bytes, code: str | None, text: str | None) -> bytes:
        out = kind
        if code:
            out += b" (" + code.encode("utf-8") + b")"
        if text is not None:
            out += b" " + quote(text)
        return out + b"\r\n"

    def _capability_lines(self) -> None:
        caps = self.capabilities
        lines: list[tuple[str, str | None]] = [
            ("IMPLEMENTATION", caps.implementation),
            ("SIEVE", " ".join(caps.sieve_extensions)),
            ("NOTIFY", " ".join(caps.notify)),
            ("MAXREDIRECTS", str(caps.max_redirects)),
        ]
        if self.state is not State.AUTHENTICATED:
            lines.append(("SASL", " ".join(caps.sasl)))
        if caps.starttls and not self.tls_active:
            lines.append(("STARTTLS", None))
        if self.state is State.AUTHENTICATED and caps.owner:
            lines.append(("OWNER", caps.owner))
        lines.append(("UNAUTHENTICATE", None))
        lines.append(("VERSION", "1.0"))
        for name, value in lines:
            self._out += quote(name)
            if value is not None:
                self._out += b" " + quote(value)
            self._out += b"\r\n"


# command -> (needs authentication: True / must not be authenticated: False / any: None,
#             argument kinds: s string, n number, "?" the rest optional)
_COMMANDS: dict[str, tuple[bool | None, str]] = {
    "CAPABILITY": (None, ""),
    "NOOP": (None, "?s"),
    "LOGOUT": (None, ""),
    "STARTTLS": (False, ""),
    "AUTHENTICATE": (False, "s?s"),
    "UNAUTHENTICATE": (True, ""),
    "HAVESPACE": (True, "sn"),
    "PUTSCRIPT": (True, "ss"),
    "CHECKSCRIPT": (True, "s"),
    "LISTSCRIPTS": (True, ""),
    "SETACTIVE": (True, "s"),
    "GETSCRIPT": (True, "s"),
    "DELETESCRIPT": (True, "s"),
    "RENAMESCRIPT": (True, "ss"),
}


def _fits(args: Sequence[object], kinds: str) -> bool:
    required, _, optional = kinds.partition("?")
    if not len(required) <= len(args) <= len(required) + len(optional):
        return False
    for arg, kind in zip(args, required + optional, strict=False):
        if kind == "s" and not isinstance(arg, str):
            return False
        if kind == "n" and not isinstance(arg, int):
            return False
    return True


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
