"""``pochta sieve put|get|list|activate|deactivate|delete|check|test``: an admin manages a
user's Sieve scripts and sees what a script would do with a message, without delivering.

``check USER [FILE]`` compiles FILE (or the user's active script) with its includes;
``test USER MESSAGE.eml [--from ... --to ...]`` runs the active script (or ``--script
FILE``) against the message and prints the actions; nothing is stored or sent.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from pochta.cliutil import open_store
from pochta.mail.addresses import AddressError, normalize_address
from pochta.services.sieve import SieveService
from pochta.services.sieve_check import check_script
from pochta.sieve import SieveMessage, SieveSyntaxError, compile_script
from pochta.sieve.address import envelope_path
from pochta.storage.interfaces import Envelope, MailStore, NotFound, StoreError
from pochta.storage.interfaces_sieve import ScriptActive


class _Fail(Exception):
    pass


def _read(path: str | None) -> str:
    try:
        if path is None or path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Fail(f"cannot read {path}: {exc}") from None


def _run(fn: Any) -> Any:
    def run(args: argparse.Namespace, config: Any) -> int:
        async def main() -> int:
            store = await open_store(config)
            try:
                account_id = await _account(store, args.user)
                result: int = await fn(args, config, store, account_id)
                return result
            except _Fail as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            finally:
                await store.close()

        return asyncio.run(main())

    return run


async def _account(store: MailStore, user: str) -> int:
    try:
        address = normalize_address(user)
    except AddressError as exc:
        raise _Fail(f"{user}: {exc}") from None
    account = await store.get_account(address)
    if account is None:
        raise _Fail(f"no account {address}")
    return account.id


def _name(args: argparse.Namespace) -> str:
    return str(args.name or (Path(args.file).stem if args.file and args.file != "-"
                             else "main"))


def _errors(exc: SieveSyntaxError) -> str:
    """Every compile error, the later ones indented under the first."""
    return exc.report().replace("\n", "\n  ")


async def cmd_put(args: argparse.Namespace, config: Any, store: MailStore, acc: int) -> int:
    source = _read(args.file)
    try:
        compile_script(source, limits=config.sieve.limits())
    except SieveSyntaxError as exc:
        raise _Fail(f"{args.file or 'stdin'}: {_errors(exc)}") from None
    name = _name(args)
    await store.put_sieve_script(acc, name, source)
    if args.activate:
        await store.set_active_sieve_script(acc, name)
    print(f"stored {name!r}{' (active)' if args.activate else ''}")
    return 0


async def cmd_get(args: argparse.Namespace, config: Any, store: MailStore, acc: int) -> int:
    if args.name is None:
        active = await store.get_active_sieve_script(acc)
        if active is None:
            raise _Fail("no active script")
        source = active[1]
    else:
        got = await store.get_sieve_script(acc, args.name)
        if got is None:
            raise _Fail(f"no script {args.name!r}")
        source = got
    sys.stdout.write(source)
    return 0


async def cmd_list(args: argparse.Namespace, config: Any, store: MailStore, acc: int) -> int:
    for info in await store.list_sieve_scripts(acc):
        active = "\tACTIVE" if info.active else ""
        print(f"{info.name}\t{info.size} bytes{active}")
    return 0


async def cmd_activate(args: argparse.Namespace, config: Any, store: MailStore,
                       acc: int) -> int:
    try:
        await store.set_active_sieve_script(acc, args.name)
    except NotFound:
        raise _Fail(f"no script {args.name!r}") from None
    print(f"active: {args.name}")
    return 0


async def cmd_deactivate(args: argparse.Namespace, config: Any, store: MailStore,
                         acc: int) -> int:
    await store.set_active_sieve_script(acc, None)
    print("no script is active")
    return 0


async def cmd_delete(args: argparse.Namespace, config: Any, store: MailStore,
                     acc: int) -> int:
    try:
        await store.delete_sieve_script(acc, args.name)
    except (NotFound, ScriptActive) as exc:
        raise _Fail(str(exc)) from None
    print(f"deleted {args.name!r}")
    return 0


def _service(config: Any, store: MailStore) -> SieveService:
    return SieveService(store, config.sieve, config.hostname,
                        global_dir=config.path(config.sieve.global_dir),
                        lists_dir=config.path(config.sieve.lists_dir),
                        admin_contact=config.imap.admin_contact)


async def cmd_check(args: argparse.Namespace, config: Any, store: MailStore, acc: int) -> int:
    """The active script (or FILE) with the scripts it includes. For the active script a
    missing included script or a loop is an error, as delivery would meet it; for FILE a
    warning (the script it includes may be uploaded next)."""
    service = _service(config, store)
    if args.file is None:
        active = await store.get_active_sieve_script(acc)
        if active is None:
            raise _Fail("no active script")
        name, source, shown = active[0], active[1], f"active script {active[0]!r}"
    else:
        name, source, shown = Path(args.file).stem, _read(args.file), str(args.file)
    checked = await check_script(store, service.global_dir, service.limits, acc, name,
                                 source, service.compile)
    errors = checked.errors(strict=args.file is None)
    if errors:
        raise _Fail(f"{shown}: {_errors(SieveSyntaxError.of(errors))}")
    warnings = [] if args.file is None else checked.resolved.warnings()
    for warning in warnings:
        print(f"warning: {shown}: {warning}", file=sys.stderr)
    assert checked.script is not None
    included = sum(1 for s in checked.resolved.scripts.values() if s is not None)
    print(f"ok: {shown} compiles (requires: "
          f"{', '.join(sorted(checked.script.requires)) or 'nothing'})"
          + (f", with {included} included" if included else ""))
    return 0


async def cmd_test(args: argparse.Namespace, config: Any, store: MailStore, acc: int) -> int:
    try:
        data = Path(args.message).read_bytes()
    except OSError as exc:
        raise _Fail(f"cannot read {args.message}: {exc}") from None
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    service = _service(config, store)
    account = await store.get_account_by_id(acc)
    assert account is not None
    # the paths as an SMTP server would hand them on: "<@relay:bob@x>" is bob@x
    sender = envelope_path(args.sender or "")
    rcpt = envelope_path(args.rcpt) if args.rcpt else None
    if sender is None or (args.rcpt and not rcpt):
        bad = args.sender if sender is None else args.rcpt
        raise _Fail(f"{bad!r} is not an SMTP path (user@domain, <user@domain> or <>)")
    envelope = Envelope(sender=sender)
    message = SieveMessage(data)
    override = None
    if args.script:  # a file instead of the active script
        override = (Path(args.script).name, _read(args.script))
    decision = await service.decide(message, envelope, acc, rcpt or None, source=override)
    print(f"recipient: {decision.recipient}  envelope from: <{envelope.sender}>")
    print(f"script:    {decision.script or '(none active)'}")
    if config.sieve.before or config.sieve.after:  # the admin's, around it
        print(f"around:    before {', '.join(config.sieve.before) or '-'}; "
              f"after {', '.join(config.sieve.after) or '-'}")
    if decision.error:
        print(f"error:     {decision.error}")
        if decision.result is None:
            print("actions:   keep INBOX (the fallback)")
            return 2
    if decision.result is None:
        print("actions:   keep INBOX (implicit)")
        return 0
    for line in decision.result.describe():
        print(f"action:    {line}")
    return 2 if decision.error else 0


def register(subparsers: Any) -> None:
    sv = subparsers.add_parser("sieve", help="users' Sieve filters (see docs/sieve.md)")
    ss = sv.add_subparsers(dest="sieve_command", required=True)
    p = ss.add_parser("put", help="store a script (checked first)")
    p.add_argument("user")
    p.add_argument("file", nargs="?", help="the script (default: stdin)")
    p.add_argument("--name", help="script name (default: the file's name without suffix)")
    p.add_argument("--activate", action="store_true", help="make it the active script")
    p.set_defaults(func=_run(cmd_put))
    p = ss.add_parser("get", help="print a script (default: the active one)")
    p.add_argument("user")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=_run(cmd_get))
    p = ss.add_parser("list", help="the user's scripts")
    p.add_argument("user")
    p.set_defaults(func=_run(cmd_list))
    p = ss.add_parser("activate", help="make a script the active one")
    p.add_argument("user")
    p.add_argument("name")
    p.set_defaults(func=_run(cmd_activate))
    p = ss.add_parser("deactivate", help="no active script (mail goes to INBOX)")
    p.add_argument("user")
    p.set_defaults(func=_run(cmd_deactivate))
    p = ss.add_parser("delete", help="delete a script that is not active")
    p.add_argument("user")
    p.add_argument("name")
    p.set_defaults(func=_run(cmd_delete))
    p = ss.add_parser("check", help="compile a file, or the user's active script and its "
                      "includes")
    p.add_argument("user")
    p.add_argument("file", nargs="?")
    p.set_defaults(func=_run(cmd_check))
    p = ss.add_parser("test", help="show what the script would do with a message "
                      "(nothing is delivered)")
    p.add_argument("user")
    p.add_argument("message", help="the message (.eml)")
    p.add_argument("--from", dest="sender", default="", help="envelope sender (default <>)")
    p.add_argument("--to", dest="rcpt", help="envelope recipient (default: the user)")
    p.add_argument("--script", help="run this file instead of the active script")
    p.set_defaults(func=_run(cmd_test))


__all__ = ["StoreError", "register"]
