"""Big messages leave the core in MessageContent events (the shell spools them), for DATA
and BDAT, with the same content and the same checks as a message held whole."""

from __future__ import annotations

from pochta.proto.smtp.events import (
    NEED_DATA,
    MailFrom,
    MessageContent,
    MessageDiscarded,
    MessageReady,
    RcptTo,
)
from pochta.proto.smtp.replies import Reply
from pochta.proto.smtp.server import ServerSession, SessionParams


def drive(chunks: list[bytes], **params: object) -> tuple[list[object], bytes]:
    """Feed the chunks (after EHLO/MAIL/RCPT); returns the content events and output."""
    p = SessionParams(hostname="mx.example.org", spool_threshold=1000, **params)  # type: ignore[arg-type]
    s = ServerSession(p)
    s.start()
    s.receive_data(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n")
    seen: list[object] = []
    out = b""
    feed = list(chunks)
    while True:
        event = s.next_event()
        if event is NEED_DATA:
            out += s.data_to_send()
            if not feed:
                return seen, out + s.data_to_send()
            s.receive_data(feed.pop(0))
        elif isinstance(event, MailFrom | RcptTo):
            s.accept()
        elif isinstance(event, MessageReady):
            seen.append(event)
            s.accept(Reply(250, "2.0.0", "Ok: queued as Q1"))
        elif isinstance(event, MessageContent | MessageDiscarded):
            seen.append(event)
        else:
            raise AssertionError(event)


def content(seen: list[object]) -> bytes:
    data = b""
    for e in seen:
        if isinstance(e, MessageContent):
            data = e.data if e.first else data + e.data
        elif isinstance(e, MessageReady):
            return data + e.data if e.spooled else e.data
    raise AssertionError("no message")


def test_data_is_spooled_in_order_and_unstuffed() -> None:
    lines = b"".join(b"..line %05d of the message\r\n" % n for n in range(300))
    seen, out = drive([b"DATA\r\n", lines[:4000], lines[4000:], b".\r\n"])
    assert b"queued as Q1" in out
    parts = [e for e in seen if isinstance(e, MessageContent)]
    assert len(parts) >= 3 and parts[0].first and not any(p.first for p in parts[1:])
    assert all(len(p.data) < 1100 for p in parts)  # never much more than the threshold
    ready = seen[-1]
    assert isinstance(ready, MessageReady) and ready.spooled
    assert content(seen) == lines.replace(b"\r\n..", b"\r\n.")[1:]


def test_small_message_is_not_spooled() -> None:
    seen, _ = drive([b"DATA\r\nSubject: s\r\n\r\nhi\r\n.\r\n"])
    assert len(seen) == 1 and isinstance(seen[0], MessageReady) and not seen[0].spooled


def test_too_big_after_spooling_is_discarded() -> None:
    seen, out = drive([b"DATA\r\n", b"x" * 60 + b"\r\n"] + [b"y" * 60 + b"\r\n"] * 60
                      + [b".\r\n"], max_message_size=2500)
    assert any(isinstance(e, MessageContent) for e in seen)
    assert isinstance(seen[-1], MessageDiscarded)
    assert b"552 5.3.4" in out


def test_bdat_chunks_with_a_crlf_split_between_them() -> None:
    body = b"".join(b"bdat line %04d\r\n" % n for n in range(200))
    cut = body.index(b"\r\n", 1500) + 1  # the CR ends one chunk, its LF starts the next
    a, b = body[:cut], body[cut:]
    seen, out = drive([b"BDAT %d\r\n" % len(a) + a, b"BDAT %d LAST\r\n" % len(b) + b])
    assert b"queued as Q1" in out and b"554" not in out
    assert content(seen) == body


def test_bdat_bare_cr_at_the_end_is_refused_or_normalised() -> None:
    _, out = drive([b"BDAT 5 LAST\r\nabc\r\r"])
    assert b"554 5.6.11" in out
    seen, out = drive([b"BDAT 5 LAST\r\nabc\r\r"], bare_lf="normalize")
    assert b"queued as Q1" in out and content(seen) == b"abc\r\n\r\n"


def test_bdat_long_line_across_chunks_is_refused() -> None:
    seen, out = drive([b"BDAT 600\r\n" + b"z" * 600, b"BDAT 600 LAST\r\n" + b"z" * 600],
                      max_data_line_length=1000)
    assert b"554 5.6.0" in out
    assert not any(isinstance(e, MessageReady) for e in seen)
