"""Transcript tests for the SMTP server core: commands, pipelining, limits, errors."""

from __future__ import annotations

import dataclasses

import pytest

from pochta.proto.smtp import replies
from pochta.proto.smtp.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Event,
    MailFrom,
    MessageReady,
    RcptTo,
)
from pochta.proto.smtp.server import LocalProtocolError, ServerSession, SessionParams

from .test_smtp_transcript import (
    EHLO,
    GREET_EHLO,
    PARAMS,
    default_decider,
    transcript,
)

GREET = "S: 220 mx.example.org ESMTP Pochta\n"


def test_full_session() -> None:
    r = transcript(
        GREET_EHLO
        + """
        C: MAIL FROM:<alice@example.com>
        S: 250 2.1.0 Ok
        C: RCPT TO:<bob@example.org>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: hi
        C:
        C: hello
        C: .
        S: 250 2.0.0 Ok: queued as Q1
        C: QUIT
        S: 221 2.0.0 Bye
        """
    )
    (msg,) = r.messages
    assert msg.data == b"Subject: hi\r\n\r\nhello\r\n"
    assert msg.sender == "alice@example.com"
    assert [rc.address for rc in msg.recipients] == ["bob@example.org"]
    assert not msg.body_8bit and not msg.smtputf8 and not msg.chunked
    assert r.session.closed
    assert isinstance(r.events[-1], ConnectionClosed)
    assert r.session.helo_name == "client.example" and r.session.esmtp


def test_helo_is_plain_smtp() -> None:
    r = transcript(
        GREET
        + """
        C: HELO client.example
        S: 250 mx.example.org
        C: HELO
        S: 501 5.5.4 Syntax: HELO hostname
        C: EHLO
        S: 501 5.5.4 Syntax: EHLO hostname
        """
    )
    assert r.session.helo_name == "client.example"
    assert not r.session.esmtp


def test_ehlo_advertises_starttls_and_auth_only_when_appropriate() -> None:
    p = dataclasses.replace(PARAMS, tls_available=True, auth_mechanisms=("plain", "LOGIN"))
    r = transcript(
        GREET
        + "C: EHLO c\n"
        + EHLO.replace("S: 250 DSN", "S: 250-DSN\nS: 250 STARTTLS")
        + """
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        C: EHLO c
        """
        + EHLO.replace("S: 250 DSN", "S: 250-DSN\nS: 250 AUTH PLAIN LOGIN"),
        p,
    )
    assert r.session.tls_active


def test_ehlo_options() -> None:
    p = dataclasses.replace(PARAMS, smtputf8=False, binarymime=True, max_message_size=1000)
    transcript(
        GREET
        + """
        C: EHLO c
        S: 250-mx.example.org
        S: 250-PIPELINING
        S: 250-SIZE 1000
        S: 250-8BITMIME
        S: 250-BINARYMIME
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250 DSN
        """,
        p,
    )


def test_simple_commands() -> None:
    transcript(
        GREET
        + """
        C: NOOP
        S: 250 2.0.0 Ok
        C: noop anything goes
        S: 250 2.0.0 Ok
        C: HELP
        S: 214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP
        C: VRFY root
        S: 252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery
        C: VRFY
        S: 501 5.5.4 Syntax: VRFY address
        C: EXPN staff
        S: 502 5.5.1 EXPN not available
        C: RSET
        S: 250 2.0.0 Ok
        C: RSET now
        S: 501 5.5.4 Syntax error, no parameters allowed
        C: FOO
        S: 500 5.5.1 Command unrecognized
        C: TURN
        S: 500 5.5.1 Command unrecognized
        C: STARTTLS
        S: 502 5.5.1 Command not implemented
        C: AUTH PLAIN
        S: 502 5.5.1 Command not implemented
        C: quit
        S: 221 2.0.0 Bye
        """
    )


def test_sequence_errors() -> None:
    transcript(
        GREET
        + """
        C: MAIL FROM:<a@example.com>
        S: 503 5.5.1 Send HELO/EHLO first
        C: RCPT TO:<b@example.com>
        S: 503 5.5.1 Need MAIL command
        C: DATA
        S: 503 5.5.1 Need MAIL command
        C: EHLO c
        """
        + EHLO
        + """
        C: DATA
        S: 503 5.5.1 Need MAIL command
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Ok
        C: MAIL FROM:<a@example.com>
        S: 503 5.5.1 Sender already specified
        C: DATA
        S: 503 5.5.1 Need RCPT command
        C: DATA now
        S: 501 5.5.4 Syntax error, no parameters allowed
        """
    )


