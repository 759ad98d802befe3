"""[log] trace_ips never logs a password, whichever way a client sends it: every IMAP,
SMTP and POP3 path over real sockets, pipelined or not; the trace log is read back and
searched for the password and its base64 forms."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pochta.server.trace import Tracer
from tests.conftest import Instance, Server, start_instance
from tests.e2e.smtpclient import RawClient

ALICE, ALICE_PW = "alice@example.test", "alice-pass"
BOB, BOB_PW = "bob@example.test", "bob-pass"
WRONG_PW = b"sec\r\nret-pw-one"  # a literal password spanning two lines


def b64(data: str | bytes) -> bytes:
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


SECRETS = [
    ALICE_PW.encode(), BOB_PW.encode(), b"ret-pw-one",
    b64(ALICE_PW), b64(BOB_PW),
    b64(f"\0{ALICE}\0{ALICE_PW}"), b64(f"\0{BOB}\0{BOB_PW}"), b64(WRONG_PW),
]


@pytest.fixture
async def traced(instance: Instance) -> AsyncIterator[Server]:
    listeners = [
        {"role": "imap", "port": 0, "tls": "none", "address": "127.0.0.1"},
        {"role": "submission", "port": 0, "tls": "implicit", "address": "127.0.0.1"},
        {"role": "pop3", "port": 0, "tls": "implicit", "address": "127.0.0.1"},
    ]
    server = await start_instance(instance, listeners=listeners,
                                  log={"trace_ips": ["127.0.0.1"]})
    try:
        yield server
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


def trace_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "pochta.trace")


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret.decode("latin-1") not in text, (secret, text)


class Lines:
    """A line reader over a stream (IMAP and POP3 here)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def until(self, prefix: bytes) -> list[bytes]:
        out: list[bytes] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 10)
            if not line:
                raise ConnectionError(f"closed; got {out!r}")
            out.append(line)
            if line.startswith(prefix):
                return out

    def send(self, data: bytes) -> None:
        self.writer.write(data)


async def imap(server: Server, script: Callable[[Lines], Awaitable[None]]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port("imap", "none"))
    c = Lines(reader, writer)
    await c.until(b"* OK")
    try:
        await script(c)
    finally:
        writer.close()


async def pop3(server: Server, script: Callable[[Lines], Awaitable[None]]) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port("pop3", "implicit"), ssl=server.client_ssl())
    c = Lines(reader, writer)
    await c.until(b"+OK")
    try:
        await script(c)
    finally:
        writer.close()


# --- IMAP ----------------------------------------------------------------------------


