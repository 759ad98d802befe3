"""Public folders (RFC 2342's shared namespace, ``Public/``): made by an admin with
``pochta acl create-public``, owned by no account, readable and writable over IMAP by
exactly the identifiers granted rights (RFC 4314), invisible to everyone else."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import Instance, Server, start_instance, storage_toml
from tests.imap.helpers import MESSAGE, PLAIN_LISTENERS, connect, joined, st
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


async def test_mail_to_a_public_folder(
        instance: Instance, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An alias whose target is a public folder (``public:Team``) delivers into it over
    SMTP, to the senders its ACL grants ``p`` (RFC 4314 §2.1): ``anyone`` for mail from
    anywhere, the account or ``authenticated`` after AUTH; a granted reader in IDLE sees
    the arrival. Without ``p`` the RCPT is refused (550 5.7.1), or, for an alias that
    also names people, only they get the message."""
    import smtplib

    imap_server = await start_instance(instance, listeners=[
        *PLAIN_LISTENERS,
        {"role": "submission", "port": 0, "tls": "implicit", "address": "127.0.0.1"}])
    try:
        await _public_folder_mail(instance, imap_server, monkeypatch, capsys, smtplib)
    finally:
        await imap_server.running.close(grace=1.0)
        await imap_server.store.close()


async def _public_folder_mail(instance: Instance, imap_server: Server,
                              monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str], smtplib: Any) -> None:
    config = instance.dir / "pochta.toml"
    config.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\n'
                      f'[tls]\ncert = "{instance.cert}"\nkey = "{instance.key}"\n'
                      + storage_toml(instance.raw_config.get("storage", {})))

    async def cli(*argv: str) -> int:
        return await run(monkeypatch, config, *argv)

    assert await cli("acl", "create-public", "Team") == 0
    assert await cli("acl", "set", "public", "Team", "alice@example.test", "lrs") == 0
    assert await cli("alias", "add", "team@example.test", "public:team") == 0
    assert await cli("alias", "add", "all@example.test", "public:Team",
                     "bob@example.test") == 0
    assert await cli("alias", "add", "nope@example.test", "public:Nope") == 1
    capsys.readouterr()
    assert await cli("alias", "list") == 0
    listed = capsys.readouterr().out
    assert "team@example.test -> public:team\n" in listed, listed
    assert "all@example.test -> public:team, bob@example.test\n" in listed, listed

    def send(to: str, subject: str, login: str | None = None) -> None:
        msg = (f"From: {login or 'carol@remote.test'}\r\nTo: {to}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject}@remote.test>\r\n\r\nhello team\r\n").encode()
        if login is None:
            with smtplib.SMTP(imap_server.host, imap_server.port("mta"), timeout=10) as s:
                s.sendmail("carol@remote.test", [to], msg)
            return
        with smtplib.SMTP_SSL(imap_server.host, imap_server.port("submission", "implicit"),
                              timeout=10, context=imap_server.client_ssl()) as s:
            s.login(login, login.split("@")[0] + "-pass")
            s.sendmail(login, [to], msg)

    # nobody may post yet: the folder's address is refused, the mixed alias reaches bob
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await asyncio.to_thread(send, "team@example.test", "first")
    code, text = refused.value.recipients["team@example.test"]
    assert code == 550 and text.startswith(b"5.7.1"), (code, text)
    await asyncio.to_thread(send, "all@example.test", "mixed")

    async with connect(imap_server) as alice, connect(imap_server) as bob:
        await alice.login()
        await bob.login("bob@example.test", "bob-pass")
        resp = await bob.cmd("SELECT INBOX")
        assert b"* 1 EXISTS" in joined(resp), resp  # "mixed": bob only
        resp = await alice.cmd("SELECT Public/Team")
        assert b"* 0 EXISTS" in joined(resp), resp

        # mail from anywhere, once anyone may post; alice, in IDLE, sees it come
        assert await cli("acl", "set", "public", "Team", "anyone", "p") == 0
        alice.send(b"i IDLE\r\n")
        assert (await alice.line()).startswith(b"+ ")
        await asyncio.to_thread(send, "team@example.test", "second")
        assert await alice.line(timeout=5.0) == b"* 1 EXISTS\r\n"
        await alice.line()  # (* 1 RECENT)
        alice.send(b"DONE\r\n")
        assert (await alice.read_response("i"))[-1].startswith(b"i OK")
        resp = await alice.cmd("FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)])")
        assert b"Subject: second" in joined(resp), resp

        # only authenticated senders: port 25 is refused, bob's submission is taken
        assert await cli("acl", "delete", "public", "Team", "anyone") == 0
        assert await cli("acl", "set", "public", "Team", "authenticated", "p") == 0
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await asyncio.to_thread(send, "team@example.test", "third")
        await asyncio.to_thread(send, "team@example.test", "fourth", "bob@example.test")
        assert b"* 2 EXISTS" in joined(await alice.cmd("NOOP"))
        resp = await alice.cmd("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (Subject)])")
        assert b"Subject: fourth" in joined(resp) and b"Subject: third" not in joined(resp)
        # the folder kept nobody's INBOX copy: bob's mailbox has only "mixed"
        resp = await bob.cmd("STATUS INBOX (MESSAGES)")
        assert b"(MESSAGES 1)" in joined(resp), resp
        # a group (proto/imap/acl.py): the alias "all" lists bob, so bob may post and
        # alice, granted lrs but not in the group, may not
        assert await cli("acl", "delete", "public", "Team", "authenticated") == 0
        assert await cli("acl", "set", "public", "Team", "all@example.test", "p") == 0
        await asyncio.to_thread(send, "team@example.test", "group", "bob@example.test")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await asyncio.to_thread(send, "team@example.test", "not-in-it", "alice@example.test")
        assert b"* 3 EXISTS" in joined(await alice.cmd("NOOP"))
        resp = await alice.cmd("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (Subject)])")
        assert b"Subject: group" in joined(resp) and b"not-in-it" not in joined(resp), resp

    # the folder deleted: its address is unknown, the mixed alias still reaches bob
    assert await cli("acl", "delete-public", "Team") == 0
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await asyncio.to_thread(send, "team@example.test", "fifth")
    code, text = refused.value.recipients["team@example.test"]
    assert code == 550 and text.startswith(b"5.1.1"), (code, text)
    await asyncio.to_thread(send, "all@example.test", "sixth")


