"""Sans-IO SMTP client session (RFC 5321), the mirror of the server core.

The driver feeds bytes received from the server into ``receive_data()`` and gets events
back; it calls command methods (``ehlo()``, ``starttls()``, ``send_transaction()`` ...)
and sends what ``data_to_send()`` returns. No sockets, clocks or logging here.

A whole mail transaction (MAIL, RCPT..., DATA or BDAT) is one ``send_transaction()``
call; the core pipelines it when the server offers PIPELINING (RFC 2920), uses BDAT when
it offers CHUNKING (RFC 3030), adds BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), SIZE
(RFC 1870) and DSN parameters (RFC 3461) when offered, and reports one
``TransactionDone`` with the reply that decided each recipient's fate.

Garbage from the server never raises: it becomes a ``Malformed`` event and the session
is closed. Calling a command in the wrong state is a driver bug and raises
``ClientStateError``.
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from dataclasses import dataclass, field

# RFC 5321 4.5.3.1.5 limits reply lines to 512 octets; real servers send longer
# lines now and then, so allow some slack before calling the peer broken.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 1000
BDAT_CHUNK = 1 << 20

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_BARE_CR = re.compile(rb"\r(?!\n)")


class ClientStateError(Exception):
    """The driver called a command the session cannot send now (a programming error)."""


@dataclass(frozen=True, slots=True)
class ServerReply:
    """One (possibly multi-line) reply of the server, as the client parsed it (the
    server side builds its replies from ``replies.Reply``)."""

    code: int
    lines: tuple[str, ...] = ("",)

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code, if the first line starts with one whose
        class matches the reply code (RFC 2034 §3)."""
        m = _ENHANCED.match(self.lines[0]) if self.lines else None
        if m and m.group(1) == str(self.code)[0]:
            return f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
        return None

    @property
    def text(self) -> str:
        return " / ".join(line for line in self.lines if line) or ""

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 300

    @property
    def intermediate(self) -> bool:
        return 300 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


def local_reply(code: int, enhanced: str, text: str) -> ServerReply:
    """A reply the client makes up itself (local refusal, timeout, connection failure)."""
    return ServerReply(code, (f"{enhanced} {text}",))


