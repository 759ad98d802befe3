"""`pochta sink`: a throwaway SMTP server that accepts everything (like Postfix's smtp-sink).

It runs the same sans-IO server core as Pochta (proto/smtp/server.py), optionally with
STARTTLS or implicit TLS (a generated certificate unless one is given) and AUTH PLAIN/LOGIN
that accepts any credentials (after TLS, as the core requires). Messages are discarded or
saved as .eml files or into a Maildir. Faults can be injected to test a client's retry
logic: a 4xx/5xx reply on a command (optionally only every Nth time), a delay before a
reply, or a dropped connection. ``--throttle N/SECONDS`` plays a receiver that rate-limits
its senders: more than N messages within SECONDS get ``421 4.7.28`` at MAIL (as Gmail
answers) and the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import ssl
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, TextIO

from pochta.proto.smtp import events as ev
from pochta.proto.smtp.replies import Reply, queued
from pochta.proto.smtp.server import ServerSession, SessionParams
from pochta.tlsutil import generate_self_signed, private_keylog, server_context

from .common import UsageError

# Commands answered by the core itself: faults on them are applied before the core sees
# the line. The others are decided through the core's events.
LINE_COMMANDS = ("ehlo", "helo", "starttls", "rset", "noop", "vrfy", "quit")
EVENT_COMMANDS = ("connect", "mail", "rcpt", "data", "auth")
COMMANDS = LINE_COMMANDS + EVENT_COMMANDS
_SPEC = re.compile(r"^([a-z]+)(?:=([0-9.]+))?(?:@([1-9][0-9]*))?$")


@dataclass(frozen=True)
class Fault:
    """``kind`` is "reply" (answer ``code``), "delay" (wait ``seconds``) or "disconnect".
    ``every``: only every Nth occurrence of the command (counted over the sink's life)."""

    kind: str
    command: str
    code: int = 0
    seconds: float = 0.0
    every: int = 1


def parse_fault(kind: str, spec: str) -> Fault:
    """``data=451@2`` (reply), ``mail=1.5`` (delay), ``rcpt@3`` (disconnect)."""
    m = _SPEC.match(spec.strip().lower())
    if not m or m.group(1) not in COMMANDS:
        raise UsageError(f"bad fault {spec!r}: expected COMMAND[=VALUE][@N] with COMMAND one "
                         f"of {', '.join(COMMANDS)}")
    command, value, every = m.group(1), m.group(2), int(m.group(3) or 1)
    if kind == "reply":
        if value is None or not value.isdigit() or not 400 <= int(value) <= 599:
            raise UsageError(f"--fault {spec!r}: the reply code must be 400-599")
        return Fault("reply", command, code=int(value), every=every)
    if kind == "delay":
        try:
            seconds = float(value or "")
        except ValueError:
            raise UsageError(f"--delay {spec!r}: expected COMMAND=SECONDS") from None
        return Fault("delay", command, seconds=seconds, every=every)
    if value is not None:
        raise UsageError(f"--disconnect {spec!r}: expected COMMAND[@N]")
    return Fault("disconnect", command, every=every)


def fault_reply(code: int) -> Reply:
    return Reply(code, f"{code // 100}.0.0", "Fault injected by pochta sink",
                 close=code == 421)


@dataclass
class SinkOptions:
    hostname: str = "sink.invalid"
    address: str = "127.0.0.1"
    port: int = 2526  # beside the demo's 2525, so both can run at once
    tls: str = "none"  # none, starttls, implicit
    cert: Path | None = None
    key: Path | None = None
    keylog: str | None = None
    save: Path | None = None
    format: str = "eml"  # eml or maildir
    faults: list[Fault] = field(default_factory=list)
    throttle: tuple[int, float] | None = None  # (messages, seconds): 421 beyond that rate
    max_message_size: int = 50 * 1024 * 1024
    count: int = 0  # stop after this many messages (0: run until stopped)
    duration: float = 0.0
    json: bool = False
    verbose: bool = False  # print the dialogue (smtp-sink -v); message data and AUTH
    # responses are summarised, not shown


@dataclass
class MessageRecord:
    number: int
    sender: str
    recipients: list[str]
    size: int
    tls: str
    auth: str
    reply: int
    saved: str
    client: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "message", **self.__dict__}


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    connections: int = 0
    messages: int = 0
    accepted: int = 0
    refused: int = 0
    throttled: int = 0  # MAIL commands answered 421 by --throttle
    recipients: int = 0
    octets: int = 0
    counters: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return {
            "type": "summary",
            "connections": self.connections,
            "messages": self.messages,
            "accepted": self.accepted,
            "refused": self.refused,
            "throttled": self.throttled,
            "recipients": self.recipients,
            "octets": self.octets,
            "seconds": round(elapsed, 3),
            "messages_per_second": round(self.messages / elapsed, 2),
        }


