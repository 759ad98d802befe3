"""Sans-IO SMTP server session (RFC 5321 with the usual ESMTP extensions).

The shell drives it like h11::

    session = ServerSession(params)
    session.start()
    while True:
        event = session.next_event()
        if event is NEED_DATA:
            send(session.data_to_send()); session.receive_data(read())  # b"" at EOF
        elif isinstance(event, ConnectionClosed):
            send(session.data_to_send()); close(); break
        elif isinstance(event, MailFrom): session.accept() / session.reject(reply)
        ...

The core answers every command it can by itself (syntax, sequence, NOOP, RSET, HELP,
VRFY, EXPN, QUIT, HELO/EHLO, limits); the shell sees only events that need a service
decision (see ``events``). While an event waits for its decision, ``next_event`` returns
``PAUSED`` and pipelined commands stay buffered, so replies stay in order (RFC 2920).
The shell should not read more input while paused: the core buffers whatever it is given.

Decisions documented here (where the RFCs leave a choice):

* Command lines may end in CRLF or a bare LF (as Postfix accepts); DATA ends only at
  CRLF "." CRLF (SMTP smuggling, CVE-2023-51764).
* NUL bytes in message content are accepted and passed on unchanged (as Postfix does);
  NUL in a command line is a syntax error.
* ``max_errors`` counts the errors the core itself answers (syntax, sequence, unknown
  command, refused parameters); the shell's own rejections do not count. When the count
  reaches the limit the error reply is followed by ``421 4.7.0`` and the session closes.
* ``hard_error_limit`` counts every error reply, as Postfix's error count does: the
  core's own, the shell's refusals of MAIL and RCPT (an unknown user is an error, so the
  address space cannot be probed thousands of names per session). Failed AUTH is left
  to the shell's brute-force limiter. At the limit the reply is followed by
  ``421 4.7.0`` (Postfix ``smtpd_hard_error_limit``).
  ``error_replies`` is public: the shell delays replies past its soft limit (a tarpit
  is a timer, so it is the shell's; see server/smtp.py).
* The bare CR/LF policy and the body line limit also apply to BDAT content, except
  ``BODY=BINARYMIME``.
* BDAT chunk data announced by a syntactically valid BDAT command is always read and
  discarded when the command is refused, so binary data is never parsed as commands.
  After a failed chunk (e.g. over size) later chunks get the same reply; LAST or RSET
  ends the failed transaction (RFC 3030 section 3).
* STARTTLS: the core queues ``220 2.0.0`` itself, drops every byte pipelined after the
  command or received before ``tls_started()`` (CVE-2011-0411), and emits StartTLS.
  STARTTLS is refused inside a mail transaction (503) and when TLS is active (503).
* AUTH ``*`` and invalid base64 in a response are answered by the core (``501 5.0.0`` /
  ``501 5.5.2``) and reported as ``AuthResponse(None)``, which needs no decision.
* ``RCPT TO:<Postmaster>`` becomes ``Postmaster@<hostname>`` (RFC 5321 4.1.1.3).
* ``BODY=BINARYMIME`` is accepted only with ``SessionParams.binarymime`` (default off,
  since relaying it needs a BINARYMIME-capable next hop); otherwise ``555 5.5.4``.
* BURL (RFC 4468) only with ``SessionParams.burl`` (submission): ``BURL`` before AUTH,
  ``BURL imap`` after. Its content joins the message as a BDAT chunk's does (same line
  rules and limits); a refused URL fails the transaction like a failed chunk and counts
  toward ``hard_error_limit`` (tokens cannot be guessed by the thousand).
* Big messages are not held whole: once ``spool_threshold`` bytes of content are
  buffered, the core hands them out as ``MessageContent`` events (no decision needed; the
  shell writes them to a spool file) and the final ``MessageReady`` carries the rest with
  ``spooled=True``. A message refused after some content was handed out ends with
  ``MessageDiscarded``. BDAT content is checked (line length, bare CR/LF) as it arrives,
  a CR at a chunk's end being held until the next byte shows whether an LF follows.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections import deque
from dataclasses import dataclass

from pochta.mail.dotstuff import dot_unstuff
from pochta.proto.smtp import replies
from pochta.proto.smtp.address import AddressError, parse_mail_from, parse_rcpt_to
from pochta.proto.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthResponse,
    AuthStart,
    BurlFetch,
    ConnectionClosed,
    Event,
    MailFrom,
    MessageContent,
    MessageDiscarded,
    MessageReady,
    RcptTo,
    StartTLS,
)
from pochta.proto.smtp.replies import Reply

AUTH_LINE_LIMIT = 12288  # RFC 4954 section 4, including CRLF
_BDAT = re.compile(r"(\d{1,20})(?: +(LAST))?", re.IGNORECASE)
_MECHANISM = re.compile(r"[A-Z0-9_-]{1,20}")
_BARE = re.compile(rb"\r|\n")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 3207 section 4: before TLS a submission server accepts only these.
_BEFORE_TLS = frozenset({"EHLO", "HELO", "STARTTLS", "NOOP", "RSET", "QUIT"})


class LocalProtocolError(RuntimeError):
    """The shell called a method that does not fit the session's state."""


