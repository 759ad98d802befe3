"""The dot-stuffing codec (RFC 5321 §4.5.2, RFC 1939 §3) used by the SMTP client core,
the POP3 server core and ``pochta send``; the cores' own transcript tests show it on
the wire, and the SMTP server core's reader undoes it in the round trip below."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pochta.mail.dotstuff import (
    TERMINATOR,
    DotStuffer,
    dot_encode,
    dot_stuff,
    dot_unstuff,
    to_crlf,
)
from pochta.proto.smtp.events import NEED_DATA, MessageReady
from pochta.proto.smtp.server import ServerSession, SessionParams


def test_leading_dots_and_lone_dot() -> None:
    assert dot_stuff(b".a\r\n.\r\nb\r\n") == b"..a\r\n..\r\nb\r\n"
    assert dot_stuff(b".") == b"..\r\n"  # a lone dot must not end the content
    assert dot_stuff(b"a.\r\nb.c\r\n") == b"a.\r\nb.c\r\n"  # dots inside lines stay
    assert dot_stuff(b"x") == b"x\r\n"
    assert dot_stuff(b"") == b""
    plain = b"abc\r\ndef\r\n"
    assert dot_stuff(plain) is plain  # nothing to stuff: no copy


def test_dot_encode_smtp_data() -> None:
    assert dot_encode(b".a\r\nb\r\n.\r\n..c") == b"..a\r\nb\r\n..\r\n...c\r\n.\r\n"
    assert dot_encode(b"") == TERMINATOR
    assert dot_encode(b"\r\n") == b"\r\n.\r\n"


def test_bare_line_ends_become_crlf() -> None:
    assert to_crlf(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd"
    assert to_crlf(b"\r\r\n") == b"\r\n\r\n"
    assert dot_encode(b"a\nb\rc") == b"a\r\nb\r\nc\r\n.\r\n"
    # a dot after a bare LF starts a line too
    assert dot_encode(b"a\n.b\r.c") == b"a\r\n..b\r\n..c\r\n.\r\n"


def test_unstuff_line() -> None:
    assert dot_unstuff(b"..a") == b".a"
    assert dot_unstuff(b"..") == b"."
    assert dot_unstuff(b"a.") == b"a."
    assert dot_unstuff("..a") == ".a" and dot_unstuff("a") == "a"  # text lines (probe)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b"")),
       st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_streaming_equals_whole(data: bytes, cuts: list[int]) -> None:
    """Any cut, including between the CR and LF of a CRLF before a dot."""
    data = to_crlf(data)
    stuffer = DotStuffer()
    out = b""
    pos = 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        out += stuffer.feed(data[pos:cut])
        pos = cut
    out += stuffer.feed(data[pos:]) + stuffer.end()
    assert out == dot_stuff(data) + TERMINATOR


def test_streaming_cut_inside_crlf_before_dot() -> None:
    stuffer = DotStuffer()
    out = stuffer.feed(b"a\r") + stuffer.feed(b"\n.b") + stuffer.end()
    assert out == b"a\r\n..b\r\n.\r\n"


def _server_receives(wire: bytes) -> bytes:
    """What Pochta's SMTP server core takes from ``wire`` as the DATA content."""
    server = ServerSession(SessionParams("mx.example.test"))
    server.start()
    server.receive_data(b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\n"
                        b"RCPT TO:<b@mx.example.test>\r\nDATA\r\n" + wire)
    for _ in range(100):
        event = server.next_event()
        if event is NEED_DATA:
            break
        if isinstance(event, MessageReady):
            return event.data
        server.accept()
    raise AssertionError("no message")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([b".", b"..", b"a", b".a", b"", b" .", b"x.y"]),
                max_size=8))
def test_round_trip_through_the_server_core(lines: list[bytes]) -> None:
    message = b"".join(line + b"\r\n" for line in lines)
    assert _server_receives(dot_encode(message)) == message
