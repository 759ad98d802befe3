"""NOTIFY (RFC 5465) over real sockets: initial STATUS, new / expunged / flag-changed
messages in other mailboxes while IDLE (also when a second store instance, as another
worker process, writes), MailboxName and SubscriptionChange, NONE, BADEVENT."""

from __future__ import annotations

import re

import pytest

from pochta.proto.imap.notify import BadEvent, parse_notify
from pochta.proto.imap.parser import ParseError, Reader
from pochta.storage.factory import open_store
from pochta.storage.interfaces import Envelope, LocalTarget
from tests.conftest import Instance, Server
from tests.imap.helpers import MESSAGE, Client, connect, joined, st


def _reader(text: str) -> Reader:
    from pochta.proto.imap.framer import RawCommand
    r = Reader(RawCommand((b"a NOTIFY " + text.encode(),), ()))
    r.tag()
    r.sp()
    r.atom()
    r.sp()
    return r


def test_rfc5465_grammar() -> None:
    spec = parse_notify(_reader(
        "SET STATUS (selected (MessageNew MessageExpunge)) (subtree Lists (MessageNew "
        "MessageExpunge FlagChange)) (mailboxes (A B) NONE) (personal (MailboxName "
        "SubscriptionChange))"))
    assert spec is not None and spec.status
    assert [g.filter for g in spec.groups] == ["SELECTED", "SUBTREE", "MAILBOXES", "PERSONAL"]
    assert spec.for_mailbox("Lists/x", inbox=False, subscribed=False) == {
        "MessageNew", "MessageExpunge", "FlagChange"}
    assert spec.for_mailbox("A", inbox=False, subscribed=False) == frozenset()
    assert spec.for_mailbox("Other", inbox=False, subscribed=False) == {
        "MailboxName", "SubscriptionChange"}
    assert parse_notify(_reader("NONE")) is None
    with pytest.raises(BadEvent):
        parse_notify(_reader("SET (personal (AnnotationChange))"))
    for bad in ("SET", "SET (nowhere (MessageNew))", "SET (personal (Nothing))",
                "SET (personal MessageNew)"):
        with pytest.raises(ParseError):
            parse_notify(_reader(bad))


async def _append(c: Client, box: str) -> None:
    await c.cmd(f"APPEND {box} {{{len(MESSAGE)}+}}\r\n".encode() + MESSAGE)


async def _until(c: Client, pattern: bytes, timeout: float = 5.0) -> bytes:
    got = b""
    while not re.search(pattern, got):
        got += await c.line(timeout)
    return got


async def test_notify_in_idle_and_at_commands(imap_server: Server, instance: Instance
                                              ) -> None:
    async with connect(imap_server) as c, connect(imap_server) as other:
        await c.login()
        await other.login()
        assert b" NOTIFY" in (await c.cmd("CAPABILITY"))[0]
        await c.cmd("CREATE Lists")
        await _append(c, "Lists")
        resp = await c.cmd("NOTIFY SET STATUS (selected (MessageNew MessageExpunge)) "
                           "(subtree Lists (MessageNew MessageExpunge FlagChange)) "
                           "(personal (MailboxName SubscriptionChange))")
        assert resp[0].startswith(b"* STATUS Lists (MESSAGES 1 UIDNEXT 2 UIDVALIDITY "), resp
        assert st(resp) == b"OK NOTIFY completed\r\n"
        await c.cmd("SELECT INBOX")
        # a new message elsewhere arrives during IDLE, at once
        c.send(b"i1 IDLE\r\n")
        assert (await c.line()).startswith(b"+ ")
        await _append(other, "Lists")
        await _until(c, rb"\* STATUS Lists \(MESSAGES 2 UIDNEXT 3 UIDVALIDITY \d+\)")
        # a second store instance (another worker process) writes: seen by its notifier
        second = await open_store(instance.config())
        try:
            box = await second.get_mailbox(
                (await second.get_account("alice@example.test")).id,  # type: ignore[union-attr]
                "Lists")
            assert box is not None
            await second.accept(MESSAGE, Envelope(sender="x@example.net"),
                                [LocalTarget(box.account_id, "Lists", frozenset(), None)])
        finally:
            await second.close()
        await _until(c, rb"\* STATUS Lists \(MESSAGES 3 UIDNEXT 4 UIDVALIDITY \d+\)")
        # flags changed there: HIGHESTMODSEQ
        await other.cmd("SELECT Lists")
        await other.cmd("STORE 1 +FLAGS (\\Flagged)")
        await _until(c, rb"\* STATUS Lists \(UIDVALIDITY \d+ HIGHESTMODSEQ \d+\)")
        c.send(b"DONE\r\n")
        await _until(c, rb"i1 OK")
        # expunge there, reported at the next command
        await other.cmd("STORE 1:2 +FLAGS (\\Deleted)")
        await other.cmd("EXPUNGE")
        text = joined(await c.cmd("NOOP"))
        assert re.search(rb"\* STATUS Lists \(MESSAGES 1 UIDNEXT 4 UIDVALIDITY \d+\)", text)
        # mailbox names and subscriptions (PERSONAL)
        await other.cmd("CREATE Projects")
        await other.cmd("SUBSCRIBE Projects")
        text = joined(await c.cmd("NOOP"))
        assert b'* LIST () "/" Projects\r\n' in text, text
        assert b'* LIST (\\Subscribed) "/" Projects\r\n' in text, text
        await other.cmd("RENAME Projects Done")
        text = joined(await c.cmd("NOOP"))
        assert b'* LIST () "/" Done ("OLDNAME" (Projects))\r\n' in text, text
        await other.cmd("DELETE Done")
        text = joined(await c.cmd("NOOP"))
        assert b'* LIST (\\NonExistent) "/" Done\r\n' in text, text
        # the selected mailbox keeps its own responses, no STATUS for it
        await _append(other, "INBOX")
        text = joined(await c.cmd("NOOP"))
        assert b"* 1 EXISTS" in text and b"STATUS INBOX" not in text, text
        # NONE: quiet again
        assert st(await c.cmd("NOTIFY NONE")).startswith(b"OK")
        await _append(other, "Lists")
        await other.cmd("CREATE Quiet")
        text = joined(await c.cmd("NOOP"))
        assert b"STATUS" not in text and b"LIST" not in text, text
        resp = await c.cmd("NOTIFY SET (personal (AnnotationChange))")
        assert st(resp).startswith(b"NO [BADEVENT (MessageNew MessageExpunge FlagChange "
                                   b"MailboxName SubscriptionChange MailboxMetadataChange "
                                   b"ServerMetadataChange)]"), resp
