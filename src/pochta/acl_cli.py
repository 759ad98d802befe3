"""``pochta acl get|set|delete``: an admin's view of the IMAP ACL grants (RFC 4314) that
share an account's mailbox with others (docs/imap.md, "Shared mailboxes"). The same
store contract as IMAP's SETACL/GETACL/DELETEACL; rights are RFC 4314 letters
(``lrswipkxtea``), ``+``/``-`` to add or remove some.

``pochta acl create-public|delete-public NAME`` manage public folders, owned by no
account (storage/public.py; IMAP shows them as ``Public/NAME``); the owner ``public`` in
get/set/delete names them: ``pochta acl set public Team authenticated lrswi``."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from pochta.cliutil import CLIError, with_store
from pochta.proto.imap.acl import OWNER_RIGHTS, AclError, identifier, modify, positive
from pochta.proto.imap.parser import valid_mailbox_name
from pochta.storage.interfaces import AlreadyExists, MailboxInfo, MailStore, NotFound
from pochta.storage.public import is_public_owner, public_owner


def _with_store(fn: Callable[[argparse.Namespace, MailStore], Awaitable[int]]
                ) -> Callable[[argparse.Namespace, Any], int]:
    return with_store(lambda args, _config, store: fn(args, store))


PUBLIC = "public"  # the owner argument that names the public folders


async def _mailbox(store: MailStore, owner: str, name: str) -> tuple[str, MailboxInfo]:
    if owner.lower() == PUBLIC:
        holder = await public_owner(store)
        if holder is None or (info := await store.get_mailbox(holder.id, name)) is None:
            raise CLIError(f"no public folder {name!r} (pochta acl create-public)")
        return holder.address, info
    account = await store.get_account(owner.lower())
    if account is None or is_public_owner(owner):
        raise CLIError(f"no account {owner}")
    info = await store.get_mailbox(account.id, "INBOX" if name.upper() == "INBOX" else name)
    if info is None:
        raise CLIError(f"{owner} has no mailbox {name!r}")
    return account.address.lower(), info


def _identifier(value: str, owner: str) -> str:
    try:
        who = identifier(value)
    except AclError as exc:
        raise CLIError(str(exc)) from None
    if positive(who) == owner:
        raise CLIError("the owner has every right implicitly")
    return who


async def cmd_acl_get(args: argparse.Namespace, store: MailStore) -> int:
    owner, info = await _mailbox(store, args.owner, args.mailbox)
    if not is_public_owner(owner):  # a public folder's holder is nobody
        print(f"{owner} {OWNER_RIGHTS} (owner)")
    for who, rights in sorted((await store.get_acl(info.id)).items()):
        print(f"{who} {rights}")
    return 0


async def cmd_acl_set(args: argparse.Namespace, store: MailStore) -> int:
    owner, info = await _mailbox(store, args.owner, args.mailbox)
    who = _identifier(args.identifier, owner)
    try:
        rights = modify((await store.get_acl(info.id)).get(who, ""), args.rights)
    except AclError as exc:
        raise CLIError(str(exc)) from None
    await store.set_acl(info.id, who, rights or None)
    print(f"{owner} {info.name}: {who} {rights or '(no rights: grant removed)'}")
    return 0


async def cmd_acl_delete(args: argparse.Namespace, store: MailStore) -> int:
    owner, info = await _mailbox(store, args.owner, args.mailbox)
    who = _identifier(args.identifier, owner)
    if who not in await store.get_acl(info.id):
        raise CLIError(f"{who} has no grant on {owner} {info.name}")
    await store.set_acl(info.id, who, None)
    print(f"{owner} {info.name}: grant to {who} removed")
    return 0


def _public_name(name: str) -> str:
    if not valid_mailbox_name(name) or name.upper() == "INBOX":
        raise CLIError(f"invalid public folder name {name!r}")
    return name


async def cmd_acl_create_public(args: argparse.Namespace, store: MailStore) -> int:
    name = _public_name(args.name)
    holder = await public_owner(store, create=True)
    assert holder is not None
    try:
        await store.create_mailbox(holder.id, name)
    except AlreadyExists:
        raise CLIError(f"public folder {name!r} already exists") from None
    print(f"public folder {name} created (IMAP: Public/{name}); nobody may see it until "
          f"granted: pochta acl set public {name} IDENTIFIER RIGHTS")
    return 0


async def cmd_acl_delete_public(args: argparse.Namespace, store: MailStore) -> int:
    name = _public_name(args.name)
    holder = await public_owner(store)
    try:
        if holder is None:
            raise NotFound(name)
        await store.delete_mailbox(holder.id, name)
    except NotFound:
        raise CLIError(f"no public folder {name!r}") from None
    print(f"public folder {name} deleted, with its messages and grants")
    return 0


def register(subparsers: Any) -> None:
    acl = subparsers.add_parser("acl", help="share mailboxes between accounts (IMAP ACL)")
    subs = acl.add_subparsers(dest="acl_command", required=True)
    p = subs.add_parser("get", help="the grants on an account's mailbox")
    p.add_argument("owner", help="the account that owns the mailbox, or public")
    p.add_argument("mailbox")
    p.set_defaults(func=_with_store(cmd_acl_get))
    p = subs.add_parser("set", help="grant rights (lrswipkxtea; +x adds, -x removes)")
    p.add_argument("owner")
    p.add_argument("mailbox")
    p.add_argument("identifier", help="an account address, an alias (its targets), "
                   "@domain (its accounts), anyone or authenticated")
    p.add_argument("rights")
    p.set_defaults(func=_with_store(cmd_acl_set))
    p = subs.add_parser("delete", help="remove an identifier's grant")
    p.add_argument("owner")
    p.add_argument("mailbox")
    p.add_argument("identifier")
    p.set_defaults(func=_with_store(cmd_acl_delete))
    p = subs.add_parser("create-public", help="a public folder, owned by no account")
    p.add_argument("name")
    p.set_defaults(func=_with_store(cmd_acl_create_public))
    p = subs.add_parser("delete-public", help="delete a public folder and its messages")
    p.add_argument("name")
    p.set_defaults(func=_with_store(cmd_acl_delete_public))
