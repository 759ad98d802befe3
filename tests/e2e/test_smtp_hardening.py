"""SMTP hardening over real sockets: RCPT harvesting, the command boundary, full disk."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from pochta.storage.interfaces import StorageFull
from tests.conftest import Instance, Server, start_instance
from tests.e2e.smtpclient import RawClient
from tests.e2e.test_mta import inbox


async def hello(server: Server) -> RawClient:
    c = await RawClient.connect(server.port("mta"))
    assert (await c.reply())[0] == 220
    assert (await c.cmd("EHLO client.test"))[0] == 250
    return c


async def replies_until_closed(c: RawClient, limit: int) -> list[tuple[int, str]]:
    out = []
    for _ in range(limit):
        try:
            out.append(await c.reply(timeout=30))
        except ConnectionError:
            break
        if out[-1][0] == 421:
            break
    return out


async def test_rcpt_harvesting_is_cut_off_with_default_limits(instance: Instance) -> None:
    # 10,000 pipelined unknown recipients used to get 10,000 "550 5.1.1" in about a
    # second. Now they are errors: Postfix's smtpd_hard_error_limit of 20 by default.
    server = await start_instance(instance, smtp={"error_sleep_time": 0.01})
    try:
        c = await hello(server)
        c.writer.write(b"MAIL FROM:<probe@elsewhere.test>\r\n" + b"".join(
            b"RCPT TO:<nouser%d@example.test>\r\n" % n for n in range(10_000)))
        got = await replies_until_closed(c, 10_002)
        assert got[0][0] == 250
        assert [code for code, _ in got[1:-1]] == [550] * 20
        assert got[-1][0] == 421 and got[-1][1].startswith("4.7.0")
        assert await c.closed()
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def test_unknown_recipients_past_the_soft_limit_wait_longer_each_time(
    instance: Instance,
) -> None:
    server = await start_instance(instance, smtp={
        "soft_error_limit": 2, "hard_error_limit": 5, "error_sleep_time": 0.2})
    try:
        c = await hello(server)
        # PIPELINING: known and unknown mixed, replies must come back in order
        names = ["bob", "nouser1", "alice", "nouser2", "nouser3", "bob+x", "nouser4", "nouser5"]
        start = time.monotonic()
        c.writer.write(b"MAIL FROM:<probe@elsewhere.test>\r\n" + b"".join(
            f"RCPT TO:<{n}@example.test>\r\n".encode() for n in names) + b"DATA\r\n")
        got = await replies_until_closed(c, 20)
        elapsed = time.monotonic() - start
        codes = [code for code, _ in got]
        assert codes == [250, 250, 550, 250, 550, 550, 250, 550, 550, 421], got
        # errors 3 and 4 wait 0.2 and 0.4 s; the 5th closes at once (DATA is never read)
        assert elapsed >= 0.55
        assert await c.closed()
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def test_unexpected_exception_gets_451_and_the_session_goes_on(
    running_server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    directory = running_server.ctx.directory
    real_resolve = directory.resolve
    calls = 0

    async def flaky_resolve(address: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected directory bug")
        return await real_resolve(address)

    monkeypatch.setattr(directory, "resolve", flaky_resolve)
    c = await hello(running_server)
    assert (await c.cmd("MAIL FROM:<a@elsewhere.test>"))[0] == 250
    with caplog.at_level(logging.ERROR, logger="pochta.smtp"):
        code, text = await c.cmd("RCPT TO:<bob@example.test>")
    assert code == 451 and text.startswith("4.3.0")
    assert "injected directory bug" in caplog.text  # the traceback is logged
    # the same session keeps serving: the retried RCPT and the message go through
    assert (await c.cmd("RCPT TO:<bob@example.test>"))[0] == 250
    assert (await c.cmd("DATA"))[0] == 354
    assert (await c.cmd("Subject: after the bug\r\n\r\nbody\r\n."))[0] == 250
    await c.close()
    other = await hello(running_server)
    assert (await other.cmd("NOOP"))[0] == 250
    await other.close()


async def test_exception_while_storing_a_message_gets_451(
    running_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("injected delivery bug")

    monkeypatch.setattr(running_server.ctx.delivery, "deliver", broken)
    c = await hello(running_server)
    await c.cmd("MAIL FROM:<a@elsewhere.test>")
    await c.cmd("RCPT TO:<bob@example.test>")
    assert (await c.cmd("DATA"))[0] == 354
    code, text = await c.cmd("Subject: x\r\n\r\nbody\r\n.")
    assert code == 451 and text.startswith("4.3.0")
    # the transaction is over, the session is not
    assert (await c.cmd("RCPT TO:<bob@example.test>"))[0] == 503
    assert (await c.cmd("NOOP"))[0] == 250
    await c.close()


async def test_full_disk_gets_452_and_the_session_goes_on(
    running_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = running_server.ctx.delivery.store  # the store that delivery writes to
    real_accept = store.accept

    async def full(*args: Any, **kwargs: Any) -> Any:
        raise StorageFull("no space left on device")

    monkeypatch.setattr(store, "accept", full)
    c = await hello(running_server)
    await c.cmd("MAIL FROM:<a@elsewhere.test>")
    await c.cmd("RCPT TO:<bob@example.test>")
    await c.cmd("DATA")
    code, text = await c.cmd("Subject: x\r\n\r\nbody\r\n.")
    assert (code, text) == (452, "4.3.1 Insufficient system storage")
    # room again: the same session delivers
    monkeypatch.setattr(store, "accept", real_accept)
    assert (await c.cmd("MAIL FROM:<a@elsewhere.test>"))[0] == 250
    assert (await c.cmd("RCPT TO:<bob@example.test>"))[0] == 250
    assert (await c.cmd("DATA"))[0] == 354
    assert (await c.cmd("Subject: y\r\n\r\nbody\r\n."))[0] == 250
    await c.close()
    await asyncio.sleep(0)
    assert len(await inbox(running_server, "bob@example.test")) == 1
