"""``pochta acl get|set|delete``: an admin's view of the IMAP ACL grants (RFC 4314) that
share an account's mailbox with others (docs/imap.md, "Shared mailboxes"). The same
store contract as IMAP's SETACL/GETACL/DELETEACL; rights are RFC 4314 letters
(``lrswipkxtea``), ``+``/``-`` to add or remove some."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pochta.cliutil import CLIError, open_store
from pochta.proto.imap.acl import OWNER_RIGHTS, AclError, identifier, modify
from pochta.storage.interfaces import MailboxInfo, MailStore


def _with_store(fn: Callable[[argparse.Namespace, MailStore], Awaitable[int]]
                ) -> Callable[[argparse.Namespace, Any], int]:
    def run(args: argparse.Namespace, config: Any) -> int:
        async def main() -> int:
            store = await open_store(config)
            try:
                return await fn(args, store)
            finally:
                await store.close()

        return asyncio.run(main())

    return run


async def _mailbox(store: MailStore, owner: str, name: str) -> tuple[str, MailboxInfo]:
    account = await store.get_account(owner.lower())
    if account is None:
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
    if who == owner:
        raise CLIError("the owner has every right implicitly")
    return who


async def cmd_acl_get(args: argparse.Namespace, store: MailStore) -> int:
    owner, info = await _mailbox(store, args.owner, args.mailbox)
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


def register(subparsers: Any) -> None:
    acl = subparsers.add_parser("acl", help="share mailboxes between accounts (IMAP ACL)")
    subs = acl.add_subparsers(dest="acl_command", required=True)
    p = subs.add_parser("get", help="the grants on an account's mailbox")
    p.add_argument("owner", help="the account that owns the mailbox")
    p.add_argument("mailbox")
    p.set_defaults(func=_with_store(cmd_acl_get))
    p = subs.add_parser("set", help="grant rights (lrswipkxtea; +x adds, -x removes)")
    p.add_argument("owner")
    p.add_argument("mailbox")
    p.add_argument("identifier", help="an account address, anyone or authenticated")
    p.add_argument("rights")
    p.set_defaults(func=_with_store(cmd_acl_set))
    p = subs.add_parser("delete", help="remove an identifier's grant")
    p.add_argument("owner")
    p.add_argument("mailbox")
    p.add_argument("identifier")
    p.set_defaults(func=_with_store(cmd_acl_delete))
