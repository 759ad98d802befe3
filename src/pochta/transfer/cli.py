"""``pochta import maildir|mbox|imap``, ``pochta export``, ``pochta backup|restore``.

Each command prints its progress (counts and bytes) as it goes and a summary at the end;
bad input (a missing path, a directory that is not a Maildir, an unknown user, an
unreachable IMAP server) is one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..mail.addresses import AddressError, normalize_address
from ..storage.factory import open_store
from ..storage.interfaces import Account, MailStore, StoreError
from .backup import backup, restore
from .errors import TransferError
from .export import export_maildir
from .imap import ImapSource, import_imap
from .local import import_maildir, import_mbox
from .maildir import MaildirError
from .mbox import MboxError

ERRORS = (TransferError, MaildirError, MboxError, StoreError, AddressError, OSError)


def say(line: str) -> None:
    print(f"  {line}", flush=True)


async def account_of(store: MailStore, user: str) -> Account:
    address = normalize_address(user)
    account = await store.get_account(address)
    if account is None:
        raise TransferError(f"no account {address} (create it first with pochta user add)")
    return account


def _run(fn: Callable[[argparse.Namespace, Any, MailStore], Awaitable[int]]
         ) -> Callable[[argparse.Namespace, Any], int]:
    def run(args: argparse.Namespace, config: Any) -> int:
        async def main() -> int:
            store = await open_store(config)
            try:
                return await fn(args, config, store)
            finally:
                await store.close()

        try:
            return asyncio.run(main())
        except ERRORS as exc:
            print(f"pochta: {exc}", file=sys.stderr)
            return 1

    return run


async def cmd_import_maildir(args: argparse.Namespace, config: Any, store: MailStore) -> int:
    account = await account_of(store, args.user)
    print(f"importing the Maildir {args.path} into {account.address} ...", flush=True)
    report = await import_maildir(store, account, Path(args.path), say,
                                  config.data_path / "spool")
    print(f"done: {report.line()}")
    return 0


async def cmd_import_mbox(args: argparse.Namespace, config: Any, store: MailStore) -> int:
    account = await account_of(store, args.user)
    print(f"importing the mbox {args.path} into {account.address} ...", flush=True)
    report = await import_mbox(store, account, Path(args.path), args.mailbox, say,
                               config.data_path / "spool")
    print(f"done: {report.line()}")
    return 0


async def cmd_import_imap(args: argparse.Namespace, config: Any, store: MailStore) -> int:
    account = await account_of(store, args.user)
    source = ImapSource.from_args(args.source, args.password_file, args.ca_file,
                                  args.no_verify, args.user_name)
    print(f"copying {source.describe()} into {account.address} ...", flush=True)
    report = await import_imap(store, account, source,
                               config.data_path / "import", say,
                               config.data_path / "spool")
    print(f"done: {report.line()}")
    return 0


async def cmd_export(args: argparse.Namespace, config: Any, store: MailStore) -> int:
    account = await account_of(store, args.user)
    print(f"exporting {account.address} to the Maildir {args.path} ...", flush=True)
    report = await export_maildir(store, account, Path(args.path), say)
    print(f"done: {report.messages} message(s), {report.bytes / 1e6:.1f} MB in "
          f"{len(report.mailboxes)} mailbox(es)")
    return 0


def cmd_backup(args: argparse.Namespace, config: Any) -> int:
    try:
        manifest = backup(config, Path(args.path), say)
    except ERRORS as exc:
        print(f"pochta: {exc}", file=sys.stderr)
        return 1
    counts = manifest["counts"]
    print(f"backup in {args.path}: {counts['accounts']} account(s), "
          f"{counts['mailboxes']} mailbox(es), {counts['messages']} message(s), "
          f"{counts['message_bytes'] / 1e6:.1f} MB; manifest.json lists every file and "
          "its SHA-256")
    return 0


def cmd_restore(args: argparse.Namespace, config: Any) -> int:
    try:
        manifest = restore(config, Path(args.path), say)
    except ERRORS as exc:
        print(f"pochta: {exc}", file=sys.stderr)
        return 1
    counts = manifest["counts"]
    print(f"restored {counts['accounts']} account(s), {counts['mailboxes']} mailbox(es), "
          f"{counts['messages']} message(s); counts checked against the manifest")
    return 0


def register(subparsers: Any) -> None:
    imp = subparsers.add_parser("import", help="bring old mail in: Maildir, mbox, IMAP")
    sub = imp.add_subparsers(dest="import_command", required=True)
    p = sub.add_parser("maildir", help="a Maildir (Dovecot, Courier, Postfix; Maildir++ "
                                       "or LAYOUT=fs folders)")
    p.add_argument("user")
    p.add_argument("path")
    p.set_defaults(func=_run(cmd_import_maildir))
    p = sub.add_parser("mbox", help="an mbox file, or a directory of them")
    p.add_argument("user")
    p.add_argument("path")
    p.add_argument("--mailbox", metavar="NAME",
                   help="the mailbox to fill (default INBOX; for a directory, the parent "
                        "of the mailboxes named after the files)")
    p.set_defaults(func=_run(cmd_import_mbox))
    p = sub.add_parser("imap", help="copy a whole account from another IMAP server "
                                    "(resumable)")
    p.add_argument("user")
    p.add_argument("--from", dest="source", required=True, metavar="URL",
                   help="imaps://USER@HOST[:PORT] (implicit TLS) or imap://... (STARTTLS)")
    p.add_argument("--user", dest="user_name", metavar="LOGIN",
                   help="the login name, if not in the URL")
    p.add_argument("--password-file", metavar="FILE",
                   help="the remote password (first line); else asked for")
    p.add_argument("--ca-file", metavar="FILE",
                   help="trust this CA (PEM) for the remote certificate")
    p.add_argument("--no-verify", action="store_true",
                   help="do not check the remote certificate (a self-signed old server)")
    p.set_defaults(func=_run(cmd_import_imap))

    p = subparsers.add_parser("export", help="an account as a Maildir (mutt, Dovecot)")
    p.add_argument("user")
    p.add_argument("path")
    p.set_defaults(func=_run(cmd_export))

    p = subparsers.add_parser("backup", help="a consistent copy of the store and keys, "
                                             "while the server runs")
    p.add_argument("path", help="a new (or empty) directory")
    p.set_defaults(func=cmd_backup)
    p = subparsers.add_parser("restore", help="put a backup into an empty data directory "
                                              "or database")
    p.add_argument("path")
    p.set_defaults(func=cmd_restore)