class Sink:
    """The server; ``start()`` binds and returns the port, ``wait()`` runs until done."""

    def __init__(self, opts: SinkOptions, out: TextIO | None = None,
                 on_message: Callable[[MessageRecord], None] | None = None) -> None:
        self.opts = opts
        self.out = out
        self.on_message = on_message
        self.stats = Stats()
        self.records: list[MessageRecord] = []
        self.ssl_context: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._done = asyncio.Event()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._admitted: deque[float] = deque()  # MAIL times within the throttle window

    # -- lifecycle ----------------------------------------------------------------------

    def _make_ssl(self) -> ssl.SSLContext:
        cert, key = self.opts.cert, self.opts.key
        if cert is None or key is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pochta-sink-")
            cert = Path(self._tmp.name) / "cert.pem"
            key = Path(self._tmp.name) / "key.pem"
            generate_self_signed(self.opts.hostname, cert, key)
        ctx = server_context(cert, key)
        if self.opts.keylog:
            ctx.keylog_filename = private_keylog(self.opts.keylog)
        return ctx

    async def start(self) -> int:
        if self.opts.tls != "none":
            self.ssl_context = self._make_ssl()
        if self.opts.save is not None:
            self._prepare_folder(self.opts.save)
        self._server = await asyncio.start_server(
            self._client, self.opts.address, self.opts.port,
            ssl=self.ssl_context if self.opts.tls == "implicit" else None,
        )
        port = int(self._server.sockets[0].getsockname()[1])
        self._say(f"sink: listening on {self.opts.address}:{port} tls={self.opts.tls}"
                  + (f" saving to {self.opts.save} ({self.opts.format})"
                     if self.opts.save else " (discarding messages)"))
        return port

    async def wait(self) -> None:
        timeout = self.opts.duration or None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), timeout)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._tasks:  # let clients finish (their QUIT) before cutting them off
            await asyncio.wait(list(self._tasks), timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        if self._tmp is not None:
            self._tmp.cleanup()
        summary = self.stats.summary()
        if self.opts.json:
            self._emit_json(summary)
        else:
            self._say(
                f"sink: {summary['messages']} messages ({summary['accepted']} accepted, "
                f"{summary['refused']} refused), {summary['recipients']} recipients, "
                f"{summary['octets']} octets, {summary['connections']} connections in "
                f"{summary['seconds']} s: {summary['messages_per_second']} msg/s")

    def _say(self, text: str) -> None:
        if self.out is not None and not self.opts.json:
            self.out.write(text + "\n")
            self.out.flush()

    def _emit_json(self, obj: dict[str, Any]) -> None:
        if self.out is not None:
            self.out.write(json.dumps(obj) + "\n")
            self.out.flush()

    # -- faults -------------------------------------------------------------------------

    def _occurrence(self, command: str) -> int:
        n = self.stats.counters.get(command, 0) + 1
        self.stats.counters[command] = n
        return n

    def _faults_for(self, command: str) -> list[Fault]:
        n = self._occurrence(command)
        return [f for f in self.opts.faults if f.command == command and n % f.every == 0]

    def throttle_reply(self) -> Reply | None:
        """--throttle: a 421 when N messages were started within the window, else None
        (and this one counts)."""
        if self.opts.throttle is None:
            return None
        limit, seconds = self.opts.throttle
        now = time.monotonic()
        while self._admitted and self._admitted[0] <= now - seconds:
            self._admitted.popleft()
        if len(self._admitted) >= limit:
            self.stats.throttled += 1
            return Reply(421, "4.7.28", "Rate limited: too many messages, try again later",
                         close=True)
        self._admitted.append(now)
        return None

    # -- one connection -----------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await _Connection(self, reader, writer).run()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a cancelled connection (sink stopping) ends quietly
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    # -- messages -----------------------------------------------------------------------

    def _prepare_folder(self, folder: Path) -> None:
        if self.opts.format == "maildir":
            for sub in ("tmp", "new", "cur"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
        else:
            folder.mkdir(parents=True, exist_ok=True)

    def save(self, number: int, data: bytes) -> str:
        folder = self.opts.save
        if folder is None:
            return ""
        unique = f"{time.time():.6f}.{os.getpid()}_{number}.{self.opts.hostname}"
        if self.opts.format == "maildir":
            tmp = folder / "tmp" / unique
            tmp.write_bytes(data)
            final = folder / "new" / unique
            os.replace(tmp, final)  # Maildir delivery: write in tmp/, rename into new/
            return str(final)
        path = folder / f"{unique}.eml"
        path.write_bytes(data)
        return str(path)

    def record(self, rec: MessageRecord) -> None:
        self.records.append(rec)
        self.stats.messages += 1
        if rec.reply < 400:
            self.stats.accepted += 1
        else:
            self.stats.refused += 1
        self.stats.recipients += len(rec.recipients)
        self.stats.octets += rec.size
        if self.opts.json:
            self._emit_json(rec.to_json())
        else:
            to = ",".join(f"<{r}>" for r in rec.recipients)
            what = f"saved {rec.saved}" if rec.saved else (
                "discarded" if rec.reply < 400 else f"refused {rec.reply}")
            self._say(f"sink: #{rec.number} [{rec.client}] from=<{rec.sender}> to={to} "
                      f"size={rec.size} tls={rec.tls or 'no'} auth={rec.auth or '-'} {what}")
        if self.on_message is not None:
            self.on_message(rec)
        if self.opts.count and self.stats.messages >= self.opts.count:
            self._done.set()


class _Disconnect(Exception):
    pass


class _Connection:
    def __init__(self, sink: Sink, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.sink = sink
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "?"
        self.tls = sink.opts.tls == "implicit"
        self.session = ServerSession(self._params())
        self.buffer = bytearray()
        self.auth_mech: str | None = None
        self.auth_user = ""
        self.auth_step = 0
        self.number = 0

    def _trace(self, who: str, data: bytes) -> None:
        """One transcript line per protocol line, ``[3] C: MAIL FROM:<a@b>`` (--verbose)."""
        if not self.sink.opts.verbose:
            return
        for line in data.decode("utf-8", "replace").splitlines():
            self.sink._say(f"[{self.number}] {who}: {line}")

    def _params(self) -> SessionParams:
        opts = self.sink.opts
        return SessionParams(
            hostname=opts.hostname, banner="ESMTP pochta sink",
            max_message_size=opts.max_message_size, max_errors=100,
            bare_lf="normalize",
            tls_available=opts.tls == "starttls" and not self.tls,
            tls_active=self.tls,
            auth_mechanisms=("PLAIN", "LOGIN"),
        )

    async def _apply(self, command: str) -> Reply | None:
        """Run the faults for ``command``: a fault reply, or None to go on."""
        reply = None
        for fault in self.sink._faults_for(command):
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
            elif fault.kind == "disconnect":
                raise _Disconnect
            else:
                reply = fault_reply(fault.code)
        return reply

    async def _flush(self) -> None:
        out = self.session.data_to_send()
        if out:
            self._trace("S", out)
            self.writer.write(out)
            await self.writer.drain()

    async def run(self) -> None:
        self.sink.stats.connections += 1
        self.number = self.sink.stats.connections
        if self.sink.opts.verbose:
            self.sink._say(f"[{self.number}] connect from {self.client}")
        try:
            reply = await self._apply("connect")
            if reply is not None:
                # RFC 5321 3.1: a 554 (or 421) greeting; the client may only QUIT.
                greeting = f"{reply.code} {self.sink.opts.hostname} {reply.text}\r\n".encode()
                self._trace("S", greeting)
                self.writer.write(greeting)
                await self.writer.drain()
                return
            self.session.start()
            await self._loop()
        except _Disconnect:
            self.writer.transport.abort()
        finally:
            if self.sink.opts.verbose:
                self.sink._say(f"[{self.number}] disconnect")

    async def _read(self) -> bytes:
        await self._flush()  # replies to what was processed, before waiting for more
        return await self.reader.read(65536)

    async def _loop(self) -> None:
        s = self.session
        while True:
            await self._flush()
            if s.closed:
                return
            event = s.next_event()
            if isinstance(event, ev.NeedData):
                await self._feed()
            elif isinstance(event, ev.ConnectionClosed):
                await self._flush()
                return
            elif isinstance(event, ev.Paused):  # pragma: no cover - we always decide
                raise RuntimeError("SMTP core paused without a decision")
            else:
                await self._decide(event)

    async def _feed(self) -> None:
        s = self.session
        if not self.buffer:
            data = await self._read()
            if not data:
                s.receive_data(b"")
                return
            self.buffer += data
        if s.in_data or self.auth_mech is not None:
            if self.sink.opts.verbose:
                what = "message data" if s.in_data else "AUTH response, not shown"
                self.sink._say(f"[{self.number}] C: ({len(self.buffer)} bytes of {what})")
            s.receive_data(bytes(self.buffer))
            self.buffer.clear()
            return
        # Command mode: one line at a time, so faults on commands the core answers by
        # itself (EHLO, STARTTLS, ...) can be applied before it sees them.
        idx = self.buffer.find(b"\n")
        if idx < 0:
            if len(self.buffer) > 65536:
                s.receive_data(bytes(self.buffer))
                self.buffer.clear()
                return
            data = await self._read()
            if not data:
                s.receive_data(bytes(self.buffer))
                self.buffer.clear()
                s.receive_data(b"")
                return
            self.buffer += data
            return
        line = bytes(self.buffer[: idx + 1])
        del self.buffer[: idx + 1]
        verb = line.split(b" ", 1)[0].strip().lower().decode("ascii", "replace")
        self._trace("C", line if verb != "auth" else b" ".join(line.split()[:2]) + b" ...")
        if verb in LINE_COMMANDS:
            reply = await self._apply(verb)
            if reply is not None:
                self._trace("S", reply.to_bytes())
                self.writer.write(reply.to_bytes())
                await self.writer.drain()
                if reply.close:
                    raise _Disconnect
                return
        s.receive_data(line)

    async def _decide(self, event: ev.Event) -> None:
        s = self.session
        if isinstance(event, ev.MailFrom):
            reply = await self._apply("mail") or self.sink.throttle_reply()
            s.reject(reply) if reply else s.accept()
        elif isinstance(event, ev.RcptTo):
            reply = await self._apply("rcpt")
            s.reject(reply) if reply else s.accept()
        elif isinstance(event, ev.MessageReady):
            await self._message(event)
        elif isinstance(event, ev.StartTLS):
            await self._flush()
            self.buffer.clear()  # plaintext after STARTTLS is never executed
            assert self.sink.ssl_context is not None
            await self.writer.start_tls(self.sink.ssl_context)
            self.tls = True
            s.tls_started()
        elif isinstance(event, ev.AuthStart):
            reply = await self._apply("auth")
            if reply is not None:
                s.auth_failed(reply)
                return
            self.auth_mech = event.mechanism
            self.auth_step = 0
            if event.initial_response is not None:
                self._auth_data(event.initial_response)
            elif event.mechanism == "PLAIN":
                s.auth_challenge(b"")
            else:
                s.auth_challenge(b"Username:")
        elif isinstance(event, ev.AuthResponse):
            if event.data is None:
                self.auth_mech = None
                return
            self._auth_data(event.data)

    def _auth_data(self, data: bytes) -> None:
        """Any credentials are good: remember the user name for the message log."""
        s = self.session
        if self.auth_mech == "PLAIN":
            parts = data.split(b"\0")
            user = parts[1] if len(parts) == 3 else data
            self.auth_mech = None
            s.auth_succeeded(user.decode("utf-8", "replace") or "anonymous")
            return
        # LOGIN: user name, then password
        if self.auth_step == 0:
            self.auth_user = data.decode("utf-8", "replace")
            self.auth_step = 1
            s.auth_challenge(b"Password:")
            return
        self.auth_mech = None
        s.auth_succeeded(self.auth_user or "anonymous")

    async def _message(self, event: ev.MessageReady) -> None:
        s = self.session
        sink = self.sink
        number = sink.stats.counters.get("data", 0) + 1
        reply = await self._apply("data")
        ssl_obj = self.writer.get_extra_info("ssl_object")
        tls = ssl_obj.version() if ssl_obj is not None else ""
        saved = ""
        if reply is None:
            saved = sink.save(number, self._stamp(event, tls) + event.data)
            s.accept(queued(f"SINK{number}"))
        else:
            s.reject(reply)
        sink.record(MessageRecord(
            number=number, sender=event.sender,
            recipients=[r.address for r in event.recipients], size=len(event.data),
            tls=tls or "", auth=s.authenticated_as or "",
            reply=reply.code if reply else 250, saved=saved, client=self.client,
        ))

    def _stamp(self, event: ev.MessageReady, tls: str) -> bytes:
        proto = ("ESMTPS" if tls else "ESMTP") + ("A" if self.session.authenticated_as else "")
        helo = (self.session.helo_name or "unknown").replace("\r", "").replace("\n", "")
        lines = [
            f"Return-Path: <{event.sender}>",
            "X-Envelope-To: " + ", ".join(f"<{r.address}>" for r in event.recipients),
            f"Received: from {helo} ([{self.client}])\r\n\tby {self.sink.opts.hostname} "
            f"(pochta sink) with {proto}; {formatdate(localtime=True)}",
        ]
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


async def run_sink(opts: SinkOptions, out: TextIO) -> int:
    sink = Sink(opts, out)
    await sink.start()
    try:
        await sink.wait()
    finally:
        await sink.close()
    return 0
