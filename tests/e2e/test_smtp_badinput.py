"""Bad input over real sockets: each gets a protocol error and the server keeps serving."""

from __future__ import annotations

import asyncio

from tests.conftest import Instance, Server, start_instance
from tests.e2e.smtpclient import RawClient
from tests.e2e.test_mta import inbox


async def hello(server: Server) -> RawClient:
    c = await RawClient.connect(server.port("mta"))
    assert (await c.reply())[0] == 220
    assert (await c.cmd("EHLO client.test"))[0] == 250
    return c


async def test_garbage_gets_errors_then_421_while_others_are_served(
    running_server: Server,
) -> None:
    bad = await hello(running_server)
    good = await hello(running_server)
    codes = []
    for junk in (b"\x00\x01\x02\xff\xfe", b"MAIL\x00FROM:<a@b.test>", b"\xc3\x28 invalid utf8",
                 b"HELO", b"RCPT TO:<bob@example.test>", b"DATA"):
        codes.append((await bad.cmd(junk))[0])
    assert all(500 <= c < 600 for c in codes), codes
    # the error limit (10) ends the session with 421
    for _ in range(10):
        try:
            code, _ = await bad.cmd(b"\xff\xff\xff")
        except ConnectionError:
            break
        if code == 421:
            break
    else:
        raise AssertionError("no 421 after too many errors")
    assert await bad.closed()
    assert (await good.cmd("NOOP"))[0] == 250
    await good.close()


async def test_overlong_command_line(running_server: Server) -> None:
    c = await hello(running_server)
    code, text = await c.cmd(b"MAIL FROM:<" + b"a" * 20000 + b"@example.test>")
    assert code == 500 and text.startswith("5.5.2")
    assert (await c.cmd("NOOP"))[0] == 250
    await c.close()


async def test_smuggling_sequences_never_end_data(running_server: Server) -> None:
    c = await hello(running_server)
    assert (await c.cmd("MAIL FROM:<a@elsewhere.test>"))[0] == 250
    assert (await c.cmd("RCPT TO:<bob@example.test>"))[0] == 250
    assert (await c.cmd("DATA"))[0] == 354
    smuggled = (b"Subject: outer\r\n\r\nhello\n.\nMAIL FROM:<admin@example.test>\r\n"
                b"RCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n"
                b"\r.\r\nstill data\r\n.\r\n")
    c.writer.write(smuggled)
    code, text = await c.reply()
    # default policy: a message with bare LF is refused as a whole (RFC 5321 §2.3.8)
    assert code == 554 and text.startswith("5.6.11")
    # the connection is in sync: exactly one reply came, the next command works
    assert (await c.cmd("NOOP"))[0] == 250
    await c.close()
    assert await inbox(running_server, "bob@example.test") == []


async def test_normalize_policy_keeps_smuggled_text_inside_one_message(
    instance: Instance,
) -> None:
    server = await start_instance(instance, smtp={"bare_lf": "normalize"})
    try:
        c = await hello(server)
        await c.cmd("MAIL FROM:<a@elsewhere.test>")
        await c.cmd("RCPT TO:<bob@example.test>")
        await c.cmd("DATA")
        c.writer.write(b"Subject: outer\r\n\r\nhello\n.\nRSET\r\nQUIT\r\n.\r\n")
        assert (await c.reply())[0] == 250
        assert (await c.cmd("NOOP"))[0] == 250, "RSET/QUIT in the body were not executed"
        await c.close()
        [stored] = await inbox(server, "bob@example.test")
        # the bare-LF dot line became an ordinary (dot-unstuffed, so empty) line
        assert stored.endswith(b"hello\r\n\r\nRSET\r\nQUIT\r\n")
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def test_size_and_recipient_limits(instance: Instance) -> None:
    server = await start_instance(instance, limits={"max_message_size": 1000,
                                                    "max_recipients": 2})
    try:
        c = await hello(server)
        code, text = await c.cmd("MAIL FROM:<a@elsewhere.test> SIZE=5000")
        assert code == 552 and text.startswith("5.3.4")
        assert (await c.cmd("MAIL FROM:<a@elsewhere.test>"))[0] == 250
        assert (await c.cmd("RCPT TO:<bob@example.test>"))[0] == 250
        assert (await c.cmd("RCPT TO:<alice@example.test>"))[0] == 250
        code, text = await c.cmd("RCPT TO:<bob+x@example.test>")
        assert code == 452 and text.startswith("4.5.3")
        assert (await c.cmd("DATA"))[0] == 354
        code, text = await c.cmd(b"Subject: big\r\n\r\n" + b"x" * 2000 + b"\r\n.")
        assert code == 552 and text.startswith("5.3.4")
        await c.close()
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def test_connection_limit_per_ip(instance: Instance) -> None:
    server = await start_instance(instance, limits={"max_connections_per_ip": 3})
    try:
        clients = [await hello(server) for _ in range(3)]
        extra = await RawClient.connect(server.port("mta"))
        code, text = await extra.reply()
        assert code == 421 and text.startswith("4.7.0")
        assert await extra.closed()
        await clients[0].close()
        await asyncio.sleep(0.1)
        again = await RawClient.connect(server.port("mta"))
        assert (await again.reply())[0] == 220
        for c in [*clients[1:], again]:
            await c.close()
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def test_silent_client_times_out(instance: Instance) -> None:
    server = await start_instance(instance, limits={"greeting_timeout": 0.3})
    try:
        c = await RawClient.connect(server.port("mta"))
        assert (await c.reply())[0] == 220
        code, text = await c.reply(timeout=5)
        assert code == 421 and text.startswith("4.4.2")
        assert await c.closed()
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def test_half_open_client_is_dropped(running_server: Server) -> None:
    c = await hello(running_server)
    c.writer.write(b"MAIL FROM:<a@elsewh")
    c.writer.write_eof()
    assert await c.closed()
    other = await hello(running_server)
    assert (await other.cmd("NOOP"))[0] == 250
    await other.close()


async def test_shutdown_sends_421_to_idle_sessions(instance: Instance) -> None:
    server = await start_instance(instance)
    c = await hello(server)
    await server.running.close(grace=2.0)
    try:
        code, text = await c.reply(timeout=5)
        assert code == 421 and text.startswith("4.3.2")
    finally:
        await server.store.close()
