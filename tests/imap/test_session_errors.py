"""Bad input over a real socket: every case gets a protocol-correct answer."""

from __future__ import annotations

import asyncio

from tests.conftest import Server
from tests.imap.helpers import connect, st


async def test_over_long_line(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        c.send(b"x1 NOOP " + b"a" * 70000 + b"\r\n")
        line = await c.line()
        assert line == b"x1 BAD line too long\r\n"
        resp = await c.cmd("NOOP")  # the connection is still usable
        assert st(resp).startswith(b"OK")


async def test_huge_literal_refused_before_upload(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        c.send(b"a1 APPEND INBOX {999999999}\r\n")
        line = await c.line()
        assert line.startswith(b"a1 NO [TOOBIG]"), line
        c.send(b"a2 APPEND INBOX {99999}\r\n")  # outside APPEND limits? no: fits, gets "+"
        assert (await c.line()).startswith(b"+ ")
        c.send(b"x" * 99999 + b"\r\n")
        assert (await c.read_response("a2"))[-1].startswith(b"a2 OK [APPENDUID")
        c.send(b"a3 LOGIN {999999}\r\n")  # big literal outside APPEND
        assert (await c.line()).startswith(b"a3 BAD")


async def test_huge_non_sync_literal_closes(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        c.send(b"a1 APPEND INBOX {999999999+}\r\n")
        assert (await c.line()).startswith(b"a1 NO [TOOBIG]")
        assert (await c.line()).startswith(b"* BYE")
        assert await c.line() == b""


async def test_invalid_utf8_and_nul(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        resp = await c.cmd(b"SELECT \xff\xfeabc")
        assert st(resp).startswith(b"BAD")
        resp = await c.cmd(b"SELECT IN\x00BOX")
        assert st(resp).startswith(b"BAD")
        c.send(b"t9 SELECT {3}\r\n")
        assert (await c.line()).startswith(b"+")
        c.send(b"\xc3\x28x\r\n")
        assert (await c.read_response("t9"))[-1].startswith(b"t9 BAD")
        resp = await c.cmd("CREATE \"Sm\u00f6rg\u00e5s\"")  # raw UTF-8 without ENABLE: accepted
        assert st(resp).startswith(b"OK")


async def test_unknown_command_and_garbage(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        assert (await c.cmd("FROBNICATE"))[-1] == b"t1 BAD Unknown command\r\n"
        c.send(b"\r\n")
        assert (await c.line()).startswith(b"* BAD")
        c.send(b"+ nonsense\r\n")
        assert (await c.line()).startswith(b"* BAD")
        assert st(await c.cmd("UID NOOP")).startswith(b"BAD")


async def test_wrong_state(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        assert st(await c.cmd("SELECT INBOX")).startswith(b"BAD")
        await c.login()
        assert st(await c.cmd("FETCH 1 FLAGS")).startswith(b"BAD")
        assert st(await c.cmd("LOGIN a b")).startswith(b"BAD")
        assert st(await c.cmd("SELECT nosuch")).startswith(b"NO [NONEXISTENT]")
        await c.cmd("SELECT INBOX")
        assert st(await c.cmd("FETCH 5 FLAGS")).startswith(b"BAD")  # no message 5


async def test_error_flood_closes(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        for _ in range(10):
            c.send(b"x BOGUS\r\n")
        lines = [await c.line() for _ in range(11)]
        assert lines[-1].startswith(b"* BYE")
        assert await c.line() == b""


async def test_idle_timeout(imap_server: Server) -> None:
    imap_server.ctx.imap_idle_timeout = 0.3
    async with connect(imap_server) as c:
        line = await c.line(timeout=3)
        assert line.startswith(b"* BYE"), line
        assert await c.line() == b""


async def test_login_failures_same_text(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        wrong = await c.cmd("LOGIN alice@example.test nope")
        unknown = await c.cmd("LOGIN nobody@example.test nope")
        assert wrong[-1] == b"t1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
        assert unknown[-1] == b"t2 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"


async def test_bruteforce_lockout(imap_server: Server) -> None:
    # the shared limiter, as if many failures had come from this IP for alice
    limiter = imap_server.ctx.authenticator.limiter
    for _ in range(20):
        limiter.record_failure("127.0.0.1", "alice@example.test")
    async with connect(imap_server) as c:
        resp = await c.cmd("LOGIN alice@example.test alice-pass")
        assert st(resp).startswith(b"NO [UNAVAILABLE]"), resp
        resp = await c.cmd("AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wYXNz")
        assert st(resp).startswith(b"NO"), resp


async def test_starttls_listener_refuses_login_in_clear(imap_server: Server) -> None:
    async with connect(imap_server, "starttls") as c:
        caps = (await c.cmd("CAPABILITY"))[0]
        assert b"STARTTLS" in caps and b"LOGINDISABLED" in caps and b"AUTH=" not in caps
        resp = await c.cmd("LOGIN alice@example.test alice-pass")
        assert st(resp).startswith(b"NO [PRIVACYREQUIRED]")
        resp = await c.cmd("AUTHENTICATE PLAIN")
        assert st(resp).startswith(b"NO")


async def test_starttls_discards_pipelined_plaintext(imap_server: Server) -> None:
    async with connect(imap_server, "starttls") as c:
        c.send(b"a STARTTLS\r\nb LOGIN alice@example.test alice-pass\r\n")
        assert (await c.line()).startswith(b"a OK")
        await c.writer.start_tls(imap_server.client_ssl())
        resp = await c.cmd("CAPABILITY")
        # the injected LOGIN was dropped: still not authenticated, AUTH offered now
        assert b"AUTH=PLAIN" in resp[0] and b"LOGINDISABLED" not in resp[0]
        assert resp[0].startswith(b"* CAPABILITY")
        await c.login()


async def test_authenticate_plain_sasl_ir_and_continuation(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        resp = await c.cmd("AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wYXNz")
        assert st(resp).startswith(b"OK [CAPABILITY"), resp
    async with connect(imap_server) as c:
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        assert await c.line() == b"+ \r\n"
        c.send(b"AGJvYkBleGFtcGxlLnRlc3QAYm9iLXBhc3M=\r\n")
        assert (await c.line()).startswith(b"a OK")
    async with connect(imap_server) as c:
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        await c.line()
        c.send(b"*\r\n")
        assert (await c.line()).startswith(b"a BAD")
        c.send(b"b AUTHENTICATE PLAIN\r\n")
        await c.line()
        c.send(b"!!notbase64\r\n")
        assert (await c.line()).startswith(b"b BAD")


async def test_pipelined_commands(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        c.send(b"a LOGIN alice@example.test alice-pass\r\nb SELECT INBOX\r\nc NOOP\r\n")
        resp = await c.read_response("c")
        tags = [x.split(b" ")[0] for x in resp if not x.startswith(b"*")]
        assert tags == [b"a", b"b", b"c"]
        await asyncio.sleep(0)