def test_rset_and_ehlo_reset_the_transaction() -> None:
    r = transcript(
        GREET_EHLO
        + """
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Ok
        C: RCPT TO:<b@example.com>
        S: 250 2.1.5 Ok
        C: RSET
        S: 250 2.0.0 Ok
        C: RCPT TO:<b@example.com>
        S: 503 5.5.1 Need MAIL command
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Ok
        C: EHLO again
        """
        + EHLO
        + """
        C: DATA
        S: 503 5.5.1 Need MAIL command
        """
    )
    assert r.session.helo_name == "again"


def test_null_sender_and_postmaster() -> None:
    r = transcript(
        GREET_EHLO
        + """
        C: MAIL FROM:<>
        S: 250 2.1.0 Ok
        C: RCPT TO:<Postmaster>
        S: 250 2.1.5 Ok
        C: RCPT TO:<>
        S: 501 5.1.3 Bad recipient address syntax
        C: RCPT TO:<user>
        S: 501 5.1.3 Recipient address must include a domain
        """
    )
    mail, rcpt = r.events[0], r.events[1]
    assert isinstance(mail, MailFrom) and mail.address == ""
    assert isinstance(rcpt, RcptTo) and rcpt.address == "Postmaster@mx.example.org"


def test_mail_parameters_reach_the_event() -> None:
    r = transcript(
        GREET_EHLO
        + "C: MAIL FROM:<@relay.example,@b.example:a@example.com> SIZE=1000 BODY=8bitmime"
        + " RET=HDRS ENVID=QQ+2B1 AUTH=<>"
        + """
        S: 250 2.1.0 Ok
        C: RCPT TO:<b@example.org> NOTIFY=success,delay ORCPT=rfc822;b+40example.org
        S: 250 2.1.5 Ok
        C: RCPT TO:<c@[192.0.2.1]> NOTIFY=NEVER
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C> b"\\xff8bit\\r\\n.\\r\\n"
        S: 250 2.0.0 Ok: queued as Q1
        """
    )
    mail = r.of(MailFrom)[0]
    assert isinstance(mail, MailFrom)
    assert mail.address == "a@example.com"
    assert (mail.size, mail.body, mail.ret, mail.envid) == (1000, "8BITMIME", "HDRS", "QQ+1")
    assert mail.params["AUTH"] == "<>"
    b, c = r.of(RcptTo)
    assert isinstance(b, RcptTo) and isinstance(c, RcptTo)
    assert (b.notify, b.orcpt) == ("SUCCESS,DELAY", "rfc822;b@example.org")
    assert c.address == "c@[192.0.2.1]" and c.notify == "NEVER"
    assert r.messages[0].body_8bit
    assert r.messages[0].data == b"\xff8bit\r\n"


def test_parameter_errors() -> None:
    transcript(
        GREET_EHLO
        + """
        C: MAIL FROM:<a@example.com> FOO=bar
        S: 555 5.5.4 Unsupported MAIL/RCPT parameter
        C: MAIL FROM:<a@example.com> SIZE=26214401
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        C: MAIL FROM:<a@example.com> SIZE=big
        S: 501 5.5.4 Invalid parameter value
        C: MAIL FROM:<a@example.com> BODY=9BIT
        S: 501 5.5.4 Invalid parameter value
        C: MAIL FROM:<a@example.com> BODY=BINARYMIME
        S: 555 5.5.4 Unsupported MAIL/RCPT parameter
        C: MAIL FROM:a@example.com
        S: 501 5.1.7 Bad sender address syntax
        C: MAIL TO:<a@example.com>
        S: 501 5.5.4 Syntax: MAIL FROM:<address>
        C: MAIL FROM:<ü@example.com>
        S: 553 5.6.7 Non-ASCII addresses require SMTPUTF8
        C: MAIL FROM:<ü@example.com> SMTPUTF8
        S: 250 2.1.0 Ok
        C: RCPT TO:<b@example.com> NOTIFY=NEVER,SUCCESS
        S: 501 5.5.4 Invalid parameter value
        C: RCPT TO:<b@example.com> SIZE=10
        S: 555 5.5.4 Unsupported MAIL/RCPT parameter
        C: RCPT TO:<b@@example.com>
        S: 501 5.1.3 Bad recipient address syntax
        C: RCPT FROM:<b@example.com>
        S: 501 5.5.4 Syntax: RCPT TO:<address>
        C: RCPT TO:<почта@пример.рф>
        S: 250 2.1.5 Ok
        """,
        dataclasses.replace(PARAMS, max_errors=50),
    )


