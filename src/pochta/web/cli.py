"""``pochta admin add|list|passwd|remove``: the web admin's accounts (docs/web.md).

Admins are not mail accounts: a name without ``@``, a password (read from a prompt or
``--password-stdin``, hashed with argon2id), nothing else. Every admin has every right.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pochta.cliutil import CLIError, open_store, read_password
from pochta.config import Config
from pochta.passwords import hash_password, password_hasher
from pochta.storage.interfaces import AlreadyExists, MailStore, NotFound

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _with_store(fn: Callable[[argparse.Namespace, Config, MailStore], Awaitable[int]]
                ) -> Callable[[argparse.Namespace, Any], int]:
    def run(args: argparse.Namespace, config: Any) -> int:
        async def main() -> int:
            store = await open_store(config)
            try:
                return await fn(args, config, store)
            finally:
                await store.close()

        return asyncio.run(main())

    return run


def _name(value: str) -> str:
    if not NAME.match(value):
        raise CLIError(f"{value!r}: an admin name is 1-64 letters, digits, '.', '_' or '-' "
                       "(no '@': mail users log in to the web pages with their address)")
    return value


async def cmd_admin_add(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    name = _name(args.name)
    if await store.get_admin(name) is not None:
        raise CLIError(f"admin {name} exists (pochta admin passwd {name})")
    password = read_password(args)
    try:
        await store.add_admin(name, hash_password(password, hasher=password_hasher(config)),
                              time.time())
    except AlreadyExists as exc:
        raise CLIError(str(exc)) from None
    print(f"added web admin {name}")
    return 0


async def cmd_admin_passwd(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    name = _name(args.name)
    if await store.get_admin(name) is None:
        raise CLIError(f"no admin {name}")
    password = read_password(args)
    await store.set_admin_password(name, hash_password(password, hasher=password_hasher(config)))
    print(f"password changed for web admin {name} (its sessions were ended)")
    return 0


async def cmd_admin_list(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    admins = await store.list_admins()
    if not admins:
        print("no web admins (pochta admin add NAME)")
    for a in admins:
        print(f"{a.name:<24} added {datetime.fromtimestamp(a.created, UTC):%Y-%m-%d %H:%M}")
    return 0


async def cmd_admin_remove(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    try:
        await store.remove_admin(args.name)
    except NotFound as exc:
        raise CLIError(str(exc)) from None
    print(f"removed web admin {args.name} (its sessions were ended)")
    return 0


def register(subparsers: Any) -> None:
    adm = subparsers.add_parser("admin", help="accounts of the web admin pages")
    subs = adm.add_subparsers(dest="admin_command", required=True)
    for name, fn, helptext in (("add", cmd_admin_add, "add a web admin"),
                               ("passwd", cmd_admin_passwd, "set a web admin's password")):
        p = subs.add_parser(name, help=helptext)
        p.add_argument("name")
        p.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input")
        p.set_defaults(func=_with_store(fn))
    subs.add_parser("list", help="the web admins").set_defaults(func=_with_store(cmd_admin_list))
    p = subs.add_parser("remove", help="remove a web admin")
    p.add_argument("name")
    p.set_defaults(func=_with_store(cmd_admin_remove))