async def test_metadata_on_shared_and_public_folders(
        instance: Instance, imap_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """GETMETADATA/SETMETADATA (RFC 5464) on a public folder and on another user's shared
    mailbox, gated by the ACL (§3.3): reading needs ``r``, a ``/private`` entry (the
    user's own, unseen by others) ``r``, a ``/shared`` entry ``w``; a mailbox the user
    may not know of stays NONEXISTENT."""
    config = instance.dir / "pochta.toml"
    config.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\n'
                      f'[tls]\ncert = "{instance.cert}"\nkey = "{instance.key}"\n'
                      + storage_toml(instance.raw_config.get("storage", {})))
    for argv in (("acl", "create-public", "Notes"),
                 ("acl", "set", "public", "Notes", "alice@example.test", "lrw"),
                 ("acl", "set", "public", "Notes", "bob@example.test", "lr"),
                 ("acl", "set", "alice@example.test", "INBOX", "bob@example.test", "l")):
        assert await run(monkeypatch, config, *argv) == 0, argv
    async with connect(imap_server) as alice, connect(imap_server) as bob:
        await alice.login()
        await bob.login("bob@example.test", "bob-pass")
        resp = await alice.cmd('SETMETADATA Public/Notes (/shared/comment "team notes")')
        assert st(resp).startswith(b"OK"), resp
        resp = await bob.cmd("GETMETADATA Public/Notes (/shared/comment)")
        assert b'* METADATA Public/Notes (/shared/comment "team notes")' in joined(resp), resp
        resp = await bob.cmd('SETMETADATA Public/Notes (/shared/comment "mine now")')
        assert st(resp).startswith(b"NO [NOPERM]"), resp
        resp = await bob.cmd('SETMETADATA Public/Notes (/private/comment "read later")')
        assert st(resp).startswith(b"OK"), resp
        resp = await bob.cmd("GETMETADATA Public/Notes (/private/comment /shared/comment)")
        assert b'/private/comment "read later"' in joined(resp), resp
        assert b'/shared/comment "team notes"' in joined(resp), resp
        resp = await alice.cmd("GETMETADATA Public/Notes (/private/comment)")
        assert b"* METADATA" not in joined(resp) and st(resp).startswith(b"OK"), resp
        # alice's INBOX: bob may list it (l) but not read it (no r)
        resp = await bob.cmd('GETMETADATA "Other Users/alice@example.test/INBOX" '
                             "(/shared/comment)")
        assert st(resp).startswith(b"NO [NOPERM]"), resp
        resp = await bob.cmd('GETMETADATA "Other Users/alice@example.test/Sent" '
                             "(/shared/comment)")
        assert st(resp).startswith(b"NO [NONEXISTENT]"), resp


