"""URLAUTH keys (RFC 4467) and ACL grants (RFC 4314) in the store (interfaces_imap.py).
Runs on every backend of the conformance suite."""

from __future__ import annotations

from pochta.storage.interfaces import MailStore
from pochta.storage.interfaces_imap import AclGrant
from tests.storage.test_conformance import Factory, factory, store  # noqa: F401


async def test_urlauth_key_created_once_reset_and_gone_with_mailbox(
        store: MailStore) -> None:  # noqa: F811
    a = await store.add_account("a@example.test", "x", None)
    box = await store.create_mailbox(a.id, "Drafts2")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox is not None
    assert await store.urlauth_key(box.id, create=False) is None
    key = await store.urlauth_key(box.id, create=True)
    assert key is not None and len(key) >= 16
    assert await store.urlauth_key(box.id, create=True) == key  # stable
    other = await store.urlauth_key(inbox.id, create=True)
    assert other is not None and other != key  # one key per mailbox
    await store.reset_urlauth_keys([box.id])
    assert await store.urlauth_key(box.id, create=False) is None
    fresh = await store.urlauth_key(box.id, create=True)
    assert fresh is not None and fresh != key
    assert await store.urlauth_key(inbox.id, create=False) == other  # untouched
    await store.delete_mailbox(a.id, "Drafts2")
    assert await store.urlauth_key(box.id, create=False) is None
    assert await store.urlauth_key(box.id, create=True) is None  # no mailbox, no key


async def test_acl_set_get_follows_rename_and_goes_with_delete(
        store: MailStore) -> None:  # noqa: F811
    a = await store.add_account("a@example.test", "x", None)
    b = await store.add_account("b@example.test", "x", None)
    team = await store.create_mailbox(a.id, "Team")
    assert await store.get_acl(team.id) == {}
    await store.set_acl(team.id, "b@example.test", "rlws")
    await store.set_acl(team.id, "anyone", "l")
    assert await store.get_acl(team.id) == {"b@example.test": "lrsw", "anyone": "l"}
    await store.set_acl(team.id, "b@example.test", "rli")  # replaces
    grants = await store.acl_grants(["b@example.test", "authenticated"])
    assert grants == [AclGrant(team.id, a.id, "Team", "b@example.test", "ilr")]
    assert await store.acl_grants(["c@example.test"]) == []
    await store.rename_mailbox(a.id, "Team", "Shared Team")
    grants = await store.acl_grants(["b@example.test"])
    assert [g.mailbox for g in grants] == ["Shared Team"]
    await store.set_acl(team.id, "anyone", None)
    assert await store.get_acl(team.id) == {"b@example.test": "ilr"}
    await store.delete_mailbox(a.id, "Shared Team")
    assert await store.acl_grants(["b@example.test"]) == []
    assert await store.get_acl(team.id) == {}
    # a grant on a mailbox that no longer exists is not stored
    await store.set_acl(team.id, "b@example.test", "lr")
    assert await store.get_acl(team.id) == {}
    assert b.id != a.id
