"""STARTTLS (RFC 3207), AUTH (RFC 4954) and submission policy (RFC 6409) in the core."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from pochta.proto.smtp import replies
from pochta.proto.smtp.events import (
    PAUSED,
    AuthResponse,
    AuthStart,
    Event,
    MailFrom,
    StartTLS,
)
from pochta.proto.smtp.server import AUTH_LINE_LIMIT, LocalProtocolError, ServerSession

from .test_smtp_transcript import EHLO, PARAMS, default_decider, transcript

GREET = "S: 220 mx.example.org ESMTP Pochta\n"
TLS = dataclasses.replace(PARAMS, tls_available=True)
EHLO_TLS = EHLO.replace("S: 250 DSN", "S: 250-DSN\nS: 250 STARTTLS")
SUBMISSION = dataclasses.replace(
    PARAMS,
    tls_available=True,
    require_tls=True,
    require_auth=True,
    auth_mechanisms=("PLAIN", "LOGIN"),
)
EHLO_AUTH = EHLO.replace("S: 250 DSN", "S: 250-DSN\nS: 250 AUTH PLAIN LOGIN")
IMPLICIT = dataclasses.replace(PARAMS, tls_active=True, auth_mechanisms=("PLAIN", "LOGIN"))
PLAIN_OK = base64.b64encode(b"\0user\0secret").decode()
S334 = "S: 334 "  # an empty challenge: "334" and a space (RFC 4954 section 4)
PLAIN_BAD = base64.b64encode(b"\0user\0wrong").decode()


def test_starttls_resets_state_and_requires_new_ehlo() -> None:
    r = transcript(
        GREET
        + "C: EHLO before\n"
        + EHLO_TLS
        + """
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        C: MAIL FROM:<a@example.com>
        S: 503 5.5.1 Send HELO/EHLO first
        C: STARTTLS
        S: 503 5.5.1 TLS already active
        C: EHLO after
        """
        + EHLO,
        TLS,
    )
    assert r.session.tls_active and r.session.helo_name == "after"
    assert len(r.of(StartTLS)) == 1


def test_starttls_discards_pipelined_plaintext() -> None:
    """CVE-2011-0411: commands pipelined after STARTTLS must never run."""
    r = transcript(
        GREET
        + "C: EHLO c\n"
        + EHLO_TLS
        + """
        C: STARTTLS
        C: MAIL FROM:<evil@example.com>
        C: RCPT TO:<victim@example.org>
        C: QUIT
        S: 220 2.0.0 Ready to start TLS
        C: NOOP
        S: 250 2.0.0 Ok
        """,
        TLS,
    )
    assert r.of(MailFrom) == [] and not r.session.closed


def test_plaintext_arriving_before_handshake_is_discarded() -> None:
    s = ServerSession(TLS)
    s.receive_data(b"EHLO c\r\nSTARTTLS\r\n")
    assert isinstance(s.next_event(), StartTLS)
    s.receive_data(b"MAIL FROM:<evil@example.com>\r\n")
    assert s.next_event() is PAUSED
    s.tls_started()
    s.receive_data(b"EHLO c\r\n")
    assert s.next_event().__class__.__name__ == "NeedData"
    assert s.data_to_send().endswith(b"220 2.0.0 Ready to start TLS\r\n250-mx.example.org\r\n"
                                     b"250-PIPELINING\r\n250-SIZE 26214400\r\n250-8BITMIME\r\n"
                                     b"250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n"
                                     b"250-CHUNKING\r\n250 DSN\r\n")


def test_starttls_errors() -> None:
    transcript(
        GREET
        + "C: EHLO c\n"
        + EHLO_TLS
        + """
        C: STARTTLS now
        S: 501 5.5.4 Syntax error, no parameters allowed
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Ok
        C: STARTTLS
        S: 503 5.5.1 Mail transaction in progress
        """,
        TLS,
    )
    transcript(
        GREET + "C: STARTTLS\nS: 503 5.5.1 TLS already active\n",
        dataclasses.replace(TLS, tls_active=True),
    )


def test_require_tls_gate() -> None:
    p = dataclasses.replace(TLS, require_tls=True)
    transcript(
        GREET
        + """
        C: NOOP
        S: 250 2.0.0 Ok
        C: HELO c
        S: 250 mx.example.org
        C: MAIL FROM:<a@example.com>
        S: 530 5.7.0 Must issue a STARTTLS command first
        C: VRFY x
        S: 530 5.7.0 Must issue a STARTTLS command first
        C: AUTH PLAIN
        S: 530 5.7.0 Must issue a STARTTLS command first
        C: HELP
        S: 530 5.7.0 Must issue a STARTTLS command first
        C> b"BDAT 4 LAST\\r\\nQUIT"
        S: 530 5.7.0 Must issue a STARTTLS command first
        C: RSET
        S: 250 2.0.0 Ok
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        C: HELO c
        S: 250 mx.example.org
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Ok
        """,
        p,
    )


def test_submission_flow_with_auth_plain_initial_response() -> None:
    r = transcript(
        GREET
        + "C: EHLO c\n"
        + EHLO_TLS
        + """
        C: AUTH PLAIN xxx
        S: 530 5.7.0 Must issue a STARTTLS command first
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        C: EHLO c
        """
        + EHLO_AUTH
        + f"""
        C: MAIL FROM:<a@example.com>
        S: 530 5.7.0 Authentication required
        C: AUTH PLAIN {PLAIN_BAD}
        S: 535 5.7.8 Authentication credentials invalid
        C: AUTH PLAIN {PLAIN_OK}
        S: 235 2.7.0 Authentication successful
        C: AUTH PLAIN {PLAIN_OK}
        S: 503 5.5.1 Already authenticated
        C: MAIL FROM:<user@example.com>
        S: 250 2.1.0 Ok
        """,
        SUBMISSION,
    )
    assert r.session.authenticated_as == "user"
    starts = r.of(AuthStart)
    assert starts == [
        AuthStart("PLAIN", b"\0user\0wrong"),
        AuthStart("PLAIN", b"\0user\0secret"),
    ]


def test_auth_challenge_response_and_cancel() -> None:
    r = transcript(
        GREET
        + "C: EHLO c\n"
        + EHLO_AUTH
        + f"""
        C: AUTH plain
        {S334}
        C: *
        S: 501 5.0.0 Authentication cancelled
        C: AUTH PLAIN
        {S334}
        C: not base64!
        S: 501 5.5.2 Invalid base64 data
        C: AUTH PLAIN
        {S334}
        C: {PLAIN_BAD}
        S: 535 5.7.8 Authentication credentials invalid
        C: AUTH PLAIN
        {S334}
        C: {PLAIN_OK}
        S: 235 2.7.0 Authentication successful
        """,
        IMPLICIT,
    )
    assert r.of(AuthResponse) == [
        AuthResponse(None),
        AuthResponse(None),
        AuthResponse(b"\0user\0wrong"),
        AuthResponse(b"\0user\0secret"),
    ]
    assert r.session.authenticated_as == "user"


def test_auth_login_multi_step_and_empty_initial_response() -> None:
    def decide(session: ServerSession, event: Event) -> None:
        if isinstance(event, AuthStart):
            assert event.initial_response == b""
            session.auth_challenge(b"Username:")
        elif isinstance(event, AuthResponse) and event.data == b"user":
            session.auth_challenge(b"Password:")
        elif isinstance(event, AuthResponse) and event.data == b"secret":
            session.auth_succeeded("user")
        else:
            default_decider(session, event)

    transcript(
        GREET
        + "C: EHLO c\n"
        + EHLO_AUTH
        + """
        C: AUTH LOGIN =
        S: 334 VXNlcm5hbWU6
        C: dXNlcg==
        S: 334 UGFzc3dvcmQ6
        C: c2VjcmV0
        S: 235 2.7.0 Authentication successful
        """,
        IMPLICIT,
        decide,
    )


def test_auth_errors() -> None:
    transcript(
        GREET
        + """
        C: AUTH PLAIN
        S: 503 5.5.1 Send EHLO first
        C: HELO c
        S: 250 mx.example.org
        C: AUTH PLAIN
        S: 503 5.5.1 Send EHLO first
        C: EHLO c
        """
        + EHLO_AUTH
        + """
        C: AUTH CRAM-MD5
        S: 504 5.5.4 Unrecognized authentication type
        C: AUTH
        S: 501 5.5.4 Syntax: AUTH mechanism [initial-response]
        C: AUTH PLAIN a b
        S: 501 5.5.4 Syntax: AUTH mechanism [initial-response]
        C: AUTH PLAIN @@@
        S: 501 5.5.2 Invalid base64 data
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Ok
        C: AUTH PLAIN
        S: 503 5.5.1 Mail transaction in progress
        """,
        dataclasses.replace(IMPLICIT, max_errors=20),
    )


def test_auth_requires_tls() -> None:
    p = dataclasses.replace(PARAMS, auth_mechanisms=("PLAIN",))
    transcript(
        GREET
        + "C: EHLO c\n"
        + EHLO
        + """
        C: AUTH PLAIN
        S: 538 5.7.11 Encryption required for requested authentication mechanism
        """,
        p,
    )


def test_auth_line_limit_is_12288() -> None:
    blob = base64.b64encode(b"\0user\0" + b"s" * 9000).decode()
    assert len(blob) + len("AUTH PLAIN \r\n") <= AUTH_LINE_LIMIT
    r = transcript(
        GREET
        + "C: EHLO c\n"
        + EHLO_AUTH
        + f"""
        C: AUTH PLAIN {blob}
        S: 535 5.7.8 Authentication credentials invalid
        C: AUTH PLAIN
        {S334}
        C: {blob}
        S: 535 5.7.8 Authentication credentials invalid
        C: AUTH PLAIN
        {S334}
        C: {"A" * 13000}
        S: 500 5.5.6 Authentication exchange line is too long
        C: NOOP {"x" * 600}
        S: 500 5.5.2 Line too long
        """,
        IMPLICIT,
    )
    assert r.of(AuthResponse)[-1] == AuthResponse(None)


def test_auth_decisions_are_checked() -> None:
    s = ServerSession(IMPLICIT)
    s.receive_data(b"EHLO c\r\nAUTH PLAIN\r\n")
    assert isinstance(s.next_event(), AuthStart)
    with pytest.raises(LocalProtocolError):
        s.accept()
    with pytest.raises(LocalProtocolError):
        s.auth_failed(replies.OK)
    s.auth_challenge(b"")
    s.receive_data(b"*\r\n")
    assert s.next_event() == AuthResponse(None)
    with pytest.raises(LocalProtocolError):  # a cancelled exchange needs no decision
        s.auth_failed(replies.AUTH_INVALID)
