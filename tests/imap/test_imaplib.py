"""Python's imaplib against the real server: STARTTLS and implicit TLS listeners."""

from __future__ import annotations

import asyncio
import imaplib
import re
import time
from typing import Any

from tests.conftest import Server
from tests.imap.helpers import MESSAGE


def ok(result: tuple[str, Any]) -> list[Any]:
    typ, data = result
    assert typ == "OK", data
    return list(data)


def _starttls_session(server: Server) -> list[str]:
    log: list[str] = []
    m = imaplib.IMAP4(server.host, server.port("imap", "starttls"))
    try:
        assert "LOGINDISABLED" in m.capabilities
        ok(m.starttls(ssl_context=server.client_ssl()))
        assert "LOGINDISABLED" not in m.capabilities
        ok(m.login("alice@example.test", "alice-pass"))
        data = ok(m.append("INBOX", "(\\Flagged)", imaplib.Time2Internaldate(time.time()),
                           MESSAGE))
        assert b"APPENDUID" in data[0]
        ok(m.append("INBOX", "", None, MESSAGE.replace(b"Hello there", b"Second")))
        assert ok(m.select("INBOX")) == [b"2"]
        assert ok(m.search(None, "SUBJECT", "Second")) == [b"2"]
        data = ok(m.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.SIZE)"))
        assert b"Subject: Hello there" in data[0][1] and b"\\Flagged" in data[0][0]
        data = ok(m.uid("FETCH", "1:*", "(UID BODY[])"))
        assert data[0][1] == MESSAGE
        data = ok(m.store("2", "+FLAGS", "(\\Answered)"))
        assert b"\\Answered" in data[0]
        ok(m.copy("1", "Archive"))
        ok(m.uid("MOVE", "2", "Trash"))
        assert b"MESSAGES 1" in ok(m.status("Archive", "(MESSAGES)"))[0]
        ok(m.store("1", "+FLAGS", "(\\Deleted)"))
        assert ok(m.expunge())[-1] == b"1"  # MOVE's "EXPUNGE 2" was collected first
        data = ok(m.list())
        assert any(b"\\Trash" in x for x in data)
        log.append("ok")
    finally:
        m.logout()
    return log


async def test_imaplib_starttls(imap_server: Server) -> None:
    assert await asyncio.to_thread(_starttls_session, imap_server) == ["ok"]


def _idle_session(server: Server, ready: asyncio.Event, loop: asyncio.AbstractEventLoop
                  ) -> bytes:
    m = imaplib.IMAP4_SSL(server.host, server.port("imap", "implicit"),
                          ssl_context=server.client_ssl())
    try:
        m.login("bob@example.test", "bob-pass")
        m.select("INBOX")
        tag = m._new_tag()  # imaplib has no IDLE before 3.14: drive it by hand
        m.send(tag + b" IDLE\r\n")
        assert m.readline().startswith(b"+")
        loop.call_soon_threadsafe(ready.set)
        m.sock.settimeout(5)
        line = m.readline()
        m.send(b"DONE\r\n")
        while not m.readline().startswith(tag):
            pass
        return line
    finally:
        m.logout()


async def test_imaplib_ssl_idle(imap_server: Server) -> None:
    from tests.imap.test_session_mail import deliver

    ready = asyncio.Event()
    task = asyncio.create_task(asyncio.to_thread(
        _idle_session, imap_server, ready, asyncio.get_running_loop()))
    await asyncio.wait_for(ready.wait(), 5)
    start = time.monotonic()
    await deliver(imap_server, user="bob@example.test")
    line = await asyncio.wait_for(task, 10)
    assert re.fullmatch(rb"\* 1 EXISTS\r\n", line)
    assert time.monotonic() - start < 1.0


async def test_smtp_delivery_reaches_idle_within_a_second(imap_server: Server) -> None:
    """End to end: a message sent over SMTP to the MTA listener wakes an IDLE session."""
    import smtplib

    ready = asyncio.Event()
    task = asyncio.create_task(asyncio.to_thread(
        _idle_session, imap_server, ready, asyncio.get_running_loop()))
    await asyncio.wait_for(ready.wait(), 5)

    def send() -> None:
        with smtplib.SMTP(imap_server.host, imap_server.port("mta"), timeout=10) as s:
            s.sendmail("someone@remote.test", ["bob@example.test"], MESSAGE)

    start = time.monotonic()
    await asyncio.to_thread(send)
    line = await asyncio.wait_for(task, 10)
    assert line == b"* 1 EXISTS\r\n"
    assert time.monotonic() - start < 1.0
