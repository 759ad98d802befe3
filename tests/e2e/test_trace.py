"""[log] trace_ips: a traced client's dialogue is logged, its secrets never are."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import logging
import poplib
import smtplib

import pytest

from pochta.server.trace import Tracer
from tests.conftest import Instance, start_instance


async def test_traced_sessions_are_logged_without_secrets(
    instance: Instance, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_instance(instance, log={"trace_ips": ["127.0.0.0/8"]})
    caplog.set_level(logging.INFO, logger="pochta.trace")
    try:
        smtp_port = server.port("submission", "implicit")
        imap_port = server.port("imap", "implicit")
        pop_port = server.port("pop3", "implicit")

        def clients() -> None:
            with smtplib.SMTP_SSL("127.0.0.1", smtp_port, context=server.client_ssl()) as c:
                c.login("alice@example.test", "alice-pass")  # AUTH PLAIN with IR
                c.sendmail("alice@example.test", ["bob@example.test"], b"Subject: t\r\n\r\nx\r\n")
            with smtplib.SMTP_SSL("127.0.0.1", smtp_port, context=server.client_ssl()) as c:
                c.ehlo()
                c.user, c.password = "alice@example.test", "alice-pass"
                c.auth("LOGIN", c.auth_login, initial_response_ok=False)
            imap = imaplib.IMAP4_SSL("127.0.0.1", imap_port, ssl_context=server.client_ssl())
            imap.login("bob@example.test", "bob-pass")
            imap.logout()
            pop = poplib.POP3_SSL("127.0.0.1", pop_port, context=server.client_ssl())
            pop.user("bob@example.test")
            pop.pass_("bob-pass")
            pop.quit()

        await asyncio.to_thread(clients)
        await asyncio.sleep(0.1)
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "pochta.trace")
    assert "C: mail FROM:<alice@example.test>" in text
    assert "S: 250 2.0.0 Ok: queued as" in text
    assert "LOGIN" in text and "USER bob@example.test" in text
    for secret in ("alice-pass", "bob-pass", base64.b64encode(b"alice-pass").decode(),
                   base64.b64encode(b"\0alice@example.test\0alice-pass").decode()):
        assert secret not in text


async def test_traced_accounts_from_their_login_on(
    instance: Instance, caplog: pytest.LogCaptureFixture
) -> None:
    """[log] trace_accounts: bob's sessions are traced after his login, in every protocol;
    alice's are not; nothing before the login (the credentials) is."""
    server = await start_instance(instance, log={"trace_accounts": ["Bob@example.test"]})
    caplog.set_level(logging.INFO, logger="pochta.trace")
    try:
        smtp_port = server.port("submission", "implicit")
        imap_port = server.port("imap", "implicit")
        pop_port = server.port("pop3", "implicit")

        def clients() -> None:
            for user in ("alice", "bob"):
                with smtplib.SMTP_SSL("127.0.0.1", smtp_port,
                                      context=server.client_ssl()) as c:
                    c.login(f"{user}@example.test", f"{user}-pass")
                    c.sendmail(f"{user}@example.test", ["bob@example.test"],
                               f"From: {user}@example.test\r\nSubject: from {user}\r\n\r\nx"
                               "\r\n".encode())
                imap = imaplib.IMAP4_SSL("127.0.0.1", imap_port,
                                         ssl_context=server.client_ssl())
                imap.login(f"{user}@example.test", f"{user}-pass")
                imap.select("INBOX")
                imap.logout()
            pop = poplib.POP3_SSL("127.0.0.1", pop_port, context=server.client_ssl())
            pop.user("bob@example.test")
            pop.pass_("bob-pass")
            pop.stat()
            pop.quit()

        await asyncio.to_thread(clients)
        await asyncio.sleep(0.1)
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "pochta.trace")
    assert "C: mail FROM:<bob@example.test>" in text  # submission, after AUTH
    assert "alice" not in text
    assert "SELECT INBOX" in text and "C: STAT" in text  # IMAP and POP3
    assert "trace of imap session of account bob@example.test starts" in text
    for secret in ("bob-pass", "alice-pass", "LOGIN", "PASS"):
        assert secret not in text, secret


def test_redaction_rules() -> None:
    smtp = Tracer("submission", "1", "127.0.0.1")
    assert smtp.redact_client(b"AUTH PLAIN AGFsaWNlAHB3") == b"AUTH PLAIN ***"
    smtp.server(b"334 VXNlcm5hbWU6\r\n")
    assert smtp.redact_client(b"YWxpY2U=") == b"***"
    smtp.server(b"235 2.7.0 ok\r\n")
    assert smtp.redact_client(b"MAIL FROM:<a@b>") == b"MAIL FROM:<a@b>"
    imap = Tracer("imap", "2", "127.0.0.1")
    assert imap.redact_client(b'a1 LOGIN "bob" "p w"') == b'a1 LOGIN "bob" ***'
    assert imap.redact_client(b"a2 AUTHENTICATE PLAIN AGJvYgBwdw==") == \
        b"a2 AUTHENTICATE PLAIN ***"
    pop = Tracer("pop3", "3", "127.0.0.1")
    assert pop.redact_client(b"PASS secret") == b"PASS ***"
    assert pop.redact_client(b"AUTH PLAIN AGJvYgBwdw==") == b"AUTH PLAIN ***"
