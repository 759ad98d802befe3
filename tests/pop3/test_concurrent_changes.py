"""POP3 beside IMAP and a full disk, over real sockets (server/pop3.py docstring).

* A message that an IMAP client expunges while a POP3 session is open answers RETR and
  TOP with a permanent -ERR; the rest of the session is unaffected.
* A QUIT whose deletions cannot be written because the store is full answers
  ``-ERR [SYS/TEMP] Insufficient system storage`` and leaves the maildrop as it was.
"""

from __future__ import annotations

import asyncio

import pytest

from pochta.storage.interfaces import Envelope, LocalTarget, StorageFull
from tests.conftest import Server

GONE = b"-ERR Message was deleted by another session\r\n"


class Lines:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer

    @classmethod
    async def open(cls, server: Server, role: str) -> Lines:
        reader, writer = await asyncio.open_connection(
            server.host, server.port(role, "implicit"), ssl=server.client_ssl())
        c = cls(reader, writer)
        await c.line()  # greeting
        return c

    async def line(self) -> bytes:
        line = await asyncio.wait_for(self.r.readline(), 10)
        assert line, "connection closed"
        return line

    async def cmd(self, text: str) -> bytes:
        self.w.write(text.encode() + b"\r\n")
        return await self.line()

    async def until(self, prefix: bytes) -> list[bytes]:
        out = [await self.line()]
        while not out[-1].startswith(prefix):
            out.append(await self.line())
        return out

    def close(self) -> None:
        self.w.close()


async def _deliver(server: Server, *subjects: str) -> int:
    account = await server.store.get_account("alice@example.test")
    assert account is not None
    for subject in subjects:
        await server.store.accept(f"Subject: {subject}\r\n\r\nbody {subject}\r\n".encode(),
                                  Envelope(sender=""), [LocalTarget(account.id, "INBOX")])
    box = await server.store.get_mailbox(account.id, "INBOX")
    assert box is not None
    return box.id


async def _pop3_login(server: Server) -> Lines:
    pop = await Lines.open(server, "pop3")
    assert (await pop.cmd("USER alice@example.test")).startswith(b"+OK")
    assert (await pop.cmd("PASS alice-pass")).startswith(b"+OK")
    return pop


async def test_retr_of_message_expunged_over_imap(running_server: Server) -> None:
    box = await _deliver(running_server, "first", "second")
    pop = await _pop3_login(running_server)
    assert (await pop.cmd("RETR 1")).startswith(b"+OK")  # readable before the expunge
    await pop.until(b".\r\n")

    imap = await Lines.open(running_server, "imap")
    assert (await imap.cmd("a LOGIN alice@example.test alice-pass")).startswith(b"a OK")
    await imap.cmd("b SELECT INBOX")
    await imap.until(b"b ")
    await imap.cmd("c STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert (await imap.cmd("d EXPUNGE")) == b"* 1 EXPUNGE\r\n"
    assert (await imap.line()).startswith(b"d OK")
    imap.close()

    assert await pop.cmd("RETR 1") == GONE
    assert await pop.cmd("TOP 1 0") == GONE
    # the snapshot is unchanged (RFC 1939 §8) and the other message still reads
    assert (await pop.cmd("STAT")).startswith(b"+OK 2 ")
    assert (await pop.cmd("RETR 2")).startswith(b"+OK")
    assert b"body second\r\n" in await pop.until(b".\r\n")
    assert (await pop.cmd("DELE 1")).startswith(b"+OK")
    assert (await pop.cmd("QUIT")).startswith(b"+OK")
    pop.close()
    assert [m.uid for m in await running_server.store.list_messages(box)] == [2]


async def test_quit_with_full_store(running_server: Server,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    box = await _deliver(running_server, "first", "second")

    async def full(*args: object, **kwargs: object) -> list[int]:
        raise StorageFull("no space left on device")

    monkeypatch.setattr(running_server.store, "expunge", full)
    pop = await _pop3_login(running_server)
    assert (await pop.cmd("DELE 1")).startswith(b"+OK")
    assert await pop.cmd("QUIT") == b"-ERR [SYS/TEMP] Insufficient system storage\r\n"
    pop.close()
    monkeypatch.undo()
    assert [m.uid for m in await running_server.store.list_messages(box)] == [1, 2]
