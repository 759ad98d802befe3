"""Public folders (storage/public.py): the ``#public`` holder that owns them, on every
backend of the conformance suite."""

from __future__ import annotations

from pochta.passwords import verify_password
from pochta.storage.interfaces import MailStore
from pochta.storage.public import PUBLIC_OWNER, public_owner
from tests.storage.test_conformance import Factory, factory, store  # noqa: F401


async def test_public_holder(store: MailStore) -> None:  # noqa: F811
    assert await public_owner(store) is None  # nothing until an admin makes a folder
    holder = await public_owner(store, create=True)
    assert holder is not None and holder.address == PUBLIC_OWNER
    again = await public_owner(store, create=True)
    assert again is not None and again.id == holder.id
    # nobody logs in as it: its hash matches no password, it has no SCRAM keys
    assert not verify_password(holder.password_hash, "")
    assert not verify_password(holder.password_hash, "!")
    assert holder.scram is None and holder.disabled
    # no default mailboxes besides the INBOX an account cannot lose
    assert [b.name for b in await store.list_mailboxes(holder.id)] == ["INBOX"]
    # a public folder is an ordinary mailbox of the holder: grants, messages, deletion
    team = await store.create_mailbox(holder.id, "Team")
    user = await store.add_account("u@example.test", "x", None)
    await store.set_acl(team.id, "u@example.test", "lrswi")
    await store.set_acl(team.id, "authenticated", "lr")
    grants = await store.acl_grants(["u@example.test", "authenticated", "anyone"])
    assert sorted((g.owner_id, g.mailbox, g.identifier, g.rights) for g in grants) == [
        (holder.id, "Team", "authenticated", "lr"),
        (holder.id, "Team", "u@example.test", "ilrsw"),
    ]
    assert user.id != holder.id
    await store.delete_mailbox(holder.id, "Team")
    assert await store.acl_grants(["u@example.test", "authenticated"]) == []
