"""Fuzz invariants: any bytes, whole or split anywhere, never raise and give the same result.

Inputs mix SMTP tokens (so the session reaches DATA, BDAT, AUTH and STARTTLS states) with
random bytes; limits are small so the line, size and error limits are exercised too.
"""

from __future__ import annotations

import dataclasses
import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

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

TOKENS = [
    b"EHLO x\r\n",
    b"HELO x\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<r@b.example> BODY=8BITMIME SIZE=50\r\n",
    b"MAIL FROM:<> SMTPUTF8\r\n",
    b"RCPT TO:<d@e.example>\r\n",
    b"RCPT TO:<Postmaster>\r\n",
    b"DATA\r\n",
    b"BDAT 3\r\n",
    b"BDAT 5 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH PLAIN dXNlcg==\r\n",
    b"AUTH LOGIN =\r\n",
    b"dXNlcg==\r\n",
    b"*\r\n",
    b"STARTTLS\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"QUIT\r\n",
    b".\r\n",
    b"..\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b".",
    b"\x00",
    b"\xff\xfe",
    b"x" * 70,
    b"y" * 45 + b"\r\n",
]

PARAMS = [
    SessionParams(
        hostname="mx.example.org",
        max_line_length=64,
        max_message_size=100,
        max_data_line_length=40,
        max_errors=25,
        max_recipients=3,
        tls_active=True,
        auth_mechanisms=("PLAIN", "LOGIN"),
    ),
    SessionParams(
        hostname="mx.example.org",
        max_line_length=64,
        max_message_size=100,
        max_data_line_length=40,
        tls_available=True,
        require_tls=True,
        bare_lf="normalize",
        binarymime=True,
    ),
]

inputs = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.binary(max_size=20)), max_size=40
).map(b"".join)

REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][^\r\n]*")


def decide(session: ServerSession, event: Event) -> None:
    if isinstance(event, MailFrom):
        if event.address.startswith("r"):
            session.reject(replies.Reply(550, "5.7.1", "no"))
        else:
            session.accept()
    elif isinstance(event, RcptTo):
        session.accept()
    elif isinstance(event, MessageReady):
        session.accept(replies.queued("Q"))
    elif isinstance(event, AuthStart):
        if event.initial_response:
            session.auth_succeeded("user")
        else:
            session.auth_challenge(b"challenge")
    elif isinstance(event, AuthResponse) and event.data is not None:
        session.auth_failed(replies.AUTH_INVALID)


def drive(params: SessionParams, chunks: list[bytes]) -> tuple[bytes, list[Event], bool]:
    s = ServerSession(params)
    s.start()
    events: list[Event] = []
    out = bytearray()
    for chunk in [*chunks, b""]:
        s.receive_data(chunk)
        while True:
            event = s.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            if event is PAUSED:
                # Only STARTTLS stays pending: the shell would be in its handshake now.
                assert isinstance(events[-1], StartTLS)
                break
            events.append(event)
            decide(s, event)
        out += s.data_to_send()
    lines = bytes(out).split(b"\r\n")
    assert lines[-1] == b""
    for line in lines[:-1]:
        assert REPLY_LINE.fullmatch(line), line
    if s.closed:
        assert isinstance(s.next_event(), ConnectionClosed)
    return bytes(out), events, s.closed


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = []
    start = 0
    for p in points:
        pieces.append(data[start:p])
        start = p
    pieces.append(data[start:])
    return [p for p in pieces if p]


# An over-long DATA line whose CR and LF arrive in different chunks.
_SPLIT_CRLF = (
    b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<d@e.example>\r\nDATA\r\n"
    + b"y" * 45
    + b"\r\n.\r\nNOOP\r\n"
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@example(data=_SPLIT_CRLF, cuts=[_SPLIT_CRLF.index(b"y" * 45) + 46], which=0)
@given(data=inputs, cuts=st.lists(st.integers(min_value=0), max_size=12), which=st.integers(0, 1))
def test_any_split_gives_the_same_session(data: bytes, cuts: list[int], which: int) -> None:
    params = PARAMS[which]
    whole = drive(params, [data] if data else [])
    assert drive(params, split(data, cuts)) == whole


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=inputs, which=st.integers(0, 1))
def test_byte_by_byte_gives_the_same_session(data: bytes, which: int) -> None:
    params = PARAMS[which]
    whole = drive(params, [data] if data else [])
    assert drive(params, [data[i : i + 1] for i in range(len(data))]) == whole


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_binary_never_raises(data: bytes) -> None:
    for params in PARAMS:
        drive(params, [data])
        drive(params, [data[i : i + 7] for i in range(0, len(data), 7)])


def test_session_reaches_interesting_states() -> None:
    """Guard that the token mix really drives messages and AUTH through the core."""
    params = dataclasses.replace(PARAMS[0], max_errors=100)
    data = b"".join(
        [
            b"EHLO x\r\n",
            b"AUTH PLAIN dXNlcg==\r\n",
            b"MAIL FROM:<a@b.example>\r\n",
            b"RCPT TO:<d@e.example>\r\n",
            b"DATA\r\n",
            b"..\r\n",
            b".\r\n",
        ]
    )
    out, events, closed = drive(params, [data])
    assert [type(e) for e in events] == [AuthStart, MailFrom, RcptTo, MessageReady]
    assert isinstance(events[-1], MessageReady) and events[-1].data == b".\r\n"
    assert closed  # EOF at the end
    assert out.endswith(b"250 2.0.0 Ok: queued as Q\r\n")
