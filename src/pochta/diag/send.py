"""`pochta send`: one SMTP transaction against any server, with the whole transcript.

The SMTP is the client core's (``proto/smtp/client.py``, the one the queue delivers
with): it sequences EHLO/HELO, STARTTLS, AUTH and the transaction, pipelines it (RFC
2920) with ``--pipeline`` and uses BDAT (RFC 3030) with ``--chunking``. This module
connects, shows every line the core sends or the server answers with a timestamp
(secrets redacted, the message body in short), times each step, and stops after any
step (``--quit-after``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import mimetypes
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, NoReturn

from pochta.dns import Resolver, TemporaryDNSError
from pochta.mail.dotstuff import TERMINATOR, to_crlf
from pochta.proto.smtp.client import (
    ClientSession,
    EhloDone,
    Event,
    Greeting,
    Malformed,
    Recipient,
    Response,
    ServerReply,
    State,
    Transaction,
    TransactionDone,
    TransactionResult,
    local_reply,
)

from .common import (
    EXIT_CONNECT,
    EXIT_FAILED,
    EXIT_OK,
    ConnectError,
    TLSDetails,
    Transcript,
    UsageError,
    Wire,
    client_context,
    tls_details,
)

QUIT_AFTER = ("connect", "banner", "ehlo", "tls", "auth", "mail", "rcpt", "data")
TLS_MODES = ("starttls", "implicit", "none", "try")
PLAINTEXT_AUTH_RISK = (
    "not sending the password without TLS. Anyone on the path (a hostile network, a "
    "proxy) can remove STARTTLS from the EHLO reply to make a client authenticate in "
    "clear text and read the password. Use --tls implicit (port 465) or fix the "
    "server's TLS; only on a network you trust, send it in clear with --tls none")
SHOW_BODY_LINES = 40


@dataclass
class SendOptions:
    server: str | None
    port: int | None
    sender: str
    recipients: list[str]
    message: bytes
    tls: str = "try"
    auth: str | None = None  # mechanism, "" for "pick one"
    auth_user: str = ""
    password: str = ""
    ehlo: str = field(default_factory=socket.getfqdn)
    pipeline: bool = False
    chunking: bool = False
    quit_after: str | None = None
    timeout: float = 30.0
    keylog: str | None = None
    cafile: str | None = None
    tls_verify: bool = False  # a certificate that fails verification ends the session
    show_secrets: bool = False


@dataclass
class Step:
    step: str
    seconds: float
    code: int | None


@dataclass
class RcptOutcome:
    address: str
    code: int
    reply: str


@dataclass
class SendResult:
    server: str
    port: int
    ok: bool = False
    exit_code: int = EXIT_OK
    error: str | None = None
    steps: list[Step] = field(default_factory=list)
    tls: TLSDetails | None = None
    extensions: dict[str, str] = field(default_factory=dict)
    recipients: list[RcptOutcome] = field(default_factory=list)
    message_reply: ServerReply | None = None
    transcript: Transcript = field(default_factory=Transcript)

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "send",
            "server": self.server,
            "port": self.port,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "error": self.error,
            "tls": self.tls.to_json() if self.tls else None,
            "extensions": self.extensions,
            "steps": [asdict(s) for s in self.steps],
            "recipients": [asdict(r) for r in self.recipients],
            "message_reply": (
                {"code": self.message_reply.code, "text": self.message_reply.text}
                if self.message_reply else None
            ),
            "transcript": self.transcript.to_json(),
        }


class _Stop(Exception):
    """End the session: ``error`` None means a requested early stop."""

    def __init__(self, error: str | None, exit_code: int = EXIT_FAILED, quit: bool = True):
        super().__init__(error or "stop")
        self.error = error
        self.exit_code = exit_code
        self.quit = quit


class _VerifyFailed(Exception):
    pass


# --- the message -----------------------------------------------------------------------


def build_message(
    sender: str, recipients: Sequence[str], *, headers: Sequence[str] = (),
    body: str | None = None, attachments: Sequence[Path] = (),
    ehlo_name: str = "localhost",
) -> bytes:
    """A small test message like swaks makes; ``--header`` lines replace defaults."""
    msg = EmailMessage(policy=SMTP)
    msg["Date"] = formatdate(localtime=True)
    msg["To"] = ", ".join(recipients)
    msg["From"] = sender or f"MAILER-DAEMON@{ehlo_name}"
    msg["Subject"] = f"test {formatdate(localtime=True)}"
    msg["Message-ID"] = make_msgid(domain=ehlo_name)
    msg["X-Mailer"] = "pochta send"
    for h in headers:
        name, sep, value = h.partition(":")
        if not sep or not name.strip() or not re.fullmatch(r"[!-9;-~]+", name.strip()):
            raise UsageError(f"--header {h!r}: expected 'Name: value'")
        del msg[name.strip()]
        msg[name.strip()] = value.strip()
    msg.set_content(body if body is not None else "This is a test mailing\n")
    for path in attachments:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"--attach {path}: {exc.strerror}") from None
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return msg.as_bytes()


# --- target ----------------------------------------------------------------------------


async def mx_target(domain: str, resolver: Resolver) -> str:
    """The best MX host of ``domain`` (the domain itself without MX, RFC 5321 5.1)."""
    try:
        mxs = sorted(await resolver.mx(domain))
    except TemporaryDNSError as exc:
        raise ConnectError(f"MX lookup for {domain} failed: {exc}") from None
    if not mxs:
        return domain
    if not mxs[0].host:
        raise ConnectError(f"{domain} has a null MX: it accepts no mail (RFC 7505)")
    return mxs[0].host


# --- the session -----------------------------------------------------------------------


async def send(opts: SendOptions, result: SendResult) -> SendResult:
    """Run the session; ``result`` (with its transcript) is filled in as it goes."""
    verify_modes = [True] if opts.tls_verify else [True, False]
    why = ""
    for verify in verify_modes:
        try:
            await _session(opts, result, verify, why)
            return result
        except _VerifyFailed as exc:
            why = str(exc)
            if not opts.tls_verify:
                result.transcript.note(
                    f"certificate verification failed ({exc}); connecting again without "
                    "verification (use --tls-verify to stop here)")
            if opts.tls_verify:
                result.ok = False
                result.error = f"certificate verification failed: {why}"
                result.exit_code = EXIT_FAILED
                return result
            result.steps.clear()
    return result


def _fail_result(result: SendResult, stop: _Stop) -> None:
    result.ok = stop.error is None
    result.error = stop.error
    result.exit_code = EXIT_OK if stop.error is None else stop.exit_code


class _Client:
    """Drives the SMTP client core (``proto/smtp/client.py``) over a ``Wire``: sends what
    the core queues, logging each command line (the message body in short, secrets as
    ``shown``), feeds it the server's lines, and notes which command each reply answered
    and when, for the step timings and ``--quit-after``."""

    def __init__(self, wire: Wire, session: ClientSession, body_lines: list[bytes]) -> None:
        self.wire = wire
        self.session = session
        self.body_lines = body_lines
        self.sent: deque[str] = deque(["GREETING"])  # commands awaiting their reply
        self.answered: list[tuple[str, ServerReply, float]] = []  # (command, reply, when)
        self.body_next = False  # the core's next output is the DATA content
        self.body_shown = False
        self.stop_after: tuple[str, int] | None = None  # return after n replies to this
        self._lines: list[str] = []

    async def flush(self, shown: str | None = None) -> None:
        out = self.session.data_to_send()
        if not out:
            return
        t = self.wire.transcript
        if self.body_next:
            self.body_next = False
            if out != TERMINATOR:
                _show_body(t, self.body_lines)
            t.add("->", ".")
            self.sent.append("BODY")
        else:
            pos = 0
            while pos < len(out):
                end = out.find(b"\r\n", pos)
                line = out[pos:end].decode("utf-8", "replace")
                pos = end + 2
                t.add("->", line if shown is None else shown)
                verb = line.split(" ", 1)[0].upper()
                self.sent.append(verb)
                if verb == "BDAT":
                    if not self.body_shown:
                        _show_body(t, self.body_lines)
                        self.body_shown = True
                    pos += int(line.split()[1])
        self.wire.send_raw(out)
        await self.wire.drain()

    async def events(self) -> list[Event]:
        """Read the server's lines until the core has something to say (or the reply to
        ``stop_after`` came)."""
        while True:
            line = await self.wire.read_line()
            stop = False
            self._lines.append(line[4:])
            if len(line) < 4 or line[3] != "-":  # the last line of a reply
                verb = self.sent.popleft() if self.sent else ""
                code = int(line[:3]) if line[:3].isdigit() else 0
                reply = ServerReply(code, tuple(self._lines))
                self.answered.append((verb, reply, time.monotonic()))
                self._lines = []
                self.body_next = verb == "DATA" and code == 354
                if self.stop_after is not None:
                    want, count = self.stop_after
                    stop = len(self.replies_to(want)) == count
            events = self.session.receive_data(line.encode("utf-8", "replace") + b"\r\n")
            for ev in events:
                if isinstance(ev, Malformed):
                    self.wire.transcript.note(f"not an SMTP reply: {ev.reason}")
                    raise ConnectError(f"protocol error: {ev.reason}")
            if events or stop:
                return events
            await self.flush()  # what the core sends next inside a transaction

    async def reply(self, shown: str | None = None) -> ServerReply:
        """Send what the core queued and wait for the reply to it."""
        await self.flush(shown)
        while True:
            for ev in await self.events():
                if isinstance(ev, Greeting | EhloDone | Response):
                    return ev.reply
                if isinstance(ev, TransactionDone):
                    return ev.result.mail

    def replies_to(self, verb: str) -> list[ServerReply]:
        return [reply for v, reply, _ in self.answered if v == verb]

    def answered_at(self, verb: str) -> tuple[ServerReply, float] | None:
        """(reply, time) of the last reply to ``verb``."""
        for v, reply, when in reversed(self.answered):
            if v == verb:
                return reply, when
        return None

    async def quit(self) -> None:
        with contextlib.suppress(ConnectError):
            if self.session.state in (State.READY, State.CONNECTED):
                self.session.quit()
                await self.reply()
            elif not self.session.closed:
                # Stopped inside a transaction (--quit-after): the core would send the
                # next command, so say QUIT past it.
                self.wire.send_line("QUIT")
                await self.wire.drain()
                while (await self.wire.read_line())[3:4] == "-":
                    pass


async def _session(opts: SendOptions, result: SendResult, verify: bool, why: str) -> None:
    t = result.transcript
    host, port = result.server, result.port
    ctx = client_context(verify, opts.cafile, opts.keylog)
    implicit = opts.tls == "implicit"
    client: _Client | None = None
    steps = result.steps

    def step(name: str, started: float, reply: ServerReply | None = None) -> None:
        steps.append(Step(name, round(time.monotonic() - started, 4),
                          reply.code if reply else None))

    def stop_if(name: str) -> None:
        if opts.quit_after == name:
            raise _Stop(None)

    try:
        t.note(f"connecting to {host} port {port}" + (" (implicit TLS)" if implicit else ""))
        t0 = time.monotonic()
        try:
            wire = await Wire.connect(host, port, t, opts.timeout, ctx if implicit else None)
        except ssl.SSLCertVerificationError as exc:
            raise _VerifyFailed(exc.verify_message or str(exc)) from None
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise _Stop(f"cannot connect to {host}:{port}: {exc or 'timeout'}",
                        EXIT_CONNECT, quit=False) from None
        client = _Client(wire, ClientSession(opts.ehlo), to_crlf(opts.message).splitlines())
        session = client.session
        step("connect", t0)
        t.note(f"connected to {wire.peer}")
        if implicit:
            _tls_established(result, wire, verify, why)
        if opts.quit_after == "connect":
            raise _Stop(None, quit=False)

        t0 = time.monotonic()
        banner = await client.reply()
        step("banner", t0, banner)
        if not banner.positive:
            raise _Stop(f"the server refused the session: {banner}")
        stop_if("banner")

        t0 = time.monotonic()
        reply = await _ehlo(client)
        step("ehlo", t0, reply)
        if not reply.positive:
            raise _Stop(f"EHLO/HELO refused: {reply}")
        result.extensions = dict(session.extensions)
        stop_if("ehlo")

        # With a password to send, "try" means "required": a man in the middle who
        # strips STARTTLS from the EHLO reply must not be handed the password.
        required = opts.tls == "starttls" or opts.auth is not None
        if opts.tls in ("starttls", "try") and not implicit:
            if session.supports("STARTTLS"):
                t0 = time.monotonic()
                session.starttls()
                reply = await client.reply()
                if not reply.positive:
                    if opts.auth is not None:
                        raise _Stop(f"STARTTLS refused ({reply}): {PLAINTEXT_AUTH_RISK}")
                    if required:
                        raise _Stop(f"STARTTLS refused: {reply}")
                    t.note("STARTTLS refused; continuing without TLS")
                else:
                    try:
                        await wire.start_tls(ctx, host)
                    except ssl.SSLCertVerificationError as exc:
                        raise _VerifyFailed(exc.verify_message or str(exc)) from None
                    except (OSError, ssl.SSLError, TimeoutError) as exc:
                        raise _Stop(f"TLS handshake failed: {exc or 'timeout'}",
                                    EXIT_CONNECT, quit=False) from None
                    session.tls_started()
                    step("starttls", t0, reply)
                    _tls_established(result, wire, verify, why)
                    t0 = time.monotonic()
                    reply = await _ehlo(client)
                    step("ehlo", t0, reply)
                    if not reply.positive:
                        raise _Stop(f"EHLO after STARTTLS refused: {reply}")
                    result.extensions = dict(session.extensions)
            elif opts.auth is not None:
                raise _Stop(f"the server does not offer STARTTLS: {PLAINTEXT_AUTH_RISK}")
            elif opts.tls == "starttls":
                raise _Stop("the server does not offer STARTTLS (--tls starttls)")
            else:
                t.note("STARTTLS not offered; continuing without TLS")
        stop_if("tls")

        if opts.auth is not None:
            t0 = time.monotonic()
            reply = await _auth(client, opts)
            step("auth", t0, reply)
            if not reply.positive:
                raise _Stop(f"authentication failed: {reply}")
        stop_if("auth")

        await _transaction(client, opts, result)
        stop_if("data")
        raise _Stop(None if result.ok else result.error)
    except _Stop as stop:
        _fail_result(result, stop)
        if client is not None:
            if stop.quit:
                await client.quit()
            await client.wire.aclose()
    except ConnectError as exc:
        result.ok = False
        result.error = str(exc)
        result.exit_code = EXIT_CONNECT
        if client is not None:
            await client.wire.aclose()
    except BaseException:
        if client is not None:
            client.wire.close()
        raise


async def _ehlo(client: _Client) -> ServerReply:
    """EHLO, falling back to HELO when EHLO is refused (RFC 5321 4.1.4)."""
    client.session.ehlo()
    reply = await client.reply()
    if reply.positive or reply.code == 421 or client.session.closed:
        return reply
    client.session.helo()
    return await client.reply()


def _tls_established(result: SendResult, wire: Wire, verified: bool, why: str) -> None:
    details = tls_details(wire.ssl_object, verified, "" if verified else why)
    result.tls = details
    if details is not None:
        for line in details.lines():
            result.transcript.note(line)


def _pick_mechanism(opts: SendOptions, offered: list[str]) -> str:
    if opts.auth:
        return opts.auth.upper()
    for mech in ("PLAIN", "LOGIN"):
        if mech in offered:
            return mech
    raise _Stop("the server offers no AUTH mechanism this tool speaks (PLAIN, LOGIN): "
                f"{' '.join(offered) or 'none'}")


async def _auth(client: _Client, opts: SendOptions) -> ServerReply:
    session = client.session
    offered = session.auth_mechanisms
    if not offered:
        raise _Stop("the server does not offer AUTH here"
                    + ("" if client.wire.ssl_object else " (it may offer it after STARTTLS)"))
    mech = _pick_mechanism(opts, offered)
    user, password = opts.auth_user.encode(), opts.password.encode()
    secret = opts.show_secrets

    if mech == "PLAIN":
        session.auth("PLAIN", b"\0" + user + b"\0" + password)
        shown = None if secret else f"AUTH PLAIN <redacted: PLAIN response for {opts.auth_user}>"
        return await client.reply(shown)
    if mech == "LOGIN":
        session.auth("LOGIN")
        reply = await client.reply()
        if reply.code != 334:
            return reply
        b64user = base64.b64encode(user).decode("ascii")
        session.auth_response(user)
        reply = await client.reply(f"{b64user}  (user name {opts.auth_user})")
        if reply.code != 334:
            return reply
        session.auth_response(password)
        return await client.reply(None if secret else "<redacted: password>")
    raise _Stop(f"AUTH {mech} is not supported by pochta send (PLAIN, LOGIN)", quit=True)


async def _transaction(client: _Client, opts: SendOptions, result: SendResult) -> None:
    """One transaction through the core; the core pipelines and uses BDAT when the server
    offers them, so what the options do not ask for is hidden from it."""
    t = result.transcript
    ext = client.session.extensions
    quit_early = opts.quit_after in ("mail", "rcpt")
    if "PIPELINING" in ext and (not opts.pipeline or quit_early):
        del ext["PIPELINING"]
    elif opts.pipeline and "PIPELINING" not in ext:
        t.note("--pipeline: the server does not offer PIPELINING; sending one by one")
    if "CHUNKING" in ext and not opts.chunking:
        del ext["CHUNKING"]
    elif opts.chunking and "CHUNKING" not in ext:
        t.note("--chunking: the server does not offer CHUNKING; using DATA")
    if opts.quit_after in ("mail", "rcpt", "data"):
        verb = opts.quit_after.upper()
        client.stop_after = (verb, len(opts.recipients) if verb == "RCPT" else 1)
    tx = Transaction(opts.sender, tuple(Recipient(r) for r in opts.recipients), opts.message)
    t0 = time.monotonic()
    client.session.send_transaction(tx)
    done: TransactionResult | None = None
    while done is None:
        await client.flush()
        events = await client.events()
        done = next((e.result for e in events if isinstance(e, TransactionDone)), None)
        if done is None and not events:
            break  # the reply --quit-after waits for came
    mail_at = client.answered_at("MAIL")
    rcpt_at = client.answered_at("RCPT")
    steps = result.steps
    if mail_at is not None:
        steps.append(Step("mail", round(mail_at[1] - t0, 4), mail_at[0].code))
        if rcpt_at is not None:
            steps.append(Step("rcpt", round(rcpt_at[1] - mail_at[1], 4), rcpt_at[0].code))
    if done is None:
        _stopped_early(client, opts, result)
    _report(done, client, result, t0 if rcpt_at is None else rcpt_at[1])


def _stopped_early(client: _Client, opts: SendOptions, result: SendResult) -> NoReturn:
    """--quit-after mail, rcpt or data: the reply it waited for came."""
    mail = client.replies_to("MAIL")
    if mail and not mail[0].positive:
        raise _Stop(f"MAIL FROM refused: {mail[0]}")
    rcpts = client.replies_to("RCPT")
    result.recipients = [RcptOutcome(a, r.code, r.text)
                         for a, r in zip(opts.recipients, rcpts, strict=False)]
    refused = [f"<{a}>: {r}" for a, r in zip(opts.recipients, rcpts, strict=False)
               if not r.positive]
    data_at = client.answered_at("DATA")
    if data_at is None:
        raise _Stop("; ".join(refused) if refused else None)
    rcpt_at = client.answered_at("RCPT")
    since = rcpt_at[1] if rcpt_at is not None else data_at[1]
    result.steps.append(Step("data", round(data_at[1] - since, 4), data_at[0].code))
    if data_at[0].code != 354:
        raise _Stop(f"DATA refused: {data_at[0]}")
    raise _Stop(None, quit=False)


def _report(done: TransactionResult, client: _Client, result: SendResult,
            since: float) -> None:
    """The outcome of a finished transaction, as the options and the old tool put it."""
    if not done.mail.positive:
        raise _Stop(f"MAIL FROM refused: {done.mail}")
    rcpts = [r or local_reply(421, "4.4.2", "not answered") for r in done.rcpt]
    result.recipients = [RcptOutcome(r.address, reply.code, reply.text)
                         for r, reply in zip(done.recipients, rcpts, strict=True)]
    refused = [f"<{r.address}>: {reply}" for r, reply in zip(done.recipients, rcpts,
                                                             strict=True)
               if not reply.positive]
    if not any(r.positive for r in rcpts):
        raise _Stop("every recipient was refused: " + "; ".join(refused))
    final = done.data or local_reply(421, "4.4.2", "no reply to the message")
    body_at = client.answered_at("BODY") or client.answered_at("BDAT")
    when = body_at[1] if body_at is not None else time.monotonic()
    result.steps.append(Step("data", round(when - since, 4), final.code))
    if body_at is None and client.answered_at("DATA") is not None:
        raise _Stop(f"DATA refused: {final}")
    result.message_reply = final
    if not final.positive:
        raise _Stop(f"message refused: {final}")
    if refused:
        raise _Stop("some recipients were refused: " + "; ".join(refused))
    result.ok = True


def _show_body(t: Transcript, lines: list[bytes]) -> None:
    for line in lines[:SHOW_BODY_LINES]:
        t.add("->", line.decode("utf-8", "replace"))
    if len(lines) > SHOW_BODY_LINES:
        rest = lines[SHOW_BODY_LINES:]
        t.note(f"... {len(rest)} more lines ({sum(len(x) + 2 for x in rest)} octets) "
               "not shown")


def run_send(opts: SendOptions, host: str, port: int, echo: Any) -> SendResult:
    result = SendResult(host, port, transcript=Transcript(echo=echo))
    return asyncio.run(send(opts, result))
