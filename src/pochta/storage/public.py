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

Mail reaches a public folder through an alias whose target is the folder
(``pochta alias add team@example.com public:Team``), stored as ``#public/team``: alias
targets are kept lower-cased, and no address starts with ``#``. The folder is found
again by its name without regard to case (``public_folder``); who may post there is
the folder's ``p`` right (RFC 4314 §2.1), checked by the MTA at RCPT.
"""

from __future__ import annotations

import contextlib

from .interfaces import (
    DEFAULT_MAILBOXES,
    Account,
    AlreadyExists,
    MailboxInfo,
    MailStore,
    NotFound,
)

PUBLIC_OWNER = "#public"
LOCKED_HASH = "!"  # verify_password is False for it: not a hash of anything
FOLDER_TARGET = PUBLIC_OWNER + "/"  # an alias target naming a public folder
CLI_FOLDER_TARGET = "public:"  # how an admin writes one (pochta alias add)


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


def folder_target(name: str) -> str:
    """The alias target that delivers into the public folder ``name``."""
    return (FOLDER_TARGET + name).lower()


def is_folder_target(target: str) -> bool:
    return target.startswith(FOLDER_TARGET)


def shown_target(target: str) -> str:
    """An alias target as an admin writes it (``public:team`` for a folder)."""
    return CLI_FOLDER_TARGET + target[len(FOLDER_TARGET):] if is_folder_target(target) \
        else target


class AmbiguousFolder(Exception):
    """Two public folders differ only in case: an alias cannot tell them apart."""


async def public_folder(store: MailStore, name: str) -> MailboxInfo | None:
    """The public folder called ``name`` regardless of case (alias targets are kept in
    lower case); None when there is none. Raises AmbiguousFolder when several match and
    none is spelled exactly so."""
    holder = await public_owner(store)
    if holder is None:
        return None
    low = name.lower()
    found = [b for b in await store.list_mailboxes(holder.id)
             if b.name.lower() == low and b.name != "INBOX"]
    exact = [b for b in found if b.name == name]
    if exact:
        return exact[0]
    if len(found) > 1:
        raise AmbiguousFolder(name)
    return found[0] if found else None
