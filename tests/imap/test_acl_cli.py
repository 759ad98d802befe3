"""pochta acl get|set|delete: an admin shares a mailbox; the grant works over IMAP."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pytest

from pochta.cli import main
from tests.conftest import Instance, Server, storage_toml
from tests.imap.helpers import connect, st


def _main(config: Path, *argv: str) -> int:
    return main(["-c", str(config), *argv])


async def run(monkeypatch: pytest.MonkeyPatch, config: Path, *argv: str) -> int:
    """The CLI in a thread: it runs its own event loop, as from a shell."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    return await asyncio.to_thread(_main, config, *argv)


async def test_acl_cli_grants_are_seen_by_imap(
        instance: Instance, imap_server: Server, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = instance.dir / "pochta.toml"
    # the server's own store (SQLite, or PostgreSQL under POCHTA_TEST_BACKEND)
    config.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\n'
                      f'[tls]\ncert = "{instance.cert}"\nkey = "{instance.key}"\n'
                      + storage_toml(instance.raw_config.get("storage", {})))
    assert await run(monkeypatch, config, "acl", "set", "alice@example.test", "INBOX",
               "bob@example.test", "lr") == 0
    assert await run(monkeypatch, config, "acl", "set", "alice@example.test", "INBOX",
               "bob@example.test", "+s") == 0
    capsys.readouterr()
    assert await run(monkeypatch, config, "acl", "get", "alice@example.test", "inbox") == 0
    assert capsys.readouterr().out == ("alice@example.test aeiklprstwx (owner)\n"
                                       "bob@example.test lrs\n")
    for bad in (("acl", "set", "nobody@example.test", "INBOX", "bob@example.test", "l"),
                ("acl", "set", "alice@example.test", "Nope", "bob@example.test", "l"),
                ("acl", "set", "alice@example.test", "INBOX", "alice@example.test", "l"),
                ("acl", "set", "alice@example.test", "INBOX", "bob@example.test", "q"),
                ("acl", "delete", "alice@example.test", "INBOX", "carol@example.test")):
        assert await run(monkeypatch, config, *bad) == 1, bad
    async with connect(imap_server) as bob:
        await bob.login("bob@example.test", "bob-pass")
        resp = await bob.cmd('MYRIGHTS "Other Users/alice@example.test/INBOX"')
        assert resp[0] == b'* MYRIGHTS "Other Users/alice@example.test/INBOX" lrs\r\n'
        assert await run(monkeypatch, config, "acl", "delete", "alice@example.test", "INBOX",
                   "bob@example.test") == 0
        resp = await bob.cmd('MYRIGHTS "Other Users/alice@example.test/INBOX"')
        assert st(resp).startswith(b"NO [NONEXISTENT]")
