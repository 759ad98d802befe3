"""Several scripts for one delivery (sieve/sequence.py; [sieve] before/after as
Pigeonhole's sieve_before/sieve_after): the implicit keep is deferred, a decision ends
the sequence, edits and flags carry on, results merge. End to end: the admin's scripts
run around a user's script uploaded over ManageSieve, and for a user without one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pochta.sieve import (
    Context,
    Limits,
    Notify,
    Reject,
    SieveEnvelope,
    SieveMessage,
    Store,
    Vacation,
    compile_script,
)
from pochta.sieve.interpreter import merge_actions
from pochta.sieve.sequence import run_sequence
from tests.conftest import Instance, Server, start_instance
from tests.sieve.test_e2e import LISTENERS, mailbox, smtp, upload

MSG = SieveMessage(b"From: a@example.org\r\nSubject: hello\r\nX-Spam-Flag: YES\r\n\r\nhi\r\n")
ENV = SieveEnvelope("a@example.org", "u@example.net")


def run(*sources: str) -> list[object]:
    scripts = [compile_script(src, f"s{i}", Limits()) for i, src in enumerate(sources)]
    return list(run_sequence(scripts, MSG, ENV, Context("u@example.net")).actions)


def test_implicit_keep_is_deferred_and_a_decision_ends_the_sequence() -> None:
    spam = 'require "fileinto"; if header :is "x-spam-flag" "YES" { fileinto "Junk"; }'
    vacation = 'require "vacation"; vacation "away";'
    assert run(spam, vacation) == [Store("Junk")]  # filed: the next script does not run
    actions = run(vacation, 'require "enotify"; notify "mailto:p@example.net";')
    assert [type(a) for a in actions] == [Vacation, Notify, Store]
    assert actions[-1] == Store("INBOX", implicit=True)  # one implicit keep, the last


def test_edits_and_flags_carry_on_and_results_merge() -> None:
    first = 'require ["editheader", "imap4flags"]; addheader "X-Before" "1"; addflag "seen";'
    second = ('require ["fileinto", "imap4flags"];\n'
              'if header :is "x-before" "1" { addflag "checked"; fileinto "INBOX"; }')
    scripts = [compile_script(s, "s", Limits()) for s in (first, second)]
    res = run_sequence(scripts, MSG, ENV, Context("u@example.net"))
    assert res.actions == [Store("INBOX", frozenset({"seen", "checked"}))]
    assert res.message.headers("x-before") == ["1"]
    assert MSG.headers("x-before") == []  # the caller's message is not changed
    # a reject decides (the sequence ends there); merged results keep the first one
    assert run('require "reject"; reject "no";', 'require "reject"; reject "never";') \
        == [Reject("no")]
    assert merge_actions([Reject("no"), Store("A"), Reject("never"), Store("A")]) \
        == [Reject("no"), Store("A")]


BEFORE = """require ["fileinto", "editheader"];
addheader "X-Filtered-By" "admin";
if header :is "X-Spam-Flag" "YES" { fileinto "Junk"; }
"""
AFTER = 'require "imap4flags"; addflag "checked";\n'
USER = ('require ["fileinto", "mailbox"];\n'
        'if header :contains "subject" "report" { fileinto :create "Reports"; }\n')


@pytest.fixture
async def server(instance: Instance) -> AsyncIterator[Server]:
    scripts = instance.dir / "sieve-global"
    scripts.mkdir()
    (scripts / "spam.sieve").write_text(BEFORE)
    (scripts / "flag.sieve").write_text(AFTER)
    (scripts / "broken.sieve").write_text("frobnicate;\n")
    srv = await start_instance(instance, listeners=LISTENERS, sieve={
        "before": ["spam", "missing", "broken"], "after": ["flag"]})
    try:
        yield srv
    finally:
        await srv.running.close(grace=1.0)
        await srv.store.close()


async def stored(server: Server, user: str, box: str) -> list[tuple[frozenset[str], bytes]]:
    out = []
    for m in await mailbox(server, user, box):
        out.append((frozenset(m.flags), await server.store.read_blob(m.blob_id)))
    return out


async def test_before_and_after_scripts_around_the_users(server: Server) -> None:
    await upload(server, "alice@example.test", "alice-pass", USER)
    mail = "From: boss@corp.test\nTo: alice@example.test\nSubject: {}\n{}\nhi\n"
    for subject, extra in (("lunch", ""), ("report", ""), ("report", "X-Spam-Flag: YES\n")):
        code, _ = await smtp(server, "boss@corp.test", ["alice@example.test"],
                             mail.format(subject, extra))
        assert code == 250
    # kept implicitly by every script: the after script's flag, the before's header
    [(flags, data)] = await stored(server, "alice@example.test", "INBOX")
    assert flags == {"checked"} and b"X-Filtered-By: admin\r\n" in data
    # the user's decision ends the sequence: no after script
    [(flags, data)] = await stored(server, "alice@example.test", "Reports")
    assert flags == frozenset() and b"X-Filtered-By: admin\r\n" in data
    # the admin's decision ends it before the user's script (the missing and the
    # broken before scripts are left out, mail flows)
    [(flags, _)] = await stored(server, "alice@example.test", "Junk")
    assert flags == frozenset()
    # an account without a script of its own still gets the admin's
    code, _ = await smtp(server, "boss@corp.test", ["bob@example.test"],
                         mail.format("hi", "").replace("alice", "bob"))
    assert code == 250
    [(flags, data)] = await stored(server, "bob@example.test", "INBOX")
    assert flags == {"checked"} and b"X-Filtered-By: admin\r\n" in data
