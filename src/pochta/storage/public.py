"""Public folders (RFC 2342's "Shared" namespace, shown as ``Public/`` over IMAP): mailboxes
owned by no person. They belong to one holder row in the accounts table, ``#public``, an
address no mail can be sent to (no ``@``, no domain), a password hash no password
matches (``!``, not an argon2 hash) and disabled, so nobody can log in as it; who reads or writes a
public folder is only what its ACL grants (RFC 4314 identifiers: users' addresses,
``authenticated``, ``anyone``). Keeping the holder an account row means the store,
quotas, backups and restores treat public folders as any other mailboxes, on every
backend, without a second kind of mailbox owner.

An admin creates them with ``pochta acl create-public NAME`` and grants rights with
``pochta acl set public NAME IDENTIFIER RIGHTS`` (acl_cli.py); IMAP resolves them in
server/imap_shared.py.
"""

from __future__ import annotations

import contextlib

from .interfaces import DEFAULT_MAILBOXES, Account, AlreadyExists, MailStore, NotFound

PUBLIC_OWNER = "#public"
LOCKED_HASH = "!"  # verify_password is False for it: not a hash of anything


def is_public_owner(address: str) -> bool:
    return address.lower() == PUBLIC_OWNER


async def public_owner(store: MailStore, create: bool = False) -> Account | None:
    """The holder of public folders; with ``create`` made on first use, without the
    default mailboxes an account gets (its INBOX stays: it cannot be deleted; nobody sees
    it unless granted)."""
    holder = await store.get_account(PUBLIC_OWNER)
    if holder is not None or not create:
        return holder
    try:
        made = await store.add_account(PUBLIC_OWNER, LOCKED_HASH, None)
    except AlreadyExists:  # made meanwhile by another admin command
        return await store.get_account(PUBLIC_OWNER)
    await store.update_account(PUBLIC_OWNER, disabled=True)  # and disabled, to be sure
    holder = await store.get_account(PUBLIC_OWNER) or made
    for name, _use in DEFAULT_MAILBOXES:
        if name != "INBOX":
            with contextlib.suppress(NotFound):
                await store.delete_mailbox(holder.id, name)
    return holder