@dataclass(frozen=True)
class SessionParams:
    hostname: str
    banner: str = "ESMTP Pochta"
    max_message_size: int = 26_214_400
    max_recipients: int = 100
    max_errors: int = 10
    hard_error_limit: int = 20  # every error reply, shell refusals included (Postfix)
    max_line_length: int = 512
    max_data_line_length: int = 65536
    bare_lf: str = "reject"  # "reject" or "normalize"
    tls_available: bool = False
    tls_active: bool = False
    require_tls: bool = False
    requiretls: bool = False  # over TLS: advertise and accept REQUIRETLS (RFC 8689)
    auth_mechanisms: tuple[str, ...] = ()
    require_auth: bool = False
    smtputf8: bool = True
    binarymime: bool = False  # advertise BINARYMIME and accept BODY=BINARYMIME
    spool_threshold: int = 0  # hand content out in MessageContent events past this (0: never)
    burl: bool = False  # submission only (RFC 4468 §3.1): advertise and accept BURL

    def __post_init__(self) -> None:
        if self.bare_lf not in ("reject", "normalize"):
            raise ValueError(f"bare_lf must be 'reject' or 'normalize', not {self.bare_lf!r}")


class _Mode(enum.Enum):
    COMMAND = "command"
    DATA = "data"
    BDAT = "bdat"
    AUTH = "auth"


class _TooLong:
    pass


_TOO_LONG = _TooLong()

_DecisionEvent = (MailFrom | RcptTo | MessageReady | StartTLS | AuthStart | AuthResponse
                  | BurlFetch)


