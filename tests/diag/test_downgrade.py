"""`pochta send --auth` and `pochta probe --user` through a STARTTLS-stripping proxy.

The proxy sits between the real `pochta` command and a running server on loopback and
rewrites ``STARTTLS`` in everything the server says, as the downgrade attacks seen in
the wild do (``XXXXXXXX``), or offers ``AUTH PLAIN`` in its place to invite the password
in clear. Neither tool may then send the password.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.conftest import Server

POCHTA = str(Path(sys.executable).parent / "pochta")


class StrippingProxy:
    def __init__(self, target_port: int, replacement: bytes) -> None:
        self.target_port = target_port
        self.replacement = replacement
        self.from_client = bytearray()
        self.port = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    upstream: bool) -> None:
        try:
            while data := await reader.read(65536):
                if upstream:
                    self.from_client += data
                else:
                    data = data.replace(b"STARTTLS", self.replacement).replace(b"STLS", b"XXXX")
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter
                      ) -> None:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(c_reader, s_writer, True),
                             self._pipe(s_reader, c_writer, False))


@asynccontextmanager
async def stripping_proxy(target_port: int, replacement: bytes = b"XXXXXXXX"
                         ) -> AsyncIterator[StrippingProxy]:
    proxy = StrippingProxy(target_port, replacement)
    server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()


async def run_pochta(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        POCHTA, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})})
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


SEND = ("send", "--from", "alice@example.test", "--to", "bob@example.test",
        "--auth", "--auth-user", "alice@example.test", "--password-env", "PW")
PW = {"PW": "alice-pass"}


@pytest.mark.parametrize("replacement", [b"XXXXXXXX", b"AUTH PLAIN"])
async def test_send_auth_refuses_stripped_starttls(running_server: Server, replacement: bytes
                                                   ) -> None:
    async with stripping_proxy(running_server.port("submission", "starttls"),
                               replacement) as proxy:
        rc, out = await run_pochta(*SEND, "--server", f"127.0.0.1:{proxy.port}", env=PW)
    assert rc != 0, out
    assert "does not offer STARTTLS" in out and "not sending the password" in out, out
    assert "--tls none" in out  # the one explicit way to send it in clear
    assert b"AUTH" not in bytes(proxy.from_client).upper(), proxy.from_client
    assert rc == 1 and "FAILED" in out


async def test_send_auth_explicit_tls_none_is_honoured(running_server: Server) -> None:
    async with stripping_proxy(running_server.port("submission", "starttls"),
                               b"AUTH PLAIN") as proxy:
        rc, out = await run_pochta(*SEND, "--server", f"127.0.0.1:{proxy.port}",
                                   "--tls", "none", env=PW)
    # the user asked for plaintext: the AUTH goes out (and this server refuses it)
    assert b"AUTH" in bytes(proxy.from_client).upper(), out
    assert rc != 0


async def test_send_auth_without_proxy_uses_starttls(running_server: Server) -> None:
    port = running_server.port("submission", "starttls")
    rc, out = await run_pochta(*SEND, "--server", f"127.0.0.1:{port}", env=PW)
    assert rc == 0, out
    assert "235" in out


async def test_probe_user_never_logs_in_without_tls(running_server: Server) -> None:
    async with stripping_proxy(running_server.port("imap", "starttls")) as proxy:
        rc, out = await run_pochta("probe", "127.0.0.1", "--port", f"{proxy.port}/imap",
                                   "--user", "alice@example.test", "--password-env", "PW",
                                   env=PW)
    assert rc != 0, out
    assert "login as alice@example.test not attempted" in out, out
    assert b"alice-pass" not in bytes(proxy.from_client)