async def test_notify_on_shared_and_public_folders(
        instance: Instance, imap_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """NOTIFY (RFC 5465) names another user's shared mailbox or a public folder with
    ``mailboxes`` or ``subtree`` (``personal`` is the user's own namespace only, §6), and
    reports their new messages as STATUS when the user may read them (``r``)."""
    config = instance.dir / "pochta.toml"
    config.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\n'
                      f'[tls]\ncert = "{instance.cert}"\nkey = "{instance.key}"\n'
                      + storage_toml(instance.raw_config.get("storage", {})))
    for argv in (("acl", "create-public", "Team"),
                 ("acl", "set", "public", "Team", "alice@example.test", "lrswi"),
                 ("acl", "set", "public", "Team", "bob@example.test", "lr"),
                 ("acl", "create-public", "Hidden"),
                 ("acl", "set", "public", "Hidden", "alice@example.test", "lrswi"),
                 ("acl", "set", "public", "Hidden", "bob@example.test", "l")):
        assert await run(monkeypatch, config, *argv) == 0, argv
    append = f"APPEND Public/{{}} {{{{{len(MESSAGE)}+}}}}\r\n"
    async with connect(imap_server) as alice, connect(imap_server) as bob:
        await alice.login()
        await bob.login("bob@example.test", "bob-pass")
        resp = await bob.cmd("NOTIFY SET STATUS (personal (MessageNew MessageExpunge)) "
                             "(subtree Public (MessageNew MessageExpunge))")
        assert st(resp) == b"OK NOTIFY completed\r\n", resp
        assert b"* STATUS Public/Team (MESSAGES 0 UIDNEXT 1 UIDVALIDITY " in joined(resp)
        assert b"Public/Hidden" not in joined(resp), resp  # l only: no STATUS
        for box in ("Team", "Hidden"):
            resp = await alice.cmd(append.format(box).encode() + MESSAGE)
            assert st(resp).startswith(b"OK"), resp
        resp = await bob.cmd("NOOP")
        assert b"* STATUS Public/Team (MESSAGES 1 UIDNEXT 2 UIDVALIDITY " in joined(resp), resp
        assert b"Public/Hidden" not in joined(resp), resp

        # personal alone does not name a public folder
        resp = await bob.cmd("NOTIFY SET (personal (MessageNew MessageExpunge))")
        assert st(resp) == b"OK NOTIFY completed\r\n", resp
        resp = await alice.cmd(append.format("Team").encode() + MESSAGE)
        resp = await bob.cmd("NOOP")
        assert b"Public/Team" not in joined(resp), resp
