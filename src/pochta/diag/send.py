"""`pochta send`: one SMTP transaction against any server, with the whole transcript.

The session is driven command by command (not through the client core's transaction
machine) so that every line can be shown with a timestamp, the run can stop after any
step (``--quit-after``), and AUTH secrets can be redacted from the transcript.
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from pochta.dns import Resolver, TemporaryDNSError
from pochta.proto.smtp.client import ServerReply

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
from .smtpwire import auth_mechanisms, command, ehlo, read_reply

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


def wire_lines(message: bytes) -> list[bytes]:
    """The message as CRLF lines (bare CR/LF normalised, RFC 5321 2.3.8)."""
    text = re.sub(rb"\r\n|\r|\n", b"\n", message)
    if text.endswith(b"\n"):
        text = text[:-1]
    return text.split(b"\n") if text else []


def dot_stuffed(lines: list[bytes]) -> bytes:
    out = bytearray()
    for line in lines:
        if line.startswith(b"."):
            out += b"."  # RFC 5321 4.5.2
        out += line + b"\r\n"
    return bytes(out) + b".\r\n"


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


async def _session(opts: SendOptions, result: SendResult, verify: bool, why: str) -> None:
    t = result.transcript
    host, port = result.server, result.port
    ctx = client_context(verify, opts.cafile, opts.keylog)
    implicit = opts.tls == "implicit"
    wire: Wire | None = None
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
        step("connect", t0)
        t.note(f"connected to {wire.peer}")
        if implicit:
            _tls_established(result, wire, verify, why)
        if opts.quit_after == "connect":
            raise _Stop(None, quit=False)

        t0 = time.monotonic()
        banner = await read_reply(wire)
        step("banner", t0, banner)
        if not banner.positive:
            raise _Stop(f"the server refused the session: {banner}")
        stop_if("banner")

        t0 = time.monotonic()
        reply, ext = await ehlo(wire, opts.ehlo)
        step("ehlo", t0, reply)
        if not reply.positive:
            raise _Stop(f"EHLO/HELO refused: {reply}")
        result.extensions = ext
        stop_if("ehlo")

        # With a password to send, "try" means "required": a man in the middle who
        # strips STARTTLS from the EHLO reply must not be handed the password.
        required = opts.tls == "starttls" or opts.auth is not None
        if opts.tls in ("starttls", "try") and not implicit:
            if "STARTTLS" in ext:
                t0 = time.monotonic()
                reply = await command(wire, "STARTTLS")
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
                    step("starttls", t0, reply)
                    _tls_established(result, wire, verify, why)
                    t0 = time.monotonic()
                    reply, ext = await ehlo(wire, opts.ehlo)
                    step("ehlo", t0, reply)
                    if not reply.positive:
                        raise _Stop(f"EHLO after STARTTLS refused: {reply}")
                    result.extensions = ext
            elif opts.auth is not None:
                raise _Stop(f"the server does not offer STARTTLS: {PLAINTEXT_AUTH_RISK}")
            elif opts.tls == "starttls":
                raise _Stop("the server does not offer STARTTLS (--tls starttls)")
            else:
                t.note("STARTTLS not offered; continuing without TLS")
        stop_if("tls")

        if opts.auth is not None:
            t0 = time.monotonic()
            reply = await _auth(wire, opts, ext)
            step("auth", t0, reply)
            if not reply.positive:
                raise _Stop(f"authentication failed: {reply}")
        stop_if("auth")

        await _transaction(wire, opts, result, step)
        stop_if("data")
        raise _Stop(None if result.ok else result.error)
    except _Stop as stop:
        _fail_result(result, stop)
        if wire is not None:
            if stop.quit:
                with contextlib.suppress(ConnectError):
                    await command(wire, "QUIT")
            await wire.aclose()
    except ConnectError as exc:
        result.ok = False
        result.error = str(exc)
        result.exit_code = EXIT_CONNECT
        if wire is not None:
            await wire.aclose()
    except BaseException:
        if wire is not None:
            wire.close()
        raise


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


async def _auth(wire: Wire, opts: SendOptions, ext: dict[str, str]) -> ServerReply:
    offered = auth_mechanisms(ext)
    if not offered:
        raise _Stop("the server does not offer AUTH here"
                    + ("" if wire.ssl_object else " (it may offer it after STARTTLS)"))
    mech = _pick_mechanism(opts, offered)
    user, password = opts.auth_user.encode(), opts.password.encode()
    secret = opts.show_secrets

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    if mech == "PLAIN":
        blob = b64(b"\0" + user + b"\0" + password)
        shown = None if secret else f"AUTH PLAIN <redacted: PLAIN response for {opts.auth_user}>"
        return await command(wire, f"AUTH PLAIN {blob}", shown)
    if mech == "LOGIN":
        reply = await command(wire, "AUTH LOGIN")
        if reply.code != 334:
            return reply
        reply = await command(wire, b64(user), f"{b64(user)}  (user name {opts.auth_user})")
        if reply.code != 334:
            return reply
        return await command(wire, b64(password),
                             None if secret else "<redacted: password>")
    raise _Stop(f"AUTH {mech} is not supported by pochta send (PLAIN, LOGIN)", quit=True)


async def _transaction(wire: Wire, opts: SendOptions, result: SendResult,
                       step: Any) -> None:
    t = result.transcript
    ext = result.extensions
    pipelining = opts.pipeline and "PIPELINING" in ext
    if opts.pipeline and not pipelining:
        t.note("--pipeline: the server does not offer PIPELINING; sending one by one")
    chunking = opts.chunking and "CHUNKING" in ext
    if opts.chunking and not chunking:
        t.note("--chunking: the server does not offer CHUNKING; using DATA")
    mail_line = f"MAIL FROM:<{opts.sender}>"
    if "SIZE" in ext:
        mail_line += f" SIZE={len(opts.message)}"
    if any(b > 0x7F for b in opts.message) and "8BITMIME" in ext:
        mail_line += " BODY=8BITMIME"
    rcpt_lines = [f"RCPT TO:<{r}>" for r in opts.recipients]
    quit_early = opts.quit_after in ("mail", "rcpt")
    t0 = time.monotonic()
    if pipelining and not quit_early:
        # RFC 2920 3.1: MAIL, the RCPTs and DATA go in one batch; replies come in order.
        wire.send_line(mail_line)
        for line in rcpt_lines:
            wire.send_line(line)
        if not chunking:
            wire.send_line("DATA")
        await wire.drain()
        mail = await read_reply(wire)
        step("mail", t0, mail)
        rcpts = []
        t0 = time.monotonic()
        for _ in rcpt_lines:
            rcpts.append(await read_reply(wire))
        step("rcpt", t0, rcpts[-1] if rcpts else None)
    else:
        mail = await command(wire, mail_line)
        step("mail", t0, mail)
        if not mail.positive:
            raise _Stop(f"MAIL FROM refused: {mail}")
        if opts.quit_after == "mail":
            raise _Stop(None)
        rcpts = []
        t0 = time.monotonic()
        for line in rcpt_lines:
            rcpts.append(await command(wire, line))
        step("rcpt", t0, rcpts[-1] if rcpts else None)
    result.recipients = [RcptOutcome(a, r.code, r.text) for a, r in
                         zip(opts.recipients, rcpts, strict=True)]
    accepted = [r for r in rcpts if r.positive]
    refused = [f"<{a}>: {r}" for a, r in zip(opts.recipients, rcpts, strict=True)
               if not r.positive]
    if pipelining and not chunking:
        data_reply = await read_reply(wire)
    elif not mail.positive:
        raise _Stop(f"MAIL FROM refused: {mail}")
    elif opts.quit_after == "rcpt":
        raise _Stop("; ".join(refused) if refused else None)
    elif not accepted:
        raise _Stop("every recipient was refused: " + "; ".join(refused))
    else:
        data_reply = None
    if not mail.positive:
        raise _Stop(f"MAIL FROM refused: {mail}")
    lines = wire_lines(opts.message)
    t0 = time.monotonic()
    if chunking:
        body = b"".join(line + b"\r\n" for line in lines)
        wire.send_line(f"BDAT {len(body)} LAST")
        _show_body(t, lines)
        wire.send_raw(body)
        await wire.drain()
        final = await read_reply(wire)
    else:
        if data_reply is None:
            data_reply = await command(wire, "DATA")
        if data_reply.code != 354:
            if not accepted:
                raise _Stop("every recipient was refused: " + "; ".join(refused))
            raise _Stop(f"DATA refused: {data_reply}")
        if opts.quit_after == "data":
            step("data", t0, data_reply)
            raise _Stop(None, quit=False)
        if not accepted:
            wire.send_line(".")  # RFC 2920 3.1: nothing to send
            await wire.drain()
            await read_reply(wire)
            raise _Stop("every recipient was refused: " + "; ".join(refused))
        _show_body(t, lines)
        wire.send_raw(dot_stuffed(lines))
        t.add("->", ".")
        await wire.drain()
        final = await read_reply(wire)
    step("data", t0, final)
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
