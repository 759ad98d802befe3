"""Mailbox and message commands, several sessions at once, IDLE, CONDSTORE/QRESYNC."""

from __future__ import annotations

import re

from pochta.storage.interfaces import Envelope, LocalTarget
from tests.conftest import Server
from tests.imap.helpers import MESSAGE, Client, connect, joined, st


async def deliver(server: Server, data: bytes = MESSAGE, user: str = "alice@example.test",
                  mailbox: str = "INBOX") -> None:
    account = await server.store.get_account(user)
    assert account is not None
    await server.store.accept(data, Envelope(sender="bob@example.test"),
                              [LocalTarget(account.id, mailbox)])


async def append(c: Client, data: bytes = MESSAGE, mailbox: str = "INBOX",
                 extra: str = "") -> list[bytes]:
    return await c.cmd(f"APPEND {mailbox} {extra}{{{len(data)}+}}\r\n".encode() + data)


async def test_mailbox_management_and_list(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        assert st(await c.cmd("CREATE Work/Projects/")).startswith(b"OK")
        assert st(await c.cmd("CREATE Work/Projects")).startswith(b"NO [ALREADYEXISTS]")
        text = joined(await c.cmd('LIST "" *'))
        assert b'* LIST (\\HasNoChildren) "/" INBOX' in text
        assert b'* LIST (\\HasNoChildren \\Sent) "/" Sent' in text
        assert b'"/" Work/Projects' in text
        text = joined(await c.cmd('LIST "" %'))
        assert b'"/" Work\r\n' in text and b"Work/Projects" not in text
        assert b"\\HasChildren" in text.split(b'"/" Work\r\n')[0].rsplit(b"*", 1)[1]
        text = joined(await c.cmd('LIST "" ""'))
        assert b'* LIST (\\Noselect) "/" ""' in text
        text = joined(await c.cmd('LIST (SPECIAL-USE) "" * RETURN (STATUS (MESSAGES UIDNEXT))'))
        assert b"\\Trash" in text and b"INBOX" not in text
        assert b"* STATUS Trash (MESSAGES 0 UIDNEXT 1)" in text
        assert st(await c.cmd("RENAME Work/Projects Work/Old")).startswith(b"OK")
        assert st(await c.cmd("SUBSCRIBE Work/Old")).startswith(b"OK")
        text = joined(await c.cmd('LSUB "" *'))
        assert b'* LSUB () "/" Work/Old' in text
        text = joined(await c.cmd('LIST (SUBSCRIBED) "" *'))
        assert b"\\Subscribed" in text and b"Work/Old" in text
        assert st(await c.cmd("DELETE Work/Old")).startswith(b"OK")
        assert st(await c.cmd("DELETE INBOX")).startswith(b"NO")
        assert st(await c.cmd("DELETE nosuch")).startswith(b"NO [NONEXISTENT]")
        text = joined(await c.cmd("NAMESPACE"))
        assert b'* NAMESPACE (("" "/")) (("Other Users/" "/")) (("Public/" "/"))' in text
        # non-ASCII names in modified UTF-7 for IMAP4rev1 clients
        assert st(await c.cmd('CREATE "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"')).startswith(b"OK")
        text = joined(await c.cmd('LIST "" "&BB4-*"'))
        assert b"&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-" in text
        await c.cmd("ENABLE UTF8=ACCEPT")
        text = joined(await c.cmd('LIST "" "\u041e*"'))
        assert "Отправленные".encode() in text


async def test_status_append_quota(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        resp = await append(c, extra='(\\Seen $Work) "17-Jul-1996 02:44:25 -0700" ')
        assert re.match(rb"OK \[APPENDUID \d+ 1\]", st(resp))
        await append(c)
        text = joined(await c.cmd("STATUS INBOX (MESSAGES UNSEEN UIDNEXT SIZE DELETED RECENT)"))
        assert b"MESSAGES 2 UNSEEN 1 UIDNEXT 3 SIZE %d DELETED 0 RECENT 2" % (2 * len(MESSAGE)) \
            in text
        assert st(await append(c, mailbox="nosuch")).startswith(b"NO [TRYCREATE]")
        await c.cmd("SELECT INBOX")
        text = joined(await c.cmd("FETCH 1 (FLAGS INTERNALDATE)"))
        assert b'INTERNALDATE "17-Jul-1996 09:44:25 +0000"' in text
        assert b"$Work" in text and b"\\Seen" in text
        binary = b"Subject: bin\r\n\r\n\x00\x01\xff"
        resp = await c.cmd(b"APPEND INBOX ~{%d+}\r\n" % len(binary) + binary)
        assert st(resp).startswith(b"OK [APPENDUID")
        text = joined(await c.cmd("FETCH 3 BINARY.PEEK[1]"))
        assert b"BINARY[1] ~{3}\r\n\x00\x01\xff" in text
        text = joined(await c.cmd("GETQUOTAROOT INBOX"))
        assert b'* QUOTAROOT INBOX ""' in text
        await imap_server.store.update_account("alice@example.test", quota_bytes=1024 * 1024)
        text = joined(await c.cmd('GETQUOTA ""'))
        assert b'* QUOTA "" (STORAGE 0 1024)' in text
        await imap_server.store.update_account("alice@example.test", quota_bytes=100)
        assert st(await append(c)).startswith(b"NO [OVERQUOTA]")


async def test_fetch_store_search_variants(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        for i in range(5):
            await append(c, MESSAGE.replace(b"Hello there", b"Msg %d" % i))
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("STORE 2:3 +FLAGS.SILENT (\\Flagged)")
        assert len(resp) == 1 and st(resp).startswith(b"OK")  # silent: no FETCH
        resp = await c.cmd("UID STORE 4 FLAGS (\\Answered $label)")
        # a new keyword is announced in FLAGS before the FETCH that shows it (§7.3.5)
        assert resp[0].startswith(b"* FLAGS (") and b"$label" in resp[0]
        assert b"UID 4" in resp[2] and b"$label" in resp[2]
        resp = await c.cmd("SEARCH FLAGGED")
        assert resp[0] == b"* SEARCH 2 3\r\n"
        resp = await c.cmd("UID SEARCH RETURN (MIN MAX COUNT ALL) OR FLAGGED ANSWERED")
        assert re.fullmatch(rb'\* ESEARCH \(TAG "t\d+"\) UID MIN 2 MAX 4 ALL 2:4 COUNT 3\r\n',
                            resp[0])
        resp = await c.cmd("SEARCH RETURN (SAVE) SUBJECT \"Msg 4\"")
        assert len(resp) == 1 and st(resp).startswith(b"OK")  # SAVE alone: no ESEARCH
        resp = await c.cmd("FETCH $ (UID)")
        assert resp[0] == b"* 5 FETCH (UID 5)\r\n"
        resp = await c.cmd("FETCH 1 (BODY[]<0.10> BINARY.SIZE[1] BODYSTRUCTURE)")
        text = joined(resp)
        assert b"BODY[]<0> {10}\r\nFrom: Bob " in text and b"BINARY.SIZE[1] 21" in text
        assert b'BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "US-ASCII")' in text
        assert b"FLAGS (\\Recent \\Seen)" in text  # implicit \Seen reported
        resp = await c.cmd("FETCH 1:* FAST")
        assert sum(1 for x in resp if x.startswith(b"* ")) == 5
        resp = await c.cmd("ENABLE IMAP4rev2")
        assert b"* ENABLED IMAP4rev2" in resp[0]
        resp = await c.cmd("SEARCH UNSEEN")
        assert re.fullmatch(rb'\* ESEARCH \(TAG "t\d+"\) ALL 2:5\r\n', resp[0])
        resp = await c.cmd("FETCH 1 FLAGS")
        assert b"\\Recent" not in resp[0]  # IMAP4rev2 has no \Recent
        resp = await c.cmd("FETCH 1 BINARY[1]")
        assert b"BINARY[1] {21}\r\nBody text line one.\r\n" in joined(resp)
        resp = await c.cmd("EXAMINE INBOX")
        assert b"[CLOSED]" in resp[0] and b"READ-ONLY" in resp[-1]
        assert st(await c.cmd("STORE 1 +FLAGS (\\Deleted)")).startswith(b"NO [READ-ONLY]")
        text = joined(await c.cmd("FETCH 2 BODY[TEXT]"))
        assert b"\\Seen" not in text  # EXAMINE never sets \Seen


async def test_copy_move_expunge_uidplus(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        for _ in range(3):
            await append(c)
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("COPY 1:2 Archive")
        assert re.search(rb"OK \[COPYUID \d+ 1:2 1,2\]", st(resp)), resp
        assert st(await c.cmd("COPY 1 nosuch")).startswith(b"NO [TRYCREATE]")
        resp = await c.cmd("UID MOVE 2 Trash")
        text = joined(resp)
        assert re.search(rb"\* OK \[COPYUID \d+ 2 1\]", text)
        assert b"* 2 EXPUNGE" in text and st(resp).startswith(b"OK")
        await c.cmd("STORE 1:2 +FLAGS.SILENT (\\Deleted)")
        resp = await c.cmd("UID EXPUNGE 3")  # only uid 3 (seq 2) goes
        assert resp[0] == b"* 2 EXPUNGE\r\n" and st(resp).startswith(b"OK")
        text = joined(await c.cmd("STATUS Archive (MESSAGES)"))
        assert b"MESSAGES 2" in text
        resp = await c.cmd("CLOSE")
        assert not any(b"EXPUNGE" in x for x in resp)  # CLOSE expunges silently
        text = joined(await c.cmd("STATUS INBOX (MESSAGES)"))
        assert b"MESSAGES 0" in text


async def test_two_sessions_see_each_others_changes(imap_server: Server) -> None:
    async with connect(imap_server) as a, connect(imap_server) as b:
        await a.login()
        await b.login()
        await append(a)
        await append(a)
        await a.cmd("SELECT INBOX")
        text = joined(await b.cmd("SELECT INBOX"))
        assert b"* 2 EXISTS" in text and b"* 0 RECENT" in text  # a claimed \Recent
        await a.cmd("STORE 1 +FLAGS (\\Seen)")
        await deliver(imap_server)
        resp = await b.cmd("NOOP")
        text = joined(resp)
        assert b"* 1 FETCH (UID 1 FLAGS (\\Seen))" in text and b"* 3 EXISTS" in text
        await a.cmd("STORE 2 +FLAGS (\\Deleted)")
        await a.cmd("EXPUNGE")
        # no EXPUNGE during FETCH/STORE/SEARCH (RFC 9051 §7.5.1) ...
        for command in ("FETCH 2 FLAGS", "STORE 3 +FLAGS (x)", "SEARCH ALL"):
            resp = await b.cmd(command)
            assert not any(b"EXPUNGE" in x for x in resp), resp
        # ... until a command that allows it
        resp = await b.cmd("NOOP")
        assert b"* 2 EXPUNGE\r\n" in resp
        text = joined(await b.cmd("FETCH 1:* UID"))
        assert b"* 2 FETCH (UID 3)" in text


async def test_idle_gets_new_mail_within_a_second(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        await c.login()
        await c.cmd("SELECT INBOX")
        c.send(b"i IDLE\r\n")
        assert (await c.line()).startswith(b"+ ")
        await deliver(imap_server)
        line = await c.line(timeout=1.0)
        assert line == b"* 1 EXISTS\r\n"
        assert (await c.line(timeout=1.0)) == b"* 1 RECENT\r\n"
        await deliver(imap_server)
        assert await c.line(timeout=1.0) == b"* 2 EXISTS\r\n"
        await c.line()
        c.send(b"DONE\r\n")
        assert (await c.read_response("i"))[-1].startswith(b"i OK")
        assert st(await c.cmd("NOOP")).startswith(b"OK")


async def test_idle_sees_flags_and_expunge_from_another_session(imap_server: Server) -> None:
    await deliver(imap_server)
    await deliver(imap_server)
    async with connect(imap_server) as a, connect(imap_server) as b:
        await a.login()
        await b.login()
        await a.cmd("SELECT INBOX")
        await b.cmd("SELECT INBOX")
        b.send(b"i IDLE\r\n")
        await b.line()
        await a.cmd("STORE 2 +FLAGS (\\Flagged)")
        assert b"\\Flagged" in await b.line(timeout=1.0)
        await a.cmd("STORE 1 +FLAGS (\\Deleted)")
        await a.cmd("EXPUNGE")
        lines = [await b.line(timeout=1.0), await b.line(timeout=1.0)]
        assert b"* 1 EXPUNGE\r\n" in lines
        b.send(b"DONE\r\n")
        await b.read_response("i")


async def test_condstore_and_qresync(imap_server: Server) -> None:
    for _ in range(3):
        await deliver(imap_server)
    async with connect(imap_server) as c:
        await c.login()
        resp = await c.cmd("SELECT INBOX (CONDSTORE)")
        m = re.search(rb"HIGHESTMODSEQ (\d+)", joined(resp))
        assert m
        hms = int(m.group(1))
        text = joined(await c.cmd(f"STORE 1 (UNCHANGEDSINCE {hms}) +FLAGS (\\Seen)"))
        assert b"MODSEQ (" in text
        resp = await c.cmd(f"STORE 1 (UNCHANGEDSINCE {hms}) +FLAGS (\\Flagged)")
        assert st(resp).startswith(b"OK [MODIFIED 1]")
        resp = await c.cmd(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})")
        fetches = [x for x in resp if x.startswith(b"* ")]
        assert len(fetches) == 1 and b"MODSEQ" in fetches[0]
        resp = await c.cmd(f"SEARCH MODSEQ {hms + 1}")
        assert resp[0].startswith(b"* SEARCH 1 (MODSEQ ")
        await c.cmd("STORE 2 +FLAGS (\\Deleted)")
        await c.cmd("EXPUNGE")
        await c.cmd("LOGOUT")
    async with connect(imap_server) as c:
        await c.login()
        await c.cmd("ENABLE QRESYNC")
        uidvalidity = (await imap_server.store.get_mailbox(1, "INBOX"))
        assert uidvalidity is not None
        resp = await c.cmd(f"SELECT INBOX (QRESYNC ({uidvalidity.uidvalidity} {hms} 1:3))")
        text = joined(resp)
        assert b"* VANISHED (EARLIER) 2\r\n" in text
        assert b"FETCH (UID 1 FLAGS (\\Seen) MODSEQ" in text
        resp = await c.cmd(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hms} VANISHED)")
        assert b"* VANISHED (EARLIER) 2\r\n" in resp
        await deliver(imap_server)
        resp = await c.cmd("STORE 1 +FLAGS (\\Deleted)")
        assert b"* 3 EXISTS\r\n" in resp  # 2 left after the expunge, plus the new one
        resp = await c.cmd("EXPUNGE")
        assert resp[0] == b"* VANISHED 1\r\n" and st(resp).startswith(b"OK [HIGHESTMODSEQ")
