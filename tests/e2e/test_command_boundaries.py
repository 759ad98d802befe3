"""The command boundary of every driver, over real sockets: an unexpected exception in a
service (a ``RuntimeError`` monkeypatched into it) gives the protocol's temporary failure
(SMTP ``451 4.3.0``, IMAP ``NO [SERVERBUG]``, POP3 ``-ERR [SYS/TEMP]``, ManageSieve
``NO (TRYLATER)``), the traceback is logged, and the same session, and another client,
go on being served. A Pochta error gets its own reply (``NO [LIMIT]``, ``452 4.3.1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator

import pytest

from pochta.errors import StorageFull
from pochta.storage.interfaces import Envelope, LocalTarget
from tests.conftest import USERS, Instance, Server, start_instance
from tests.e2e.smtpclient import RawClient
from tests.sieve.msclient import MSClient


async def _aboom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("injected failure")


class Lines:
    """A line-based client for IMAP, POP3 and ManageSieve."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: Server, role: str) -> Lines:
        reader, writer = await asyncio.open_connection(
            server.host, server.port(role, "implicit"), ssl=server.client_ssl())
        return cls(reader, writer)

    async def line(self) -> bytes:
        data = await asyncio.wait_for(self.reader.readline(), 10)
        if not data:
            raise ConnectionError("closed")
        return data

    async def until(self, prefix: bytes) -> list[bytes]:
        out = [await self.line()]
        while not out[-1].startswith(prefix):
            out.append(await self.line())
        return out

    async def send(self, line: str) -> None:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


# --- SMTP ---------------------------------------------------------------------------------


async def _submission(server: Server) -> RawClient:
    c = await RawClient.connect(server.port("submission", "implicit"), server.client_ssl())
    await c.reply()
    await c.cmd("EHLO laptop")
    code, _ = await c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wYXNz")
    assert code == 235
    return c


