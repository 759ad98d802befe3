"""Each action keeps the message as it was when the action ran (RFC 5293 §7: edits
affect the actions after them): a redirect before a deleteheader still carries the
field, a fileinto before an addheader does not get it. In the interpreter and end to
end over SMTP (the redirected copy in the queue, the stored copies in the store)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pochta.sieve import (
    Context,
    Limits,
    Redirect,
    SieveEnvelope,
    SieveMessage,
    Store,
    compile_script,
    evaluate,
)
from tests.conftest import Instance, Server, start_instance
from tests.sieve.test_e2e import LISTENERS, mailbox, queued_to, smtp, upload

SCRIPT = """require ["editheader", "fileinto", "mailbox", "copy"];
fileinto :create "Untouched";
addheader "X-Tag" "one";
redirect :copy "archive@remote.test";
deleteheader "X-Tag";
addheader "X-Other" "two";
fileinto :create "Edited";
"""


def test_actions_keep_the_message_of_their_time() -> None:
    msg = SieveMessage(b"From: a@example.org\r\nSubject: s\r\n\r\nbody\r\n")
    res = evaluate(compile_script(SCRIPT, "t", Limits()), msg,
                   SieveEnvelope("a@example.org", "u@example.net"), Context("u@example.net"))
    untouched, redirect, edited = res.actions  # fileinto: no implicit keep
    assert isinstance(untouched, Store) and untouched.data is None  # as received
    assert isinstance(redirect, Redirect) and redirect.data is not None
    assert b"X-Tag: one\r\n" in redirect.data and b"X-Other" not in redirect.data
    assert isinstance(edited, Store) and edited.data is not None
    assert b"X-Tag" not in edited.data and b"X-Other: two\r\n" in edited.data


@pytest.fixture
async def server(instance: Instance) -> AsyncIterator[Server]:
    srv = await start_instance(instance, listeners=LISTENERS)
    try:
        yield srv
    finally:
        await srv.running.close(grace=1.0)
        await srv.store.close()


async def test_copies_over_smtp(server: Server) -> None:
    await upload(server, "alice@example.test", "alice-pass", SCRIPT)
    code, _ = await smtp(server, "boss@corp.test", ["alice@example.test"],
                         "From: boss@corp.test\nTo: alice@example.test\nSubject: s\n\nhi\n")
    assert code == 250

    async def blob(box: str) -> bytes:
        [m] = await mailbox(server, "alice@example.test", box)
        return await server.store.read_blob(m.blob_id)

    untouched, edited = await blob("Untouched"), await blob("Edited")
    assert b"X-Tag" not in untouched and b"X-Other" not in untouched
    assert b"X-Tag" not in edited and b"\r\nX-Other: two\r\n" in b"\r\n" + edited
    assert await mailbox(server, "alice@example.test", "INBOX") == []
    [(_, rcpt, sent)] = await queued_to(server)
    assert rcpt == "archive@remote.test"
    assert b"\r\nX-Tag: one\r\n" in b"\r\n" + sent and b"X-Other" not in sent


def test_protected_fields() -> None:
    src = """require "editheader";
    deleteheader "Received"; deleteheader "X-Sieve-Redirected-From";
    deleteheader "X-Spam-Status"; addheader "X-Spam-Status" "No";
    addheader "Received" "by filter.example.net"; addheader "X-Sieve-Redirected-From" "x";
    deleteheader "Subject"; addheader "Subject" "new";
    """
    msg = SieveMessage(b"Received: by mx.example.net\r\nX-Sieve-Redirected-From: <u@x>\r\n"
                       b"X-Spam-Status: Yes\r\nSubject: old\r\n\r\nbody\r\n")
    ctx = Context("u@example.net", protected_headers=frozenset({"x-spam-status", "subject"}))
    res = evaluate(compile_script(src, "t", Limits()), msg,
                   SieveEnvelope("a@example.org", "u@example.net"), ctx)
    m = res.message
    # RFC 5293 §6: Received is never deleted; a script may add its own
    assert m.headers("received") == ["by filter.example.net", "by mx.example.net"]
    assert m.headers("x-sieve-redirected-from") == ["<u@x>"]  # the redirect loop mark
    assert m.headers("x-spam-status") == ["Yes"]  # the admin's: neither forged nor removed
    assert m.headers("subject") == ["new"]  # Subject is never protected


@pytest.mark.parametrize("name", ["Subject", "bad name", ""])
def test_protected_headers_setting_is_checked(instance: Instance, name: str) -> None:
    from pochta.config import ConfigError

    with pytest.raises(ConfigError) as err:
        instance.config(sieve={"protected_headers": [name]})
    assert any("sieve.protected_headers" in p for p in err.value.problems)


async def test_protected_header_over_smtp(instance: Instance) -> None:
    srv = await start_instance(instance, listeners=LISTENERS,
                               sieve={"protected_headers": ["X-Spam-Status"]})
    try:
        await upload(srv, "alice@example.test", "alice-pass",
                     'require "editheader";\ndeleteheader "X-Spam-Status";\n'
                     'addheader "X-Spam-Status" "No, forged";\naddheader "X-Note" "ok";\n')
        code, _ = await smtp(srv, "boss@corp.test", ["alice@example.test"],
                             "X-Spam-Status: Yes, score=9\nFrom: boss@corp.test\n"
                             "To: alice@example.test\nSubject: s\n\nhi\n")
        assert code == 250
        [m] = await mailbox(srv, "alice@example.test", "INBOX")
        stored = SieveMessage(await srv.store.read_blob(m.blob_id))
        assert stored.headers("x-spam-status") == ["Yes, score=9"]
        assert stored.headers("x-note") == ["ok"]
    finally:
        await srv.running.close(grace=1.0)
        await srv.store.close()
