"""NOTIFY's MessageNew with fetch attributes (RFC 5465 §5.2) and its METADATA events
(§5.6 MailboxMetadataChange, §5.7 ServerMetadataChange), and the unsolicited METADATA
responses of ENABLE METADATA (RFC 5464 §4.1, §4.4.2): the grammar without sockets, then
transcripts over real sockets where a second session, or a second store instance as
another worker process would, makes the change."""

from __future__ import annotations

import re

import pytest

from pochta.proto.imap.framer import RawCommand
from pochta.proto.imap.notify import parse_notify
from pochta.proto.imap.parser import ParseError, Reader
from pochta.storage.factory import open_store
from pochta.storage.interfaces import Envelope, LocalTarget
from tests.conftest import Instance, Server
from tests.imap.helpers import MESSAGE, Client, connect, joined, st


def _reader(text: str) -> Reader:
    r = Reader(RawCommand((b"a NOTIFY " + text.encode(),), ()))
    r.tag()
    r.sp()
    r.atom()
    r.sp()
    return r


def test_messagenew_fetch_attributes_grammar() -> None:
    # RFC 5465 §3.1's example, in the §8 grammar (events in parentheses)
    spec = parse_notify(_reader(
        "SET STATUS (selected (MessageNew (uid body.peek[header.fields (from to subject)]) "
        "MessageExpunge)) (subtree Lists (MessageNew MessageExpunge))"))
    assert spec is not None
    assert [a.name for a in spec.fetch] == ["UID", "BODY"]
    assert spec.fetch[1].headers == ("from", "to", "subject") and spec.fetch[1].peek
    # a notification never sets \Seen: BODY[] is taken as BODY.PEEK[]
    spec = parse_notify(_reader("SET (selected (MessageNew (FLAGS BODY[]) MessageExpunge))"))
    assert spec is not None and all(not a.sets_seen for a in spec.fetch)
    # fetch attributes outside SELECTED mean nothing (STATUS tells of new mail there)
    spec = parse_notify(_reader("SET (personal (MessageNew (UID) MessageExpunge))"))
    assert spec is not None and spec.fetch == ()
    spec = parse_notify(_reader(
        "SET (personal (MailboxMetadataChange)) (mailboxes INBOX (ServerMetadataChange))"))
    assert spec is not None and spec.wants_metadata and spec.server_metadata
    for bad in (
        "SET (selected (MailboxName))",  # §6.1: message events only
        "SET (selected (MessageNew))",  # §5: MessageNew and MessageExpunge together
        "SET (selected (FlagChange))",  # §5: FlagChange needs both
        "SET (selected (MessageNew MessageExpunge)) (selected-delayed NONE)",  # §6.1
        "SET (selected (MessageNew (NOSUCHATT) MessageExpunge))",
        "SET (selected (MessageNew () MessageExpunge))",
    ):
        with pytest.raises(ParseError):
            parse_notify(_reader(bad))


async def _until(c: Client, pattern: bytes, timeout: float = 5.0) -> bytes:
    got = b""
    while not re.search(pattern, got, re.S):
        got += await c.line(timeout)
    return got


async def _append(c: Client, box: str, message: bytes = MESSAGE) -> list[bytes]:
    return await c.cmd(f"APPEND {box} {{{len(message)}+}}\r\n".encode() + message)


HEADER = (b"From: Bob <bob@example.test>\r\nTo: Alice <alice@example.test>\r\n"
          b"Subject: Hello there\r\n\r\n")