async def test_imap_login_every_form(traced: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pochta.trace")

    async def quoted(c: Lines) -> None:
        c.send(f'a1 LOGIN "{ALICE}" "{ALICE_PW}"\r\n'.encode())
        assert (await c.until(b"a1 "))[-1].startswith(b"a1 OK")

    async def sync_literal(c: Lines) -> None:
        c.send(b"a1 LOGIN %s {%d}\r\n" % (ALICE.encode(), len(ALICE_PW)))
        await c.until(b"+ ")
        c.send(ALICE_PW.encode() + b"\r\n")
        assert (await c.until(b"a1 "))[-1].startswith(b"a1 OK")

    async def literal_plus(c: Lines) -> None:
        c.send(b"a1 LOGIN %s {%d+}\r\n%s\r\na2 NOOP\r\n" % (
            ALICE.encode(), len(ALICE_PW), ALICE_PW.encode()))
        assert (await c.until(b"a1 "))[-1].startswith(b"a1 OK")
        await c.until(b"a2 OK")

    async def both_literals(c: Lines) -> None:
        user, pw = BOB.encode(), BOB_PW.encode()
        c.send(b"a1 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(user), user, len(pw), pw))
        assert (await c.until(b"a1 "))[-1].startswith(b"a1 OK")

    async def password_over_two_lines(c: Lines) -> None:
        c.send(b'a1 LOGIN "%s" {%d+}\r\n%s\r\n' % (ALICE.encode(), len(WRONG_PW), WRONG_PW))
        assert (await c.until(b"a1 "))[-1].startswith(b"a1 NO")

    async def then_append(c: Lines) -> None:  # literals of other commands are still shown
        c.send(f"a1 LOGIN {ALICE} {ALICE_PW}\r\n".encode())
        await c.until(b"a1 OK")
        msg = b"Subject: traced append\r\n\r\nhello\r\n"
        c.send(b"a2 APPEND INBOX {%d+}\r\n%s\r\n" % (len(msg), msg))
        await c.until(b"a2 OK")

    for script in (quoted, sync_literal, literal_plus, both_literals, password_over_two_lines,
                   then_append):
        await imap(traced, script)
    text = trace_text(caplog)
    assert_no_secret(text)
    assert "C: a1 LOGIN alice@example.test ***" in text
    assert "C: bob@example.test\n" in text  # the user name literal is shown, not the password
    assert "C: Subject: traced append" in text
    assert "C: a2 NOOP" in text


async def test_imap_authenticate_every_form(
        traced: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pochta.trace")
    plain = b64(f"\0{ALICE}\0{ALICE_PW}")

    async def challenge_response(c: Lines) -> None:
        c.send(b"a1 AUTHENTICATE PLAIN\r\n")
        await c.until(b"+")
        c.send(plain + b"\r\n")
        assert (await c.until(b"a1 "))[-1].startswith(b"a1 OK")

    async def pipelined(c: Lines) -> None:
        c.send(b"a1 AUTHENTICATE PLAIN\r\n" + plain + b"\r\n")
        assert (await c.until(b"a1 "))[-1].startswith(b"a1 OK")
        c.send(b"a2 NOOP\r\n")
        await c.until(b"a2 OK")

    async def sasl_ir(c: Lines) -> None:
        c.send(b"a1 AUTHENTICATE PLAIN " + plain + b"\r\n")
        assert (await c.until(b"a1 "))[-1].startswith(b"a1 OK")

    async def login_mechanism(c: Lines) -> None:
        c.send(b"a1 AUTHENTICATE LOGIN\r\n")
        await c.until(b"+")
        c.send(b64(ALICE) + b"\r\n")
        await c.until(b"+")
        c.send(b64(ALICE_PW) + b"\r\n")
        await c.until(b"a1 ")

    for script in (challenge_response, pipelined, sasl_ir, login_mechanism):
        await imap(traced, script)
    text = trace_text(caplog)
    assert_no_secret(text)
    assert "C: a1 AUTHENTICATE PLAIN ***" in text
    assert "C: a2 NOOP" in text  # redaction ends with the tagged answer


# --- SMTP submission -----------------------------------------------------------------


async def _smtp(server: Server) -> RawClient:
    c = await RawClient.connect(server.port("submission", "implicit"), server.client_ssl())
    assert (await c.reply())[0] == 220
    return c


async def test_smtp_auth_every_form(traced: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pochta.trace")
    plain = b64(f"\0{ALICE}\0{ALICE_PW}")

    async def run(lines: list[bytes], replies: int, then_mail: bool = False) -> None:
        c = await _smtp(traced)
        try:
            c.writer.write(b"".join(x + b"\r\n" for x in lines))  # one packet: pipelined
            codes = [(await c.reply())[0] for _ in range(replies)]
            assert codes[-1] == 235, codes
            if then_mail:
                assert (await c.cmd(f"MAIL FROM:<{ALICE}>"))[0] == 250
        finally:
            await c.close()

    await run([b"EHLO x", b"AUTH LOGIN", b64(ALICE), b64(ALICE_PW)], 4, then_mail=True)
    await run([b"EHLO x", b"AUTH LOGIN " + b64(ALICE), b64(ALICE_PW)], 3)
    await run([b"EHLO x", b"AUTH PLAIN " + plain], 2, then_mail=True)
    await run([b"EHLO x", b"AUTH PLAIN", plain], 3)
    # one line at a time, answering each 334
    c = await _smtp(traced)
    try:
        assert (await c.cmd("EHLO x"))[0] == 250
        assert (await c.cmd("AUTH LOGIN"))[0] == 334
        assert (await c.cmd(b64(ALICE)))[0] == 334
        assert (await c.cmd(b64(ALICE_PW)))[0] == 235
    finally:
        await c.close()
    text = trace_text(caplog)
    assert_no_secret(text)
    assert "C: AUTH PLAIN ***" in text and "C: AUTH LOGIN" in text
    assert f"C: MAIL FROM:<{ALICE}>" in text


# --- POP3 ----------------------------------------------------------------------------


async def test_pop3_every_form(traced: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pochta.trace")
    plain = b64(f"\0{BOB}\0{BOB_PW}")

    async def user_pass_pipelined(c: Lines) -> None:
        c.send(f"USER {BOB}\r\nPASS {BOB_PW}\r\nSTAT\r\n".encode())
        await c.until(b"+OK")
        assert (await c.until(b"+OK"))[-1].startswith(b"+OK")  # PASS
        await c.until(b"+OK")  # STAT

    async def auth_pipelined(c: Lines) -> None:
        c.send(b"AUTH PLAIN\r\n" + plain + b"\r\n")
        assert (await c.until(b"+OK"))[-1].startswith(b"+OK")

    async def auth_ir(c: Lines) -> None:
        c.send(b"AUTH PLAIN " + plain + b"\r\n")
        assert (await c.until(b"+OK"))[-1].startswith(b"+OK")

    async def auth_challenge(c: Lines) -> None:
        c.send(b"AUTH PLAIN\r\n")
        await c.until(b"+ ")
        c.send(plain + b"\r\n")
        assert (await c.until(b"+OK"))[-1].startswith(b"+OK")

    for script in (user_pass_pipelined, auth_pipelined, auth_ir, auth_challenge):
        await pop3(traced, script)
    text = trace_text(caplog)
    assert_no_secret(text)
    assert f"C: USER {BOB}" in text and "C: PASS ***" in text and "C: STAT" in text


def test_tracer_is_linear_in_its_input() -> None:
    """Many short lines in one read cost no more than their length (no re-copying)."""
    import time

    t = Tracer("imap", "1", "127.0.0.1")
    logging.getLogger("pochta.trace").disabled = True
    try:
        data = b"a NOOP\r\n" * 200_000
        t0 = time.monotonic()
        t.client(data)
        assert time.monotonic() - t0 < 5
    finally:
        logging.getLogger("pochta.trace").disabled = False
