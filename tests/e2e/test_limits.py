"""Listener limits over real sockets: per-role pools, per-address limits that fit a NAT,
TLS handshakes counted and timed out, minimum data rate, SMTP session time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Instance, Server, start_instance
from tests.e2e.smtpclient import RawClient

HOST = "127.0.0.1"


@contextlib.asynccontextmanager
async def server_with(instance: Instance, **overrides: Any) -> AsyncIterator[Server]:
    server = await start_instance(instance, **overrides)
    try:
        yield server
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def first_line(port: int, timeout: float = 5.0) -> bytes:
    """Connect and return the greeting line (b"" if closed without one)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        return await asyncio.wait_for(reader.readline(), timeout)
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def silent(port: int) -> asyncio.StreamWriter:
    """A connection that never says anything (and, on a TLS port, never handshakes)."""
    _, writer = await asyncio.open_connection(HOST, port)
    return writer


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        while await asyncio.wait_for(reader.read(4096), timeout):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


GREETINGS = {"mta": b"220 ", "submission": b"220 ", "imap": b"* OK", "pop3": b"+OK"}


async def test_ten_silent_connections_per_port_from_one_address_block_nobody(
    running_server: Server,
) -> None:
    # An office behind one NAT address: ten connections on each of the seven ports
    # (70 in all; the implicit-TLS ones still in their handshake). The old single limit
    # of 20 per address refused everything after the first 20.
    held = []
    for _, srv in running_server.running.servers:
        port = int(srv.sockets[0].getsockname()[1])
        held += [await silent(port) for _ in range(10)]
    try:
        for role, greeting in GREETINGS.items():
            line = await first_line(running_server.port(role, "starttls"))
            assert line.startswith(greeting), (role, line)
    finally:
        for w in held:
            w.close()


async def test_a_full_imap_pool_leaves_smtp_and_pop3_open(instance: Instance) -> None:
    async with server_with(instance, limits={"imap_max_connections": 4}) as server:
        held = [await silent(server.port("imap", "starttls")) for _ in range(2)]
        held += [await silent(server.port("imap", "implicit")) for _ in range(2)]
        try:
            line = await first_line(server.port("imap", "starttls"))
            assert line.startswith(b"* BYE ") and b"too many connections" in line
            for role in ("mta", "submission", "pop3"):
                assert (await first_line(server.port(role, "starttls"))).startswith(
                    GREETINGS[role]), role
        finally:
            for w in held:
                w.close()


@pytest.mark.parametrize(("role", "refusal"), [
    ("mta", b"421 4.7.0 too many connections from your address"),
    ("submission", b"421 4.7.0 too many connections from your address"),
    ("imap", b"* BYE too many connections from your address"),
    ("pop3", b"-ERR [SYS/TEMP] too many connections from your address"),
])
async def test_per_address_limit_per_role_with_protocol_correct_refusal(
    instance: Instance, role: str, refusal: bytes
) -> None:
    async with server_with(instance, limits={f"{role}_max_connections_per_ip": 2}) as server:
        port = server.port(role, "starttls")
        held = [await silent(port) for _ in range(2)]
        try:
            assert (await first_line(port)).startswith(refusal)
            other = "pop3" if role != "pop3" else "imap"
            assert (await first_line(server.port(other, "starttls"))).startswith(
                GREETINGS[other])
        finally:
            for w in held:
                w.close()
        await asyncio.sleep(0.2)
        assert (await first_line(port)).startswith(GREETINGS[role])


async def test_total_limits_still_protect(instance: Instance) -> None:
    async with server_with(instance, limits={"max_connections": 3}) as server:
        held = [await silent(server.port("imap", "starttls")),
                await silent(server.port("pop3", "starttls")),
                await silent(server.port("submission", "starttls"))]
        try:
            assert (await first_line(server.port("mta"))).startswith(
                b"421 4.7.0 too many connections")
        finally:
            for w in held:
                w.close()
    async with server_with(instance, limits={"max_connections_per_ip": 2}) as server:
        held = [await silent(server.port("imap", "starttls")),
                await silent(server.port("pop3", "starttls"))]
        try:
            assert (await first_line(server.port("mta"))).startswith(
                b"421 4.7.0 too many connections from your address")
        finally:
            for w in held:
                w.close()


async def test_tls_handshakes_count_and_time_out(instance: Instance) -> None:
    # Raw TCP to an implicit-TLS port: it used to hold a descriptor, uncounted, until
    # a 30 s handshake timeout, so 2,000 of them held 2,000 descriptors.
    async with server_with(instance, limits={"imap_max_connections": 3,
                                             "tls_handshake_timeout": 0.5}) as server:
        port = server.port("imap", "implicit")
        conns = [await asyncio.open_connection(HOST, port) for _ in range(3)]
        # the pool is full of handshakes: a fourth is dropped at once (no TLS, no reply)
        reader, writer = await asyncio.open_connection(HOST, port)
        assert await closed_by_server(reader, 2.0)
        writer.close()
        line = await first_line(server.port("imap", "starttls"))
        assert line.startswith(b"* BYE ")
        # the stalled handshakes end after tls_handshake_timeout and free the pool
        start = time.monotonic()
        for r, w in conns:
            assert await closed_by_server(r, 5.0)
            w.close()
        assert time.monotonic() - start < 3.0
        await asyncio.sleep(0.1)
        assert (await first_line(server.port("imap", "starttls"))).startswith(b"* OK")