def test_rcpt_utf8_needs_smtputf8_on_the_transaction() -> None:
    transcript(
        GREET_EHLO
        + """
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Ok
        C: RCPT TO:<josé@example.com>
        S: 553 5.6.7 Non-ASCII addresses require SMTPUTF8
        """
    )


def test_smtputf8_disabled() -> None:
    p = dataclasses.replace(PARAMS, smtputf8=False)
    transcript(
        GREET
        + """
        C: HELO c
        S: 250 mx.example.org
        C: MAIL FROM:<a@example.com> SMTPUTF8
        S: 555 5.5.4 Unsupported MAIL/RCPT parameter
        """,
        p,
    )


def test_shell_rejections_and_replies() -> None:
    def decide(session: ServerSession, event: Event) -> None:
        if isinstance(event, RcptTo) and event.address.startswith("nobody"):
            session.reject(replies.USER_UNKNOWN)
        elif isinstance(event, MailFrom) and event.address.startswith("spammer"):
            session.reject(replies.Reply(550, "5.7.1", "Go away"))
        else:
            default_decider(session, event)

    r = transcript(
        GREET_EHLO
        + """
        C: MAIL FROM:<spammer@example.com>
        S: 550 5.7.1 Go away
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Ok
        C: RCPT TO:<nobody@example.org>
        S: 550 5.1.1 Recipient address rejected: User unknown
        C: DATA
        S: 554 5.5.1 No valid recipients
        C: RCPT TO:<bob@example.org>
        S: 250 2.1.5 Ok
        C: RCPT TO:<nobody2@example.org>
        S: 550 5.1.1 Recipient address rejected: User unknown
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: x
        C: .
        S: 250 2.0.0 Ok: queued as Q1
        """,
        decide=decide,
    )
    (msg,) = r.messages
    assert [x.address for x in msg.recipients] == ["bob@example.org"]
    assert r.session.errors == 0  # the shell's refusals are not protocol errors


def test_shell_closing_reply_closes() -> None:
    def decide(session: ServerSession, event: Event) -> None:
        session.reject(replies.SERVICE_UNAVAILABLE)

    r = transcript(
        GREET_EHLO
        + """
        C: MAIL FROM:<a@example.com>
        C: RCPT TO:<b@example.com>
        S: 421 4.3.2 Service not available, closing transmission channel
        """,
        decide=decide,
    )
    assert r.session.closed
    assert isinstance(r.events[-1], ConnectionClosed)
    assert len(r.of(RcptTo)) == 0


def test_pipelining_replies_in_order() -> None:
    def decide(session: ServerSession, event: Event) -> None:
        if isinstance(event, RcptTo) and event.address == "bad@example.org":
            session.reject(replies.USER_UNKNOWN)
        else:
            default_decider(session, event)

    r = transcript(
        GREET_EHLO
        + """
        C: MAIL FROM:<a@example.com>
        C: RCPT TO:<one@example.org>
        C: RCPT TO:<bad@example.org>
        C: RCPT TO:<two@example.org>
        C: NOOP
        C: DATA
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 550 5.1.1 Recipient address rejected: User unknown
        S: 250 2.1.5 Ok
        S: 250 2.0.0 Ok
        S: 354 End data with <CR><LF>.<CR><LF>
        C: body
        C: .
        C: MAIL FROM:<c@example.com>
        C: RCPT TO:<three@example.org>
        C: QUIT
        S: 250 2.0.0 Ok: queued as Q1
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 221 2.0.0 Bye
        """,
        decide=decide,
    )
    assert [type(e).__name__ for e in r.events] == [
        "MailFrom",
        "RcptTo",
        "RcptTo",
        "RcptTo",
        "MessageReady",
        "MailFrom",
        "RcptTo",
        "ConnectionClosed",
    ]


