"""\\Recent with many sessions (RFC 3501 §2.3.2: a message is recent in exactly one
session, the first to be told of it), now that a session skips its claim when another
session of the same process already claims the new messages (server/imap_recent.py).
Other processes are played by a second store opened on the same data."""

from __future__ import annotations

import asyncio
import re

from pochta.server.imap_recent import RecentClaims
from pochta.storage.factory import open_store
from pochta.storage.interfaces import MailboxInfo
from tests.conftest import Instance, Server
from tests.imap.helpers import Client, connect, joined
from tests.imap.test_session_mail import append, deliver


def recent_count(resp: list[bytes]) -> int | None:
    m = re.search(rb"\* (\d+) RECENT", joined(resp))
    return int(m.group(1)) if m else None


async def recent_uids(c: Client) -> set[int]:
    text = joined(await c.cmd("FETCH 1:* (UID FLAGS)"))
    return {int(m.group(1)) for m in re.finditer(rb"UID (\d+) FLAGS \([^)]*\\Recent", text)}


async def test_each_new_message_is_recent_in_exactly_one_session(imap_server: Server) -> None:
    async with connect(imap_server) as a, connect(imap_server) as b, \
            connect(imap_server) as c:
        sessions = [a, b, c]
        for s in sessions:
            await s.login()
            await s.cmd("SELECT INBOX")
        for round_ in range(4):
            for _ in range(round_ + 1):
                await deliver(imap_server)
            # all three ask at once: some claim while another's claim is on its way
            await asyncio.gather(*(s.cmd("NOOP") for s in sessions))
        seen = [await recent_uids(s) for s in sessions]
        everything = set().union(*seen)
        assert everything == set(range(1, 11)), seen
        assert sum(len(x) for x in seen) == 10, seen  # nobody shares one


async def test_a_claim_by_another_process_is_respected(
    imap_server: Server, instance: Instance,
) -> None:
    other = await open_store(instance.config())  # another worker on the same data
    try:
        async with connect(imap_server) as a, connect(imap_server) as b:
            await a.login()
            await b.login()
            await a.cmd("SELECT INBOX")
            await b.cmd("SELECT INBOX")
            await deliver(imap_server)
            assert recent_count(await a.cmd("NOOP")) == 1  # a claims uid 1 here
            assert recent_count(await b.cmd("NOOP")) == 0  # b skips its claim
            # another process's session sees uid 2 first and claims it
            await deliver(imap_server)
            account = await other.get_account("alice@example.test")
            assert account is not None
            box = await other.get_mailbox(account.id, "INBOX")
            assert box is not None
            assert await other.claim_recent(box.id) == 2
            assert recent_count(await a.cmd("NOOP")) == 1  # still only uid 1
            assert recent_count(await b.cmd("NOOP")) == 0
            # a message nobody has claimed yet is recent here again
            await deliver(imap_server)
            assert recent_count(await b.cmd("NOOP")) == 1
            assert recent_count(await a.cmd("NOOP")) == 1
            assert await recent_uids(b) == {3}
    finally:
        await other.close()


async def test_a_recreated_mailbox_is_claimed_afresh(imap_server: Server) -> None:
    """The bound is kept per (mailbox id, UIDVALIDITY): SQLite gives a deleted mailbox's
    id to the next one created, whose first message must still be recent."""
    async with connect(imap_server) as a, connect(imap_server) as b:
        await a.login()
        await b.login()
        await a.cmd("CREATE Box")
        await a.cmd("SELECT Box")
        for _ in range(3):
            await append(b, mailbox="Box")
        assert recent_count(await a.cmd("NOOP")) == 3
        await a.cmd("UNSELECT")
        await a.cmd("DELETE Box")
        await a.cmd("CREATE Box")
        await a.cmd("SELECT Box")
        await append(b, mailbox="Box")
        assert recent_count(await a.cmd("NOOP")) == 1
        assert await recent_uids(a) == {1}


def box(mailbox_id: int, uidvalidity: int) -> MailboxInfo:
    return MailboxInfo(mailbox_id, 1, "INBOX", uidvalidity, 1, 1, None, True)


def test_recent_claims_bound() -> None:
    claims = RecentClaims()
    first = box(7, 100)
    assert claims.claim(first, 5) == 0  # nobody claimed yet: claim, bound now 6
    assert claims.claim(first, 5) is None  # up to 5: claimed by someone here
    assert claims.claim(box(7, 101), 5) == 0  # another UIDVALIDITY: another mailbox
    assert claims.claim(first, 6) == 6  # uid 6 is new
    claims.failed(first, 6, 6)  # that claim failed: the bound goes back
    assert claims.claim(first, 6) == 6
    claims.failed(first, 3, 0)  # an old failure does not undo a later claim
    assert claims.claim(first, 6) is None
