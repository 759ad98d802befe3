"""Server METADATA entries (RFC 5464, mailbox ""): the ``/shared/`` ones are the
administrator's (``pochta metadata``), refused to users with NO [NOPERM]; ``/private/``
ones are each user's own; ``/shared/admin`` has a default (§6.2.1)."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

import pytest

from pochta.cli import main
from tests.conftest import Instance, Server, start_instance, storage_toml
from tests.imap.helpers import PLAIN_LISTENERS, connect, joined, st

DEFAULT_ADMIN = b'/shared/admin "mailto:postmaster@example.test"'


def admin_config(instance: Instance, admin_contact: str = "") -> Path:
    """The running instance's config as the administrator's shell sees it (same store:
    SQLite, or PostgreSQL under POCHTA_TEST_BACKEND)."""
    config = instance.dir / "pochta.toml"
    imap = f"[imap]\nadmin_contact = {json.dumps(admin_contact)}\n" if admin_contact else ""
    config.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\n'
                      f'[tls]\ncert = "{instance.cert}"\nkey = "{instance.key}"\n' + imap
                      + storage_toml(instance.raw_config.get("storage", {})))
    return config


async def pochta(monkeypatch: pytest.MonkeyPatch, config: Path, *argv: str) -> int:
    """``pochta -c config argv...`` in a thread: it runs its own event loop, as from a
    shell."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    return await asyncio.to_thread(main, ["-c", str(config), *argv])


async def test_user_cannot_set_shared_server_entries(
        instance: Instance, imap_server: Server) -> None:
    async with connect(imap_server) as alice, connect(imap_server) as bob:
        await alice.login()
        await bob.login("bob@example.test", "bob-pass")
        wanted = "(/shared/admin /shared/motd /shared/comment /shared/x)"
        before = await bob.cmd(f'GETMETADATA "" {wanted}')
        assert before[0] == b'* METADATA "" (' + DEFAULT_ADMIN + b')\r\n', before
        for attempt in ('(/shared/admin "mailto:evil@attacker.test")',
                        '(/shared/motd "defaced")', "(/shared/admin NIL)",
                        '(/SHARED/Comment "upper case is the same entry")',
                        # one refused entry fails the whole command (§4.3)
                        '(/private/mine "kept?" /shared/x "no")'):
            resp = await alice.cmd(f'SETMETADATA "" {attempt}')
            assert st(resp).startswith(b"NO [NOPERM]"), (attempt, resp)
        # nothing changed, for bob or for alice
        after = await bob.cmd(f'GETMETADATA "" {wanted}')
        assert after[0] == before[0] and len(after) == 2, after
        resp = await alice.cmd('GETMETADATA "" (/shared/admin /shared/motd /shared/comment '
                               '/shared/x /private/mine)')
        assert resp[0] == b'* METADATA "" (' + DEFAULT_ADMIN + b')\r\n', resp
        assert b"kept?" not in joined(resp)
        # mailbox entries are unchanged: the user's own mailbox takes /shared entries
        resp = await alice.cmd('SETMETADATA INBOX (/shared/comment "my inbox")')
        assert st(resp).startswith(b"OK"), resp
    assert await imap_server.store.get_metadata(0, 0) == {}


