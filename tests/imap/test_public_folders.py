"""Public folders (RFC 2342's shared namespace, ``Public/``): made by an admin with
``pochta acl create-public``, owned by no account, readable and writable over IMAP by
exactly the identifiers granted rights (RFC 4314), invisible to everyone else."""

from __future__ import annotations

import pytest

from tests.conftest import Instance, Server, storage_toml
from tests.imap.helpers import MESSAGE, connect, joined, st
from tests.imap.test_acl_cli import run


async def test_public_folder_for_a_team(
        instance: Instance, imap_server: Server, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = instance.dir / "pochta.toml"
    config.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\n'
                      f'[tls]\ncert = "{instance.cert}"\nkey = "{instance.key}"\n'
                      + storage_toml(instance.raw_config.get("storage", {})))
    for argv in (("acl", "create-public", "Team"),
                 ("acl", "set", "public", "Team", "alice@example.test", "lrswite"),
                 ("acl", "create-public", "Announcements"),
                 ("acl", "set", "public", "Announcements", "authenticated", "lr"),
                 ("acl", "set", "public", "Announcements", "alice@example.test", "+i")):
        assert await run(monkeypatch, config, *argv) == 0, argv
    for bad in (("acl", "create-public", "Team"), ("acl", "create-public", "INBOX"),
                ("acl", "set", "public", "Nope", "alice@example.test", "l"),
                ("acl", "delete-public", "Nope")):
        assert await run(monkeypatch, config, *bad) == 1, bad
    capsys.readouterr()
    assert await run(monkeypatch, config, "acl", "get", "public", "Team") == 0
    assert capsys.readouterr().out == "alice@example.test eilrstw\n"  # no owner: nobody's
    assert await run(monkeypatch, config, "user", "list") == 0
    assert "#public" not in capsys.readouterr().out

    async with connect(imap_server) as alice, connect(imap_server) as bob:
        await alice.login()
        await bob.login("bob@example.test", "bob-pass")
        resp = await alice.cmd("NAMESPACE")
        assert resp[0] == (b'* NAMESPACE (("" "/")) (("Other Users/" "/")) '
                           b'(("Public/" "/"))\r\n'), resp
        resp = await alice.cmd('LIST "" "Public/*" RETURN (MYRIGHTS)')
        assert resp[:-1] == [
            b'* LIST (\\HasNoChildren) "/" Public/Announcements\r\n',
            b"* MYRIGHTS Public/Announcements ilr\r\n",
            b'* LIST (\\HasNoChildren) "/" Public/Team\r\n',
            b"* MYRIGHTS Public/Team eilrstw\r\n",
        ], resp
        # alice works in the team's folder: APPEND, COPY, flags, expunge
        resp = await alice.cmd(f"APPEND Public/Team {{{len(MESSAGE)}+}}\r\n".encode()
                               + MESSAGE)
        assert st(resp).startswith(b"OK [APPENDUID "), resp
        await alice.cmd(f"APPEND INBOX {{{len(MESSAGE)}+}}\r\n".encode() + MESSAGE)
        await alice.cmd("SELECT INBOX")
        assert st(await alice.cmd("COPY 1 Public/Team")).startswith(b"OK [COPYUID "), resp
        resp = await alice.cmd("SELECT Public/Team")
        assert b"* 2 EXISTS" in joined(resp) and b"[READ-WRITE]" in joined(resp), resp
        resp = await alice.cmd("STORE 1 +FLAGS (\\Seen \\Flagged)")
        assert b"FLAGS (\\Flagged \\Recent \\Seen))" in joined(resp), resp
        resp = await alice.cmd("FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)])")
        assert b"Subject: Hello there" in joined(resp), resp
        # public folders are made by the admin, not below "Public" by users
        resp = await alice.cmd("CREATE Public/Mine")
        assert st(resp).startswith(b"NO [NOPERM]"), resp
        assert st(await alice.cmd("GETACL Public/Team")).startswith(b"NO [NOPERM]")
        resp = await alice.cmd(f"APPEND Public/Announcements {{{len(MESSAGE)}+}}\r\n".encode()
                               + MESSAGE)
        assert st(resp).startswith(b"OK"), resp

        # bob has no grant on Team: it does not exist for him, whatever he tries
        resp = await bob.cmd('LIST "" "*"')
        assert b"Public/Team" not in joined(resp), resp
        assert b'"/" Public/Announcements\r\n' in joined(resp), resp  # authenticated: lr
        for cmd, code in (("SELECT Public/Team", b"NO [NONEXISTENT]"),
                          ("EXAMINE Public/Team", b"NO [NONEXISTENT]"),
                          ("STATUS Public/Team (MESSAGES)", b"NO [NONEXISTENT]"),
                          ("MYRIGHTS Public/Team", b"NO [NONEXISTENT]"),
                          ("GETACL Public/Team", b"NO [NONEXISTENT]"),
                          ("DELETE Public/Team", b"NO [NONEXISTENT]"),
                          ("SUBSCRIBE Public/Team", b"NO [NONEXISTENT]"),
                          ("SETACL Public/Team bob@example.test lr", b"NO [NONEXISTENT]"),
                          ('SELECT "Other Users/#public/Team"', b"NO [NONEXISTENT]"),
                          ("CREATE Public/Team/Sub", b"NO [NOPERM]"),
                          ("APPEND Public/Team {1+}\r\nx", b"NO [TRYCREATE]")):
            assert st(await bob.cmd(cmd)).startswith(code), cmd
        await bob.cmd(f"APPEND INBOX {{{len(MESSAGE)}+}}\r\n".encode() + MESSAGE)
        await bob.cmd("SELECT INBOX")
        for cmd in ("COPY 1 Public/Team", "MOVE 1 Public/Team"):
            assert st(await bob.cmd(cmd)).startswith(b"NO [TRYCREATE]"), cmd
        # Announcements: bob reads (read-only: no rights to change anything)
        resp = await bob.cmd("SELECT Public/Announcements")
        assert b"* 1 EXISTS" in joined(resp) and b"[READ-ONLY]" in joined(resp), resp
        resp = await bob.cmd("FETCH 1 BODY[TEXT]")
        assert b"Body text line one." in joined(resp), resp
        resp = await bob.cmd(f"APPEND Public/Announcements {{{len(MESSAGE)}+}}\r\n".encode()
                             + MESSAGE)
        assert st(resp).startswith(b"NO [NOPERM]"), resp

        # nobody logs in as the holder
        resp = await bob.cmd('LOGIN "#public" "!"')
        assert st(resp).startswith(b"NO") or st(resp).startswith(b"BAD"), resp

        # the admin deletes the folder: gone for alice too
        assert await run(monkeypatch, config, "acl", "delete-public", "Team") == 0
        await alice.cmd("UNSELECT")
        resp = await alice.cmd("SELECT Public/Team")
        assert st(resp).startswith(b"NO [NONEXISTENT]"), resp