async def test_messagenew_fetch_in_idle(imap_server: Server, instance: Instance) -> None:
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await other.login()
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("NOTIFY SET (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS "
                           "(From To Subject)]) MessageExpunge)) (personal (MessageNew "
                           "MessageExpunge))")
        assert st(resp) == b"OK NOTIFY completed\r\n", resp
        c.send(b"i1 IDLE\r\n")
        assert (await c.line()).startswith(b"+ ")
        # another session's APPEND: EXISTS, then the FETCH the client asked for (§5.2)
        await _append(other, "INBOX")
        got = await _until(c, rb"\* 1 FETCH .*\)\r\n")
        assert got == (b"* 1 EXISTS\r\n* 1 RECENT\r\n"
                       b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (FROM TO SUBJECT)] {%d}\r\n"
                       % len(HEADER) + HEADER + b")\r\n"), got
        # a delivery by a second store instance (another worker process)
        second = await open_store(instance.config())
        try:
            account = await second.get_account("alice@example.test")
            assert account is not None
            await second.accept(MESSAGE.replace(b"Hello there", b"Second"),
                                Envelope(sender="x@example.net"),
                                [LocalTarget(account.id, "INBOX", frozenset(), None)])
        finally:
            await second.close()
        got = await _until(c, rb"\* 2 FETCH .*\)\r\n")
        assert b"* 2 EXISTS\r\n" in got and b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS" in got
        assert b"Subject: Second\r\n" in got, got
        c.send(b"DONE\r\n")
        await _until(c, rb"i1 OK")
        # its own APPEND and COPY: the client knows those, no FETCH (§5.2)
        resp = await _append(c, "INBOX")
        assert b"* 3 EXISTS\r\n" in joined(resp) and b"FETCH" not in joined(resp), resp
        resp = await c.cmd("UID COPY 1 INBOX")
        assert b"* 4 EXISTS\r\n" in joined(resp) and b"FETCH" not in joined(resp), resp
        # NOTIFY NONE: new messages get their EXISTS only
        await c.cmd("NOTIFY NONE")
        await _append(other, "INBOX")
        resp = await c.cmd("NOOP")
        assert b"* 5 EXISTS" in joined(resp) and b"FETCH" not in joined(resp), resp


async def test_messagenew_fetch_never_sets_seen(imap_server: Server) -> None:
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await other.login()
        await c.cmd("SELECT INBOX")
        # BODY[] (not PEEK) in a notification: the body, but \Seen stays unset
        resp = await c.cmd("NOTIFY SET (selected (MessageNew (FLAGS BODY[TEXT]) "
                           "MessageExpunge))")
        assert st(resp).startswith(b"OK"), resp
        await _append(other, "INBOX")
        resp = await c.cmd("NOOP")
        text = joined(resp)
        assert (b"* 1 FETCH (UID 1 FLAGS (\\Recent) BODY[TEXT] {21}\r\n"
                b"Body text line one.\r\n)\r\n") in text, text
        resp = await c.cmd("FETCH 1 FLAGS")
        assert b"\\Seen" not in joined(resp), resp
        # accumulated changes come with NOTIFY SET's own reply (an implicit NOOP, §3.1)
        await _append(other, "INBOX")
        resp = await c.cmd("NOTIFY SET (selected (MessageNew (UID) MessageExpunge))")
        assert resp[0] == b"* 2 EXISTS\r\n", resp
        assert b"* 2 FETCH (UID 2)\r\n" in joined(resp), resp
        # SELECTED with a mailbox event is a BAD (§6.1); an unknown attribute too
        resp = await c.cmd("NOTIFY SET (selected (MailboxName))")
        assert st(resp).startswith(b"BAD"), resp
        resp = await c.cmd("NOTIFY SET (selected (MessageNew (FOO) MessageExpunge))")
        assert st(resp).startswith(b"BAD"), resp


