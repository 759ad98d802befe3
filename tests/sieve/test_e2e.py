"""End to end: scripts uploaded over ManageSieve (real sockets, STARTTLS, SASL) decide
where SMTP deliveries go: a list into a folder, a flag, a reject at DATA time, vacation
replies once to a person and never to a list or <>; bad scripts get clear errors and
mail keeps flowing."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pochta.storage.interfaces import QueueState
from tests.conftest import Instance, Server, start_instance
from tests.e2e.smtpclient import RawClient
from tests.sieve.msclient import MSClient

LISTENERS = [
    {"role": "mta", "port": 0, "tls": "starttls", "address": "127.0.0.1"},
    {"role": "submission", "port": 0, "tls": "implicit", "address": "127.0.0.1"},
    {"role": "managesieve", "port": 0, "tls": "starttls", "address": "127.0.0.1"},
]


@pytest.fixture
async def server(instance: Instance) -> AsyncIterator[Server]:
    srv = await start_instance(instance, listeners=LISTENERS)
    try:
        yield srv
    finally:
        await srv.running.close(grace=1.0)
        await srv.store.close()


async def upload(server: Server, user: str, password: str, script: str,
                 name: str = "main", expect_error: bool = False) -> str:
    client, _ = await MSClient.connect(server.port("managesieve"))
    try:
        await client.starttls(server.client_ssl())
        assert (await client.login(user, password)).startswith("OK")
        final = await client.put(name, script)
        assert final.startswith("OK") or expect_error, final
        if final.startswith("OK"):
            _, active = await client.cmd(f'SETACTIVE "{name}"')
            assert active.startswith("OK"), active
        await client.cmd("LOGOUT")
        return final
    finally:
        await client.close()


async def smtp(server: Server, sender: str, rcpts: list[str], message: str
               ) -> tuple[int, str]:
    c = await RawClient.connect(server.port("mta"))
    try:
        await c.reply()
        await c.cmd("EHLO client.test")
        code, text = await c.cmd(f"MAIL FROM:<{sender}>")
        assert code == 250, text
        for r in rcpts:
            code, text = await c.cmd(f"RCPT TO:<{r}>")
            assert code == 250, text
        code, _ = await c.cmd("DATA")
        assert code == 354
        body = message.replace("\n", "\r\n").encode()
        c.writer.write(body + b"\r\n.\r\n")
        await c.writer.drain()
        result = await c.reply()
        await c.cmd("QUIT")
        return result
    finally:
        await c.close()


async def mailbox(server: Server, user: str, name: str) -> list[Any]:
    account = await server.store.get_account(user)
    assert account is not None
    box = await server.store.get_mailbox(account.id, name)
    if box is None:
        return []
    return await server.store.list_messages(box.id)


async def queued_to(server: Server) -> list[tuple[str, str, bytes]]:
    out = []
    for item in await server.store.list_queue():
        if item.state in (QueueState.PENDING, QueueState.DEFERRED):
            data = await server.store.read_blob(item.blob_id)
            out.append((item.envelope.sender, item.recipient.address, data))
    return out


SCRIPT = """require ["fileinto", "imap4flags", "reject", "vacation", "mailbox"];
# lists go to their folder, the boss is flagged, spam is refused
if header :contains "List-Id" "<dev.lists.example.test>" {
    fileinto :create "Lists/dev";
    stop;
}
if address :is "from" "boss@corp.test" {
    addflag "\\\\Flagged";
}
if header :contains "subject" "cheap pills" {
    reject "No thanks: we do not want your pills.";
    stop;
}
vacation :days 7 :subject "Away" "I am away until Monday.";
"""

LIST_MSG = """From: Someone <someone@list.test>
To: dev@lists.example.test
List-Id: Developers <dev.lists.example.test>
Subject: patch
Message-ID: <p1@list.test>

