"""BURL (RFC 4468) in the SMTP core: advertised on submission, arguments after AUTH, the
URL handed to the shell, content joined like a BDAT chunk, failures failing the whole
transaction; with the RFC's examples (§3.4) as transcripts."""

from __future__ import annotations

import base64
import dataclasses

from pochta.proto.smtp import replies
from pochta.proto.smtp.events import BurlFetch, Event
from pochta.proto.smtp.server import ServerSession

from .test_smtp_transcript import EHLO, PARAMS, default_decider, transcript

GREET = "S: 220 mx.example.org ESMTP Pochta\n"
SUBMIT = dataclasses.replace(PARAMS, tls_active=True, require_auth=True,
                             auth_mechanisms=("PLAIN",), burl=True)
EHLO_BEFORE = EHLO.replace("S: 250 DSN", "S: 250-DSN\nS: 250-AUTH PLAIN\nS: 250 BURL")
EHLO_AFTER = EHLO.replace("S: 250 DSN", "S: 250-DSN\nS: 250-AUTH PLAIN\nS: 250 BURL imap")
PLAIN = base64.b64encode(b"\0user\0secret").decode()
URL = ("imap://harry@gryffindor.example.com/outbox;uidvalidity=1078863300/;uid=25"
       ";urlauth=submit+harry:internal:91354a473744909de610943775f92038")
BAD_URL = URL.replace(":91354a", ":71354a")
STORED = {URL: b"Subject: from IMAP\r\n\r\nbody\r\n",
          URL + "2": b"more\r\n", URL + "bare": b"Subject: x\n\nbare LF\n"}

OPEN = (GREET + "C: EHLO potter.example.com\n" + EHLO_BEFORE
        + f"C: AUTH PLAIN {PLAIN}\nS: 235 2.7.0 Authentication successful\n")


def decide(session: ServerSession, event: Event) -> None:
    """The shell's part: URLs in STORED resolve, others fail authorization (§3.4)."""
    if isinstance(event, BurlFetch):
        if event.url in STORED:
            session.burl_resolved(STORED[event.url])
        else:
            session.reject(replies.BURL_UNAUTHORIZED)
        return
    default_decider(session, event)


def test_rfc_example_one_transaction() -> None:
    r = transcript(OPEN + "C: EHLO potter.example.com\n" + EHLO_AFTER + f"""
        C: MAIL FROM:<harry@gryffindor.example.com>
        S: 250 2.1.0 Ok
        C: RCPT TO:<ron@gryffindor.example.com>
        S: 250 2.1.5 Ok
        C: BURL {URL} LAST
        S: 250 2.0.0 Ok: queued as Q1
        """, SUBMIT, decide)
    (msg,) = r.messages
    assert msg.data == STORED[URL] and msg.chunked
    assert r.of(BurlFetch) == [BurlFetch(URL, True)]


def test_rfc_example_pipelined_with_auth() -> None:
    """§3.4's second example: AUTH, MAIL, RCPT and BURL in one round trip."""
    r = transcript(GREET + "C: EHLO potter.example.com\n" + EHLO_BEFORE + f"""
        C: AUTH PLAIN {PLAIN}
        C: MAIL FROM:<harry@gryffindor.example.com>
        C: RCPT TO:<ron@gryffindor.example.com>
        C: BURL {URL} LAST
        S: 235 2.7.0 Authentication successful
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 250 2.0.0 Ok: queued as Q1
        """, SUBMIT, decide)
    assert [m.data for m in r.messages] == [STORED[URL]]


def test_rfc_failure_examples() -> None:
    """No valid recipient: BURL fails without resolving (§3.2, 554 5.5.0 in §3.4; ours is
    the DATA reply, 554 5.5.1). A wrong token: 554 5.7.0."""
    def refuse_malfoy(session: ServerSession, event: Event) -> None:
        if getattr(event, "address", "").startswith("malfoy"):
            session.reject(replies.RELAY_DENIED)
        else:
            decide(session, event)

    r = transcript(OPEN + f"""
        C: MAIL FROM:<harry@gryffindor.example.com>
        C: RCPT TO:<malfoy@slitherin.example.com>
        C: BURL {URL} LAST
        S: 250 2.1.0 Ok
        S: 554 5.7.1 Relay access denied
        S: 554 5.5.1 No valid recipients
        C: MAIL FROM:<harry@gryffindor.example.com>
        C: RCPT TO:<ron@gryffindor.example.com>
        C: BURL {BAD_URL} LAST
        S: 503 5.5.1 Sender already specified
        S: 250 2.1.5 Ok
        S: 554 5.7.0 IMAP URL authorization failed
        C: MAIL FROM:<harry@gryffindor.example.com>
        S: 250 2.1.0 Ok
        """, SUBMIT, refuse_malfoy)
    assert r.messages == [] and r.of(BurlFetch) == [BurlFetch(BAD_URL, True)]
    assert r.session.error_replies >= 3  # the wrong token counts toward the hard limit


