"""End to end over SMTP: a fileinto the store refuses keeps the message in INBOX and
says why in the log (two refused ones give one copy); ``:create`` never makes a mailbox
IMAP could not show."""

from __future__ import annotations

import asyncio
import imaplib
import logging

import pytest

from tests.conftest import Instance, Server, start_instance
from tests.sieve.test_e2e import BOSS_MSG, mailbox, server, smtp, upload  # noqa: F401

IMAP_LISTENERS = [
    {"role": "imap", "port": 0, "tls": "implicit", "address": "127.0.0.1"},
    {"role": "managesieve", "port": 0, "tls": "starttls", "address": "127.0.0.1"},
]


async def test_refused_fileinto_keeps_in_inbox_and_logs_why(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    store = server.store
    alice = await store.get_account("alice@example.test")
    assert alice is not None
    await store.put_sieve_script(alice.id, "main", 'require ["fileinto", "mailbox"];\n'
                                 'fileinto :create "Lists//dev";\n'
                                 'fileinto "Missing";\n')
    await store.set_active_sieve_script(alice.id, "main")
    with caplog.at_level(logging.WARNING, logger="pochta.sieve"):
        code, _ = await smtp(server, "boss@corp.test", ["alice@example.test"], BOSS_MSG)
    assert code == 250
    # both refused: the message is in INBOX (once), nothing else was made
    assert len(await mailbox(server, "alice@example.test", "INBOX")) == 1
    assert await store.get_mailbox(alice.id, "Lists//dev") is None
    assert await store.get_mailbox(alice.id, "Missing") is None
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "failed to store into mailbox 'Lists//dev': invalid mailbox name" in logged
    assert ("failed to store into mailbox 'Missing': it does not exist (fileinto :create "
            "makes it); kept in INBOX") in logged


async def test_imapsieve_never_creates_an_invalid_mailbox(
        instance: Instance, caplog: pytest.LogCaptureFixture) -> None:
    srv = await start_instance(instance, listeners=IMAP_LISTENERS)
    try:
        await upload(srv, "alice@example.test", "alice-pass",
                     'require ["imapsieve", "fileinto", "mailbox"];\n'
                     'fileinto :create "Lists//dev";\n', name="imap")

        def session() -> None:
            m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imap"),
                                  ssl_context=srv.client_ssl())
            try:
                m.login("alice@example.test", "alice-pass")
                assert m.create("Work")[0] == "OK"
                assert m.xatom("SETMETADATA",
                               'Work (/shared/imapsieve/script "imap")')[0] == "OK"
                assert m.append("Work", None, None, b"Subject: x\r\n\r\nhi\r\n")[0] == "OK"
            finally:
                m.logout()

        with caplog.at_level(logging.WARNING, logger="pochta"):
            await asyncio.to_thread(session)
        alice = await srv.store.get_account("alice@example.test")
        assert alice is not None
        assert await srv.store.get_mailbox(alice.id, "Lists//dev") is None
        assert len(await mailbox(srv, "alice@example.test", "Work")) == 1  # it stays
        assert any("failed to store into mailbox 'Lists//dev': invalid mailbox name"
                   in r.getMessage() for r in caplog.records)
    finally:
        await srv.running.close(grace=1.0)
        await srv.store.close()


async def test_a_refused_fileinto_keeps_the_message_as_received(
        server: Server) -> None:  # noqa: F811
    """RFC 5293 §7: the keep an error leads to uses the original header, not the one
    editheader changed; a fileinto that succeeds stores the edited message."""
    store = server.store
    alice = await store.get_account("alice@example.test")
    assert alice is not None
    await store.create_mailbox(alice.id, "Work")
    await store.put_sieve_script(alice.id, "main", 'require ["fileinto", "editheader"];\n'
                                 'addheader "X-Frop" "Friep";\n'
                                 'fileinto "Work";\nfileinto "Missing";\n')
    await store.set_active_sieve_script(alice.id, "main")
    code, _ = await smtp(server, "boss@corp.test", ["alice@example.test"], BOSS_MSG)
    assert code == 250
    inbox = await mailbox(server, "alice@example.test", "INBOX")
    work = await mailbox(server, "alice@example.test", "Work")
    assert len(inbox) == 1 and len(work) == 1
    assert b"X-Frop" not in await store.read_blob(inbox[0].blob_id)
    assert b"X-Frop: Friep" in await store.read_blob(work[0].blob_id)