a patch
"""

BOSS_MSG = """From: Boss <boss@corp.test>
To: Alice <alice@example.test>
Subject: meeting
Message-ID: <m1@corp.test>

see you
"""

SPAM_MSG = """From: spammer@spam.test
To: alice@example.test
Subject: cheap pills

buy
"""


async def test_uploaded_script_files_flags_rejects_and_answers(server: Server) -> None:
    assert (await upload(server, "alice@example.test", "alice-pass", SCRIPT)).startswith("OK")
    # a list message: into Lists/dev (created), no vacation to a list
    code, _ = await smtp(server, "dev-bounces@list.test", ["alice@example.test"], LIST_MSG)
    assert code == 250
    assert len(await mailbox(server, "alice@example.test", "Lists/dev")) == 1
    # the boss: flagged in INBOX, one vacation reply
    code, _ = await smtp(server, "boss@corp.test", ["alice@example.test"], BOSS_MSG)
    assert code == 250
    inbox = await mailbox(server, "alice@example.test", "INBOX")
    assert len(inbox) == 1 and "\\Flagged" in inbox[0].flags
    # spam: refused at DATA time, with the script's reason
    code, text = await smtp(server, "spammer@spam.test", ["alice@example.test"], SPAM_MSG)
    assert code == 550 and "5.7.1 No thanks" in text
    assert len(await mailbox(server, "alice@example.test", "INBOX")) == 1
    # the boss again: no second vacation reply within :days
    code, _ = await smtp(server, "boss@corp.test", ["alice@example.test"],
                         BOSS_MSG.replace("m1@", "m2@"))
    assert code == 250
    # <> never gets one
    code, _ = await smtp(server, "", ["alice@example.test"], BOSS_MSG.replace("m1@", "m3@"))
    assert code == 250
    replies = [q for q in await queued_to(server)]
    assert [(s, r) for s, r, _ in replies] == [("", "boss@corp.test")]
    reply = replies[0][2].decode()
    assert "Auto-Submitted: auto-replied" in reply
    assert "In-Reply-To: <m1@corp.test>" in reply and "Subject: Away" in reply
    assert "I am away until Monday." in reply


async def test_reject_with_another_recipient_becomes_an_mdn_and_ereject_a_dsn(
        server: Server) -> None:
    """RFC 5429 §2.1/§2.2: what cannot be refused at DATA (bob takes the message) goes
    back as an MDN for reject (disposition "deleted") and as a DSN for ereject."""
    await upload(server, "alice@example.test", "alice-pass",
                 'require "reject"; reject "not for me, Jörg";')
    code, _ = await smtp(server, "sender@remote.test",
                         ["alice@example.test", "bob@example.test"], SPAM_MSG)
    assert code == 250
    assert len(await mailbox(server, "bob@example.test", "INBOX")) == 1
    assert await mailbox(server, "alice@example.test", "INBOX") == []
    [(sender, rcpt, mdn)] = await queued_to(server)
    assert (sender, rcpt) == ("", "sender@remote.test")
    assert b"report-type=disposition-notification" in mdn
    assert b"Disposition: automatic-action/MDN-sent-automatically; deleted\r\n" in mdn
    assert b"Final-Recipient: rfc822; alice@example.test\r\n" in mdn
    assert b"Auto-Submitted: auto-replied (rejected)\r\n" in mdn
    parsed = email.message_from_bytes(mdn, policy=email.policy.default)
    text = parsed.get_body(("plain",))
    assert text is not None and "not for me, Jörg" in text.get_content()
    parts = [p.get_content_type() for p in parsed.iter_parts()]
    assert parts == ["text/plain", "message/disposition-notification", "text/rfc822-headers"]
    # the user's filter refused it: the answer goes to a person, not MAILER-DAEMON
    assert b"\r\nFrom: Postmaster <postmaster@" in b"\r\n" + mdn
    await upload(server, "alice@example.test", "alice-pass",
                 'require "ereject"; ereject "not for me";')
    for item in await server.store.list_queue():
        await server.store.delete_queue_item(item.id)
    code, _ = await smtp(server, "sender@remote.test",
                         ["alice@example.test", "bob@example.test"], SPAM_MSG)
    assert code == 250
    [(_, _, dsn)] = await queued_to(server)
    assert b"not for me" in dsn and b"Action: failed" in dsn
    assert b"report-type=delivery-status" in dsn


async def test_redirect_rewrites_a_foreign_sender_with_srs(server: Server) -> None:
    await upload(server, "alice@example.test", "alice-pass",
                 'require "copy"; redirect :copy "alice@elsewhere.test";')
    code, _ = await smtp(server, "boss@corp.test", ["alice@example.test"], BOSS_MSG)
    assert code == 250
    assert len(await mailbox(server, "alice@example.test", "INBOX")) == 1
    queued = await queued_to(server)
    assert [r for _, r, _ in queued] == ["alice@elsewhere.test"]
    assert queued[0][0].startswith("SRS0=")
    assert queued[0][0].endswith("=corp.test=boss@mail.example.test")
    assert b"X-Sieve-Redirected-From: <alice@example.test>" in queued[0][2]


async def test_bad_scripts_get_clear_errors_and_mail_flows(server: Server) -> None:
    client, _ = await MSClient.connect(server.port("managesieve"))
    await client.starttls(server.client_ssl())
    assert (await client.login("alice@example.test", "alice-pass")).startswith("OK")
    final = await client.put("bad", 'require "fileinto";\n\nfileinto "x"\n')
    assert final.startswith("NO") and "line 4" in final, final
    final = await client.put("unknown", 'require "fileinto";\nfrobnicate;\n')
    assert final == 'NO "line 2: unknown command frobnicate"'
    # several errors: all of them, one a line, in a literal (RFC 5804 §4)
    lines, final = await client.cmd(b'CHECKSCRIPT {47+}\r\n'
                                    b'frobnicate;\nkeep :nope;\nif true { stop }\nkeep;\n')
    assert lines == [] and final == (
        "NO <<line 1: unknown command frobnicate\r\nline 2: unknown tagged argument ':nope' "
        "for the keep command (its tags need a require first)\r\n"
        'line 3: expected ";" after command stop but found "}"\r\n3 errors>>'), final
    big = "# " + "x" * (1 << 20) + "\nkeep;\n"
    final = await client.put("big", big)
    assert final.startswith("NO (QUOTA/MAXSIZE)"), final
    # the session goes on after the refused megabyte
    _, final = await client.cmd("LISTSCRIPTS")
    assert final.startswith("OK")
    # 10,000 actions: a valid script (under the size limit), refused when it runs
    many = 'require ["fileinto", "copy"];\n' + "".join(
        f'fileinto :copy "f{i}";\n' for i in range(10_000))
    assert (await client.put("many", many)).startswith("OK")
    assert (await client.cmd('SETACTIVE "many"'))[1].startswith("OK")
    await client.close()
    code, _ = await smtp(server, "boss@corp.test", ["alice@example.test"], BOSS_MSG)
    assert code == 250
    assert len(await mailbox(server, "alice@example.test", "INBOX")) == 1
    assert await mailbox(server, "alice@example.test", "f0") == []


async def test_include_loop_and_redirect_storm_fall_back_to_keep(server: Server) -> None:
    store = server.store
    alice = await store.get_account("alice@example.test")
    assert alice is not None
    await store.put_sieve_script(alice.id, "a", 'require "include"; include "b";')
    await store.put_sieve_script(alice.id, "b", 'require "include"; include "a";')
    await store.set_active_sieve_script(alice.id, "a")
    code, _ = await smtp(server, "boss@corp.test", ["alice@example.test"], BOSS_MSG)
    assert code == 250
    assert len(await mailbox(server, "alice@example.test", "INBOX")) == 1
    storm = "".join(f'redirect "r{i}@elsewhere.test";\n' for i in range(50))
    await store.put_sieve_script(alice.id, "a", storm)
    assert server.ctx.delivery.sieve is not None
    server.ctx.delivery.sieve.forget(alice.id)  # as ManageSieve does
    code, _ = await smtp(server, "boss@corp.test", ["alice@example.test"],
                         BOSS_MSG.replace("m1@", "m9@"))
    assert code == 250
    assert len(await mailbox(server, "alice@example.test", "INBOX")) == 2
    assert await queued_to(server) == []


async def test_sessions_are_concurrent(server: Server) -> None:
    await upload(server, "bob@example.test", "bob-pass", "keep;")
    results = await asyncio.gather(*(smtp(server, "x@corp.test", ["bob@example.test"],
                                          BOSS_MSG) for _ in range(5)))
    assert all(code == 250 for code, _ in results)


async def test_vacation_only_to_people_who_wrote_to_the_user(server: Server) -> None:
    await upload(server, "bob@example.test", "bob-pass",
                 'require "vacation";\nvacation :days 1 "Back soon.";\n')
    person = BOSS_MSG.replace("Alice <alice@example.test>", "bob@example.test")
    bulk = person.replace("Subject:", "Precedence: bulk\nSubject:")
    auto = person.replace("Subject:", "Auto-Submitted: auto-generated\nSubject:")
    bcc = person.replace("To: bob@example.test", "To: someone@else.test")
    for sender, msg in [
        ("news@list.test", LIST_MSG),  # List-Id
        ("", person),  # the null sender
        ("bulk@corp.test", bulk),
        ("robot@corp.test", auto),
        ("owner-dev@list.test", person),
        ("MAILER-DAEMON@corp.test", person),
        ("bcc@corp.test", bcc),  # the user is in neither To nor Cc
        ("boss@corp.test", person),  # the one that gets a reply
        ("boss@corp.test", person.replace("m1@", "m2@")),  # once per sender
    ]:
        code, _ = await smtp(server, sender, ["bob@example.test"], msg)
        assert code == 250
    replies = await queued_to(server)
    assert [(s, r) for s, r, _ in replies] == [("", "boss@corp.test")]
    assert len(await mailbox(server, "bob@example.test", "INBOX")) == 9


async def test_submission_to_a_local_user_is_filtered(server: Server) -> None:
    import smtplib
    import ssl as ssl_mod

    await upload(server, "bob@example.test", "bob-pass",
                 'require ["fileinto", "editheader", "mailbox"];\n'
                 'addheader "X-Filtered" "by bob";\n'
                 'if address :is "from" "alice@example.test" { fileinto :create "Alice"; }\n')
    port = server.port("submission", "implicit")
    ctx = ssl_mod.create_default_context(cafile=str(server.cert))
    ctx.check_hostname = False

    def submit() -> None:
        with smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=10) as s:
            s.login("alice@example.test", "alice-pass")
            s.sendmail("alice@example.test", ["bob@example.test"],
                       b"From: alice@example.test\r\nTo: bob@example.test\r\n"
                       b"Subject: hi\r\n\r\nhello\r\n")

    await asyncio.to_thread(submit)
    box = await mailbox(server, "bob@example.test", "Alice")
    assert len(box) == 1
    stored = await server.store.read_blob(box[0].blob_id)
    assert stored.startswith(b"X-Filtered: by bob\r\n")
    assert b"\r\nReturn-Path: <alice@example.test>\r\n" in stored


async def test_local_bounces_go_through_the_script(server: Server) -> None:
    from pochta.server.outbound import make_worker
    from pochta.storage.interfaces import Envelope

    await upload(server, "alice@example.test", "alice-pass",
                 'require ["fileinto", "envelope", "mailbox"];\n'
                 'if envelope :is "from" "" { fileinto :create "Bounces"; }\n')
    worker = make_worker(server.ctx)
    dsn = (b"From: MAILER-DAEMON@mail.example.test\r\nTo: alice@example.test\r\n"
           b"Subject: Undelivered Mail Returned to Sender\r\n\r\nsorry\r\n")
    await worker.bounce_sink(dsn, "alice@example.test", Envelope(sender=""))
    assert len(await mailbox(server, "alice@example.test", "Bounces")) == 1
    assert await mailbox(server, "alice@example.test", "INBOX") == []
    # a script that rejects bounces: dropped, nothing bounces back
    await upload(server, "alice@example.test", "alice-pass",
                 'require "reject"; reject "no bounces";', name="strict")
    await worker.bounce_sink(dsn, "alice@example.test", Envelope(sender=""))
    assert await queued_to(server) == []


def test_spam_score_only_from_our_own_fields() -> None:
    from pochta.services.sieve import own_spam_score
    from pochta.sieve import SieveMessage
    ours = (b"Return-Path: <a@b.test>\r\nX-Spam-Bayes: 0.9000\r\n"
            b"Received: from x by mx.example.test\r\nSubject: s\r\n\r\nbody\r\n")
    assert own_spam_score(SieveMessage(ours)) == (9, 90)
    rspamd = b"X-Rspamd-Score: 3.00 / 15.00\r\nReceived: from x by mx\r\n\r\n"
    assert own_spam_score(SieveMessage(rspamd)) == (3, 20)
    forged = (b"Return-Path: <a@b.test>\r\nReceived: from x by mx.example.test\r\n"
              b"X-Spam-Bayes: 0.9000\r\n\r\nbody\r\n")
    assert own_spam_score(SieveMessage(forged)) == (None, None)


async def test_includes_are_checked_at_upload_and_activation(server: Server) -> None:
    """A missing included script or an include loop: a warning when an inactive script
    is uploaded (the other script may come next), an error for the active script and
    at SETACTIVE; deeper problems name the include that leads to them."""
    client, _ = await MSClient.connect(server.port("managesieve"))
    await client.starttls(server.client_ssl())
    assert (await client.login("alice@example.test", "alice-pass")).startswith("OK")
    inc = 'require "include";\ninclude "{}";\n'
    final = await client.put("a", inc.format("b"))
    assert final == ('OK (WARNINGS) "line 2: included personal script \\"b\\" does not '
                     'exist"'), final
    _, final = await client.cmd('SETACTIVE "a"')
    assert final == 'NO "line 2: included personal script \\"b\\" does not exist"', final
    final = await client.put("b", inc.format("a"))  # a loop: b -> a -> b
    assert final == ('OK (WARNINGS) "line 2: included personal script \\"a\\", line 2: '
                     'include loop: b -> a -> b"'), final
    _, final = await client.cmd('SETACTIVE "a"')
    assert final.startswith("NO") and "include loop: a -> b -> a" in final, final
    assert (await client.put("b", "keep;\n")) == 'OK "Putscript completed"'
    assert (await client.cmd('SETACTIVE "a"'))[1].startswith("OK")
    # the active script is checked strictly when it is replaced
    final = await client.put("a", inc.format("c"))
    assert final == 'NO "line 2: included personal script \\"c\\" does not exist"', final
    # an included script's own errors are errors (one stored another way, e.g. before
    # an upgrade), and :optional is no problem
    alice = await server.store.get_account("alice@example.test")
    assert alice is not None
    await server.store.put_sieve_script(alice.id, "d", "frob;\n")
    script = b'require "include";\ninclude "d";\ninclude :optional "z";\n'
    _, final = await client.cmd(b"CHECKSCRIPT {%d+}\r\n%s" % (len(script), script))
    assert final == ('NO "line 2: included personal script \\"d\\", line 1: unknown '
                     'command frob"'), final
    await client.close()