def test_paused_holds_later_commands() -> None:
    s = ServerSession(PARAMS)
    s.start()
    s.receive_data(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nNOOP\r\nRCPT TO:<b@example.com>\r\n")
    event = s.next_event()
    assert isinstance(event, MailFrom)
    assert s.next_event() is PAUSED
    assert s.next_event() is PAUSED
    out = s.data_to_send()
    assert out.endswith(b"250 DSN\r\n")  # NOOP not answered yet
    with pytest.raises(LocalProtocolError):
        s.tls_started()
    with pytest.raises(LocalProtocolError):
        s.auth_succeeded("x")
    s.accept()
    assert isinstance(s.next_event(), RcptTo)
    assert s.data_to_send() == b"250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n"
    s.reject(replies.USER_UNKNOWN)
    assert s.next_event() is NEED_DATA
    assert s.data_to_send() == b"550 5.1.1 Recipient address rejected: User unknown\r\n"
    with pytest.raises(LocalProtocolError):
        s.accept()
    with pytest.raises(LocalProtocolError):
        s.reject(replies.OK)


def test_accept_rejects_failure_reply() -> None:
    s = ServerSession(PARAMS)
    s.receive_data(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n")
    assert isinstance(s.next_event(), MailFrom)
    with pytest.raises(LocalProtocolError):
        s.accept(replies.USER_UNKNOWN)
    s.accept()


def test_too_many_recipients() -> None:
    p = dataclasses.replace(PARAMS, max_recipients=2)
    r = transcript(
        GREET_EHLO
        + """
        C: MAIL FROM:<a@example.com>
        C: RCPT TO:<r1@example.org>
        C: RCPT TO:<r2@example.org>
        C: RCPT TO:<r3@example.org>
        C: DATA
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 250 2.1.5 Ok
        S: 452 4.5.3 Too many recipients
        S: 354 End data with <CR><LF>.<CR><LF>
        C: .
        S: 250 2.0.0 Ok: queued as Q1
        """,
        p,
    )
    assert len(r.messages[0].recipients) == 2
    assert r.messages[0].data == b""


def test_too_many_errors_closes() -> None:
    p = dataclasses.replace(PARAMS, max_errors=3)
    r = transcript(
        GREET
        + """
        C: BOGUS
        C: MAIL FROM:<a@example.com>
        C: EXPN x
        C: NOOP
        S: 500 5.5.1 Command unrecognized
        S: 503 5.5.1 Send HELO/EHLO first
        S: 502 5.5.1 EXPN not available
        S: 421 4.7.0 Too many errors, closing
        """,
        p,
    )
    assert r.session.closed and r.session.errors == 3


def test_line_too_long() -> None:
    long = "NOOP " + "x" * 600
    r = transcript(
        GREET
        + f"""
        C: {long}
        S: 500 5.5.2 Line too long
        C: NOOP {"y" * 505}
        S: 250 2.0.0 Ok
        C: NOOP {"y" * 506}
        S: 500 5.5.2 Line too long
        C: NOOP
        S: 250 2.0.0 Ok
        """
    )
    assert r.session.errors == 2


def test_long_line_is_not_buffered() -> None:
    s = ServerSession(PARAMS)
    for _ in range(1000):
        s.receive_data(b"A" * 1000)
        assert s.next_event() is NEED_DATA
        assert len(s._in) <= PARAMS.max_line_length + 1
    s.receive_data(b"\r\nNOOP\r\n")
    assert s.next_event() is NEED_DATA
    assert s.data_to_send() == b"500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n"


def test_garbage_commands() -> None:
    transcript(
        GREET
        + """
        C> b"\\xff\\xfe\\r\\n"
        S: 500 5.5.2 Syntax error: the command line is not UTF-8
        C> b"NOOP\\x00\\r\\n"
        S: 500 5.5.2 Syntax error: control character (CR, NUL, ...) in the command line
        C> b"\\r\\n"
        S: 500 5.5.2 Syntax error: empty command line
        C> b"   \\r\\n"
        S: 500 5.5.2 Syntax error: empty command line
        C> b"NO\\rOP\\r\\n"
        S: 500 5.5.2 Syntax error: control character (CR, NUL, ...) in the command line
        C> b"EHLO x\\r\\r\\n"
        S: 500 5.5.2 Syntax error: line ends in CR CR LF (openssl s_client -crlf adds the CR)
        C> b"\\xd0\\x9f\\xd0\\xa0\\r\\n"
        S: 500 5.5.1 Command unrecognized
        C> b"NOOP\\n"
        S: 250 2.0.0 Ok
        """
    )


def test_eof_closes() -> None:
    r = transcript(
        GREET_EHLO
        + """
        C: MAIL FROM:<a@example.com>
        C> b"RCPT TO:<partial"
        S: 250 2.1.0 Ok
        EOF
        """
    )
    assert r.session.closed
    assert isinstance(r.events[-1], ConnectionClosed)
    assert len(r.of(RcptTo)) == 0


def test_pipelined_quit_then_eof() -> None:
    r = transcript(GREET + "C: NOOP\nC: QUIT\nC: NOOP\nS: 250 2.0.0 Ok\nS: 221 2.0.0 Bye\nEOF")
    assert r.session.closed


def test_closed_session_ignores_input() -> None:
    s = ServerSession(PARAMS)
    s.receive_data(b"QUIT\r\n")
    assert isinstance(s.next_event(), ConnectionClosed)
    s.receive_data(b"NOOP\r\n")
    assert isinstance(s.next_event(), ConnectionClosed)
    assert s.data_to_send() == b"221 2.0.0 Bye\r\n"


def test_bad_params_value() -> None:
    with pytest.raises(ValueError):
        SessionParams(hostname="x", bare_lf="maybe")


def test_message_event_is_complete() -> None:
    r = transcript(
        GREET_EHLO
        + """
        C: MAIL FROM:<ü@example.com> SMTPUTF8 BODY=8BITMIME
        C: RCPT TO:<b@example.org>
        C: DATA
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 354 End data with <CR><LF>.<CR><LF>
        C: .
        S: 250 2.0.0 Ok: queued as Q1
        """
    )
    (msg,) = r.messages
    assert isinstance(msg, MessageReady)
    assert msg.smtputf8 and msg.body_8bit and msg.mail_from.smtputf8


# --- error replies of every kind count (Postfix smtpd_hard_error_limit) -----------------


def _drive(session: ServerSession, data: bytes, known: set[str]) -> bytes:
    """Feed ``data`` and decide every event: MAIL accepted, RCPT accepted if known."""
    session.receive_data(data)
    out = bytearray()
    while True:
        event = session.next_event()
        out += session.data_to_send()
        if event is NEED_DATA or isinstance(event, ConnectionClosed):
            return bytes(out + session.data_to_send())
        if isinstance(event, MailFrom):
            session.accept()
        elif isinstance(event, RcptTo):
            if event.address in known:
                session.accept()
            else:
                session.reject(replies.USER_UNKNOWN)


def test_unknown_recipients_count_towards_the_hard_error_limit() -> None:
    session = ServerSession(dataclasses.replace(PARAMS, hard_error_limit=5))
    session.start()
    pipelined = b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\n" + b"".join(
        b"RCPT TO:<nouser%d@example.org>\r\n" % n for n in range(1000))
    out = _drive(session, pipelined, set()).decode()
    # five 550s, then 421 and nothing more: not 1000 answers
    assert out.count("550 5.1.1") == 5
    assert out.endswith("421 4.7.0 Too many errors, closing\r\n")
    assert session.closed and session.error_replies == 5
    assert session.errors == 0  # the protocol error limit is not involved


def test_pipelined_mix_keeps_reply_order_and_counts_only_refusals() -> None:
    session = ServerSession(PARAMS)
    session.start()
    out = _drive(session, b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\n"
                 b"RCPT TO:<bob@example.org>\r\nRCPT TO:<x1@example.org>\r\n"
                 b"RCPT TO:<carol@example.org>\r\nRCPT TO:<x2@example.org>\r\nDATA\r\n",
                 {"bob@example.org", "carol@example.org"}).decode()
    codes = [line[:3] for line in out.split("\r\n") if line[:3].isdigit() and line[3] == " "]
    assert codes == ["220", "250", "250", "250", "550", "250", "550", "354"]
    assert session.error_replies == 2 and not session.closed


def test_abandon_answers_the_pending_decision_and_the_session_goes_on() -> None:
    session = ServerSession(PARAMS)
    session.start()
    session.receive_data(b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nNOOP\r\n")
    event = session.next_event()
    assert isinstance(event, MailFrom)
    session.abandon(replies.LOCAL_ERROR)
    assert session.next_event() is NEED_DATA
    out = session.data_to_send().decode()
    assert "451 4.3.0" in out and out.endswith("250 2.0.0 Ok\r\n")
    assert session.error_replies == 0 and not session.in_transaction
    with pytest.raises(LocalProtocolError):
        session.abandon(replies.LOCAL_ERROR)  # nothing pending