class ReplyParser:
    """Splits the byte stream into replies (RFC 5321 4.2.1)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._lines: list[str] = []
        self._code: int | None = None
        self.error: str | None = None

    def feed(self, data: bytes) -> list[ServerReply]:
        out: list[ServerReply] = []
        if self.error is not None:
            return out
        self._buf += data
        while True:
            idx = self._buf.find(b"\n")
            if idx < 0:
                if len(self._buf) > MAX_REPLY_LINE:
                    self.error = "reply line too long"
                break
            raw = bytes(self._buf[:idx])
            del self._buf[: idx + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > MAX_REPLY_LINE:
                self.error = "reply line too long"
                break
            reply = self._line(raw)
            if self.error is not None:
                break
            if reply is not None:
                out.append(reply)
        return out

    def _line(self, raw: bytes) -> ServerReply | None:
        # The code is three digits, 2xx-5xx, then "-" (more lines), " " or nothing.
        if len(raw) < 3 or not raw[:3].isdigit() or raw[0:1] not in b"2345":
            self.error = f"malformed reply line {raw[:40]!r}"
            return None
        code = int(raw[:3])
        sep = raw[3:4]
        if sep not in (b"", b" ", b"-"):
            self.error = f"malformed reply line {raw[:40]!r}"
            return None
        if self._code is not None and code != self._code:
            self.error = "reply code changed inside a multi-line reply"
            return None
        text = raw[4:].decode("utf-8", "replace")
        self._lines.append(text)
        if len(self._lines) > MAX_REPLY_LINES:
            self.error = "too many reply lines"
            return None
        if sep == b"-":
            self._code = code
            return None
        reply = ServerReply(code, tuple(self._lines))
        self._lines = []
        self._code = None
        return reply


def parse_extensions(reply: ServerReply) -> dict[str, str]:
    """EHLO keywords (upper case) to their parameters (RFC 5321 4.1.1.1)."""
    ext: dict[str, str] = {}
    for line in reply.lines[1:]:
        parts = line.strip().split(None, 1)
        if not parts:
            continue
        ext[parts[0].upper()] = parts[1] if len(parts) > 1 else ""
    # Some old servers announce "AUTH=LOGIN PLAIN"; treat it as AUTH.
    if "AUTH" not in ext:
        for key, value in list(ext.items()):
            if key.startswith("AUTH="):
                ext["AUTH"] = (key[5:] + " " + value).strip()
    return ext


def dot_stuff(message: bytes) -> bytes:
    """The DATA body: CRLF line ends, leading dots doubled, ``.`` terminator
    (RFC 5321 4.5.2; bare CR and LF are not allowed on the wire, 2.3.8)."""
    data = _BARE_LF.sub(b"\r\n", message)
    data = _BARE_CR.sub(b"\r\n", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    return data + b".\r\n"


def is_ascii(text: str) -> bool:
    return text.isascii()


def has_8bit(data: bytes) -> bool:
    return any(b > 0x7F for b in data)


def header_section(message: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        idx = message.find(sep)
        if idx >= 0:
            return message[:idx]
    return message


# --- events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Greeting:
    reply: ServerReply


@dataclass(frozen=True, slots=True)
class EhloDone:
    reply: ServerReply
    extensions: dict[str, str]


@dataclass(frozen=True, slots=True)
class Response:
    """The reply to HELO, STARTTLS, AUTH (334 challenges too), RSET, NOOP or QUIT."""

    command: str
    reply: ServerReply


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str
    notify: str | None = None  # RFC 3461 NOTIFY=
    orcpt: str | None = None  # RFC 3461 ORCPT= (already xtext-encoded "rfc822;...")


@dataclass(frozen=True, slots=True)
class Transaction:
    sender: str  # "" for the null reverse-path
    recipients: tuple[Recipient, ...]
    message: bytes
    body_8bit: bool = False
    smtputf8: bool = False
    ret: str | None = None  # RFC 3461 RET=
    envid: str | None = None  # RFC 3461 ENVID= (xtext)
    requiretls: bool = False  # RFC 8689 REQUIRETLS (the caller checked the peer offers it)


@dataclass(frozen=True, slots=True)
class TransactionResult:
    mail: ServerReply
    rcpt: tuple[ServerReply | None, ...]  # None: never answered (MAIL failed, connection lost)
    data: ServerReply | None  # the final reply to the message content, if it got that far
    recipients: tuple[Recipient, ...] = ()

    def outcome(self, index: int) -> ServerReply:
        """The reply that decided recipient ``index``: its RCPT refusal or the message's."""
        if not self.mail.positive:
            return self.mail
        r = self.rcpt[index]
        if r is None:
            return local_reply(451, "4.4.2", "recipient was not answered")
        if not r.positive:
            return r
        if self.data is None:
            return local_reply(451, "4.4.2", "transaction ended before the message was sent")
        return self.data

    def outcomes(self) -> list[tuple[Recipient, ServerReply]]:
        return [(rcpt, self.outcome(i)) for i, rcpt in enumerate(self.recipients)]


@dataclass(frozen=True, slots=True)
class TransactionDone:
    result: TransactionResult


@dataclass(frozen=True, slots=True)
class Malformed:
    """The server sent something that is not SMTP; the session is now closed."""

    reason: str


Event = Greeting | EhloDone | Response | TransactionDone | Malformed


class Preflight(enum.Enum):
    OK = "ok"
    DOWNGRADE_8BIT = "downgrade"  # convert to 7-bit first (RFC 6152 §3), or bounce


class State(enum.Enum):
    GREETING = "greeting"  # waiting for the 220 banner
    CONNECTED = "connected"  # banner received, no EHLO yet
    READY = "ready"  # EHLO/HELO done, no transaction
    BUSY = "busy"  # a command or transaction is in flight
    CLOSED = "closed"