async def test_metadata_events_in_idle(imap_server: Server, instance: Instance) -> None:
    async with connect(imap_server) as c, connect(imap_server) as other, \
            connect(imap_server) as bob:
        await c.login()
        await other.login()
        await bob.login("bob@example.test", "bob-pass")
        await c.cmd("CREATE Lists")
        resp = await c.cmd("NOTIFY SET (personal (MailboxMetadataChange "
                           "ServerMetadataChange))")
        assert st(resp).startswith(b"OK"), resp
        c.send(b"i1 IDLE\r\n")
        assert (await c.line()).startswith(b"+ ")
        # §5.6: another session sets an entry: its name, without the value (RFC 5464 §4.4.2)
        await other.cmd('SETMETADATA Lists (/shared/comment "team list")')
        assert await c.line() == b"* METADATA Lists /shared/comment\r\n"
        await other.cmd('SETMETADATA INBOX (/private/comment "mine" /shared/x "y")')
        assert await c.line() == b"* METADATA INBOX /private/comment /shared/x\r\n"
        # a deleted entry is named too
        await other.cmd("SETMETADATA Lists (/shared/comment NIL)")
        assert await c.line() == b"* METADATA Lists /shared/comment\r\n"
        # §5.7: server entries
        await other.cmd('SETMETADATA "" (/private/vendor/x "1")')
        assert await c.line() == b'* METADATA "" /private/vendor/x\r\n'
        # bob's private entries on his own mailboxes are none of alice's business
        await bob.cmd('SETMETADATA INBOX (/private/comment "bob")')
        await bob.cmd('SETMETADATA "" (/private/comment "bob")')
        # a second store instance (another worker) writes: seen at the next poll (5 s)
        second = await open_store(instance.config())
        try:
            account = await second.get_account("alice@example.test")
            assert account is not None
            box = await second.get_mailbox(account.id, "Lists")
            assert box is not None
            await second.set_metadata(account.id, box.id, {"/shared/color": b"red"})
        finally:
            await second.close()
        got = await _until(c, rb"\* METADATA Lists /shared/color\r\n", timeout=12)
        assert got == b"* METADATA Lists /shared/color\r\n", got  # nothing of bob's
        c.send(b"DONE\r\n")
        await _until(c, rb"i1 OK")
        # the session's own change is not told back to it (RFC 5465 §5)
        resp = await c.cmd('SETMETADATA Lists (/shared/comment "again")')
        assert len(resp) == 1 and st(resp).startswith(b"OK"), resp
        resp = await c.cmd("NOOP")
        assert b"METADATA" not in joined(resp), resp
        # NOTIFY NONE: quiet
        await c.cmd("NOTIFY NONE")
        await other.cmd('SETMETADATA Lists (/shared/comment "quiet")')
        resp = await c.cmd("NOOP")
        assert b"METADATA" not in joined(resp), resp


async def test_enable_metadata_unsolicited(imap_server: Server) -> None:
    async with connect(imap_server) as c, connect(imap_server) as plain, \
            connect(imap_server) as other:
        for client in (c, plain, other):
            await client.login()
        await c.cmd("CREATE Lists")
        resp = await c.cmd("ENABLE METADATA")
        assert resp[0] == b"* ENABLED METADATA\r\n", resp
        await c.cmd("SELECT INBOX")
        await plain.cmd("SELECT INBOX")
        # RFC 5464 §4.4.2: the selected mailbox's and the server's entries, names only
        await other.cmd('SETMETADATA INBOX (/shared/comment "hello")')
        await other.cmd('SETMETADATA Lists (/shared/comment "not selected")')
        await other.cmd('SETMETADATA "" (/private/vendor/motd "hi")')  # same account
        resp = await c.cmd("NOOP")
        assert resp[:-1] == [b'* METADATA "" /private/vendor/motd\r\n',
                             b"* METADATA INBOX /shared/comment\r\n"], resp
        # only after ENABLE (§4.1)
        resp = await plain.cmd("NOOP")
        assert b"METADATA" not in joined(resp), resp
        # in IDLE at once
        c.send(b"i1 IDLE\r\n")
        assert (await c.line()).startswith(b"+ ")
        await other.cmd("SETMETADATA INBOX (/shared/comment NIL)")
        assert await c.line() == b"* METADATA INBOX /shared/comment\r\n"
        c.send(b"DONE\r\n")
        await _until(c, rb"i1 OK")


