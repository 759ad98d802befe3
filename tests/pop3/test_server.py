"""The POP3 front-end over real sockets: poplib, raw transcripts, TLS, locking, UPDATE."""

from __future__ import annotations

import asyncio
import hashlib
import poplib
import re
import socket
import ssl
import types
from base64 import b64decode, b64encode
from pathlib import Path

import pytest
import scramp  # type: ignore[import-untyped]

from pochta.storage.interfaces import FlagMode

from .conftest import Pop3Env, make_env

MSG_DOTS = (
    b"From: sender@example.test\r\nTo: alice@example.test\r\nSubject: dots\r\n\r\n"
    b".leading dot\r\n.\r\n..\r\nlast line\r\n"
)
MSG_PLAIN = b"From: sender@example.test\r\nSubject: plain\r\n\r\nhello\r\n"


class RawClient:
    """Line-level POP3 client for transcripts."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r = reader
        self.w = writer

    @classmethod
    async def connect(
        cls, env: Pop3Env, port: int, tls: ssl.SSLContext | None = None
    ) -> tuple[RawClient, bytes]:
        reader, writer = await asyncio.open_connection(env.host, port, ssl=tls)
        client = cls(reader, writer)
        return client, await client.line()

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.r.readline(), 10)

    async def cmd(self, text: str | bytes) -> bytes:
        data = text.encode() if isinstance(text, str) else text
        self.w.write(data + b"\r\n")
        return await self.line()

    async def multi(self) -> list[bytes]:
        out = []
        while (line := await self.line()) != b".\r\n":
            assert line, "connection closed inside a multi-line response"
            out.append(line)
        return out

    @classmethod
    async def connect_stls(cls, env: Pop3Env, before: bytes = b"STLS\r\n") -> RawClient:
        """Greeting and ``before`` in plaintext on a blocking socket, then TLS. (asyncio's
        StreamWriter.start_tls in Python 3.11 loses data sent after the handshake.)"""

        def plaintext() -> socket.socket:
            sock = socket.create_connection((env.host, env.port_stls), timeout=10)
            f = sock.makefile("rb", buffering=0)
            assert f.readline().startswith(b"+OK")
            sock.sendall(before)
            assert f.readline() == b"+OK Begin TLS negotiation\r\n"
            sock.settimeout(None)
            return sock

        sock = await asyncio.to_thread(plaintext)
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=env.client_ssl(), server_hostname="mail.example.test"
        )
        return cls(reader, writer)

    async def login(self, user: str = "alice@example.test", pw: str = "alice-pass") -> bytes:
        assert (await self.cmd(f"USER {user}")).startswith(b"+OK")
        return await self.cmd(f"PASS {pw}")

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.r.read(), 10) == b""

    def close(self) -> None:
        self.w.close()


def unstuff(lines: list[bytes]) -> bytes:
    return b"".join(ln[1:] if ln.startswith(b".") else ln for ln in lines)


# --- poplib ---------------------------------------------------------------------------


def _poplib_session(env: Pop3Env, implicit: bool) -> dict[str, object]:
    if implicit:
        pop: poplib.POP3 = poplib.POP3_SSL(env.host, env.port_tls, context=env.client_ssl())
    else:
        pop = poplib.POP3(env.host, env.port_stls, timeout=10)
        caps = pop.capa()
        assert "STLS" in caps and "USER" not in caps
        pop.stls(env.client_ssl())
    caps = pop.capa()
    pop.user("alice@example.test")
    pop.pass_("alice-pass")
    stat = pop.stat()
    listing = pop.list()[1]
    uidl = pop.uidl()[1]
    bodies = [b"\r\n".join(pop.retr(i)[1]) + b"\r\n" for i in range(1, stat[0] + 1)]
    top = pop.top(1, 0)[1]
    # RFC 6856 §3; poplib has no method for LANG, so its own command helpers send it
    langs = pop._longcmd("LANG")[1]  # type: ignore[attr-defined]
    lang = pop._shortcmd("LANG en-GB")  # type: ignore[attr-defined]
    pop.dele(1)
    pop.quit()
    return {"caps": caps, "stat": stat, "list": listing, "uidl": uidl, "bodies": bodies,
            "top": top, "lang": (langs, lang)}


@pytest.mark.parametrize("implicit", [False, True], ids=["stls", "pop3s"])
async def test_poplib_full_session(pop3env: Pop3Env, implicit: bool) -> None:
    uid1 = await pop3env.deliver("alice@example.test", MSG_DOTS)
    uid2 = await pop3env.deliver("alice@example.test", MSG_PLAIN)
    res = await asyncio.to_thread(_poplib_session, pop3env, implicit)
    caps = res["caps"]
    assert isinstance(caps, dict)
    assert {"TOP", "UIDL", "USER", "SASL", "RESP-CODES", "PIPELINING", "UTF8",
            "LANG"} <= set(caps)
    assert "STLS" not in caps
    assert res["lang"] == ([b"en English"], b"+OK en Language changed")
    assert res["stat"] == (2, len(MSG_DOTS) + len(MSG_PLAIN))
    assert res["list"] == [f"1 {len(MSG_DOTS)}".encode(), f"2 {len(MSG_PLAIN)}".encode()]
    box = await pop3env.ctx.store.get_mailbox(pop3env.accounts["alice@example.test"].id, "INBOX")
    assert box is not None
    v = box.uidvalidity
    assert res["uidl"] == [f"1 {v}.{uid1}".encode(), f"2 {v}.{uid2}".encode()]
    assert res["bodies"] == [MSG_DOTS, MSG_PLAIN]
    assert res["top"] == [*MSG_DOTS.split(b"\r\n\r\n")[0].split(b"\r\n"), b""]
    # DELE 1 took effect at QUIT; RETR'd message 2 is now \Seen for IMAP.
    assert await pop3env.inbox_uids("alice@example.test") == [uid2]
    metas = await pop3env.ctx.store.list_messages(box.id)
    assert "\\Seen" in metas[0].flags


# --- TLS policy -----------------------------------------------------------------------


async def test_no_credentials_before_stls(pop3env: Pop3Env) -> None:
    c, greeting = await RawClient.connect(pop3env, pop3env.port_stls)
    assert greeting.startswith(b"+OK mail.example.test POP3 server ready")
    assert b"<" not in greeting  # APOP is off by default: no timestamp
    for cmd in ("USER alice@example.test", "PASS alice-pass", "AUTH PLAIN",
                "APOP alice@example.test " + "0" * 32):
        resp = await c.cmd(cmd)
        assert resp.startswith(b"-ERR"), cmd
    resp = await c.cmd("USER alice@example.test")
    assert resp.startswith(b"-ERR [AUTH] Plaintext authentication disallowed")
    c.close()
    c = await RawClient.connect_stls(pop3env)
    assert (await c.cmd("STLS")) == b"-ERR Command not permitted when TLS active\r\n"
    await c.cmd("CAPA")
    caps = await c.multi()
    assert b"USER\r\n" in caps and b"STLS\r\n" not in caps
    assert (await c.login()).startswith(b"+OK Logged in")
    c.close()


async def test_stls_discards_pipelined_plaintext(pop3env: Pop3Env) -> None:
    c = await RawClient.connect_stls(pop3env, b"STLS\r\nUSER alice@example.test\r\n")
    # The pipelined USER was discarded: PASS finds no user name.
    assert await c.cmd("PASS alice-pass") == b"-ERR USER first\r\n"
    resp = await c.cmd("STAT")
    assert resp.startswith(b"-ERR STAT is not valid in the AUTHORIZATION state")
    c.close()


async def test_plaintext_listener_without_tls_accepts_login(pop3env: Pop3Env) -> None:
    c, _ = await RawClient.connect(pop3env, pop3env.port_plain)
    caps = (await c.cmd("CAPA"), await c.multi())[1]
    assert b"USER\r\n" in caps and b"STLS\r\n" not in caps
    assert (await c.login()).startswith(b"+OK Logged in")
    c.close()


# --- authentication -------------------------------------------------------------------


async def test_auth_plain_and_failures_look_alike(pop3env: Pop3Env) -> None:
    c, _ = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    bad = b64encode(b"\0alice@example.test\0wrong").decode()
    unknown = b64encode(b"\0nobody@example.test\0wrong").decode()
    r1 = await c.cmd(f"AUTH PLAIN {bad}")
    r2 = await c.cmd(f"AUTH PLAIN {unknown}")
    assert r1 == r2 == b"-ERR [AUTH] Authentication failed\r\n"
    assert await c.cmd("USER nobody@example.test") == b"+OK Send your password\r\n"
    assert await c.cmd("PASS x") == b"-ERR [AUTH] Authentication failed\r\n"
    assert (await c.cmd("AUTH PLAIN")) == b"+ \r\n"
    good = b64encode(b"\0alice@example.test\0alice-pass").decode()
    assert (await c.cmd(good)).startswith(b"+OK Logged in")
    c.close()


async def test_auth_scram_sha_256(pop3env: Pop3Env) -> None:
    c, _ = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    await c.cmd("CAPA")
    caps = await c.multi()
    sasl = next(ln for ln in caps if ln.startswith(b"SASL "))
    assert b"SCRAM-SHA-256" in sasl and b"PLAIN" in sasl
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice@example.test", "alice-pass")
    first = b64encode(client.get_client_first().encode()).decode()
    resp = await c.cmd(f"AUTH SCRAM-SHA-256 {first}")
    assert resp.startswith(b"+ ")
    client.set_server_first(b64decode(resp[2:].strip()).decode())
    resp = await c.cmd(b64encode(client.get_client_final().encode()))
    # RFC 5034 §4: the server-final data comes as a last challenge, answered empty.
    assert resp.startswith(b"+ ")
    client.set_server_final(b64decode(resp[2:].strip()).decode())
    assert (await c.cmd("")).startswith(b"+OK Logged in")
    c.close()


async def test_auth_scram_wrong_password(pop3env: Pop3Env) -> None:
    c, _ = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice@example.test", "nope")
    resp = await c.cmd("AUTH SCRAM-SHA-256")
    assert resp == b"+ \r\n"
    resp = await c.cmd(b64encode(client.get_client_first().encode()))
    client.set_server_first(b64decode(resp[2:].strip()).decode())
    resp = await c.cmd(b64encode(client.get_client_final().encode()))
    assert resp == b"-ERR [AUTH] Authentication failed\r\n"
    assert (await c.login()).startswith(b"+OK Logged in")
    c.close()


async def test_brute_force_lockout_is_shared(pop3env: Pop3Env) -> None:
    c, _ = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    for _ in range(5):
        assert (await c.login(pw="wrong")).startswith(b"-ERR [AUTH]")
    c.close()
    c, _ = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    resp = await c.login()
    assert resp.startswith(b"-ERR [SYS/TEMP] Too many failed logins")
    assert not await pop3env.ctx.authenticator.allowed("127.0.0.1", "alice@example.test")
    c.close()


# --- maildrop semantics ---------------------------------------------------------------


async def test_dropped_connection_keeps_messages(pop3env: Pop3Env) -> None:
    await pop3env.deliver("alice@example.test", MSG_PLAIN)
    await pop3env.deliver("alice@example.test", MSG_DOTS)
    c, _ = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    await c.login()
    assert (await c.cmd("DELE 1")).startswith(b"+OK")
    assert (await c.cmd("DELE 2")).startswith(b"+OK")
    c.w.transport.abort()
    await asyncio.sleep(0.2)
    assert len(await pop3env.inbox_uids("alice@example.test")) == 2
    assert not pop3env.ctx.pop3_locks  # the lock went with the connection
    # RSET, then QUIT: nothing is removed either.
    c, _ = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    await c.login()
    await c.cmd("DELE 1")
    assert (await c.cmd("RSET")).startswith(b"+OK")
    assert (await c.cmd("QUIT")).startswith(b"+OK")
    assert len(await pop3env.inbox_uids("alice@example.test")) == 2


async def test_maildrop_lock_in_use(pop3env: Pop3Env) -> None:
    c1, _ = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    assert (await c1.login()).startswith(b"+OK")
    c2, _ = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    assert (await c2.login()) == b"-ERR [IN-USE] Maildrop is locked by another POP3 session\r\n"
    # bob is not affected
    assert (await c2.login("bob@example.test", "bob-pass")).startswith(b"+OK")
    assert (await c1.cmd("QUIT")).startswith(b"+OK")
    assert await c1.closed()
    c3, _ = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    assert (await c3.login()).startswith(b"+OK")
    c2.close()
    c3.close()


async def test_uidl_stable_across_sessions_and_imap_changes(pop3env: Pop3Env) -> None:
    for _ in range(3):
        await pop3env.deliver("alice@example.test", MSG_PLAIN)

    async def uidl() -> list[bytes]:
        c, _ = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
        await c.login()
        assert (await c.cmd("UIDL")).startswith(b"+OK")
        lines = await c.multi()
        await c.cmd("QUIT")
        return [ln.split()[1] for ln in lines]

    before = await uidl()
    assert len(set(before)) == 3
    store = pop3env.ctx.store
    box = await store.get_mailbox(pop3env.accounts["alice@example.test"].id, "INBOX")
    assert box is not None
    uids = await pop3env.inbox_uids("alice@example.test")
    await store.store_flags(box.id, uids, frozenset({"\\Flagged", "$Junk"}), FlagMode.ADD)
    assert await uidl() == before
    await store.expunge(box.id, [uids[0]])  # an IMAP client expunges the first message
    assert await uidl() == before[1:]


async def test_imap_expunge_during_pop3_session(pop3env: Pop3Env) -> None:
    await pop3env.deliver("alice@example.test", MSG_PLAIN)
    await pop3env.deliver("alice@example.test", MSG_DOTS)
    c, _ = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    await c.login()
    store = pop3env.ctx.store
    box = await store.get_mailbox(pop3env.accounts["alice@example.test"].id, "INBOX")
    assert box is not None
    uids = await pop3env.inbox_uids("alice@example.test")
    await store.expunge(box.id, [uids[0]])
    # The snapshot still numbers both messages; RETR says -ERR (server/pop3.py), and
    # the session goes on. DELE of the vanished one and QUIT complete without error.
    assert await c.cmd("RETR 1") == b"-ERR Message was deleted by another session\r\n"
    assert await c.cmd("STAT") == f"+OK 2 {len(MSG_PLAIN) + len(MSG_DOTS)}\r\n".encode()
    assert (await c.cmd("DELE 1")).startswith(b"+OK")
    assert (await c.cmd("QUIT")).startswith(b"+OK")
    assert await pop3env.inbox_uids("alice@example.test") == [uids[1]]


async def test_retr_large_pipelined(pop3env: Pop3Env) -> None:
    big = b"Subject: big\r\n\r\n" + b"".join(
        b".%06d line of text in a big message\r\n" % i for i in range(40000)
    )
    for _ in range(3):
        await pop3env.deliver("alice@example.test", big)
    c, _ = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    await c.login()
    c.w.write(b"RETR 1\r\nRETR 2\r\nRETR 3\r\nNOOP\r\n")
    for _ in range(3):
        assert await c.line() == b"+OK %d octets\r\n" % len(big)
        assert unstuff(await c.multi()) == big
    assert await c.line() == b"+OK\r\n"
    c.close()


# --- errors and limits ----------------------------------------------------------------


async def test_bad_commands_keep_session_usable_then_limit(pop3env: Pop3Env) -> None:
    await pop3env.deliver("alice@example.test", MSG_PLAIN)
    c, _ = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    await c.login()
    assert await c.cmd("RETR 5") == b"-ERR No such message 5\r\n"
    assert await c.cmd("XYZZY") == b"-ERR Unknown command XYZZY\r\n"
    assert (await c.cmd("NOOP " + "a" * 300)).startswith(b"-ERR Line too long")
    assert await c.cmd(b"NOOP\x00") == b"-ERR NUL in command line\r\n"
    assert await c.cmd("DELE 1") == b"+OK Message 1 deleted\r\n"
    assert await c.cmd("RETR 1") == b"-ERR Message 1 is deleted\r\n"
    assert await c.cmd("NOOP") == b"+OK\r\n"
    for _ in range(4):  # the default limit is 10 errors
        assert (await c.cmd("BAD")).startswith(b"-ERR")
    assert await c.cmd("BAD") == b"-ERR Unknown command BAD\r\n"
    assert await c.line() == b"-ERR Too many errors, closing connection\r\n"
    assert await c.closed()
    # closed without QUIT: the DELE did not happen
    assert len(await pop3env.inbox_uids("alice@example.test")) == 1


async def test_idle_timeout(tmp_path: Path) -> None:
    async for env in make_env(tmp_path, pop3_idle_timeout=0.3):
        await env.deliver("alice@example.test", MSG_PLAIN)
        c, _ = await RawClient.connect(env, env.port_tls, env.client_ssl())
        await c.login()
        await c.cmd("DELE 1")
        assert await c.line() == b"-ERR Autologout; idle for too long\r\n"
        assert await c.closed()
        assert len(await env.inbox_uids("alice@example.test")) == 1
        assert not env.ctx.pop3_locks


async def test_apop_for_account_with_secret(pop3env: Pop3Env) -> None:
    # APOP is off by default; the handler reads ``[pop3] apop`` (not yet a Config
    # section, so the test attaches it to the frozen config).
    object.__setattr__(pop3env.ctx.config, "pop3", types.SimpleNamespace(apop=True))
    await pop3env.ctx.store.update_account("alice@example.test", apop_secret="tanstaaf")
    c, greeting = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    m = re.search(rb"<[^>]+@mail\.example\.test>", greeting)
    assert m is not None
    ts = m.group(0).decode()

    def digest(secret: str) -> str:
        return hashlib.md5((ts + secret).encode(), usedforsecurity=False).hexdigest()

    fail = b"-ERR [AUTH] Authentication failed\r\n"
    assert await c.cmd(f"APOP alice@example.test {digest('wrong')}") == fail
    # bob has no APOP secret: same reply as a wrong digest or an unknown account
    assert await c.cmd(f"APOP bob@example.test {digest('')}") == fail
    assert await c.cmd(f"APOP nobody@example.test {digest('tanstaaf')}") == fail
    assert (await c.cmd(f"APOP alice@example.test {digest('tanstaaf')}")).startswith(b"+OK")
    c.close()
    # another connection gets another timestamp
    c2, greeting2 = await RawClient.connect(pop3env, pop3env.port_tls, pop3env.client_ssl())
    assert ts.encode() not in greeting2
    c2.close()