class _Kind(enum.Enum):
    GREETING = "greeting"
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BODY = "BODY"  # the dot-terminated content after 354
    BDAT = "BDAT"
    TX_RSET = "TX_RSET"  # RSET that ends a failed transaction


@dataclass(slots=True)
class _Tx:
    tx: Transaction
    pipelining: bool
    chunking: bool
    mail: ServerReply | None = None
    rcpt: list[ServerReply | None] = field(default_factory=list)
    data: ServerReply | None = None
    pending_rcpt: deque[int] = field(default_factory=deque)  # unsent RCPT indexes
    rcpt_answered: int = 0
    chunks: list[bytes] = field(default_factory=list)
    data_sent: bool = False
    empty_body: bool = False
    rset: bool = False


class ClientSession:
    """One SMTP client connection's protocol state."""

    def __init__(self, local_hostname: str) -> None:
        self.local_hostname = local_hostname
        self.state = State.GREETING
        self.extensions: dict[str, str] = {}
        self.esmtp = False
        self._parser = ReplyParser()
        self._out = bytearray()
        self._pending: deque[_Kind] = deque([_Kind.GREETING])
        self._tx: _Tx | None = None
        self._auth_active = False

    # -- I/O --------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        events: list[Event] = []
        for reply in self._parser.feed(data):
            events.extend(self._on_reply(reply))
            if self.closed:
                return events
        if self._parser.error is not None:
            events.extend(self._broken(self._parser.error))
        return events

    def connection_lost(self) -> list[Event]:
        """The peer closed the connection (or the driver gave up waiting): an unfinished
        transaction ends with a 421 for everything not yet answered."""
        if self.state is State.CLOSED:
            return []
        reply = local_reply(421, "4.4.2", "connection lost")
        return self._abort(reply)

    def timed_out(self) -> list[Event]:
        reply = local_reply(421, "4.4.2", "timeout waiting for the server")
        return self._abort(reply)

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    # -- capabilities -----------------------------------------------------------------

    def supports(self, keyword: str) -> bool:
        return keyword.upper() in self.extensions

    @property
    def max_size(self) -> int | None:
        value = self.extensions.get("SIZE", "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else None

    @property
    def auth_mechanisms(self) -> list[str]:
        return self.extensions.get("AUTH", "").upper().split()

    def preflight(self, tx: Transaction) -> Preflight | ServerReply:
        """Can ``tx`` go to this server as it is? A ``ServerReply`` is a permanent local refusal
        that decides every recipient (the driver bounces); ``DOWNGRADE_8BIT`` means the
        message must be converted to 7-bit first (or bounced if it cannot be)."""
        addresses_utf8 = not is_ascii(tx.sender) or any(
            not is_ascii(r.address) for r in tx.recipients
        )
        if addresses_utf8 and not self.supports("SMTPUTF8"):
            # RFC 6531 §3.2: never send non-ASCII addresses to a server without SMTPUTF8.
            return local_reply(
                553, "5.6.7", "non-ASCII address, and the receiving server lacks SMTPUTF8"
            )
        eight = has_8bit(tx.message)
        if eight and has_8bit(header_section(tx.message)) and not self.supports("SMTPUTF8"):
            return local_reply(
                554, "5.6.9", "UTF-8 header fields, and the receiving server lacks SMTPUTF8"
            )
        limit = self.max_size
        if limit is not None and len(tx.message) > limit:
            # RFC 1870 §6: a message larger than the declared maximum is a permanent failure.
            return local_reply(
                552, "5.3.4", f"message size {len(tx.message)} exceeds the server's {limit}"
            )
        if eight and not self.supports("8BITMIME") and not self.supports("SMTPUTF8"):
            return Preflight.DOWNGRADE_8BIT
        return Preflight.OK

    # -- commands ---------------------------------------------------------------------

    def ehlo(self) -> None:
        self._require(State.CONNECTED, State.READY)
        self._send(_Kind.EHLO, f"EHLO {self.local_hostname}")

    def helo(self) -> None:
        self._require(State.CONNECTED, State.READY)
        self._send(_Kind.HELO, f"HELO {self.local_hostname}")

    def starttls(self) -> None:
        self._require(State.READY)
        if not self.supports("STARTTLS"):
            raise ClientStateError("the server does not offer STARTTLS")
        self._send(_Kind.STARTTLS, "STARTTLS")

    def tls_started(self) -> None:
        """The handshake finished: forget everything learnt before it (RFC 3207 §4.2)
        and send EHLO again."""
        self.extensions = {}
        self.state = State.CONNECTED
        self._parser = ReplyParser()

    def auth(self, mechanism: str, initial: bytes | None = None) -> None:
        self._require(State.READY)
        line = f"AUTH {mechanism.upper()}"
        if initial is not None:
            # RFC 4954 §4: an empty initial response is sent as "=".
            line += " " + (base64.b64encode(initial).decode() or "=")
        self._auth_active = True
        self._send(_Kind.AUTH, line)

    def auth_response(self, data: bytes) -> None:
        """Answer a 334 challenge."""
        if not self._auth_active or self.state is not State.BUSY or self._pending:
            raise ClientStateError("no AUTH challenge to answer")
        self._pending.append(_Kind.AUTH)
        self._out += base64.b64encode(data) + b"\r\n"

    def auth_cancel(self) -> None:
        if not self._auth_active or self._pending:
            raise ClientStateError("no AUTH challenge to cancel")
        self._pending.append(_Kind.AUTH)
        self._out += b"*\r\n"

    def rset(self) -> None:
        self._require(State.READY)
        self._send(_Kind.RSET, "RSET")

    def noop(self) -> None:
        self._require(State.READY)
        self._send(_Kind.NOOP, "NOOP")

    def quit(self) -> None:
        self._require(State.READY, State.CONNECTED)
        self._send(_Kind.QUIT, "QUIT")

    def send_transaction(self, tx: Transaction) -> None:
        self._require(State.READY)
        if not tx.recipients:
            raise ClientStateError("a transaction needs at least one recipient")
        if not self.esmtp and (tx.body_8bit or tx.smtputf8):
            raise ClientStateError("8-bit or SMTPUTF8 transactions need ESMTP")
        t = _Tx(
            tx=tx,
            pipelining=self.supports("PIPELINING"),
            chunking=self.supports("CHUNKING"),
            rcpt=[None] * len(tx.recipients),
            pending_rcpt=deque(range(len(tx.recipients))),
        )
        self._tx = t
        self.state = State.BUSY
        self._queue(_Kind.MAIL, self._mail_line(tx))
        if t.pipelining:
            # RFC 2920 §3.1: MAIL, every RCPT and (with DATA) the DATA command in one
            # batch; BDAT waits for the RCPT replies so as not to send content nobody takes.
            while t.pending_rcpt:
                self._send_next_rcpt(t)
            if not t.chunking:
                self._queue(_Kind.DATA, "DATA")
                t.data_sent = True

    # -- internals --------------------------------------------------------------------

    def _require(self, *states: State) -> None:
        if self.state not in states:
            raise ClientStateError(f"cannot send this in state {self.state.value}")

    def _send(self, kind: _Kind, line: str) -> None:
        self.state = State.BUSY
        self._queue(kind, line)

    def _queue(self, kind: _Kind, line: str) -> None:
        self._pending.append(kind)
        self._out += line.encode("utf-8") + b"\r\n"

    def _mail_line(self, tx: Transaction) -> str:
        params: list[str] = []
        if self.supports("SIZE"):
            params.append(f"SIZE={len(tx.message)}")
        if has_8bit(tx.message) and self.supports("8BITMIME"):
            params.append("BODY=8BITMIME")
        needs_utf8 = tx.smtputf8 and (
            not is_ascii(tx.sender)
            or any(not is_ascii(r.address) for r in tx.recipients)
            or has_8bit(header_section(tx.message))
        )
        if needs_utf8 and self.supports("SMTPUTF8"):
            params.append("SMTPUTF8")
        if self.supports("DSN"):
            if tx.ret:
                params.append(f"RET={tx.ret}")
            if tx.envid:
                params.append(f"ENVID={tx.envid}")
        if tx.requiretls:
            params.append("REQUIRETLS")
        return " ".join([f"MAIL FROM:<{tx.sender}>", *params])

    def _send_next_rcpt(self, t: _Tx) -> None:
        i = t.pending_rcpt.popleft()
        r = t.tx.recipients[i]
        params: list[str] = []
        if self.supports("DSN"):
            if r.notify:
                params.append(f"NOTIFY={r.notify}")
            if r.orcpt:
                params.append(f"ORCPT={r.orcpt}")
        self._queue(_Kind.RCPT, " ".join([f"RCPT TO:<{r.address}>", *params]))

    def _broken(self, reason: str) -> list[Event]:
        reply = local_reply(421, "4.4.0", f"protocol error: {reason}")
        events: list[Event] = list(self._abort(reply))
        events.append(Malformed(reason))
        return events

    def _abort(self, reply: ServerReply) -> list[Event]:
        events: list[Event] = []
        t = self._tx
        if t is not None:
            if t.mail is None:
                t.mail = reply
            t.rcpt = [reply if x is None else x for x in t.rcpt]
            if t.data is None and self._accepted(t):
                t.data = reply
            events.append(TransactionDone(self._result(t)))
            self._tx = None
        self._pending.clear()
        self.state = State.CLOSED
        return events

    def _result(self, t: _Tx) -> TransactionResult:
        assert t.mail is not None
        return TransactionResult(t.mail, tuple(t.rcpt), t.data, t.tx.recipients)

    def _on_reply(self, reply: ServerReply) -> list[Event]:
        if not self._pending:
            # RFC 5321 3.8: a server may send 421 at any time before closing.
            if reply.code == 421:
                return self._abort(reply)
            return self._broken(f"unexpected reply {reply}")
        kind = self._pending.popleft()
        if kind is _Kind.GREETING:
            if reply.positive:
                self.state = State.CONNECTED
                return [Greeting(reply)]
            # 554 banner (RFC 5321 3.1): the server does not want us; QUIT is allowed.
            self.state = State.CONNECTED
            return [Greeting(reply)]
        if self._tx is not None and kind in (
            _Kind.MAIL, _Kind.RCPT, _Kind.DATA, _Kind.BODY, _Kind.BDAT, _Kind.TX_RSET
        ):
            return self._on_tx_reply(self._tx, kind, reply)
        if reply.code == 421:
            self._pending.clear()
            self.state = State.CLOSED
            return [Response(kind.value, reply)]
        if kind in (_Kind.EHLO, _Kind.HELO):
            if reply.positive:
                self.esmtp = kind is _Kind.EHLO
                self.extensions = parse_extensions(reply) if self.esmtp else {}
                self.state = State.READY
            else:
                self.state = State.CONNECTED
            if kind is _Kind.EHLO:
                return [EhloDone(reply, dict(self.extensions))]
            return [Response(kind.value, reply)]
        if kind is _Kind.STARTTLS:
            # After 220 the driver runs the handshake and calls tls_started().
            self.state = State.BUSY if reply.positive else State.READY
            return [Response(kind.value, reply)]
        if kind is _Kind.AUTH:
            if reply.intermediate:
                self.state = State.BUSY  # waiting for auth_response()/auth_cancel()
            else:
                self._auth_active = False
                self.state = State.READY
            return [Response(kind.value, reply)]
        if kind is _Kind.QUIT:
            self.state = State.CLOSED
            return [Response(kind.value, reply)]
        self.state = State.READY if not self._pending else State.BUSY
        return [Response(kind.value, reply)]

    def _on_tx_reply(self, t: _Tx, kind: _Kind, reply: ServerReply) -> list[Event]:
        if reply.code == 421 and kind is not _Kind.TX_RSET:
            # The server is going away: whatever is unanswered gets this reply.
            self._record(t, kind, reply)
            return self._abort(reply)
        if self._record(t, kind, reply):
            self._tx = None
            self._pending.clear()
            self.state = State.READY
            return [TransactionDone(self._result(t))]
        return []

    def _record(self, t: _Tx, kind: _Kind, reply: ServerReply) -> bool:
        """Store ``reply`` and send what comes next; True when the transaction is over."""
        if kind is _Kind.MAIL:
            t.mail = reply
            if not reply.positive:
                # Pipelined: the server answers (and refuses) the rest of the batch.
                return self._finish(t)
            if not t.pipelining:
                self._send_next_rcpt(t)
            return False
        if kind is _Kind.RCPT:
            t.rcpt[t.rcpt_answered] = reply
            t.rcpt_answered += 1
            if t.pending_rcpt and t.mail is not None and t.mail.positive:
                self._send_next_rcpt(t)
                return False
            if t.rcpt_answered < len(t.rcpt):
                return False
            return self._after_rcpts(t)
        if kind is _Kind.DATA:
            if reply.intermediate:
                self._pending.append(_Kind.BODY)
                if self._accepted(t):
                    self._out += dot_stuff(t.tx.message)
                else:
                    # RFC 2920 §3.1: a server must refuse DATA with no valid recipient;
                    # if it did not, end the (empty) content at once.
                    self._out += b".\r\n"
                    t.empty_body = True
                return False
            if self._mail_ok(t) and self._accepted(t):
                t.data = reply
            return self._finish(t)
        if kind is _Kind.BODY:
            if not t.empty_body:
                t.data = reply
            return self._finish(t)
        if kind is _Kind.BDAT:
            if not reply.positive:
                # RFC 3030 §4: after a failed chunk send no more of them.
                t.chunks.clear()
                if t.data is None:
                    t.data = reply
            elif not t.chunks and _Kind.BDAT not in self._pending:
                if t.data is None:
                    t.data = reply  # the reply to BDAT ... LAST
            elif t.chunks and not t.pipelining:
                self._send_chunk(t)
            if t.chunks or _Kind.BDAT in self._pending:
                return False
            return self._finish(t)
        return not self._pending  # TX_RSET

    def _mail_ok(self, t: _Tx) -> bool:
        return t.mail is not None and t.mail.positive

    def _accepted(self, t: _Tx) -> bool:
        return any(r is not None and r.positive for r in t.rcpt)

    def _after_rcpts(self, t: _Tx) -> bool:
        if t.data_sent or not self._mail_ok(t) or not self._accepted(t):
            return self._finish(t)
        if t.chunking:
            body = _BARE_CR.sub(b"\r\n", _BARE_LF.sub(b"\r\n", t.tx.message))
            t.chunks = [body[i : i + BDAT_CHUNK] for i in range(0, len(body), BDAT_CHUNK)]
            if not t.chunks:
                t.chunks = [b""]
            self._send_chunk(t)
            while t.pipelining and t.chunks:
                self._send_chunk(t)
            return False
        self._queue(_Kind.DATA, "DATA")
        t.data_sent = True
        return False

    def _send_chunk(self, t: _Tx) -> None:
        chunk = t.chunks.pop(0)
        last = " LAST" if not t.chunks else ""
        self._pending.append(_Kind.BDAT)
        self._out += f"BDAT {len(chunk)}{last}\r\n".encode() + chunk

    def _finish(self, t: _Tx) -> bool:
        """True when nothing is outstanding. A transaction that failed after MAIL was
        accepted ends with RSET so the server is clean for the next one (RFC 5321
        4.1.1.5)."""
        if self._pending:
            return False
        if self._mail_ok(t) and not (t.data is not None and t.data.positive) and not t.rset:
            t.rset = True
            self._pending.append(_Kind.TX_RSET)
            self._out += b"RSET\r\n"
            return False
        return True
