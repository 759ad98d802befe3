"""One address normalisation (pochta.mail.addresses) for the CLI, delivery and every login.

An account created as ``Straße@example.test`` with the real ``pochta`` CLI is stored
as ``strasse@example.test``; mail to either spelling reaches it, and it logs in over
IMAP (LOGIN, AUTHENTICATE), POP3 (USER/PASS, AUTH) and SMTP AUTH with either spelling.
(Before, logins used ``lower()``, which leaves ß alone: the user got mail and could
never log in.)
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import Instance, Server, start_instance, storage_toml
from tests.e2e.smtpclient import RawClient

PASSWORD = "Stra\u00dfen-pass"
NAMES = ("Stra\u00dfe@example.test", "strasse@example.test", "STRASSE@Example.Test")


def _cli(config: Path, *args: str, stdin: bytes | None = None) -> tuple[int, str]:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "pochta", "-c", str(config), *args], input=stdin,
        capture_output=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")


@pytest.fixture
async def strasse_server(instance: Instance) -> Server:
    config = instance.dir / "pochta.toml"
    listeners = "\n".join(
        f'[[listeners]]\nrole = "{x["role"]}"\nport = 0\ntls = "{x["tls"]}"\n'
        for x in instance.raw_config["listeners"])
    config.write_text(
        f'hostname = "mail.example.test"\ndata_dir = "data"\n'
        f'[tls]\ncert = "{instance.cert}"\nkey = "{instance.key}"\n{listeners}'
        + storage_toml(instance.raw_config.get("storage", {})))
    code, out = await asyncio.to_thread(_cli, config, "domain", "add", "example.test")
    assert code == 0, out
    code, out = await asyncio.to_thread(
        _cli, config, "user", "add", "Stra\u00dfe@example.test", "--password-stdin",
        stdin=PASSWORD.encode() + b"\n")
    assert code == 0, out
    code, out = await asyncio.to_thread(
        _cli, config, "alias", "add", "Postmaster@Example.test", "STRA\u00dfE@example.test")
    assert code == 0, out
    return await start_instance(instance)


async def _smtp_deliver(server: Server, rcpt: str) -> None:
    c = await RawClient.connect(server.port("mta"))
    await c.reply()
    await c.cmd("EHLO client.elsewhere.test")
    assert (await c.cmd("MAIL FROM:<someone@elsewhere.test> SMTPUTF8"))[0] == 250
    code, text = await c.cmd(f"RCPT TO:<{rcpt}>".encode())
    assert code == 250, text
    assert (await c.cmd("DATA"))[0] == 354
    assert (await c.cmd(f"Subject: to {rcpt}\r\n\r\nhi\r\n.".encode()))[0] == 250
    await c.close()


async def _smtp_auth(server: Server, user: str, sender: str | None = None) -> int:
    """AUTH PLAIN as ``user``; with ``sender``, also submit a message from that address
    (MAIL FROM and From:, the sender-ownership checks) and return the DATA reply."""
    c = await RawClient.connect(server.port("submission", "implicit"), server.client_ssl())
    await c.reply()
    await c.cmd("EHLO laptop")
    token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
    code, _ = await c.cmd(f"AUTH PLAIN {token}")
    if sender is not None and code == 235:
        code, text = await c.cmd(f"MAIL FROM:<{sender}> SMTPUTF8".encode())
        assert code == 250, text
        assert (await c.cmd("RCPT TO:<bob@elsewhere.test>"))[0] == 250
        assert (await c.cmd("DATA"))[0] == 354
        code, text = await c.cmd(f"From: <{sender}>\r\nSubject: s\r\n\r\nhi\r\n.".encode())
    await c.close()
    return code


async def _lines(reader: asyncio.StreamReader, until: bytes) -> bytes:
    out = b""
    while until not in out:
        line = await asyncio.wait_for(reader.readline(), 10)
        assert line, out
        out += line
    return out


async def _imap(server: Server, user: str, authenticate: bool) -> bytes:
    """Log in and SELECT INBOX; the tagged SELECT response (EXISTS before it)."""
    reader, writer = await asyncio.open_connection(
        server.host, server.port("imap", "implicit"), ssl=server.client_ssl())
    await reader.readline()
    name = user.encode()
    if authenticate:
        token = base64.b64encode(b"\0" + name + b"\0" + PASSWORD.encode())
        writer.write(b"a AUTHENTICATE PLAIN " + token + b"\r\n")
    else:  # literals carry the UTF-8 name in IMAP4rev1 as well
        writer.write(b"a LOGIN {%d+}\r\n" % len(name) + name
                     + b" {%d+}\r\n" % len(PASSWORD.encode()) + PASSWORD.encode() + b"\r\n")
    login = await _lines(reader, b"a ")
    assert b"a OK" in login, login
    writer.write(b"b SELECT INBOX\r\n")
    out = await _lines(reader, b"b ")
    writer.close()
    return out


async def _pop3(server: Server, user: str, sasl: bool) -> bytes:
    """Log in and STAT."""
    reader, writer = await asyncio.open_connection(
        server.host, server.port("pop3", "implicit"), ssl=server.client_ssl())
    await reader.readline()
    if not user.isascii():  # RFC 6856 §2: UTF-8 user names after the UTF8 command
        writer.write(b"UTF8\r\n")
        assert (await reader.readline()).startswith(b"+OK")
    if sasl:
        token = base64.b64encode(b"\0" + user.encode() + b"\0" + PASSWORD.encode())
        writer.write(b"AUTH PLAIN " + token + b"\r\n")
    else:
        writer.write(b"USER " + user.encode() + b"\r\n")
        assert (await reader.readline()).startswith(b"+OK")
        writer.write(b"PASS " + PASSWORD.encode() + b"\r\n")
    login = await reader.readline()
    assert login.startswith(b"+OK"), login
    writer.write(b"STAT\r\nQUIT\r\n")
    stat = await reader.readline()
    writer.close()
    return stat


async def test_cli_account_gets_mail_and_logs_in_with_any_spelling(
        strasse_server: Server) -> None:
    server = strasse_server
    try:
        account = await server.store.get_account("strasse@example.test")
        assert account is not None and account.address == "strasse@example.test"
        for rcpt in (*NAMES, "POSTMASTER@example.test"):  # the last through the alias
            await _smtp_deliver(server, rcpt)
        for user in NAMES:
            assert await _smtp_auth(server, user) == 235, user
            for authenticate in (False, True):
                assert b"* 4 EXISTS" in await _imap(server, user, authenticate), user
            for sasl in (False, True):
                assert (await _pop3(server, user, sasl)).startswith(b"+OK 4 "), user
        assert await _smtp_auth(server, "strase@example.test") == 535
        # sender ownership: its own address in any spelling, and the alias naming it
        for sender in (*NAMES, "postmaster@example.test"):
            assert await _smtp_auth(server, NAMES[0], sender) == 250, sender
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def test_sasl_authzid_uses_the_same_rule(strasse_server: Server) -> None:
    server = strasse_server
    try:
        async def plain(authzid: str) -> int:
            c = await RawClient.connect(server.port("submission", "implicit"),
                                        server.client_ssl())
            await c.reply()
            await c.cmd("EHLO laptop")
            token = base64.b64encode(
                f"{authzid}\0strasse@example.test\0{PASSWORD}".encode()).decode()
            code, _ = await c.cmd(f"AUTH PLAIN {token}")
            await c.close()
            return code

        assert await plain("STRA\u00dfE@example.test") == 235
        assert await plain("bob@example.test") == 535
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()

