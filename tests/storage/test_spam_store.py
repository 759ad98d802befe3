"""SpamStore (storage/interfaces_spam.py) on every backend of the conformance suite:
greylisting triplets, learning-filter counts, held accounts."""

from __future__ import annotations

from pathlib import Path

from pochta.storage.interfaces import MailStore, SpecialUse
from tests.storage.test_conformance import Factory, factory, store  # noqa: F401


async def test_greylist_triplets_and_client_passes(store: MailStore) -> None:  # noqa: F811
    first = await store.greylist_touch("t1", 100.0, 0.0)
    assert (first.first_seen, first.passed) == (100.0, False)
    again = await store.greylist_touch("t1", 200.0, 0.0)
    assert (again.first_seen, again.last_seen, again.passed) == (100.0, 200.0, False)
    # stale (last seen before stale_before and never passed): starts over
    restarted = await store.greylist_touch("t1", 1000.0, 500.0)
    assert restarted.first_seen == 1000.0
    assert await store.greylist_pass("t1", "192.0.2.0/24", 1400.0) == 1
    assert await store.greylist_pass("t1", "192.0.2.0/24", 1401.0) == 1  # once per triplet
    assert await store.greylist_pass("t2", "192.0.2.0/24", 1402.0) == 2
    assert (await store.greylist_touch("t1", 5000.0, 4000.0)).passed  # passed: kept
    assert await store.greylist_client_passes("192.0.2.0/24", 1000.0) == 2
    assert await store.greylist_client_passes("192.0.2.0/24", 2000.0) == 0
    assert await store.greylist_client_passes("198.51.100.0/24", 0.0) == 0
    assert await store.greylist_purge(4500.0) == 1  # t2 (t1 was seen at 5000)


async def test_greylist_state_is_shared_by_two_store_instances(
    factory: Factory, tmp_path: Path,  # noqa: F811
) -> None:
    a, b = await factory(tmp_path), await factory(tmp_path)
    try:
        await a.greylist_touch("t", 10.0, 0.0)
        assert (await b.greylist_touch("t", 20.0, 0.0)).first_seen == 10.0
    finally:
        await a.close()
        await b.close()


async def test_bayes_counts_learn_unlearn_and_forget(store: MailStore) -> None:  # noqa: F811
    assert await store.bayes_totals(1) == (0, 0)
    assert await store.bayes_train(1, "m1", ["cheap", "pills", "cheap"], True)
    assert not await store.bayes_train(1, "m1", ["cheap", "pills"], True)  # same class
    assert await store.bayes_train(1, "m2", ["meeting", "cheap"], False)
    assert await store.bayes_totals(1) == (1, 1)
    assert await store.bayes_tokens(1, ["cheap", "pills", "meeting", "nope"]) == {
        "cheap": (1, 1), "pills": (1, 0), "meeting": (0, 1)}
    # moved out of Junk: m1 becomes ham (unlearnt as spam first)
    assert await store.bayes_train(1, "m1", ["cheap", "pills"], False)
    assert await store.bayes_totals(1) == (0, 2)
    counts = await store.bayes_tokens(1, ["cheap", "pills"])
    assert counts["cheap"] == (0, 2) and counts["pills"] == (0, 1)
    assert await store.bayes_totals(2) == (0, 0)  # per account
    many = [f"tok{i}" for i in range(1200)]  # more than one chunk of parameters
    assert await store.bayes_train(2, "m3", many, True)
    assert len(await store.bayes_tokens(2, many)) == 1200
    await store.bayes_forget(1)
    assert await store.bayes_totals(1) == (0, 0)
    assert await store.bayes_tokens(1, ["cheap"]) == {}


async def test_mailbox_owner_and_message_blobs(store: MailStore) -> None:  # noqa: F811
    from pochta.storage.interfaces import Envelope, LocalTarget

    account = await store.add_account("alice@example.test", "x", None)
    junk = await store.get_mailbox(account.id, "Junk")
    assert junk is not None
    assert await store.mailbox_owner(junk.id) == (account.id, SpecialUse.JUNK)
    inbox = await store.get_mailbox(account.id, "INBOX")
    assert inbox is not None
    assert await store.mailbox_owner(inbox.id) == (account.id, None)
    assert await store.mailbox_owner(999999) is None
    res = await store.accept(b"Subject: x\r\n\r\nx\r\n", Envelope("a@b.test"),
                             [LocalTarget(account.id)])
    ((box, uid),) = res.local_uids
    assert await store.message_blobs(box, [uid, uid + 5]) == {uid: res.blob_id}


async def test_account_holds(store: MailStore) -> None:  # noqa: F811
    assert await store.account_hold("a@example.test") is None
    assert await store.hold_account("a@example.test", "500 bounces", 10.0)
    assert not await store.hold_account("a@example.test", "again", 20.0)
    hold = await store.account_hold("a@example.test")
    assert hold is not None and (hold.reason, hold.since) == ("500 bounces", 10.0)
    assert [h.address for h in await store.list_holds()] == ["a@example.test"]
    assert await store.release_account("a@example.test")
    assert not await store.release_account("a@example.test")
    assert await store.list_holds() == []


async def test_sender_rules(store: MailStore) -> None:  # noqa: F811
    """Per-account allow/block lists: one list per pattern, by account, gone with it (a
    new account never inherits the lists of a removed one)."""
    alice = await store.add_account("alice@example.test", "h", None)
    bob = await store.add_account("bob@example.test", "h", None)
    assert await store.sender_rules([alice.id, bob.id]) == {}
    assert await store.set_sender_rule(alice.id, "news@shop.test", "block")
    assert await store.set_sender_rule(alice.id, "@partner.test", "allow")
    assert await store.set_sender_rule(bob.id, "@partner.test", "block")
    assert await store.set_sender_rule(alice.id, "news@shop.test", "allow")  # moves list
    rules = await store.sender_rules([alice.id, bob.id, 999])
    assert {k: [(r.pattern, r.action) for r in v] for k, v in rules.items()} == {
        alice.id: [("@partner.test", "allow"), ("news@shop.test", "allow")],
        bob.id: [("@partner.test", "block")]}
    assert await store.set_sender_rule(alice.id, "@partner.test", None)
    assert not await store.set_sender_rule(alice.id, "@partner.test", None)
    await store.bayes_train(bob.id, "m1", ["cheap"], True)
    await store.remove_account("bob@example.test")
    carol = await store.add_account("carol@example.test", "h", None)  # may reuse bob's id
    assert carol.id not in await store.sender_rules([carol.id, bob.id])
    assert await store.bayes_totals(carol.id) == (0, 0)
    assert list(await store.sender_rules([alice.id])) == [alice.id]
