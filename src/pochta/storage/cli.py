"""``pochta store verify|stats|compact|migrate-schema``: the administrator's view of the
store's integrity and space.

``verify`` reads every blob and checks it against the index (length and SHA-256); it exits
1 and lists the damaged ones if any. ``stats`` shows live against reclaimable bytes.
``compact`` gives back the space of messages nobody references any more (the server also
does this by itself every ``[storage] compact_interval`` seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pochta.storage.copy import copy_sqlite_to_postgres, default_progress
from pochta.storage.factory import open_store, schema_version
from pochta.storage.interfaces import MailStore


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


async def _open(config: Any) -> MailStore:
    return await open_store(config)


def _with_store(
    fn: Callable[[argparse.Namespace, MailStore], Awaitable[int]],
) -> Callable[[argparse.Namespace, Any], int]:
    def run(args: argparse.Namespace, config: Any) -> int:
        async def main() -> int:
            store = await _open(config)
            try:
                return await fn(args, store)
            finally:
                await store.close()

        return asyncio.run(main())

    return run


async def cmd_verify(args: argparse.Namespace, store: MailStore) -> int:
    started = time.monotonic()
    stats = await store.store_stats()
    print(f"checking {stats.blobs} message blob(s) against the index ...", flush=True)
    problems = await store.verify_blobs()
    for p in problems:
        print(f"BAD  blob {p.blob_id}: {p.problem}")
    took = time.monotonic() - started
    if problems:
        print(f"{len(problems)} of {stats.blobs} blob(s) damaged ({took:.1f} s); the "
              "server refuses to serve them (IMAP NO, POP3 -ERR) instead of wrong bytes")
        return 1
    print(f"ok: {stats.blobs} blob(s), {_size(stats.live_bytes)} live, all match their "
          f"length and checksum ({took:.1f} s)")
    return 0


async def cmd_stats(args: argparse.Namespace, store: MailStore) -> int:
    s = await store.store_stats()
    print(f"blobs:        {s.blobs}")
    print(f"live:         {_size(s.live_bytes)}")
    print(f"reclaimable:  {_size(s.reclaimable_bytes)}  (pochta store compact)")
    print(f"on disk:      {_size(s.disk_bytes)}")
    return 0


async def cmd_compact(args: argparse.Namespace, store: MailStore) -> int:
    before = await store.store_stats()
    reclaimed = await store.compact(min_age=args.min_age)
    after = await store.store_stats()
    print(f"gave back {_size(reclaimed)}: {_size(before.disk_bytes)} -> "
          f"{_size(after.disk_bytes)} on disk")
    return 0


async def cmd_migrate(args: argparse.Namespace, store: MailStore) -> int:
    # Opening the store applied every migration (or refused a newer schema).
    print(f"schema is at version {schema_version(store)}")
    return 0


def cmd_copy(args: argparse.Namespace, config: Any) -> int:
    """SQLite (this config's data directory) into an empty PostgreSQL database."""
    if config.storage.backend != "sqlite":
        print("pochta: store copy reads the embedded (SQLite) store; this config uses "
              f"{config.storage.backend}")
        return 1
    password = None
    if args.password_file:
        password = Path(args.password_file).read_text(encoding="utf-8").rstrip("\r\n")
    print(f"copying {config.data_path} into {args.to} (stop the server first) ...",
          flush=True)
    report = asyncio.run(copy_sqlite_to_postgres(
        config.data_path, args.to, password, default_progress))
    print(f"done in {report.seconds:.1f} s: {report.rows.get('accounts', 0)} account(s), "
          f"{report.rows.get('messages', 0)} message(s), {report.blob_bytes / 1e6:.1f} MB. "
          "Now set [storage] backend = \"postgresql\" and dsn, copy the data directory's "
          "dkim/ and auth-secret to every node, and start pochta serve.")
    return 0


def register(subparsers: Any) -> None:
    st = subparsers.add_parser("store", help="integrity and space of the message store")
    ss = st.add_subparsers(dest="store_command", required=True)
    p = ss.add_parser("verify", help="check every message blob against the index")
    p.set_defaults(func=_with_store(cmd_verify))
    p = ss.add_parser("stats", help="live and reclaimable bytes")
    p.set_defaults(func=_with_store(cmd_stats))
    p = ss.add_parser("compact", help="give back the space of deleted messages now")
    p.add_argument("--min-age", type=float, default=0.0, metavar="SECONDS",
                   help="only blobs unreferenced for this long (default 0: all)")
    p.set_defaults(func=_with_store(cmd_compact))
    p = ss.add_parser("migrate-schema", help="bring the store's schema up to this version")
    p.set_defaults(func=_with_store(cmd_migrate))
    p = ss.add_parser("copy", help="copy this SQLite installation into an empty PostgreSQL "
                                   "database (UIDVALIDITY, UIDs, MODSEQs kept)")
    p.add_argument("--to", required=True, metavar="DSN",
                   help="postgresql://USER@HOST:PORT/DATABASE (no password in it)")
    p.add_argument("--password-file", metavar="FILE",
                   help="the database password (else PGPASSWORD or ~/.pgpass)")
    p.set_defaults(func=cmd_copy)
