"""``pochta user app-password add|list|revoke`` (services/app_passwords.py)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from ..cliutil import CLIError, with_store
from ..mail.addresses import AddressError, normalize_address
from ..services import app_passwords
from ..storage.interfaces import AlreadyExists, MailStore, NotFound


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "never"


async def cmd_app_password(args: argparse.Namespace, config: Any, store: MailStore) -> int:

    try:
        address = normalize_address(args.address)
    except AddressError as exc:
        raise CLIError(str(exc)) from None
    account = await store.get_account(address)
    if account is None:
        raise CLIError(f"no user {address}")
    if args.app_action == "add":
        try:
            secret = await app_passwords.create(store, account, args.name)
        except (ValueError, AlreadyExists) as exc:
            raise CLIError(str(exc)) from None
        print(f"app password {args.name!r} for {address} (shown once; use it as the "
              f"password in the device's mail settings):\n{secret}")
    elif args.app_action == "list":
        for p in await store.list_app_passwords(account.id):
            print(f"{p.name}\tcreated {_when(p.created)}\tlast used {_when(p.last_used)}")
    else:
        try:
            await store.revoke_app_password(account.id, args.name)
        except NotFound as exc:
            raise CLIError(str(exc)) from None
        print(f"revoked {args.name!r}: logins with it fail from now on")
    return 0


def register_app_password(usr: Any) -> None:
    """``pochta user app-password`` (added to the ``user`` group by pochta.cli)."""

    p = usr.add_parser("app-password", help="per-device passwords for IMAP/SMTP/POP3/"
                       "ManageSieve (not for the web login)")
    sub = p.add_subparsers(dest="app_action", required=True)
    for name, what in (("add", "make one (the password is printed once)"),
                       ("list", "names, creation and last use"),
                       ("revoke", "delete one: it stops working at once")):
        q = sub.add_parser(name, help=what)
        q.add_argument("address")
        if name != "list":
            q.add_argument("name", help="the device, e.g. 'phone'")
        q.set_defaults(func=with_store(cmd_app_password))