async def test_messagenew_fetch_of_a_big_message_is_streamed(imap_server: Server) -> None:
    """Above 1 MiB the FETCH literals come from the store in chunks, as FETCH's do."""
    big = MESSAGE + b"".join(b"line %07d of a long body\r\n" % n for n in range(60000))
    assert len(big) > 1 << 20
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await other.login()
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("NOTIFY SET (selected (MessageNew (RFC822.SIZE BODY.PEEK[]) "
                           "MessageExpunge))")
        assert st(resp).startswith(b"OK"), resp
        await _append(other, "INBOX", big)
        resp = await c.cmd("NOOP", timeout=20)
        head = b"* 1 FETCH (UID 1 RFC822.SIZE %d BODY[] {%d}\r\n" % (len(big), len(big))
        assert joined(resp).startswith(b"* 1 EXISTS\r\n* 1 RECENT\r\n" + head + big + b")\r\n"), \
            joined(resp)[:300]


async def test_unsolicited_metadata_of_shared_and_public_mailboxes(
        imap_server: Server, instance: Instance, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENABLE METADATA for a selected mailbox of another account (shared by ACL) and a
    public folder: the owner's /shared changes are told to the reader (RFC 5464 §4.4.2);
    nothing at the SELECT itself, and nothing for a mailbox not selected."""
    from tests.conftest import storage_toml
    from tests.imap.test_acl_cli import run

    config = instance.dir / "pochta.toml"
    config.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\n'
                      f'[tls]\ncert = "{instance.cert}"\nkey = "{instance.key}"\n'
                      + storage_toml(instance.raw_config.get("storage", {})))
    for argv in (("acl", "create-public", "Notes"),
                 ("acl", "set", "public", "Notes", "alice@example.test", "lrw"),
                 ("acl", "set", "public", "Notes", "bob@example.test", "lr")):
        assert await run(monkeypatch, config, *argv) == 0, argv
    shared = '"Other Users/alice@example.test/INBOX"'
    async with connect(imap_server) as alice, connect(imap_server) as bob:
        await alice.login()
        await bob.login("bob@example.test", "bob-pass")
        await alice.cmd('SETMETADATA INBOX (/shared/comment "before")')
        assert st(await alice.cmd("SETACL INBOX bob@example.test lr")).startswith(b"OK")
        assert (await bob.cmd("ENABLE METADATA"))[0] == b"* ENABLED METADATA\r\n"
        resp = await bob.cmd(f"SELECT {shared}")
        assert st(resp).startswith(b"OK") and b"METADATA" not in joined(resp), resp
        await alice.cmd('SETMETADATA INBOX (/shared/comment "after")')
        await alice.cmd('SETMETADATA INBOX (/private/comment "alice only")')
        resp = await bob.cmd("NOOP")
        assert resp[:-1] == [b"* METADATA " + shared.encode() + b" /shared/comment\r\n"], resp
        # the public folder, the same way; then a change where bob is not looking
        resp = await bob.cmd("SELECT Public/Notes")
        assert b"METADATA" not in joined(resp), resp
        resp = await alice.cmd('SETMETADATA Public/Notes (/shared/comment "team notes")')
        assert st(resp).startswith(b"OK"), resp
        await alice.cmd('SETMETADATA INBOX (/shared/comment "unseen")')
        resp = await bob.cmd("NOOP")
        assert resp[:-1] == [b"* METADATA Public/Notes /shared/comment\r\n"], resp


async def test_notify_metadata_of_a_shared_mailbox(imap_server: Server) -> None:
    """NOTIFY naming another account's mailbox shared with the user (mailboxes "Other
    Users/..."): its /shared changes are told (RFC 5465 §5.6), not the owner's /private."""
    shared = '"Other Users/alice@example.test/INBOX"'
    async with connect(imap_server) as alice, connect(imap_server) as bob:
        await alice.login()
        await bob.login("bob@example.test", "bob-pass")
        assert st(await alice.cmd("SETACL INBOX bob@example.test lr")).startswith(b"OK")
        resp = await bob.cmd(f"NOTIFY SET (mailboxes {shared} (MailboxMetadataChange))")
        assert st(resp).startswith(b"OK"), resp
        await alice.cmd('SETMETADATA INBOX (/shared/comment "hello")')
        await alice.cmd('SETMETADATA INBOX (/private/comment "alice only")')
        resp = await bob.cmd("NOOP")
        assert resp[:-1] == [b"* METADATA " + shared.encode() + b" /shared/comment\r\n"], resp
