"""DATA and BDAT: termination, smuggling, dot-unstuffing, bare CR/LF, size and line limits."""

from __future__ import annotations

import dataclasses

import pytest

from pochta.proto.smtp import replies
from pochta.proto.smtp.events import NEED_DATA, Event, MailFrom, MessageReady, RcptTo
from pochta.proto.smtp.server import ServerSession, SessionParams

from .test_smtp_transcript import GREET_EHLO, PARAMS, transcript

OPEN = (
    GREET_EHLO
    + """
    C: MAIL FROM:<a@example.com>
    C: RCPT TO:<b@example.org>
    C: DATA
    S: 250 2.1.0 Ok
    S: 250 2.1.5 Ok
    S: 354 End data with <CR><LF>.<CR><LF>
    """
)
OPEN_BDAT = (
    GREET_EHLO
    + """
    C: MAIL FROM:<a@example.com>
    C: RCPT TO:<b@example.org>
    S: 250 2.1.0 Ok
    S: 250 2.1.5 Ok
    """
)
QUEUED = "S: 250 2.0.0 Ok: queued as Q1\n"


def _lit(data: bytes) -> str:
    return f"C> {data!r}\n"


def test_dot_unstuffing_and_dot_lines() -> None:
    r = transcript(
        OPEN
        + """
        C: ..leading dot
        C: ...
        C: a.
        C: ..
        C: .
        S: 250 2.0.0 Ok: queued as Q1
        """
    )
    # "..leading dot" -> ".leading dot"; "..." -> ".."; "a." unchanged; ".." -> "."
    assert r.messages[0].data == b".leading dot\r\n..\r\na.\r\n.\r\n"


def test_end_of_data_right_after_data_command() -> None:
    r = transcript(OPEN + "C: .\n" + QUEUED)
    assert r.messages[0].data == b""


def test_nul_bytes_are_accepted_in_content() -> None:
    r = transcript(OPEN + _lit(b"a\x00b\r\n.\r\n") + QUEUED)
    assert r.messages[0].data == b"a\x00b\r\n"


SMUGGLING_VARIANTS = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\n.\r",
    b"\r\n.\r\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n .\r\n",
]


@pytest.mark.parametrize("fake_end", SMUGGLING_VARIANTS, ids=repr)
def test_smuggling_variants_never_end_data(fake_end: bytes) -> None:
    """CVE-2023-51764: none of these ends DATA; the smuggled commands stay content."""
    smuggled = b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
    body = b"Subject: x\r\n\r\nhello" + fake_end + smuggled + b"forged\r\n"
    for bare_lf in ("reject", "normalize"):
        p = dataclasses.replace(PARAMS, bare_lf=bare_lf)
        reply = QUEUED
        if bare_lf == "reject" and (b"\r" in fake_end.replace(b"\r\n", b"") or b"\n" in
                                    fake_end.replace(b"\r\n", b"")):
            reply = "S: 554 5.6.11 Message contains bare CR or LF characters\n"
        r = transcript(OPEN + _lit(body) + "C: .\n" + reply + "C: NOOP\nS: 250 2.0.0 Ok\n", p)
        # Exactly one MAIL and RCPT: the smuggled ones were never executed.
        assert len(r.of(MailFrom)) == 1 and len(r.of(RcptTo)) == 1
        if reply == QUEUED:
            (msg,) = r.messages
            assert b"evil@example.com" in msg.data
        else:
            assert r.messages == []


def test_bare_lf_rejected_by_default_session_stays_in_sync() -> None:
    r = transcript(
        OPEN
        + _lit(b"line one\nline two\r\n")
        + """
        C: more
        C: .
        S: 554 5.6.11 Message contains bare CR or LF characters
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Ok
        """
    )
    assert r.messages == []
    assert r.session.errors == 0


def test_bare_lf_normalized() -> None:
    p = dataclasses.replace(PARAMS, bare_lf="normalize")
    r = transcript(OPEN + _lit(b"one\ntwo\rthree\n..four\r\n.\r\n") + QUEUED, p)
    assert r.messages[0].data == b"one\r\ntwo\r\nthree\r\n.four\r\n"