async def test_smtp_bug_in_a_service_is_451_and_the_session_goes_on(
    running_server: Server, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = await _submission(running_server)
    assert (await c.cmd("MAIL FROM:<alice@example.test>"))[0] == 250
    directory = running_server.ctx.directory
    with monkeypatch.context() as m:
        m.setattr(directory, "resolve", _aboom)
        with caplog.at_level(logging.ERROR, logger="pochta.smtp"):
            code, text = await c.cmd("RCPT TO:<bob@example.test>")
        assert (code, text.split()[0]) == (451, "4.3.0")
        assert "injected failure" in caplog.text and "Traceback" in caplog.text
        # another client is served meanwhile (the MTA port, not touching resolve)
        other = await RawClient.connect(running_server.port("mta", "starttls"))
        assert (await other.reply())[0] == 220
        assert (await other.cmd("EHLO peer"))[0] == 250
        await other.close()
    # the same session: the transaction is still open and the next RCPT works
    assert (await c.cmd("RCPT TO:<bob@example.test>"))[0] == 250
    assert (await c.cmd("DATA"))[0] == 354
    code, text = await c.cmd(b"From: alice@example.test\r\nSubject: hi\r\n\r\nhello\r\n.")
    assert code == 250 and "queued as" in text
    await c.close()


async def test_smtp_storage_full_is_its_own_reply(
    running_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await _submission(running_server)

    async def full(*args: object, **kwargs: object) -> None:
        raise StorageFull("no space left on device")

    monkeypatch.setattr(running_server.ctx.delivery, "deliver", full)
    assert (await c.cmd("MAIL FROM:<alice@example.test>"))[0] == 250
    assert (await c.cmd("RCPT TO:<bob@example.test>"))[0] == 250
    assert (await c.cmd("DATA"))[0] == 354
    code, text = await c.cmd(b"Subject: x\r\n\r\nbody\r\n.")
    assert (code, text) == (452, "4.3.1 Insufficient system storage")
    assert (await c.cmd("NOOP"))[0] == 250
    await c.close()


async def test_smtp_bug_in_auth_is_451(
    running_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await RawClient.connect(running_server.port("submission", "implicit"),
                                running_server.client_ssl())
    await c.reply()
    await c.cmd("EHLO laptop")
    with monkeypatch.context() as m:
        m.setattr(running_server.ctx.authenticator, "check_password", _aboom)
        code, text = await c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wYXNz")
        assert (code, text.split()[0]) == (451, "4.3.0")
    code, _ = await c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wYXNz")
    assert code == 235
    await c.close()


# --- IMAP ---------------------------------------------------------------------------------


async def _imap(server: Server) -> Lines:
    c = await Lines.open(server, "imap")
    await c.line()
    await c.send('a LOGIN alice@example.test "alice-pass"')
    assert (await c.until(b"a "))[-1].startswith(b"a OK")
    return c


async def test_imap_bug_in_a_service_is_serverbug_and_the_session_goes_on(
    running_server: Server, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = await _imap(running_server)
    with monkeypatch.context() as m:
        m.setattr(running_server.ctx.store, "get_mailbox", _aboom)
        with caplog.at_level(logging.ERROR, logger="pochta.imap"):
            await c.send("b SELECT INBOX")
            reply = (await c.until(b"b "))[-1]
        assert reply.startswith(b"b NO [SERVERBUG]"), reply
        assert "injected failure" in caplog.text
        other = await _imap(running_server)  # another client logs in meanwhile
        await other.send("z NOOP")
        assert (await other.until(b"z "))[-1].startswith(b"z OK")
        await other.close()
    await c.send("c SELECT INBOX")
    assert (await c.until(b"c "))[-1].startswith(b"c OK")
    await c.close()


async def test_imap_store_error_carries_its_code(
    running_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await _imap(running_server)

    async def full(*args: object, **kwargs: object) -> None:
        raise StorageFull("disk full")

    monkeypatch.setattr(running_server.ctx.store, "create_mailbox", full)
    await c.send("d CREATE Projects")
    reply = (await c.until(b"d "))[-1]
    assert reply.startswith(b"d NO [LIMIT]"), reply
    await c.close()


# --- POP3 ---------------------------------------------------------------------------------


async def _pop3(server: Server) -> Lines:
    c = await Lines.open(server, "pop3")
    await c.line()
    return c


async def _login(c: Lines) -> bytes:
    await c.send("USER alice@example.test")
    assert (await c.line()).startswith(b"+OK")
    await c.send(f"PASS {USERS['alice@example.test']}")
    return await c.line()


async def test_pop3_bug_in_a_service_is_sys_temp_and_the_session_goes_on(
    running_server: Server, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = running_server.ctx.store
    alice = await store.get_account("alice@example.test")
    assert alice is not None
    await store.accept(b"Subject: one\r\n\r\nbody\r\n", Envelope(sender="s@example.test"),
                       [LocalTarget(alice.id)])
    c = await _pop3(running_server)
    # at login: the maildrop's lock is released, so the next try gets it
    with monkeypatch.context() as m:
        m.setattr(store, "list_messages", _aboom)
        with caplog.at_level(logging.ERROR, logger="pochta.pop3"):
            reply = await _login(c)
        assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
        assert "injected failure" in caplog.text
    assert (await _login(c)).startswith(b"+OK")
    # at RETR: the message is refused for now, the session stays in TRANSACTION
    with monkeypatch.context() as m:
        m.setattr(store, "read_blob", _aboom)
        await c.send("RETR 1")
        reply = await c.line()
        assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
        other = await _pop3(running_server)  # another client is served meanwhile
        await other.send("CAPA")
        assert (await other.until(b"."))[0].startswith(b"+OK")
        await other.close()
    await c.send("RETR 1")
    assert (await c.line()).startswith(b"+OK")
    assert b"body\r\n" in b"".join(await c.until(b".\r\n"))
    await c.send("QUIT")
    assert (await c.line()).startswith(b"+OK")
    await c.close()


# --- ManageSieve --------------------------------------------------------------------------


@pytest.fixture
async def sieve_server(instance: Instance) -> AsyncIterator[Server]:
    srv = await start_instance(instance, listeners=[
        {"role": "managesieve", "port": 0, "tls": "starttls", "address": "127.0.0.1"}])
    try:
        yield srv
    finally:
        await srv.running.close(grace=1.0)
        await srv.store.close()


async def _sieve(server: Server) -> MSClient:
    client, _ = await MSClient.connect(server.port("managesieve"))
    await client.starttls(server.client_ssl())
    assert (await client.login("alice@example.test", USERS["alice@example.test"])
            ).startswith("OK")
    return client


async def test_managesieve_bug_is_trylater_and_errors_carry_their_code(
    sieve_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await _sieve(sieve_server)
    with monkeypatch.context() as m:
        m.setattr(sieve_server.ctx.store, "list_sieve_scripts", _aboom)
        _, final = await c.cmd("LISTSCRIPTS")
        assert final.startswith("NO (TRYLATER)"), final
        other = await _sieve(sieve_server)  # another client logs in meanwhile
        assert (await other.cmd("NOOP"))[1].startswith("OK")
        await other.close()
    assert (await c.cmd("LISTSCRIPTS"))[1].startswith("OK")
    # the store's own errors: NotFound and ScriptActive, answered at the boundary
    _, final = await c.cmd('DELETESCRIPT "nothing"')
    assert final.startswith("NO (NONEXISTENT)"), final
    assert (await c.put("main", "keep;\r\n")).startswith("OK")
    assert (await c.cmd('SETACTIVE "main"'))[1].startswith("OK")
    _, final = await c.cmd('DELETESCRIPT "main"')
    assert final.startswith("NO (ACTIVE)"), final
    _, final = await c.cmd('SETACTIVE "other"')
    assert final.startswith("NO (NONEXISTENT)"), final
    await c.close()
