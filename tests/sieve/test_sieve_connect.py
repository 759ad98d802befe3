"""A real ManageSieve client, Debian's sieve-connect (Perl, STARTTLS then SASL PLAIN),
uploads, checks, lists, activates, downloads and deletes scripts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import USERS, Instance, Server, need_tool, run_tool, start_instance

LISTENERS = [
    {"role": "managesieve", "port": 0, "tls": "starttls", "address": "127.0.0.1"},
    {"role": "mta", "port": 0, "tls": "starttls", "address": "127.0.0.1"},
]


@pytest.fixture
async def server(instance: Instance) -> AsyncIterator[Server]:
    srv = await start_instance(instance, listeners=LISTENERS)
    try:
        yield srv
    finally:
        await srv.running.close(grace=1.0)
        await srv.store.close()


async def sieve_connect(server: Server, *args: str, password: str = USERS["alice@example.test"]
                        ) -> tuple[int, str]:
    tool = need_tool("sieve-connect")
    return await run_tool(
        tool, "--server", "127.0.0.1", "--port", str(server.port("managesieve")),
        "--user", "alice@example.test", "--passwordfd", "0", "--notlsverify",
        "--authmech", "PLAIN", *args, stdin=(password + "\n").encode())


async def test_sieve_connect_manages_scripts(server: Server, tmp_path: Path) -> None:
    script = tmp_path / "filter.sieve"
    script.write_text('require "fileinto";\nif header :contains "subject" "x" '
                      '{ fileinto "Archive"; }\n')
    rc, out = await sieve_connect(server, "--upload", "--localsieve", str(script),
                                  "--remotesieve", "filter")
    assert rc == 0, out
    rc, out = await sieve_connect(server, "--checkscript", "--localsieve", str(script))
    assert rc == 0, out
    rc, out = await sieve_connect(server, "--activate", "--remotesieve", "filter")
    assert rc == 0, out
    rc, out = await sieve_connect(server, "--list")
    assert rc == 0 and '"filter" ACTIVE' in out, out
    down = tmp_path / "down.sieve"
    rc, out = await sieve_connect(server, "--download", "--remotesieve", "filter",
                                  "--localsieve", str(down))
    assert rc == 0, out
    assert down.read_text() == script.read_text()
    alice = await server.store.get_account("alice@example.test")
    assert alice is not None
    assert await server.store.get_active_sieve_script(alice.id) == ("filter",
                                                                    script.read_text())
    rc, out = await sieve_connect(server, "--deactivate")
    assert rc == 0, out
    rc, out = await sieve_connect(server, "--delete", "--remotesieve", "filter")
    assert rc == 0, out
    assert await server.store.list_sieve_scripts(alice.id) == []


async def test_sieve_connect_sees_errors_with_line_numbers(server: Server,
                                                           tmp_path: Path) -> None:
    bad = tmp_path / "bad.sieve"
    bad.write_text('require "fileinto";\n\nfileinto "x"\n')
    rc, out = await sieve_connect(server, "--upload", "--localsieve", str(bad),
                                  "--remotesieve", "bad")
    assert rc != 0 and "line 4" in out, out


async def test_sieve_connect_wrong_password(server: Server) -> None:
    rc, out = await sieve_connect(server, "--list", password="wrong")
    assert rc != 0, out