def test_oversize_message_read_to_end_then_552() -> None:
    p = dataclasses.replace(PARAMS, max_message_size=50)
    r = transcript(
        OPEN.replace("SIZE 26214400", "SIZE 50")
        + _lit(b"x" * 40 + b"\r\n" + b"y" * 40 + b"\r\n")
        + """
        C: MAIL FROM:<not-a-command@example.com>
        C: .
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        C: NOOP
        S: 250 2.0.0 Ok
        """,
        p,
    )
    assert r.messages == []
    assert len(r.of(MailFrom)) == 1


def test_oversize_message_uses_bounded_memory() -> None:
    p = dataclasses.replace(PARAMS, max_message_size=10_000)
    s = ServerSession(p)
    s.receive_data(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")
    assert isinstance(s.next_event(), MailFrom)
    s.accept()
    s.receive_data(b"RCPT TO:<b@example.org>\r\n")
    assert isinstance(s.next_event(), RcptTo)
    s.accept()
    s.receive_data(b"DATA\r\n")
    assert s.next_event() is NEED_DATA
    line = b"z" * 998 + b"\r\n"
    for _ in range(2000):  # 2 MB
        s.receive_data(line * 1)
        assert s.next_event() is NEED_DATA
        assert len(s._msg) <= 10_000 and len(s._in) < 2000
    s.receive_data(b".\r\n")
    assert s.next_event() is NEED_DATA
    assert s.data_to_send().endswith(
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    )


def test_exact_size_limit_is_accepted() -> None:
    p = dataclasses.replace(PARAMS, max_message_size=12)
    r = transcript(
        OPEN.replace("SIZE 26214400", "SIZE 12") + _lit(b"0123456789\r\n.\r\n") + QUEUED, p
    )
    assert r.messages[0].data == b"0123456789\r\n"


def test_long_body_line_rejects_message() -> None:
    p = dataclasses.replace(PARAMS, max_data_line_length=100)
    r = transcript(
        OPEN
        + _lit(b"a" * 100 + b"\r\n")
        + _lit(b"b" * 250 + b"\r\n")
        + """
        C: .
        S: 554 5.6.0 Message contains a line that is too long
        C: NOOP
        S: 250 2.0.0 Ok
        """,
        p,
    )
    assert r.messages == []


def test_body_line_of_exactly_the_limit_is_accepted() -> None:
    p = dataclasses.replace(PARAMS, max_data_line_length=100)
    r = transcript(OPEN + _lit(b"a" * 100 + b"\r\n.\r\n") + QUEUED, p)
    assert r.messages[0].data == b"a" * 100 + b"\r\n"


def test_long_line_split_between_cr_and_lf_still_ends_data() -> None:
    p = dataclasses.replace(PARAMS, max_data_line_length=10)
    s = _session_in_data(p)
    s.receive_data(b"b" * 30 + b"\r")  # over-long, and the CR may start CRLF
    assert s.next_event() is NEED_DATA
    s.receive_data(b"\n.\r\n")
    assert s.next_event() is NEED_DATA
    assert not s.in_data and not s.in_transaction
    assert s.data_to_send() == b"554 5.6.0 Message contains a line that is too long\r\n"
    s.receive_data(b"NOOP\r\n")
    assert s.next_event() is NEED_DATA
    assert s.data_to_send() == b"250 2.0.0 Ok\r\n"


def _session_in_data(p: SessionParams) -> ServerSession:
    s = ServerSession(p)
    s.receive_data(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")
    assert isinstance(s.next_event(), MailFrom)
    s.accept()
    s.receive_data(b"RCPT TO:<b@example.org>\r\n")
    assert isinstance(s.next_event(), RcptTo)
    s.accept()
    assert not s.in_data and s.in_transaction
    s.receive_data(b"DATA\r\n")
    assert s.next_event() is NEED_DATA
    assert s.in_data
    s.data_to_send()
    return s


def test_long_body_line_is_not_buffered() -> None:
    p = dataclasses.replace(PARAMS, max_data_line_length=1000)
    s = ServerSession(p)
    s.receive_data(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")
    assert isinstance(s.next_event(), MailFrom)
    s.accept()
    s.receive_data(b"RCPT TO:<b@example.org>\r\n")
    assert isinstance(s.next_event(), RcptTo)
    s.accept()
    s.receive_data(b"DATA\r\n")
    assert s.next_event() is NEED_DATA
    for _ in range(500):
        s.receive_data(b"q" * 999 + b"\r")
        assert s.next_event() is NEED_DATA
        assert len(s._in) <= 1001
    s.receive_data(b"\r\n.\r\n")
    assert s.next_event() is NEED_DATA
    assert s.data_to_send().endswith(b"554 5.6.0 Message contains a line that is too long\r\n")


def test_eof_inside_data_closes_without_message() -> None:
    r = transcript(OPEN + "C: partial\nEOF")
    assert r.session.closed and r.messages == []


def test_binarymime_requires_bdat() -> None:
    p = dataclasses.replace(PARAMS, binarymime=True)
    transcript(
        GREET_EHLO.replace("S: 250-8BITMIME", "S: 250-8BITMIME\nS: 250-BINARYMIME")
        + """
        C: MAIL FROM:<a@example.com> BODY=BINARYMIME
        C: RCPT TO:<b@example.org>
        C: DATA
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 503 5.5.1 BODY=BINARYMIME requires BDAT
        """,
        p,
    )


# --- BDAT (RFC 3030) -------------------------------------------------------------------


def test_bdat_chunks() -> None:
    r = transcript(
        OPEN_BDAT
        + _lit(b"BDAT 12\r\nSubject: x\r\n")
        + _lit(b"BDAT 9 LAST\r\n\r\nhello\r\n")
        + """
        S: 250 2.0.0 Ok: 12 octets received
        S: 250 2.0.0 Ok: queued as Q1
        """
    )
    (msg,) = r.messages
    assert msg.data == b"Subject: x\r\n\r\nhello\r\n"
    assert msg.chunked


def test_bdat_zero_last_and_lowercase() -> None:
    r = transcript(
        OPEN_BDAT
        + _lit(b"bdat 3\r\nab\n")
        + _lit(b"BDAT 0 last\r\n")
        # content is checked as it arrives: the chunk with the bare LF is refused, and
        # LAST gets the same answer and ends the failed transaction (RFC 3030 §3)
        + "S: 554 5.6.11 Message contains bare CR or LF characters\n"
        + "S: 554 5.6.11 Message contains bare CR or LF characters\n"
    )
    assert r.messages == []
    r = transcript(OPEN_BDAT + _lit(b"BDAT 4\r\nab\r\nBDAT 0 LAST\r\n")
                   + "S: 250 2.0.0 Ok: 4 octets received\n" + QUEUED)
    assert r.messages[0].data == b"ab\r\n"


def test_bdat_chunk_data_is_never_parsed_as_commands() -> None:
    payload = b"QUIT\r\nMAIL FROM:<x@example.com>\r\n.\r\n"
    r = transcript(
        OPEN_BDAT + _lit(b"BDAT %d LAST\r\n" % len(payload) + payload) + QUEUED
        + "C: NOOP\nS: 250 2.0.0 Ok\n"
    )
    assert r.messages[0].data == payload
    assert not r.session.closed


def test_bdat_binarymime_keeps_bytes() -> None:
    p = dataclasses.replace(PARAMS, binarymime=True)
    payload = b"\x00\r\xff\n.\n"
    r = transcript(
        GREET_EHLO.replace("S: 250-8BITMIME", "S: 250-8BITMIME\nS: 250-BINARYMIME")
        + "C: MAIL FROM:<a@example.com> BODY=BINARYMIME\nC: RCPT TO:<b@example.org>\n"
        + _lit(b"BDAT 6 LAST\r\n" + payload)
        + "S: 250 2.1.0 Ok\nS: 250 2.1.5 Ok\n" + QUEUED,
        p,
    )
    assert r.messages[0].data == payload and r.messages[0].body_8bit


def test_bdat_then_data_is_503() -> None:
    transcript(
        OPEN_BDAT
        + _lit(b"BDAT 4\r\nab\r\n")
        + """
        C: DATA
        C: RCPT TO:<c@example.org>
        S: 250 2.0.0 Ok: 4 octets received
        S: 503 5.5.1 DATA not allowed during a BDAT transfer
        S: 503 5.5.1 Command not allowed during a BDAT transfer
        C: RSET
        S: 250 2.0.0 Ok
        """
    )


def test_bdat_without_transaction_consumes_chunk() -> None:
    r = transcript(
        GREET_EHLO
        + _lit(b"BDAT 6\r\nQUIT\r\n")
        + """
        C: NOOP
        S: 503 5.5.1 Need MAIL command
        S: 250 2.0.0 Ok
        C: MAIL FROM:<a@example.com>
        C: BDAT 0 LAST
        C: NOOP
        S: 250 2.1.0 Ok
        S: 503 5.5.1 Need RCPT command
        S: 250 2.0.0 Ok
        C: BDAT x
        S: 501 5.5.4 Syntax: BDAT chunk-size [LAST]
        """
    )
    assert not r.session.closed


def test_bdat_no_valid_recipients() -> None:
    def decide(session: ServerSession, event: Event) -> None:
        if isinstance(event, RcptTo):
            session.reject(replies.USER_UNKNOWN)
        else:
            session.accept()

    transcript(
        GREET_EHLO
        + "C: MAIL FROM:<a@example.com>\nC: RCPT TO:<b@example.org>\n"
        + _lit(b"BDAT 5 LAST\r\nabc\r\n")
        + """
        S: 250 2.1.0 Ok
        S: 550 5.1.1 Recipient address rejected: User unknown
        S: 554 5.5.1 No valid recipients
        """,
        decide=decide,
    )


def test_bdat_oversize_fails_transaction_until_last() -> None:
    p = dataclasses.replace(PARAMS, max_message_size=10)
    r = transcript(
        OPEN_BDAT.replace("SIZE 26214400", "SIZE 10")
        + _lit(b"BDAT 8\r\n12345678")
        + _lit(b"BDAT 8\r\n12345678")
        + _lit(b"BDAT 8\r\n12345678")
        + _lit(b"BDAT 2 LAST\r\n\r\n")
        + """
        C: RCPT TO:<c@example.org>
        S: 250 2.0.0 Ok: 8 octets received
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        S: 503 5.5.1 Need MAIL command
        """,
        p,
    )
    assert r.messages == []


def test_bdat_huge_chunk_streams_without_buffering() -> None:
    p = dataclasses.replace(PARAMS, max_message_size=1000)
    s = ServerSession(p)
    s.receive_data(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")
    assert isinstance(s.next_event(), MailFrom)
    s.accept()
    s.receive_data(b"RCPT TO:<b@example.org>\r\n")
    assert isinstance(s.next_event(), RcptTo)
    s.accept()
    s.receive_data(b"BDAT 1000000 LAST\r\n")
    assert s.next_event() is NEED_DATA and s.in_data
    for _ in range(1000):
        s.receive_data(b"\x00" * 1000)
        assert s.next_event() is NEED_DATA
        assert len(s._msg) <= 1000 and len(s._in) == 0
    s.receive_data(b"NOOP\r\n")
    assert s.next_event() is NEED_DATA
    assert s.data_to_send().endswith(
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 Ok\r\n"
    )


def test_bdat_normalize_bare_lf() -> None:
    p = dataclasses.replace(PARAMS, bare_lf="normalize")
    r = transcript(OPEN_BDAT + _lit(b"BDAT 5 LAST\r\na\nb\r\n") + QUEUED, p)
    assert r.messages[0].data == b"a\r\nb\r\n"


def test_second_transaction_after_message() -> None:
    r = transcript(
        OPEN
        + "C: one\nC: .\n" + QUEUED
        + """
        C: MAIL FROM:<c@example.com>
        C: RCPT TO:<d@example.org>
        C: DATA
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 354 End data with <CR><LF>.<CR><LF>
        C: two
        C: .
        """ + QUEUED
    )
    one, two = r.messages
    assert isinstance(one, MessageReady) and isinstance(two, MessageReady)
    assert one.data == b"one\r\n" and two.data == b"two\r\n"
    assert two.sender == "c@example.com"
