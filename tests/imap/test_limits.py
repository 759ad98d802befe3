"""Input limits over a real socket: literals before and after login, the size and number
of literals in one command, the pre-authentication timeout (config ``[imap]``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from tests.conftest import Instance, Server, start_instance
from tests.imap.helpers import MESSAGE, PLAIN_LISTENERS, Client, connect, st


async def _until_closed(c: Client, timeout: float = 5.0) -> list[bytes]:
    """Every line up to EOF."""
    out: list[bytes] = []
    while True:
        line = await c.line(timeout)
        if not line:
            return out
        out.append(line)


async def test_big_literal_before_login_is_refused_unread(imap_server: Server) -> None:
    """A stranger announces a 10 MB non-synchronizing literal: BAD and BYE at once, before
    a single octet of it is sent (RFC 7888 §4), and the connection is closed."""
    async with connect(imap_server) as c:
        c.send(b"a APPEND INBOX {10000000+}\r\n")
        lines = await _until_closed(c)
        assert lines[0].startswith(b"a BAD [TOOBIG]"), lines
        assert lines[-1].startswith(b"* BYE"), lines


async def test_sync_literal_before_login_refused_without_continuation(
        imap_server: Server) -> None:
    async with connect(imap_server) as c:
        c.send(b"a1 LOGIN {100000}\r\n")
        line = await c.line()
        assert line.startswith(b"a1 BAD [TOOBIG]"), line  # no "+": nothing is uploaded
        assert st(await c.cmd("NOOP")).startswith(b"OK")  # and the connection goes on


async def test_login_with_literals_still_works(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        user, pw = b"alice@example.test", b"alice-pass"
        c.send(b"a1 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(user), user, len(pw), pw))
        resp = await c.read_response("a1")
        assert resp[-1].startswith(b"a1 OK"), resp
        c.send(b"a2 SELECT {5}\r\n")
        assert (await c.line()).startswith(b"+ ")
        c.send(b"INBOX\r\n")
        assert (await c.read_response("a2"))[-1].startswith(b"a2 OK")


async def test_many_literals_after_login_stop_at_the_command_limit(
        imap_server: Server) -> None:
    """1,500 literals of 64 KB in one command (96 MB): the server answers BAD and BYE
    once the command passes [imap] max_command (1 MiB), without reading the rest."""
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", imap_server.port("imap", "none")))
    sock.setblocking(False)
    received = bytearray()
    sent = 0

    async def recv_until(marker: bytes) -> None:
        while marker not in received:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
            if not data:
                raise ConnectionError(f"closed; got {bytes(received)!r}")
            received.extend(data)

    async def flood() -> None:
        nonlocal sent
        await loop.sock_sendall(sock, b"a SEARCH TEXT {65536+}\r\n")
        with contextlib.suppress(OSError):
            for _ in range(1500):
                await loop.sock_sendall(sock, b"x" * 65536 + b" TEXT {65536+}\r\n")
                sent += 1

    try:
        await recv_until(b"\r\n")  # greeting
        await loop.sock_sendall(sock, b"l LOGIN alice@example.test alice-pass\r\n")
        await recv_until(b"l OK")
        del received[:]
        task = asyncio.create_task(flood())
        try:
            with contextlib.suppress(OSError):  # a reset after the BYE may follow
                while True:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
                    if not data:
                        break
                    received.extend(data)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        sock.close()
    assert received.startswith(b"a BAD [TOOBIG] Command too large"), bytes(received)
    assert b"* BYE" in received, bytes(received)
    assert sent < 200, sent  # stopped long before 1,500 (~16 fit in 1 MiB)


async def test_too_many_literals_in_one_command(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        c.send(b"a SEARCH " + b"TEXT {1+}\r\nq " * 300 + b"ALL\r\n")
        lines = await _until_closed(c)
        assert lines[0].startswith(b"a BAD [LIMIT] Too many literals"), lines


async def test_big_literal_outside_append_refused(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        c.send(b"a1 SEARCH TEXT {70000}\r\n")
        line = await c.line()
        assert line.startswith(b"a1 BAD [TOOBIG] Literal too large"), line
        assert st(await c.cmd("NOOP")).startswith(b"OK")


async def test_append_literal_may_be_large_after_login(imap_server: Server) -> None:
    """APPEND's message may be as big as APPENDLIMIT, a mailbox-name literal beside it small."""
    async with connect(imap_server) as c:
        await c.login()
        body = MESSAGE + b"y" * 300_000 + b"\r\n"
        c.send(b"a1 APPEND {5+}\r\nINBOX {%d+}\r\n%s\r\n" % (len(body), body))
        resp = await c.read_response("a1")
        assert resp[-1].startswith(b"a1 OK [APPENDUID"), resp
        # a mailbox name is not a message: a big literal there is refused before upload
        c.send(b"a2 APPEND {100000}\r\n")
        assert (await c.line()).startswith(b"a2 BAD [TOOBIG]")
        # MULTIAPPEND (RFC 3502): every message may be big (they go to disk), up to
        # APPENDLIMIT each
        c.send(b"a3 APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s\r\n"
               % (len(body), body, len(body), body))
        resp = await c.read_response("a3")
        assert resp[-1].startswith(b"a3 OK [APPENDUID"), resp
        c.send(b"a4 APPEND INBOX {%d}\r\n" % (imap_server.ctx.config.limits.max_message_size
                                              + 1))
        assert (await c.line()).startswith(b"a4 NO [TOOBIG]")


async def test_preauth_timeout(instance: Instance) -> None:
    """Before login a silent client is dropped after [imap] preauth_timeout (default 60 s,
    not the 30-minute autologout); after login the autologout applies."""
    server = await start_instance(instance, listeners=PLAIN_LISTENERS,
                                  imap={"preauth_timeout": 0.5})
    try:
        loop = asyncio.get_running_loop()
        async with connect(server) as c:
            t0 = loop.time()
            line = await c.line(timeout=5)
            assert line == b"* BYE Timed out waiting for login\r\n", line
            assert 0.4 < loop.time() - t0 < 3
            assert await c.line() == b""
        async with connect(server) as c:
            await c.login()
            await asyncio.sleep(1.2)  # longer than the pre-auth timeout
            assert st(await c.cmd("NOOP")).startswith(b"OK")
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


def test_imap_config_defaults_and_checks(instance: Instance) -> None:
    from pochta.config import ConfigError

    cfg = instance.config()
    assert cfg.imap.preauth_timeout == 60.0
    assert cfg.imap.preauth_max_command == 8192
    assert cfg.imap.max_literal == 65536
    for bad in ({"preauth_timeout": 0}, {"preauth_timeout": 4000},
                {"preauth_max_command": 10}, {"max_literals": 0}):
        with contextlib.suppress(ConfigError):
            instance.config(imap=bad)
            raise AssertionError(f"accepted {bad}")