async def test_cli_entries_seen_by_every_user_and_sieve_default(
        instance: Instance, imap_server: Server, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = admin_config(instance)
    capsys.readouterr()
    assert await pochta(monkeypatch, config, "metadata", "get") == 0
    assert capsys.readouterr().out == (
        "/shared/admin mailto:postmaster@example.test (default: postmaster)\n")
    assert await pochta(monkeypatch, config, "metadata", "set", "/shared/motd",
                        "maintenance on Sunday, 06:00 UTC") == 0
    assert await pochta(monkeypatch, config, "metadata", "set", "/Shared/Admin",
                        "mailto:help@example.test") == 0
    assert await pochta(monkeypatch, config, "metadata", "set", "/shared/vendor/x/a",
                        "1") == 0
    for bad in (("set", "/private/x", "v"), ("set", "/shared/a*", "v"),
                ("set", "/shared", "v"), ("set", "/shared/big", "x" * 70000),
                ("delete", "/shared/never-set"), ("get", "/shared/never-set")):
        assert await pochta(monkeypatch, config, "metadata", *bad) == 1, bad
    capsys.readouterr()
    assert await pochta(monkeypatch, config, "metadata", "get") == 0
    assert capsys.readouterr().out == ("/shared/admin mailto:help@example.test\n"
                                       "/shared/motd maintenance on Sunday, 06:00 UTC\n"
                                       "/shared/vendor/x/a 1\n")
    for user, password in (("alice@example.test", "alice-pass"), ("bob@example.test",
                                                                  "bob-pass")):
        async with connect(imap_server) as c:
            await c.login(user, password)
            resp = await c.cmd('GETMETADATA "" (/shared/admin /shared/motd)')
            assert resp[0] == (b'* METADATA "" (/shared/admin "mailto:help@example.test" '
                               b'/shared/motd "maintenance on Sunday, 06:00 UTC")\r\n'), resp
            resp = await c.cmd('GETMETADATA (DEPTH 1) "" /shared/vendor/x')
            assert resp[0] == b'* METADATA "" (/shared/vendor/x/a "1")\r\n', resp
    # delete: /shared/admin goes back to its default, /shared/motd is gone
    assert await pochta(monkeypatch, config, "metadata", "delete", "/shared/admin") == 0
    assert await pochta(monkeypatch, config, "metadata", "delete", "/shared/motd") == 0
    async with connect(imap_server) as c:
        await c.login("bob@example.test", "bob-pass")
        resp = await c.cmd('GETMETADATA "" (/shared/admin /shared/motd)')
        assert resp[0] == b'* METADATA "" (' + DEFAULT_ADMIN + b')\r\n', resp
    # the cap on the administrator's entries (100, as SETMETADATA's)
    for n in range(99):
        await imap_server.store.set_metadata(0, 0, {f"/shared/n{n}": b"v"})
    assert await pochta(monkeypatch, config, "metadata", "set", "/shared/one-more", "v") == 1
    assert await pochta(monkeypatch, config, "metadata", "set", "/shared/n1", "w") == 0


async def test_private_server_entries_are_per_user(
        instance: Instance, imap_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # the administrator's entries do not count against a user's 100
    for n in range(20):
        await imap_server.store.set_metadata(0, 0, {f"/shared/n{n}": b"v"})
    async with connect(imap_server) as alice, connect(imap_server) as bob:
        await alice.login()
        await bob.login("bob@example.test", "bob-pass")
        resp = await alice.cmd('SETMETADATA "" (/private/vendor/x "alice\'s")')
        assert st(resp).startswith(b"OK"), resp
        resp = await bob.cmd('GETMETADATA (DEPTH infinity) "" /private/vendor')
        assert len(resp) == 1 and st(resp).startswith(b"OK"), resp
        resp = await bob.cmd('SETMETADATA "" (/private/vendor/x "bob\'s")')
        assert st(resp).startswith(b"OK"), resp
        resp = await alice.cmd('GETMETADATA "" /private/vendor/x')
        assert resp[0] == b'* METADATA "" (/private/vendor/x "alice\'s")\r\n', resp
        resp = await bob.cmd('GETMETADATA "" /private/vendor/x')
        assert resp[0] == b'* METADATA "" (/private/vendor/x "bob\'s")\r\n', resp
        values = " ".join(f'/private/e{n} "v"' for n in range(99))
        resp = await alice.cmd(f'SETMETADATA "" ({values})')
        assert st(resp).startswith(b"OK"), resp
        resp = await alice.cmd('SETMETADATA "" (/private/e99 "v")')
        assert st(resp).startswith(b"NO [METADATA TOOMANY]"), resp


async def test_admin_contact_from_config(instance: Instance, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    server = await start_instance(instance, listeners=PLAIN_LISTENERS,
                                  imap={"admin_contact": "https://help.example.test/mail"})
    try:
        async with connect(server) as c:
            await c.login()
            resp = await c.cmd('GETMETADATA "" /shared/admin')
            assert resp[0] == b'* METADATA "" (/shared/admin "https://help.example.test/mail")\r\n'
        config = admin_config(instance, "https://help.example.test/mail")
        capsys.readouterr()
        assert await pochta(monkeypatch, config, "metadata", "get", "/shared/admin") == 0
        assert capsys.readouterr().out == (
            "/shared/admin https://help.example.test/mail (default: [imap] admin_contact)\n")
        bad = admin_config(instance, "help desk")
        assert await pochta(monkeypatch, bad, "metadata", "get") == 2  # a config error
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def test_cli_change_reaches_a_metadata_session(
        instance: Instance, imap_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENABLE METADATA (RFC 5464 §4.1): the administrator's change, made by another
    process, is told to a session in IDLE within the poll interval (imap_metadata.POLL)."""
    async with connect(imap_server) as c:
        await c.login("bob@example.test", "bob-pass")
        resp = await c.cmd("ENABLE METADATA")
        assert resp[0] == b"* ENABLED METADATA\r\n", resp
        c.send(b"i1 IDLE\r\n")
        assert (await c.line()).startswith(b"+ ")
        assert await pochta(monkeypatch, admin_config(instance), "metadata", "set",
                            "/shared/motd", "hello") == 0
        assert await c.line(timeout=15) == b'* METADATA "" /shared/motd\r\n'
        c.send(b"DONE\r\n")
        assert (await c.line()).startswith(b"i1 OK")