SLOW = {"min_data_rate": 20, "data_rate_window": 0.5}  # 10 bytes per half second


async def dribble(writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                  data: bytes, every: float, limit: float) -> bytes:
    """Send ``data`` one byte every ``every`` seconds; return what the server said by
    the time it closed (or ``limit`` seconds passed)."""
    got = bytearray()
    deadline = time.monotonic() + limit
    for i in range(len(data)):
        if time.monotonic() > deadline:
            break
        # uvloop raises RuntimeError, not ConnectionError, once the server has closed
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.write(data[i:i + 1])
        try:
            chunk = await asyncio.wait_for(reader.read(4096), every)
        except TimeoutError:
            continue
        except ConnectionError:
            break
        if not chunk:
            return bytes(got)
        got += chunk
    return bytes(got)


async def test_one_byte_per_tick_cannot_hold_an_smtp_command(instance: Instance) -> None:
    async with server_with(instance, limits=SLOW) as server:
        c = await RawClient.connect(server.port("mta"))
        assert (await c.reply())[0] == 220
        assert (await c.cmd("EHLO client.test"))[0] == 250
        start = time.monotonic()
        said = await dribble(c.writer, c.reader, b"MAIL FROM:<" + b"a" * 400, 0.1, 10.0)
        assert said.startswith(b"421 4.4.2") and b"data rate too low" in said
        assert time.monotonic() - start < 3.0
        # a client at normal speed is not bothered
        ok = await RawClient.connect(server.port("mta"))
        assert (await ok.reply())[0] == 220
        assert (await ok.cmd("EHLO client.test"))[0] == 250
        await ok.close()


async def test_one_byte_per_tick_cannot_hold_a_data_transfer(instance: Instance) -> None:
    async with server_with(instance, limits=SLOW) as server:
        c = await RawClient.connect(server.port("mta"))
        await c.reply()
        await c.cmd("EHLO client.test")
        assert (await c.cmd("MAIL FROM:<a@elsewhere.test>"))[0] == 250
        assert (await c.cmd("RCPT TO:<bob@example.test>"))[0] == 250
        assert (await c.cmd("DATA"))[0] == 354
        said = await dribble(c.writer, c.reader, b"Subject: x\r\n\r\n" + b"y" * 400, 0.1, 10.0)
        assert said.startswith(b"421 4.4.2")


@pytest.mark.parametrize(("role", "command", "goodbye"), [
    ("imap", b"a1 LOGIN " + b"x" * 400, b"* BYE"),
    ("pop3", b"USER " + b"x" * 400, b"-ERR"),
])
async def test_one_byte_per_tick_cannot_hold_imap_or_pop3(
    instance: Instance, role: str, command: bytes, goodbye: bytes
) -> None:
    async with server_with(instance, limits=SLOW) as server:
        reader, writer = await asyncio.open_connection(HOST, server.port(role, "starttls"))
        await reader.readline()
        start = time.monotonic()
        said = await dribble(writer, reader, command, 0.1, 10.0)
        assert said.startswith(goodbye), said
        assert time.monotonic() - start < 3.0
        writer.close()


async def test_idle_between_commands_is_not_a_slow_client(instance: Instance) -> None:
    # The rate is measured only inside a request: a quiet client (IMAP IDLE, an SMTP
    # client between messages) is the idle timeout's business.
    async with server_with(instance, limits=SLOW) as server:
        c = await RawClient.connect(server.port("mta"))
        await c.reply()
        assert (await c.cmd("EHLO client.test"))[0] == 250
        await asyncio.sleep(1.5)
        assert (await c.cmd("NOOP"))[0] == 250
        await c.close()


async def test_smtp_session_time_limit(instance: Instance) -> None:
    async with server_with(instance, limits={"smtp_max_session_time": 1.0}) as server:
        c = await RawClient.connect(server.port("mta"))
        await c.reply()
        start = time.monotonic()
        code, text = 250, ""
        while time.monotonic() - start < 5 and code == 250:
            code, text = await c.cmd("NOOP")
            await asyncio.sleep(0.2)
        assert code == 421 and "4.4.2" in text and "session time limit" in text
        assert time.monotonic() - start < 2.0
        # IMAP sessions are not limited this way
        reader, writer = await asyncio.open_connection(HOST, server.port("imap", "starttls"))
        await reader.readline()
        await asyncio.sleep(1.2)
        writer.write(b"a NOOP\r\n")
        assert (await reader.readline()).startswith(b"a OK")
        writer.close()
