"""``pochta metadata get|set|delete``: the administrator's server METADATA entries (RFC 5464
§3.2, IMAP mailbox name ``""``), the ``/shared/...`` ones every user sees with
GETMETADATA and Sieve's ``servermetadata`` and none may set over IMAP (NO [NOPERM];
services/server_metadata.py). ``/shared/admin`` (§6.2.1) defaults to ``[imap]
admin_contact``, else ``mailto:postmaster@`` the primary domain; ``set`` overrides it,
``delete`` returns to the default. The same limits as SETMETADATA: 64 KiB a value,
100 entries."""

from __future__ import annotations

import argparse
from typing import Any

from pochta.cliutil import CLIError, with_store
from pochta.config import Config
from pochta.proto.imap.metadata import valid_entry
from pochta.server.imap_metadata import MAX_ENTRIES, MAX_VALUE
from pochta.services import server_metadata as sm
from pochta.storage.interfaces import MailStore


def _entry(name: str) -> str:
    if not valid_entry(name):
        raise CLIError(f"invalid entry name {name!r} (RFC 5464 §3.2: /shared/NAME[/...], "
                       "no * or %)")
    if not sm.is_admin_entry(name):
        raise CLIError(f"{name}: /private server entries are each user's own (IMAP "
                       "SETMETADATA); the administrator sets /shared ones")
    return name.lower()


def _shown(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


async def _admin_entries(store: MailStore) -> dict[str, bytes]:
    stored = await store.get_metadata(sm.ADMINISTRATOR, sm.SERVER)
    return {k: v for k, v in stored.items() if sm.is_admin_entry(k)}


async def cmd_get(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    stored = await _admin_entries(store)
    wanted = _entry(args.entry) if args.entry else None
    default = None
    if sm.ADMIN_ENTRY not in stored:
        default = await sm.admin_contact_default(store, config.imap.admin_contact,
                                                 config.hostname)
    found = False
    for entry in sorted(stored):
        if wanted is None or entry == wanted or entry.startswith(wanted + "/"):
            print(f"{entry} {_shown(stored[entry])}")
            found = True
    if default is not None and wanted in (None, sm.ADMIN_ENTRY):
        source = "[imap] admin_contact" if config.imap.admin_contact else "postmaster"
        print(f"{sm.ADMIN_ENTRY} {default} (default: {source})")
        found = True
    if wanted is not None and not found:
        raise CLIError(f"{wanted} is not set")
    return 0


async def cmd_set(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    entry = _entry(args.entry)
    value = args.value.encode("utf-8")
    if len(value) > MAX_VALUE:
        raise CLIError(f"value of {len(value)} bytes; at most {MAX_VALUE}")
    stored = await _admin_entries(store)
    if entry not in stored and len(stored) >= MAX_ENTRIES:
        raise CLIError(f"already {len(stored)} server entries, the most there may be")
    await store.set_metadata(sm.ADMINISTRATOR, sm.SERVER, {entry: value})
    print(f"{entry} set; every user sees it (IMAP GETMETADATA \"\", Sieve servermetadata)")
    return 0


async def cmd_delete(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    entry = _entry(args.entry)
    if entry not in await _admin_entries(store):
        raise CLIError(f"{entry} is not set")
    await store.set_metadata(sm.ADMINISTRATOR, sm.SERVER, {entry: None})
    after = " (back to its default)" if entry == sm.ADMIN_ENTRY else ""
    print(f"{entry} deleted{after}")
    return 0


def register(subparsers: Any) -> None:
    md = subparsers.add_parser("metadata", help="server METADATA entries every IMAP user "
                               "sees (RFC 5464 /shared/..., e.g. /shared/admin)")
    subs = md.add_subparsers(dest="metadata_command", required=True)
    p = subs.add_parser("get", help="the server's /shared entries (all, or ENTRY and below)")
    p.add_argument("entry", nargs="?", help="e.g. /shared/admin")
    p.set_defaults(func=with_store(cmd_get))
    p = subs.add_parser("set", help="set a server /shared entry")
    p.add_argument("entry", help="e.g. /shared/admin or /shared/comment")
    p.add_argument("value", help="e.g. mailto:help@example.org")
    p.set_defaults(func=with_store(cmd_set))
    p = subs.add_parser("delete", help="remove a server /shared entry")
    p.add_argument("entry")
    p.set_defaults(func=with_store(cmd_delete))
