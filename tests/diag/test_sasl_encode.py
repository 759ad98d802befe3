"""`pochta sasl-encode`: strings for AUTH PLAIN/LOGIN typed by hand, and decoding."""

from __future__ import annotations

import base64

import pytest

from pochta.diag.sasl import decode, encode_login, encode_plain

from .helpers import run_cli, run_json
from .schema import SASL, assert_valid


def test_plain_matches_rfc4616_layout() -> None:
    blob = encode_plain("alice@example.test", "pässword")
    assert base64.b64decode(blob) == b"\0alice@example.test\0p\xc3\xa4ssword"
    assert base64.b64decode(encode_plain("u", "p", "admin")) == b"admin\0u\0p"


def test_login_two_lines() -> None:
    assert encode_login("bob", "secret") == ("Ym9i", "c2VjcmV0")


def test_decode() -> None:
    out = decode("AUTH PLAIN " + encode_plain("u", "p"))
    assert out["plain"] == {"authzid": "", "user": "u", "password": "p"}
    assert decode("VXNlcm5hbWU6") == {"bytes": "Username:", "plain": None}
    with pytest.raises(ValueError):
        decode("not base64!")


async def test_cli_plain_and_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "alice-pass")
    rc, out = await run_cli("sasl-encode", "plain", "alice@example.test", "--password-env",
                            "PW")
    assert rc == 0
    assert out.strip() == "AUTH PLAIN " + base64.b64encode(
        b"\0alice@example.test\0alice-pass").decode()
    rc, doc = await run_json("sasl-encode", "login", "alice@example.test",
                             "--password-env", "PW")
    assert rc == 0
    assert_valid(doc, SASL)
    assert doc["lines"] == [base64.b64encode(b"alice@example.test").decode(),
                            base64.b64encode(b"alice-pass").decode()]
    rc, out = await run_cli("sasl-encode", "login", "bob", "--password-env", "PW")
    assert out.splitlines()[0] == "AUTH LOGIN"
    assert out.splitlines()[1].startswith("Ym9i ")


async def test_cli_decode_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    rc, doc = await run_json("sasl-encode", "decode", encode_plain("u", "pw"))
    assert rc == 0 and doc["plain"]["password"] == "pw"
    rc, _ = await run_cli("sasl-encode", "decode", "%%%")
    assert rc == 2
    monkeypatch.delenv("NOPE", raising=False)
    rc, _ = await run_cli("sasl-encode", "plain", "u", "--password-env", "NOPE")
    assert rc == 2


async def test_sasl_string_logs_in_to_pochta(running_server: object) -> None:
    """The string works when typed into a real session (here: sent by a raw socket)."""
    import asyncio
    import ssl

    from tests.conftest import Server

    assert isinstance(running_server, Server)
    port = running_server.port("submission", "implicit")
    ctx: ssl.SSLContext = running_server.client_ssl()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    await reader.readline()
    writer.write(b"EHLO me.test\r\n")
    while not (await reader.readline()).startswith(b"250 "):
        pass
    writer.write(f"AUTH PLAIN {encode_plain('alice@example.test', 'alice-pass')}\r\n"
                 .encode())
    line = await reader.readline()
    writer.close()
    assert line.startswith(b"235 ")
