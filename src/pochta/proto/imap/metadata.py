"""METADATA (RFC 5464), pure: entry names (§3.2), entry lists and values as sent in METADATA
responses (§4.4, §5). Used by GETMETADATA/SETMETADATA (server/imap_metadata.py) and by
LIST's METADATA return option (RFC 9590, server/imap_mailbox.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from pochta.proto.imap.errors import BadCommand
from pochta.proto.imap.parser import ParseError, Reader
from pochta.proto.imap.response import astring, nstring

MAX_NAMES = 1000  # entries in one list
# entry = "/" followed by levels of printable ASCII without wildcards (RFC 5464 §3.2)
_ENTRY = re.compile(r"/(private|shared)(/[\x21-\x7e]+?)*\Z", re.IGNORECASE)


def valid_entry(name: str) -> bool:
    """An entry name of §3.2: ``/private/...`` or ``/shared/...``, no empty level, no
    wildcard."""
    return not (not _ENTRY.match(name) or "//" in name or name.endswith("/") or "*" in name
                or "%" in name or name.lower() in ("/private", "/shared"))


def parse_entry(r: Reader) -> str:
    """One entry name, lower-cased (entry names are case-insensitive, §3.2); an invalid
    one is a BAD in any command (§3.2)."""
    name = r.astring()
    if not valid_entry(name):
        raise BadCommand(f"Invalid entry name {name}")
    return name.lower()


def parse_entries(r: Reader) -> list[str]:
    """An entry or a parenthesized list of them (§5: entries)."""
    if r.accept("("):
        out = [parse_entry(r)]
        while not r.accept(")"):
            r.sp()
            out.append(parse_entry(r))
            if len(out) > MAX_NAMES:
                raise ParseError("too many entries")
        return out
    return [parse_entry(r)]


def value(data: bytes) -> bytes:
    if b"\x00" in data:
        return b"~{%d}\r\n" % len(data) + data  # literal8 (RFC 5464 §5)
    return nstring(data)


def select(stored: Mapping[str, bytes], wanted: Iterable[str], depth: int = 0
           ) -> dict[str, bytes]:
    """The stored entries ``wanted`` names, with their descendants to ``depth`` levels
    (0, 1, -1 for infinity: GETMETADATA's DEPTH, §4.2.2)."""
    found: dict[str, bytes] = {}
    for entry in wanted:
        for key, data in stored.items():
            if key == entry:
                found[key] = data
            elif depth != 0 and key.startswith(entry + "/"):
                rest = key[len(entry) + 1 :]
                if depth == -1 or "/" not in rest:
                    found[key] = data
    return found


def response(mailbox: bytes, entries: Mapping[str, bytes]) -> bytes:
    """``* METADATA mailbox (entry value ...)``, entries in name order (§4.4.1)."""
    items = b" ".join(astring(k) + b" " + value(entries[k]) for k in sorted(entries))
    return b"* METADATA " + mailbox + b" (" + items + b")\r\n"
