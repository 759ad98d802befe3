"""``pochta apikey``, ``pochta suppress`` and ``pochta stats``: the sending layer's admin
commands (the same store the API uses; the server needs no restart)."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pochta.cliutil import with_store
from pochta.mail.addresses import AddressError, normalize_address, normalize_domain
from pochta.storage.interfaces import MailStore, NotFound
from pochta.storage.interfaces_sending import ALL_STREAMS, ApiKey, EventKind, Suppression

from .api import percentiles
from .tokens import KEY_SCOPES, new_api_key


def _with_store(
    fn: Callable[[argparse.Namespace, MailStore, Any], Awaitable[int]],
) -> Callable[[argparse.Namespace, Any], int]:
    # the store the configuration names (SQLite or PostgreSQL), through the one factory
    return with_store(lambda args, config, store: fn(args, store, config))


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _fail(message: str) -> int:
    print(f"pochta: {message}", file=sys.stderr)
    return 1


async def cmd_apikey_add(args: argparse.Namespace, store: MailStore, _config: Any) -> int:
    try:
        domain = normalize_domain(args.domain)
    except (AddressError, ValueError) as exc:
        return _fail(f"{args.domain}: {exc}")
    if not await store.has_domain(domain):
        return _fail(f"{domain} is not a local domain (pochta domain add {domain})")
    scopes = frozenset(s.strip() for s in args.scope.split(",") if s.strip())
    unknown = scopes - set(KEY_SCOPES)
    if unknown or not scopes:
        return _fail(f"--scope: comma-separated from {', '.join(KEY_SCOPES)}")
    key_id, whole, hashed = new_api_key()
    await store.add_api_key(ApiKey(key_id, domain, scopes, hashed, time.time(),
                                   args.description or ""))
    print(whole)
    print(f"(key {key_id} for {domain}, scopes {','.join(sorted(scopes))}: shown once, only "
          "its hash is stored)", file=sys.stderr)
    return 0


async def cmd_apikey_list(args: argparse.Namespace, store: MailStore, _config: Any) -> int:
    keys = await store.list_api_keys(args.domain)
    if not keys:
        print("no API keys")
    for k in keys:
        print(f"{k.key_id}  {k.domain:<24} {','.join(sorted(k.scopes)):<32} "
              f"{_when(k.created)}  {k.description}")
    return 0


async def cmd_apikey_remove(args: argparse.Namespace, store: MailStore, _config: Any) -> int:
    try:
        await store.remove_api_key(args.key_id)
    except NotFound as exc:
        return _fail(str(exc))
    print(f"removed {args.key_id} (a running server stops accepting it within 30 s)")
    return 0


def _address(value: str) -> str:
    try:
        return normalize_address(value)
    except AddressError as exc:
        raise SystemExit(f"pochta: {value}: {exc}") from None


async def cmd_suppress_list(args: argparse.Namespace, store: MailStore, _config: Any) -> int:
    after = ""
    shown = 0
    while True:
        rows = await store.list_suppressions(args.domain, args.stream, after, 1000)
        for s in rows:
            print(f"{s.address:<40} {s.stream:<14} {s.reason:<12} {_when(s.created)}  "
                  f"{s.detail}")
            shown += 1
        if len(rows) < 1000:
            break
        after = rows[-1].address
    if not shown:
        print("no suppressions")
    return 0


async def cmd_suppress_add(args: argparse.Namespace, store: MailStore, _config: Any) -> int:
    now = time.time()
    added = await store.add_suppressions([
        Suppression(args.domain, args.stream or ALL_STREAMS, _address(a), args.reason, now)
        for a in args.address])
    print(f"{added} added")
    return 0


async def cmd_suppress_remove(args: argparse.Namespace, store: MailStore, _config: Any) -> int:
    if not await store.remove_suppression(args.domain, args.stream or ALL_STREAMS,
                                          _address(args.address)):
        return _fail(f"{args.address} is not suppressed on {args.stream or ALL_STREAMS}")
    print("removed")
    return 0


async def cmd_suppress_import(args: argparse.Namespace, store: MailStore, _config: Any) -> int:
    with open(args.file, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "address" not in reader.fieldnames:
            return _fail("the first row must name the columns, including address")
        now = time.time()
        entries = [Suppression(args.domain, row.get("stream") or ALL_STREAMS,
                               _address(row["address"]), row.get("reason") or "import", now,
                               row.get("detail") or "") for row in reader]
    added = await store.add_suppressions(entries)
    print(f"{len(entries)} read, {added} added")
    return 0


async def cmd_suppress_export(args: argparse.Namespace, store: MailStore, _config: Any) -> int:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["address", "stream", "reason", "created", "detail"])
    after = ""
    while True:
        rows = await store.list_suppressions(args.domain, None, after, 1000)
        for s in rows:
            writer.writerow([s.address, s.stream, s.reason, f"{s.created:.0f}", s.detail])
        if len(rows) < 1000:
            return 0
        after = rows[-1].address


COLUMNS = [EventKind.ACCEPTED, EventKind.DELIVERED, EventKind.DEFERRED, EventKind.BOUNCED,
           EventKind.COMPLAINED, EventKind.UNSUBSCRIBED, EventKind.SUPPRESSED,
           EventKind.OPENED, EventKind.CLICKED]


async def cmd_stats(args: argparse.Namespace, store: MailStore, _config: Any) -> int:
    bucket = 86400 if args.day else 3600
    now = time.time()
    since = now - args.last * bucket
    rows = await store.event_stats(args.domain, since, now + 1, bucket, tag=args.tag)
    table: dict[tuple[float, str], dict[EventKind, int]] = {}
    for r in rows:
        table.setdefault((r.bucket, r.stream), {})[r.kind] = r.count
    header = f"{'period (UTC)':<17} {'stream':<14}" + "".join(f"{k.value:>13}" for k in COLUMNS)
    print(header)
    print("-" * len(header))
    totals: dict[EventKind, int] = {}
    for (b, stream), counts in sorted(table.items()):
        print(f"{_when(b):<17} {stream:<14}" + "".join(f"{counts.get(k, 0):>13}"
                                                      for k in COLUMNS))
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    print("-" * len(header))
    print(f"{'total':<32}" + "".join(f"{totals.get(k, 0):>13}" for k in COLUMNS))

    p = percentiles(await store.delivery_times(args.domain, since, now + 1, tag=args.tag))
    if p["count"]:
        print(f"delivery time (accepted to delivered, {p['count']} copies): "
              f"p50 {p['p50']} s, p90 {p['p90']} s, p99 {p['p99']} s")
        for stream in sorted({s for _, s in table}):
            q = percentiles(await store.delivery_times(args.domain, since, now + 1,
                                                       tag=args.tag, stream=stream))
            if q["count"]:
                print(f"  {stream}: {q['count']} copies, p50 {q['p50']} s, "
                      f"p90 {q['p90']} s, p99 {q['p99']} s")
    return 0


def register(subparsers: Any) -> None:
    ak = subparsers.add_parser("apikey", help="API keys of the sending API (per domain)")
    aks = ak.add_subparsers(dest="apikey_command", required=True)
    p = aks.add_parser("add", help="make a key; it is printed once, only its hash is kept")
    p.add_argument("domain")
    p.add_argument("--scope", default="send,events",
                   help=f"comma-separated: {', '.join(KEY_SCOPES)} (default send,events)")
    p.add_argument("--description", default="")
    p.set_defaults(func=_with_store(cmd_apikey_add))
    p = aks.add_parser("list")
    p.add_argument("domain", nargs="?")
    p.set_defaults(func=_with_store(cmd_apikey_list))
    p = aks.add_parser("remove")
    p.add_argument("key_id")
    p.set_defaults(func=_with_store(cmd_apikey_remove))

    sp = subparsers.add_parser("suppress", help="suppression lists of the sending domains")
    sps = sp.add_subparsers(dest="suppress_command", required=True)
    for name, fn, helptext in (
            ("list", cmd_suppress_list, "suppressed addresses"),
            ("add", cmd_suppress_add, "suppress addresses"),
            ("remove", cmd_suppress_remove, "send to an address again"),
            ("import", cmd_suppress_import, "add from a CSV file (address[,stream,reason])"),
            ("export", cmd_suppress_export, "print every suppression as CSV")):
        p = sps.add_parser(name, help=helptext)
        p.add_argument("domain")
        if name in ("add", "remove"):
            p.add_argument("address", nargs="+" if name == "add" else None)
        if name == "import":
            p.add_argument("file")
        if name in ("list", "add", "remove"):
            p.add_argument("--stream", default=None,
                           help="a stream name; default: every stream (*)")
        if name == "add":
            p.add_argument("--reason", default="manual")
        p.set_defaults(func=_with_store(fn))

    p = subparsers.add_parser("stats", help="sending statistics per hour or day")
    p.add_argument("domain")
    p.add_argument("--day", action="store_true", help="per day (default: per hour)")
    p.add_argument("--last", type=int, default=24, help="how many periods back (default 24)")
    p.add_argument("--tag", default=None)
    p.set_defaults(func=_with_store(cmd_stats))
