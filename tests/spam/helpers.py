"""Shared helpers of the spam tests: a server with extra config, one SMTP transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.conftest import Instance, Server, start_instance
from tests.e2e.smtpclient import RawClient


@asynccontextmanager
async def server_with(instance: Instance, run_queue: bool = False, **overrides: Any
                      ) -> AsyncIterator[Server]:
    server = await start_instance(instance, run_queue=run_queue, **overrides)
    try:
        yield server
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def send(port: int, body: bytes, sender: str = "someone@elsewhere.test",
               rcpts: tuple[str, ...] = ("bob@example.test",), helo: str = "client.elsewhere.test"
               ) -> tuple[int, str]:
    """One message over the mta role; returns the first refusal or the DATA reply."""
    c = await RawClient.connect(port)
    try:
        code, text = await c.reply()
        if code != 220:
            return code, text
        await c.cmd(f"EHLO {helo}")
        code, text = await c.cmd(f"MAIL FROM:<{sender}>")
        if code != 250:
            return code, text
        for rcpt in rcpts:
            code, text = await c.cmd(f"RCPT TO:<{rcpt}>")
            if code != 250:
                return code, text
        code, text = await c.cmd("DATA")
        assert code == 354, text
        c.writer.write(body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b".\r\n")
        await c.writer.drain()
        return await c.reply()
    finally:
        await c.close()


async def last_message(server: Server, user: str = "bob@example.test",
                       mailbox: str = "INBOX") -> tuple[bytes, frozenset[str]]:
    account = await server.store.get_account(user)
    assert account is not None
    box = await server.store.get_mailbox(account.id, mailbox)
    assert box is not None
    metas = await server.store.list_messages(box.id)
    assert metas, f"{mailbox} of {user} is empty"
    return await server.store.read_blob(metas[-1].blob_id), metas[-1].flags