class ServerSession:
    """One SMTP server connection's protocol state."""

    def __init__(self, params: SessionParams) -> None:
        self.params = params
        self.closed = False
        self.helo_name: str | None = None
        self.esmtp = False
        self.authenticated_as: str | None = None
        self.tls_active = params.tls_active
        self.errors = 0
        self.error_replies = 0
        # commands received, by lower-case verb ("unknown" for the rest), in order of
        # first use: the driver's end-of-session log line (like Postfix's "disconnect")
        self.commands: dict[str, int] = {}
        self._in = bytearray()
        self._scan = 0  # how far self._in was already searched for a line end
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._pending: _DecisionEvent | None = None
        self._eof = False
        self._mode = _Mode.COMMAND
        self._skipping = False  # discarding the rest of an over-long command line
        self._discarding = False  # between STARTTLS and tls_started()
        # mail transaction
        self._mail: MailFrom | None = None
        self._rcpts: list[RcptTo] = []
        self._rcpt_attempted = False
        self._bdat_active = False
        self._bdat_error: Reply | None = None
        # message being received
        self._msg = bytearray()
        self._msg_size = 0
        self._msg_error: Reply | None = None
        self._line_start = True
        self._spooled = False  # some content of this message went out as MessageContent
        self._bd_line = 0  # BDAT: length of the current line so far
        self._bd_cr = False  # BDAT: the last chunk ended in a CR not yet placed
        # BDAT chunk being read
        self._chunk_left = 0
        self._chunk_size = 0
        self._chunk_last = False
        self._chunk_reply: Reply | None = None
        self._chunk_counted = False  # whether the chunk's refusal counts as an error

    # --- the shell's interface ---------------------------------------------------------

    def start(self) -> None:
        """Queue the 220 greeting."""
        self._send(replies.greeting(self.params.hostname, self.params.banner))

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client; ``b""`` means EOF."""
        if self.closed:
            return
        if not data:
            self._eof = True
            return
        if self._discarding:
            # RFC 3207 section 4.2 / CVE-2011-0411: plaintext sent after STARTTLS is
            # never executed.
            return
        self._in += data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event:
        if self._events:
            return self._events.popleft()
        if self.closed:
            return ConnectionClosed()
        if self._pending is not None:
            return PAUSED
        self._process()
        if self._events:
            return self._events.popleft()
        if self.closed:
            return ConnectionClosed()
        return NEED_DATA

    def accept(self, reply: Reply | None = None) -> None:
        """Accept the pending MailFrom, RcptTo or MessageReady."""
        if reply is not None and not reply.is_success:
            raise LocalProtocolError(f"accept() with a failure reply {reply.code}")
        event = self._take_pending(MailFrom, RcptTo, MessageReady)
        if isinstance(event, MailFrom):
            self._mail = event
            self._send(reply or replies.SENDER_OK)
        elif isinstance(event, RcptTo):
            self._rcpts.append(event)
            self._send(reply or replies.RECIPIENT_OK)
        else:
            self._reset_transaction()
            self._send(reply or replies.QUEUED)

    def reject(self, reply: Reply) -> None:
        """Refuse the pending MailFrom, RcptTo, MessageReady or BurlFetch with a 4xx/5xx
        reply."""
        if reply.is_success:
            raise LocalProtocolError(f"reject() with a success reply {reply.code}")
        event = self._take_pending(MailFrom, RcptTo, MessageReady, BurlFetch)
        if isinstance(event, BurlFetch):
            self._fail_burl(event, reply)
            self._count_error_reply()  # a wrong URL is the client's: tokens are not guessed
            return
        if isinstance(event, MessageReady):
            self._reset_transaction()
            self._send(reply)
            return
        self._send(reply)
        self._count_error_reply()

    def burl_resolved(self, data: bytes) -> None:
        """The content the pending BurlFetch's URL names: it joins the message as a BDAT
        chunk would, with the same line rules and limits."""
        event = self._take_pending(BurlFetch)
        assert isinstance(event, BurlFetch)
        self._bdat_content(data)
        self._chunk_done(event.last, replies.BURL_MORE)

    def tls_started(self) -> None:
        """The TLS handshake after STARTTLS succeeded: forget everything (RFC 3207 4.2)."""
        self._take_pending(StartTLS)
        self._discarding = False
        self._in.clear()
        self._scan = 0
        self._skipping = False
        self.tls_active = True
        self.helo_name = None
        self.esmtp = False
        self.authenticated_as = None
        self._reset_transaction()

    def auth_challenge(self, challenge: bytes) -> None:
        """Send ``334 <base64>`` and read one response line (emits AuthResponse)."""
        self._take_pending(AuthStart, AuthResponse)
        self._send(replies.auth_challenge(base64.b64encode(challenge).decode("ascii")))
        self._mode = _Mode.AUTH

    def auth_succeeded(self, identity: str) -> None:
        self._take_pending(AuthStart, AuthResponse)
        self.authenticated_as = identity
        self._send(replies.AUTH_SUCCEEDED)

    def auth_failed(self, reply: Reply) -> None:
        if reply.is_success:
            raise LocalProtocolError(f"auth_failed() with a success reply {reply.code}")
        self._take_pending(AuthStart, AuthResponse)
        # Not counted: failed logins are the brute-force limiter's (services/auth.py),
        # with its own delay and lockout per address and account.
        self._send(reply)

    def abandon(self, reply: Reply) -> None:
        """Answer the pending decision, whatever it is, with a failure reply: the
        shell's command boundary after an unexpected exception (451 4.3.0). It is not
        the client's error, so it is not counted. A StartTLS in flight leaves the
        connection in an unknown state: the session closes with 421 instead."""
        if reply.is_success:
            raise LocalProtocolError(f"abandon() with a success reply {reply.code}")
        event = self._pending
        if event is None:
            raise LocalProtocolError("abandon() with no pending event")
        self._pending = None
        if isinstance(event, StartTLS):
            self._send(replies.SERVICE_UNAVAILABLE)
            return
        if isinstance(event, BurlFetch):
            self._fail_burl(event, reply)
            return
        if isinstance(event, MessageReady):
            self._reset_transaction()
        self._send(reply)

    @property
    def in_transaction(self) -> bool:
        """A MAIL command was accepted and the transaction has not ended."""
        return self._mail is not None

    @property
    def in_data(self) -> bool:
        """Reading message content (DATA or a BDAT chunk): the shell's data timeout."""
        return self._mode in (_Mode.DATA, _Mode.BDAT)

    # --- internals ---------------------------------------------------------------------

    def _take_pending(self, *kinds: type) -> _DecisionEvent:
        event = self._pending
        if event is None or not isinstance(event, kinds):
            names = ", ".join(k.__name__ for k in kinds)
            raise LocalProtocolError(f"no pending {names} event (pending: {event!r})")
        self._pending = None
        return event

    def _emit(self, event: _DecisionEvent) -> None:
        self._pending = event
        self._events.append(event)

    def _fail_burl(self, event: BurlFetch, reply: Reply) -> None:
        """A URL that could not be used fails the whole transaction (RFC 4468 §3.2):
        later BURL and BDAT commands get the same reply until LAST or RSET, as after a
        failed chunk (RFC 3030 §3)."""
        self._fail_message(reply)
        self._bdat_error = reply
        self._send(reply)
        if event.last:
            self._reset_transaction()

    def _notify(self, event: MessageContent | MessageDiscarded) -> None:
        """An event the shell acts on without a decision (the core goes on)."""
        self._events.append(event)

    def _send(self, reply: Reply) -> None:
        if self.closed:
            return
        self._out += reply.to_bytes()
        if reply.close:
            self._close()

    def _error(self, reply: Reply) -> None:
        """Answer an error the core found; enough of them close the session."""
        self._send(reply)
        self.errors += 1
        if self.errors >= self.params.max_errors and not self.closed:
            self._send(replies.TOO_MANY_ERRORS)
        self._count_error_reply()

    def _count_error_reply(self) -> None:
        self.error_replies += 1
        if self.error_replies >= self.params.hard_error_limit and not self.closed:
            self._send(replies.TOO_MANY_ERRORS)

    def _close(self) -> None:
        self.closed = True
        self._pending = None
        self._in.clear()

    def _reset_transaction(self) -> None:
        self._mail = None
        self._rcpts = []
        self._rcpt_attempted = False
        self._bdat_active = False
        self._bdat_error = None
        self._discard_spooled()
        self._msg = bytearray()
        self._msg_size = 0
        self._msg_error = None
        self._bd_line = 0
        self._bd_cr = False

    def _discard_spooled(self) -> None:
        if self._spooled:
            self._spooled = False
            self._notify(MessageDiscarded())

    def _process(self) -> None:
        while not self._events and self._pending is None and not self.closed:
            if self._mode is _Mode.DATA:
                progressed = self._read_data()
            elif self._mode is _Mode.BDAT:
                progressed = self._read_chunk()
            else:
                line = self._read_line()
                if line is None:
                    progressed = False
                elif self._mode is _Mode.AUTH:
                    self._auth_line(line)
                    progressed = True
                else:
                    self._command(line)
                    progressed = True
            if not progressed:
                if self._eof:
                    self._close()
                return

    # --- command lines -----------------------------------------------------------------

    def _line_limit(self) -> int:
        if self._mode is _Mode.AUTH or self._in[:5].upper() == b"AUTH ":
            return max(AUTH_LINE_LIMIT, self.params.max_line_length)
        return self.params.max_line_length

    def _read_line(self) -> bytes | _TooLong | None:
        buf = self._in
        limit = self._line_limit()
        i = buf.find(b"\n", self._scan)
        if i < 0:
            if self._skipping or len(buf) > limit:
                # Over-long line: drop what we have, remember to drop up to its end.
                self._skipping = True
                keep = 1 if buf.endswith(b"\r") else 0
                del buf[: len(buf) - keep]
                self._scan = 0
            else:
                self._scan = len(buf)
            return None
        line = bytes(buf[:i])
        del buf[: i + 1]
        self._scan = 0
        if self._skipping:
            self._skipping = False
            return _TOO_LONG
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) + 2 > limit:
            return _TOO_LONG
        return line

    def _command(self, raw: bytes | _TooLong) -> None:
        if isinstance(raw, _TooLong):
            self._error(replies.LINE_TOO_LONG)
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._error(replies.SYNTAX_NOT_UTF8)
            return
        if not text.strip():
            self._error(replies.SYNTAX_EMPTY)
            return
        if text.endswith("\r"):
            # CR CR LF: what `openssl s_client -crlf` sends when the user types CR too
            self._error(replies.SYNTAX_CR_CR_LF)
            return
        if _CONTROL.search(text):
            self._error(replies.SYNTAX_CONTROL)
            return
        verb, _, arg = text.lstrip(" ").partition(" ")
        verb = verb.upper()
        arg = arg.strip(" ")
        handler = self._HANDLERS.get(verb)
        counted = verb.lower() if handler is not None else "unknown"
        self.commands[counted] = self.commands.get(counted, 0) + 1
        if handler is None:
            self._error(replies.UNKNOWN_COMMAND)
            return
        if (
            self.params.require_tls
            and not self.tls_active
            and verb not in _BEFORE_TLS
            and verb != "BDAT"  # BDAT applies the check itself, after reading its chunk
        ):
            self._error(replies.MUST_STARTTLS)
            return
        handler(self, arg)

    def _ehlo(self, arg: str) -> None:
        self._hello(arg, esmtp=True)

    def _helo(self, arg: str) -> None:
        self._hello(arg, esmtp=False)

    def _hello(self, arg: str, *, esmtp: bool) -> None:
        if not arg:
            self._error(replies.EHLO_SYNTAX if esmtp else replies.HELO_SYNTAX)
            return
        # RFC 5321 section 4.1.4: EHLO/HELO also resets any mail transaction.
        self._reset_transaction()
        self.helo_name = arg
        self.esmtp = esmtp
        if not esmtp:
            self._send(replies.helo(self.params.hostname))
            return
        p = self.params
        keywords = ["PIPELINING", f"SIZE {p.max_message_size}", "8BITMIME"]
        if p.binarymime:
            keywords.append("BINARYMIME")
        if p.smtputf8:
            keywords.append("SMTPUTF8")
        keywords += ["ENHANCEDSTATUSCODES", "CHUNKING", "DSN"]
        if p.tls_available and not self.tls_active:
            keywords.append("STARTTLS")
        if p.auth_mechanisms and self.tls_active:
            keywords.append("AUTH " + " ".join(m.upper() for m in p.auth_mechanisms))
        if p.requiretls and self.tls_active:
            keywords.append("REQUIRETLS")
        if p.burl:
            # without arguments before AUTH: supported, authentication needed (§3.1)
            keywords.append("BURL imap" if self.authenticated_as is not None else "BURL")
        self._send(replies.ehlo(p.hostname, keywords))

    def _mail_cmd(self, arg: str) -> None:
        if self.helo_name is None:
            self._error(replies.SEND_HELO_FIRST)
            return
        if self._mail is not None:
            self._error(replies.SENDER_ALREADY_GIVEN)
            return
        if self.params.require_auth and self.authenticated_as is None:
            # RFC 6409 section 4.3 (submission).
            self._error(replies.AUTH_REQUIRED)
            return
        if arg[:5].upper() != "FROM:":
            self._error(replies.MAIL_SYNTAX)
            return
        try:
            event = parse_mail_from(
                arg[5:],
                max_message_size=self.params.max_message_size,
                smtputf8_enabled=self.params.smtputf8,
                binarymime_enabled=self.params.binarymime,
                requiretls_enabled=self.params.requiretls and self.tls_active,
            )
        except AddressError as exc:
            if exc.reply is replies.MESSAGE_TOO_BIG:
                self._send(exc.reply)  # a size refusal is not a protocol error
            else:
                self._error(exc.reply)
            return
        self._emit(event)

    def _rcpt_cmd(self, arg: str) -> None:
        if self._mail is None:
            self._error(replies.NEED_MAIL)
            return
        if self._bdat_active:
            self._error(replies.COMMAND_DURING_BDAT)
            return
        if arg[:3].upper() != "TO:":
            self._error(replies.RCPT_SYNTAX)
            return
        try:
            event = parse_rcpt_to(
                arg[3:], smtputf8=self._mail.smtputf8, local_hostname=self.params.hostname
            )
        except AddressError as exc:
            self._error(exc.reply)
            return
        self._rcpt_attempted = True
        if len(self._rcpts) >= self.params.max_recipients:
            # RFC 5321 section 4.5.3.1.10: 452, the client sends the rest later.
            self._send(replies.TOO_MANY_RECIPIENTS)
            return
        self._emit(event)

    def _data_cmd(self, arg: str) -> None:
        if arg:
            self._error(replies.NO_ARGUMENTS_ALLOWED)
            return
        if self._mail is None:
            self._error(replies.NEED_MAIL)
            return
        if self._bdat_active:
            self._error(replies.DATA_DURING_BDAT)  # RFC 3030 section 3
            return
        if self._mail.body == "BINARYMIME":
            self._error(replies.BINARYMIME_NEEDS_BDAT)  # RFC 3030 section 3
            return
        if not self._rcpts:
            # RFC 2920 section 3.1: all recipients refused -> 554 (no RCPT at all -> 503).
            if self._rcpt_attempted:
                self._send(replies.NO_VALID_RECIPIENTS)
            else:
                self._error(replies.NEED_RCPT)
            return
        self._begin_message()
        self._mode = _Mode.DATA
        self._send(replies.START_DATA)

    def _bdat_cmd(self, arg: str) -> None:
        m = _BDAT.fullmatch(arg)
        if m is None:
            # Without a size we cannot know where the chunk ends.
            self._error(replies.BDAT_SYNTAX)
            return
        size = int(m.group(1))
        last = m.group(2) is not None
        refusal: Reply | None = None
        counted = True
        if self.params.require_tls and not self.tls_active:
            refusal = replies.MUST_STARTTLS
        elif self._mail is None:
            refusal = replies.NEED_MAIL
        elif not self._rcpts:
            if self._rcpt_attempted:
                refusal, counted = replies.NO_VALID_RECIPIENTS, False
            else:
                refusal = replies.NEED_RCPT
        elif self._bdat_error is not None:
            refusal, counted = self._bdat_error, False
        elif not self._bdat_active:
            self._begin_message()
            self._bdat_active = True
        self._chunk_left = self._chunk_size = size
        self._chunk_last = last
        self._chunk_reply = refusal
        self._chunk_counted = counted
        self._mode = _Mode.BDAT

    def _burl_cmd(self, arg: str) -> None:
        """``BURL absolute-URI [LAST]`` (RFC 4468 §3.5): in place of DATA, mixed with BDAT
        chunks, after at least one accepted RCPT."""
        if not self.params.burl:
            self._error(replies.UNKNOWN_COMMAND)
            return
        url, _, marker = arg.partition(" ")
        if not url or (marker and marker.upper() != "LAST"):
            self._error(replies.BURL_SYNTAX)
            return
        last = bool(marker)
        if self.authenticated_as is None:
            self._error(replies.AUTH_REQUIRED)
        elif self._mail is None:
            self._error(replies.NEED_MAIL)
        elif not self._rcpts:
            # §6: 554 when every RCPT failed (pipelined), 503 when none was sent
            if self._rcpt_attempted:
                self._send(replies.NO_VALID_RECIPIENTS)
            else:
                self._error(replies.NEED_RCPT)
        elif self._bdat_error is not None:
            self._send(self._bdat_error)
            if last:
                self._reset_transaction()
        else:
            if not self._bdat_active:
                self._begin_message()
                self._bdat_active = True
            self._emit(BurlFetch(url, last))

    def _rset(self, arg: str) -> None:
        if arg:
            self._error(replies.NO_ARGUMENTS_ALLOWED)
            return
        self._reset_transaction()
        self._send(replies.OK)

    def _noop(self, arg: str) -> None:
        self._send(replies.OK)

    def _quit(self, arg: str) -> None:
        self._send(replies.BYE)

    def _vrfy(self, arg: str) -> None:
        if not arg:
            self._error(replies.VRFY_SYNTAX)
            return
        self._send(replies.CANNOT_VRFY)

    def _expn(self, arg: str) -> None:
        self._error(replies.EXPN_NOT_AVAILABLE)

    def _help(self, arg: str) -> None:
        # Only what works on this port and at this point: STARTTLS while it is on offer,
        # AUTH where mechanisms are configured (never on an MTA port, where it is 502).
        p = self.params
        extra = []
        if p.tls_available and not self.tls_active:
            extra.append("STARTTLS")
        if p.auth_mechanisms:
            extra.append("AUTH")
        if p.burl:
            extra.append("BURL")
        self._send(replies.help_reply(extra))

    def _starttls(self, arg: str) -> None:
        if arg:
            self._error(replies.NO_ARGUMENTS_ALLOWED)  # RFC 3207 section 4
            return
        if self.tls_active:
            self._error(replies.TLS_ALREADY_ACTIVE)
            return
        if not self.params.tls_available:
            self._error(replies.NOT_IMPLEMENTED)
            return
        if self._mail is not None:
            self._error(replies.TRANSACTION_IN_PROGRESS)
            return
        self._send(replies.READY_TLS)
        # Anything pipelined after STARTTLS is plaintext injection: drop it.
        self._in.clear()
        self._scan = 0
        self._discarding = True
        self._emit(StartTLS())

    def _auth(self, arg: str) -> None:
        p = self.params
        if not p.auth_mechanisms:
            self._error(replies.NOT_IMPLEMENTED)
            return
        if not self.esmtp:
            self._error(replies.SEND_EHLO_FIRST)
            return
        if not self.tls_active:
            self._error(replies.ENCRYPTION_REQUIRED)
            return
        if self.authenticated_as is not None:
            self._error(replies.ALREADY_AUTHENTICATED)  # RFC 4954 section 4
            return
        if self._mail is not None:
            self._error(replies.TRANSACTION_IN_PROGRESS)  # RFC 4954 section 4
            return
        parts = arg.split(" ")
        mechanism = parts[0].upper()
        if len(parts) > 2 or not _MECHANISM.fullmatch(mechanism):
            self._error(replies.AUTH_SYNTAX)
            return
        if mechanism not in (m.upper() for m in p.auth_mechanisms):
            self._error(replies.UNKNOWN_MECHANISM)
            return
        initial: bytes | None = None
        if len(parts) == 2:
            if parts[1] == "=":
                initial = b""
            else:
                decoded = _b64decode(parts[1].encode("utf-8"))
                if decoded is None:
                    self._error(replies.INVALID_BASE64)
                    return
                initial = decoded
        self._emit(AuthStart(mechanism, initial))

    def _auth_line(self, raw: bytes | _TooLong) -> None:
        self._mode = _Mode.COMMAND
        if isinstance(raw, _TooLong):
            self._error(replies.AUTH_LINE_TOO_LONG)
            self._events.append(AuthResponse(None))
            return
        raw = raw.strip(b" ")
        if raw == b"*":
            self._send(replies.AUTH_CANCELLED)  # RFC 4954 section 4
            self._events.append(AuthResponse(None))
            return
        decoded = _b64decode(raw)
        if decoded is None:
            self._error(replies.INVALID_BASE64)
            self._events.append(AuthResponse(None))
            return
        self._emit(AuthResponse(decoded))

    _HANDLERS = {
        "EHLO": _ehlo,
        "HELO": _helo,
        "MAIL": _mail_cmd,
        "RCPT": _rcpt_cmd,
        "DATA": _data_cmd,
        "BDAT": _bdat_cmd,
        "BURL": _burl_cmd,
        "RSET": _rset,
        "NOOP": _noop,
        "QUIT": _quit,
        "VRFY": _vrfy,
        "EXPN": _expn,
        "HELP": _help,
        "STARTTLS": _starttls,
        "AUTH": _auth,
    }

    # --- message content ---------------------------------------------------------------

    def _begin_message(self) -> None:
        self._msg = bytearray()
        self._msg_size = 0
        self._msg_error = None
        self._line_start = True
        self._bd_line = 0
        self._bd_cr = False

    def _fail_message(self, reply: Reply) -> None:
        if self._msg_error is None:
            self._msg_error = reply
        self._msg = bytearray()  # stop holding memory for a refused message
        self._discard_spooled()

    def _add_content(self, data: bytes) -> None:
        self._msg_size += len(data)
        if self._msg_size > self.params.max_message_size:
            self._fail_message(replies.MESSAGE_TOO_BIG)
        if self._msg_error is None:
            self._msg += data
            threshold = self.params.spool_threshold
            if threshold and len(self._msg) >= threshold:
                self._notify(MessageContent(bytes(self._msg), first=not self._spooled))
                self._spooled = True
                self._msg = bytearray()

    def _read_data(self) -> bool:
        """Consume DATA lines; only CRLF "." CRLF ends the message (RFC 5321 4.1.1.4)."""
        buf = self._in
        progressed = False
        while True:
            i = buf.find(b"\r\n", self._scan)
            if i < 0:
                # A trailing CR may start the CRLF that ends the line: keep it.
                keep = 1 if buf.endswith(b"\r") else 0
                if len(buf) - keep > self.params.max_data_line_length:
                    # Part of an over-long line: refuse the message, keep no bytes.
                    self._fail_message(replies.DATA_LINE_TOO_LONG)
                    self._data_line(bytes(buf[: len(buf) - keep]), complete=False)
                    del buf[: len(buf) - keep]
                    self._line_start = False
                    progressed = True
                self._scan = max(0, len(buf) - 1)
                return progressed
            line = bytes(buf[:i])
            del buf[: i + 2]
            self._scan = 0
            if self._line_start and line == b".":
                self._mode = _Mode.COMMAND
                self._finish_message(chunked=False)
                return True
            if len(line) > self.params.max_data_line_length:
                self._fail_message(replies.DATA_LINE_TOO_LONG)
            self._data_line(line, complete=True)
            self._line_start = True
            progressed = True

    def _data_line(self, line: bytes, *, complete: bool) -> None:
        if self._line_start:
            line = dot_unstuff(line)
        if _BARE.search(line):
            if self.params.bare_lf == "reject":
                self._fail_message(replies.BARE_LINE_ENDING)
            else:
                # Normalize: every bare CR or LF is a line break; a dot after it was
                # stuffed by the client as at any line start (as Postfix does).
                parts = _BARE.split(line)
                line = b"\r\n".join(
                    [parts[0], *(dot_unstuff(p) for p in parts[1:])]
                )
        self._add_content(line + b"\r\n" if complete else line)

    def _read_chunk(self) -> bool:
        buf = self._in
        n = min(len(buf), self._chunk_left)
        if n:
            if self._chunk_reply is None:
                self._bdat_content(bytes(buf[:n]))
            del buf[:n]
            self._chunk_left -= n
        if self._chunk_left:
            return n > 0
        self._mode = _Mode.COMMAND
        refusal = self._chunk_reply
        if refusal is not None:
            if self._chunk_counted:
                self._error(refusal)
            else:
                self._send(refusal)
            if self._chunk_last and self._bdat_error is not None:
                self._reset_transaction()
            return True
        self._chunk_done(self._chunk_last, replies.chunk_received(self._chunk_size))
        return True

    def _chunk_done(self, last: bool, more: Reply) -> None:
        """The end of a BDAT chunk or a BURL's content: ``more`` if the message goes on."""
        if self._msg_error is not None:
            # RFC 3030 section 3: after a failed chunk the transaction is failed; later
            # chunks get the same answer until LAST or RSET.
            self._bdat_error = self._msg_error
            self._send(self._msg_error)
            if last:
                self._reset_transaction()
            return
        if not last:
            self._send(more)
            return
        self._finish_message(chunked=True)

    def _bdat_content(self, piece: bytes) -> None:
        """Apply the DATA line rules to BDAT content as it arrives (not to BINARYMIME)."""
        assert self._mail is not None
        if self._mail.body == "BINARYMIME" or self._msg_error is not None:
            self._add_content(piece)
            return
        data = (b"\r" if self._bd_cr else b"") + piece
        self._bd_cr = data.endswith(b"\r")  # its LF may come with the next chunk
        if self._bd_cr:
            data = data[:-1]
        self._bdat_lines(data)

    def _bdat_lines(self, data: bytes) -> None:
        limit = self.params.max_data_line_length
        lines = data.split(b"\r\n")
        # Every CRLF was split away: a CR or LF left in a line is a bare one.
        if any(_BARE.search(line) for line in lines):
            if self.params.bare_lf == "reject":
                self._fail_message(replies.BARE_LINE_ENDING)
                return
            lines = [_BARE.sub(b"\r\n", line) for line in lines]
            data = b"\r\n".join(lines)
            lines = data.split(b"\r\n")
        first = self._bd_line + len(lines[0])
        if first > limit or any(len(line) > limit for line in lines[1:]):
            self._fail_message(replies.DATA_LINE_TOO_LONG)
            return
        self._bd_line = first if len(lines) == 1 else len(lines[-1])
        self._add_content(data)

    def _check_chunked_content(self) -> None:
        """The end of a BDAT message: a CR still held is a bare one."""
        assert self._mail is not None
        if self._bd_cr and self._mail.body != "BINARYMIME":
            self._bd_cr = False
            if self.params.bare_lf == "reject":
                self._fail_message(replies.BARE_LINE_ENDING)
            else:
                self._add_content(b"\r\n")

    def _finish_message(self, *, chunked: bool) -> None:
        mail = self._mail
        assert mail is not None
        if chunked and self._msg_error is None:
            self._check_chunked_content()
        if self._msg_error is not None:
            reply = self._msg_error
            self._reset_transaction()
            self._send(reply)
            return
        self._emit(
            MessageReady(
                data=bytes(self._msg),
                mail_from=mail,
                recipients=tuple(self._rcpts),
                body_8bit=mail.body in ("8BITMIME", "BINARYMIME"),
                smtputf8=mail.smtputf8,
                chunked=chunked,
                spooled=self._spooled,
            )
        )
        self._msg = bytearray()
        self._spooled = False


def _b64decode(data: bytes) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
