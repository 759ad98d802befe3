"""A full disk over a real IMAP connection: the store's writes raise StorageFull (as the
SQLite backend does on SQLITE_FULL / ENOSPC). Reading keeps working; every write answers
``NO [LIMIT] Insufficient system storage``, never ``[SERVERBUG]``."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pochta.storage.interfaces import Envelope, LocalTarget, StorageFull
from tests.conftest import Server
from tests.imap.helpers import MESSAGE, connect, joined, st

WRITES = ("claim_recent", "create_mailbox", "accept", "store_flags", "copy_messages",
          "move_messages", "expunge", "delete_mailbox", "rename_mailbox", "set_subscribed")
LIMIT = b"NO [LIMIT] Insufficient system storage\r\n"


def fill_disk(server: Server, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every write of the store raises StorageFull; returns the names of those called."""
    called: list[str] = []

    def failing(name: str) -> Any:
        async def write(*args: object, **kwargs: object) -> Any:
            called.append(name)
            raise StorageFull("database or disk is full")
        return write

    for name in WRITES:
        monkeypatch.setattr(server.store, name, failing(name))
    return called


async def test_full_disk_reads_work_writes_say_limit(
        imap_server: Server, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    account = await imap_server.store.get_account("alice@example.test")
    assert account is not None
    for i in range(3):
        await imap_server.store.accept(MESSAGE.replace(b"Hello there", b"Full %d" % i),
                                       Envelope(sender=""), [LocalTarget(account.id, "INBOX")])
    await imap_server.store.create_mailbox(account.id, "Keep", None)
    called = fill_disk(imap_server, monkeypatch)
    caplog.set_level(logging.WARNING, logger="pochta.imap")
    async with connect(imap_server) as c:
        await c.login()
        # SELECT claims \Recent (a write): it still succeeds, without the claims
        resp = await c.cmd("SELECT INBOX")
        assert st(resp).startswith(b"OK [READ-WRITE]"), resp
        assert b"* 3 EXISTS" in joined(resp)
        assert "claim_recent" in called
        assert "cannot claim" in caplog.text
        # reading: FETCH (also a non-PEEK one, whose \Seen cannot be stored), SEARCH, STATUS
        resp = await c.cmd("FETCH 1:3 (BODY[HEADER.FIELDS (SUBJECT)])")
        assert st(resp).startswith(b"OK"), resp
        assert b"Subject: Full 2" in joined(resp)
        assert st(await c.cmd("SEARCH SUBJECT full")).startswith(b"OK")
        assert st(await c.cmd("STATUS Keep (MESSAGES)")).startswith(b"OK")
        assert st(await c.cmd("LIST \"\" *")).startswith(b"OK")
        # writing: NO [LIMIT]
        for command in ("CREATE Full", "STORE 1 +FLAGS (\\Flagged)", "COPY 1 Keep",
                        "MOVE 1 Keep", "EXPUNGE", "DELETE Keep", "RENAME Keep B",
                        "SUBSCRIBE Keep"):
            resp = await c.cmd(command)
            assert st(resp) == LIMIT, (command, resp)
        resp = await c.cmd(b"APPEND INBOX {%d+}\r\n%s" % (len(MESSAGE), MESSAGE))
        assert st(resp) == LIMIT, resp
        # the session is still fine afterwards
        assert st(await c.cmd("NOOP")).startswith(b"OK")
    assert "SERVERBUG" not in caplog.text


async def test_full_disk_while_spooling_an_append(
        imap_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A big APPEND literal goes to a spool file; when writing it fails (ENOSPC) the rest
    is read and dropped and the command answers NO [LIMIT]; the session goes on."""
    import io
    import os


    class FullDisk(io.FileIO):
        def write(self, data: Any) -> int:
            if self.tell() > 100_000:
                raise OSError(28, "No space left on device")
            return super().write(data)

    def fdopen(fd: int, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        return FullDisk(fd, "wb")

    monkeypatch.setattr(os, "fdopen", fdopen)
    body = MESSAGE + b"z" * 300_000 + b"\r\n"
    spool = imap_server.ctx.config.data_path / "tmp"
    async with connect(imap_server) as c:
        await c.login()
        c.send(b"a APPEND INBOX {%d+}\r\n" % len(body))
        for i in range(0, len(body), 50_000):
            c.send(body[i : i + 50_000])
        c.send(b"\r\n")
        resp = await c.read_response("a")
        assert resp[-1] == b"a " + LIMIT, resp
        assert st(await c.cmd("NOOP")).startswith(b"OK")
    assert not any(os.scandir(spool))  # the partial file is gone