def test_burl_and_bdat_interleaved() -> None:
    """§3.2: BURL and BDAT chunks in any order, the last one with LAST."""
    r = transcript(OPEN + f"""
        C: MAIL FROM:<harry@gryffindor.example.com>
        C: RCPT TO:<ron@gryffindor.example.com>
        C: BURL {URL}
        C> b"BDAT 8\\r\\nand BDAT"
        C: BURL {URL}2 LAST
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 250 2.5.0 Waiting for additional BURL or BDAT commands
        S: 250 2.0.0 Ok: 8 octets received
        S: 250 2.0.0 Ok: queued as Q1
        """, SUBMIT, decide)
    assert r.messages[0].data == STORED[URL] + b"and BDATmore\r\n"


def test_a_failed_url_fails_the_transaction_until_last() -> None:
    r = transcript(OPEN + f"""
        C: MAIL FROM:<harry@gryffindor.example.com>
        C: RCPT TO:<ron@gryffindor.example.com>
        C: BURL {BAD_URL}
        C> b"BDAT 4\\r\\nabcd"
        C: BURL {URL} LAST
        C: DATA
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 554 5.7.0 IMAP URL authorization failed
        S: 554 5.7.0 IMAP URL authorization failed
        S: 554 5.7.0 IMAP URL authorization failed
        S: 503 5.5.1 Need MAIL command
        """, SUBMIT, decide)
    assert r.messages == []
    assert r.of(BurlFetch) == [BurlFetch(BAD_URL, False)]  # the rest is never resolved


def test_content_follows_the_line_rules_and_size_limit() -> None:
    r = transcript(OPEN + f"""
        C: MAIL FROM:<harry@gryffindor.example.com>
        C: RCPT TO:<ron@gryffindor.example.com>
        C: BURL {URL}bare LAST
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 554 5.6.11 Message contains bare CR or LF characters
        """, SUBMIT, decide)
    assert r.messages == []
    small = dataclasses.replace(SUBMIT, max_message_size=10)
    r = transcript(OPEN.replace("SIZE 26214400", "SIZE 10") + f"""
        C: MAIL FROM:<harry@gryffindor.example.com>
        C: RCPT TO:<ron@gryffindor.example.com>
        C: BURL {URL} LAST
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        """, small, decide)
    assert r.messages == []


def test_sequence_syntax_and_auth() -> None:
    transcript(GREET + "C: EHLO potter.example.com\n" + EHLO_BEFORE + f"""
        C: BURL {URL} LAST
        S: 530 5.7.0 Authentication required
        C: AUTH PLAIN {PLAIN}
        S: 235 2.7.0 Authentication successful
        C: BURL {URL} LAST
        S: 503 5.5.1 Need MAIL command
        C: MAIL FROM:<harry@gryffindor.example.com>
        S: 250 2.1.0 Ok
        C: BURL {URL} LAST
        S: 503 5.5.1 Need RCPT command
        C: BURL
        S: 501 5.5.4 Syntax: BURL imap-url [LAST]
        C: BURL {URL} FIRST
        S: 501 5.5.4 Syntax: BURL imap-url [LAST]
        C: RCPT TO:<ron@gryffindor.example.com>
        S: 250 2.1.5 Ok
        C: BURL {URL}
        S: 250 2.5.0 Waiting for additional BURL or BDAT commands
        C: DATA
        S: 503 5.5.1 DATA not allowed during a BDAT transfer
        C: RSET
        S: 250 2.0.0 Ok
        """, SUBMIT, decide)


def test_not_offered_on_the_mta_port() -> None:
    """RFC 4468 §3.1: never on port 25 (``burl`` is off there): not advertised, and the
    command is unknown."""
    mta = dataclasses.replace(SUBMIT, burl=False)
    transcript(GREET + "C: EHLO potter.example.com\n"
               + EHLO_BEFORE.replace("S: 250-AUTH PLAIN\nS: 250 BURL", "S: 250 AUTH PLAIN")
               + f"C: BURL {URL} LAST\nS: 500 5.5.1 Command unrecognized\n", mta, decide)
