"""``pochta queue list|show ID|retry [ID]|delete ID|flush``.

IDs: a number is one queue item (one recipient); anything else is a queue id (the
"queued as" id of a message) and selects all its recipients. ``retry`` and ``flush``
make items due now without counting an attempt, and wake the running server's queue
worker through the store (it notices within a second).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pochta.config import Config
from pochta.mail.headers import header_end
from pochta.storage.factory import open_store
from pochta.storage.interfaces import MailStore, QueueItem, QueueState
from pochta.transport_security.cli import queue_show_lines

ACTIVE = (QueueState.PENDING, QueueState.DEFERRED)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _select(items: list[QueueItem], ident: str) -> list[QueueItem]:
    """A queue id first: one of twelve hex digits is all decimal digits about once in 280
    ids, and must not be read as an item number."""
    by_queue_id = [i for i in items if i.message_id == ident.upper()]
    if by_queue_id or not ident.isdigit():
        return by_queue_id
    return [i for i in items if i.id == int(ident)]


async def _open(config: Config) -> MailStore:
    return await open_store(config)


def _with_store(
    fn: Callable[[argparse.Namespace, MailStore], Awaitable[int]],
) -> Callable[[argparse.Namespace, Config], int]:
    def run(args: argparse.Namespace, config: Config) -> int:
        async def main() -> int:
            store = await _open(config)
            try:
                return await fn(args, store)
            finally:
                await store.close()

        return asyncio.run(main())

    return run


async def cmd_list(args: argparse.Namespace, store: MailStore) -> int:
    items = await store.list_queue()
    if not args.all:
        items = [i for i in items if i.state in ACTIVE]
    if not items:
        print("queue is empty" if not args.all else "no queue items")
        return 0
    held = await store.held_queue_ids()
    print(f"{'ITEM':>6}  {'QUEUE ID':<20} {'STATE':<9} {'TRIES':>5}  {'NEXT (UTC)':<19}  "
          "SENDER -> RECIPIENT")
    for i in items:
        nxt = _when(i.next_attempt) if i.state in ACTIVE else "-"
        state = "held" if i.id in held else i.state.value
        print(f"{i.id:>6}  {i.message_id:<20} {state:<9} {i.attempts:>5}  {nxt:<19}  "
              f"<{i.envelope.sender}> -> <{i.recipient.address}>")
        if i.last_reply and args.verbose:
            print(f"{'':>8}{i.last_reply}")
    return 0


async def cmd_show(args: argparse.Namespace, store: MailStore) -> int:
    items = _select(await store.list_queue(), args.id)
    if not items:
        print(f"pochta: no queue item or queue id {args.id!r}")
        return 1
    first = items[0]
    env = first.envelope
    print(f"Queue ID:    {first.message_id}")
    print(f"Sender:      <{env.sender}>")
    print(f"Arrived:     {_when(first.created)} UTC")
    flags = [n for n, v in (("SMTPUTF8", env.smtputf8), ("8BITMIME", env.body_8bit)) if v]
    if env.ret or env.envid:
        flags.append(f"RET={env.ret or '-'} ENVID={env.envid or '-'}")
    if flags:
        print(f"Options:     {' '.join(flags)}")
    for i in items:
        print(f"Recipient:   <{i.recipient.address}> [item {i.id}] {i.state.value}, "
              f"{i.attempts} attempt(s)")
        if i.state in ACTIVE:
            print(f"  next attempt {_when(i.next_attempt)} UTC")
        if i.last_reply:
            print(f"  last reply: {i.last_reply}")
    # MTA-STS policy and TLS results of the recipients' domains (transport_security)

    for line in await queue_show_lines(store, [i.recipient.address for i in items]):
        print(line)
    data = await store.read_blob(first.blob_id)
    cut, start = header_end(data)
    print()
    print(data[:cut].removesuffix(b"\n").removesuffix(b"\r").decode("utf-8", "replace"))
    if args.body and start > cut:
        print()
        print(data[start:].decode("utf-8", "replace"))
    return 0


async def _make_due(store: MailStore, items: list[QueueItem]) -> int:
    return await store.reschedule_queue_items(
        [i.id for i in items if i.state in ACTIVE], time.time()
    )


async def cmd_retry(args: argparse.Namespace, store: MailStore) -> int:
    items = await store.list_queue()
    if args.id is not None:
        items = _select(items, args.id)
        if not items:
            print(f"pochta: no queue item or queue id {args.id!r}")
            return 1
    n = await _make_due(store, items)
    print(f"{n} item(s) due now; the running server was told to retry them")
    return 0


async def cmd_flush(args: argparse.Namespace, store: MailStore) -> int:
    n = await _make_due(store, await store.list_queue())
    print(f"{n} item(s) due now; the running server was told to deliver them")
    return 0


async def cmd_delete(args: argparse.Namespace, store: MailStore) -> int:
    items = _select(await store.list_queue(), args.id)
    if not items:
        print(f"pochta: no queue item or queue id {args.id!r}")
        return 1
    for i in items:  # gone without a bounce (like postsuper -d)
        await store.delete_queue_item(i.id)
    print(f"{len(items)} item(s) deleted")
    return 0


async def cmd_hold(args: argparse.Namespace, store: MailStore) -> int:
    """Hold (or release) an item or a message: the worker never claims it until released."""
    items = _select(await store.list_queue(), args.id)
    if not items:
        print(f"pochta: no queue item or queue id {args.id!r}")
        return 1
    ids = [i.id for i in items]
    if args.queue_command == "hold":
        n = await store.hold_queue_items(ids)
        print(f"{n} item(s) held; 'pochta queue release {args.id}' lets them go")
    else:
        n = await store.release_held_queue_items(ids)
        if n:
            await store.reschedule_queue_items(ids, time.time())  # and try them now
        print(f"{n} item(s) released")
    return 0


def register(subparsers: Any) -> None:
    q = subparsers.add_parser("queue", help="inspect and manage the outbound queue")
    qs = q.add_subparsers(dest="queue_command", required=True)
    p = qs.add_parser("list", help="pending and deferred recipients")
    p.add_argument("--all", action="store_true", help="include delivered and failed ones")
    p.add_argument("-v", "--verbose", action="store_true", help="show the last reply")
    p.set_defaults(func=_with_store(cmd_list))
    p = qs.add_parser("show", help="one message (queue id) or item (number)")
    p.add_argument("id")
    p.add_argument("--body", action="store_true", help="print the body too")
    p.set_defaults(func=_with_store(cmd_show))
    p = qs.add_parser("retry", help="make an item, a message or everything due now")
    p.add_argument("id", nargs="?")
    p.set_defaults(func=_with_store(cmd_retry))
    p = qs.add_parser("delete", help="remove an item or a message without a bounce")
    p.add_argument("id")
    p.set_defaults(func=_with_store(cmd_delete))
    p = qs.add_parser("flush", help="attempt delivery of everything queued now")
    p.set_defaults(func=_with_store(cmd_flush))
    for name, what in (("hold", "keep an item or a message from delivery until released"),
                       ("release", "let a held item or message go (tried at once)")):
        p = qs.add_parser(name, help=what)
        p.add_argument("id")
        p.set_defaults(func=_with_store(cmd_hold))
