"""Transcript helper for the SMTP server core, and tests of the helper itself.

A transcript reads like an SMTP dialogue::

    S: 220 mx.example.org ESMTP Pochta
    C: EHLO client.example
    S: 250-mx.example.org
    ...
    C> b"raw bytes, no CRLF added\\n"
    EOF

``C:`` lines get CRLF appended, ``C>`` lines are Python bytes literals sent as they are,
``S:`` lines are expected server lines (CRLF appended). Consecutive client lines are sent
as one chunk (pipelining); before each client chunk and at the end, everything the server
sent so far must equal the ``S:`` lines given since the previous check.

A StartTLS event is answered with ``tls_started()`` only once the whole client chunk has
been fed, like a shell that starts its handshake after reading: the rest of that chunk is
plaintext sent before TLS.

``transcript()`` runs a script twice, with each client chunk fed whole and fed one byte at
a time, and checks both runs produce the same events.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from pochta.proto.smtp import replies
from pochta.proto.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthResponse,
    AuthStart,
    ConnectionClosed,
    Event,
    MailFrom,
    MessageReady,
    RcptTo,
    StartTLS,
)
from pochta.proto.smtp.server import ServerSession, SessionParams

HOST = "mx.example.org"
PARAMS = SessionParams(hostname=HOST)

EHLO = """
S: 250-mx.example.org
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-SMTPUTF8
S: 250-ENHANCEDSTATUSCODES
S: 250-CHUNKING
S: 250 DSN
"""

GREET_EHLO = "S: 220 mx.example.org ESMTP Pochta\nC: EHLO client.example\n" + EHLO

Decider = Callable[[ServerSession, Event], None]


def default_decider(session: ServerSession, event: Event) -> None:
    """Accept everything; AUTH PLAIN accepts user/secret."""
    if isinstance(event, MailFrom | RcptTo):
        session.accept()
    elif isinstance(event, MessageReady):
        session.accept(replies.queued("Q1"))
    elif isinstance(event, AuthStart):
        if event.initial_response is None:
            session.auth_challenge(b"")
        elif event.initial_response == b"\0user\0secret":
            session.auth_succeeded("user")
        else:
            session.auth_failed(replies.AUTH_INVALID)
    elif isinstance(event, AuthResponse) and event.data is not None:
        if event.data == b"\0user\0secret":
            session.auth_succeeded("user")
        else:
            session.auth_failed(replies.AUTH_INVALID)


@dataclass
class Step:
    kind: str  # "C", "S" or "EOF"
    data: bytes = b""


@dataclass
class Result:
    session: ServerSession
    events: list[Event] = field(default_factory=list)

    def of(self, kind: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def messages(self) -> list[MessageReady]:
        return [e for e in self.events if isinstance(e, MessageReady)]


def parse_script(script: str) -> list[Step]:
    steps = []
    for raw in textwrap.dedent(script).splitlines():
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        if line == "EOF":
            steps.append(Step("EOF"))
        elif line.startswith("C: ") or line == "C:":
            steps.append(Step("C", line[3:].encode("utf-8") + b"\r\n"))
        elif line.startswith("C> "):
            value = ast.literal_eval(line[3:])
            assert isinstance(value, bytes), line
            steps.append(Step("C", value))
        elif line.startswith("S: "):
            steps.append(Step("S", line[3:].encode("utf-8") + b"\r\n"))
        else:
            raise ValueError(f"bad transcript line: {raw!r}")
    return steps


def pump(session: ServerSession, decide: Decider, events: list[Event]) -> None:
    while True:
        event = session.next_event()
        if event is NEED_DATA:
            return
        if event is PAUSED:
            if isinstance(events[-1], StartTLS):
                return  # the handshake happens between client chunks
            raise AssertionError("the decider left an event undecided")
        if isinstance(event, ConnectionClosed):
            if not events or not isinstance(events[-1], ConnectionClosed):
                events.append(event)
            return
        events.append(event)
        decide(session, event)


def run(
    script: str,
    params: SessionParams = PARAMS,
    decide: Decider = default_decider,
    *,
    bytewise: bool = False,
) -> Result:
    session = ServerSession(params)
    result = Result(session)
    session.start()
    expected = bytearray()

    def handshake() -> None:
        waiting = result.events and isinstance(result.events[-1], StartTLS)
        if waiting and session.next_event() is PAUSED:
            session.tls_started()
            pump(session, decide, result.events)

    def check() -> None:
        pump(session, decide, result.events)
        got = session.data_to_send()
        mode = "bytewise" if bytewise else "whole"
        assert got.decode("utf-8", "replace").splitlines() == bytes(expected).decode(
            "utf-8", "replace"
        ).splitlines(), f"server output differs ({mode})"
        assert got == bytes(expected), f"server output differs in line endings ({mode})"
        expected.clear()

    steps = parse_script(script)
    i = 0
    while i < len(steps):
        step = steps[i]
        if step.kind == "S":
            expected += step.data
            i += 1
            continue
        check()
        if step.kind == "EOF":
            session.receive_data(b"")
            pump(session, decide, result.events)
            i += 1
            continue
        chunk = bytearray()
        while i < len(steps) and steps[i].kind == "C":
            chunk += steps[i].data
            i += 1
        if bytewise:
            for b in chunk:
                session.receive_data(bytes([b]))
                pump(session, decide, result.events)
        else:
            session.receive_data(bytes(chunk))
            pump(session, decide, result.events)
        handshake()
    check()
    return result


def transcript(
    script: str, params: SessionParams = PARAMS, decide: Decider = default_decider
) -> Result:
    """Run whole and byte by byte; both must agree. Returns the whole-chunk run."""
    whole = run(script, params, decide)
    bytewise = run(script, params, decide, bytewise=True)
    assert whole.events == bytewise.events
    assert whole.session.closed == bytewise.session.closed
    return whole


# --- tests of the helper -----------------------------------------------------------------


def test_parse_script_kinds() -> None:
    steps = parse_script(
        """
        # comment
        S: 220 x
        C: NOOP
        C> b"A\\n"
        EOF
        """
    )
    assert [(s.kind, s.data) for s in steps] == [
        ("S", b"220 x\r\n"),
        ("C", b"NOOP\r\n"),
        ("C", b"A\n"),
        ("EOF", b""),
    ]


def test_helper_detects_wrong_expectation() -> None:
    with pytest.raises(AssertionError):
        run("S: 220 mx.example.org ESMTP Pochta\nC: NOOP\nS: 250 2.0.0 Wrong")


def test_helper_detects_unexpected_output() -> None:
    with pytest.raises(AssertionError):
        run("S: 220 mx.example.org ESMTP Pochta\nC: NOOP")


def test_helper_reports_undecided_event() -> None:
    with pytest.raises(AssertionError, match="undecided"):
        run(GREET_EHLO + "C: MAIL FROM:<a@b.example>", decide=lambda s, e: None)
