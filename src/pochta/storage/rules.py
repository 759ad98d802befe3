"""Mail rules that every backend shares: they are not storage, so they live here once
(mailbox names, queue ids, flag arithmetic), and backends only persist their results."""

from __future__ import annotations

import secrets

from .interfaces import Envelope, FlagMode


def new_message_id() -> str:
    """A queue id in Postfix's spirit: short, upper-case hex, unique enough to grep logs."""
    return secrets.token_hex(6).upper()


def normalize_mailbox_name(name: str) -> str:
    """INBOX is case-insensitive (RFC 9051 §5.1); other names are kept as given."""
    if name.upper() == "INBOX":
        return "INBOX"
    if name.upper().startswith("INBOX/"):
        return "INBOX" + name[5:]
    return name


def apply_flags(current: frozenset[str], flags: frozenset[str], mode: FlagMode
                ) -> frozenset[str]:
    """STORE's flag arithmetic (RFC 9051 §6.4.6): +FLAGS, -FLAGS or FLAGS."""
    if mode is FlagMode.ADD:
        return current | flags
    if mode is FlagMode.REMOVE:
        return current - flags
    return flags


def flags_text(flags: frozenset[str]) -> str:
    """Flags as stored: sorted, space-separated."""
    return " ".join(sorted(flags))


_FLAG_SETS: dict[str, frozenset[str]] = {}  # a mailbox holds a few distinct flag texts


def flags_set(text: str) -> frozenset[str]:
    """The flags of a stored text, one shared set per distinct text (read for every
    changed message of every IMAP command; sharing also makes comparisons identity)."""
    flags = _FLAG_SETS.get(text)
    if flags is None:
        flags = frozenset(text.split()) if text else frozenset()
        if len(_FLAG_SETS) >= 4096:  # keywords are client-chosen: bounded
            _FLAG_SETS.clear()
        _FLAG_SETS[text] = flags
    return flags


def stream_fields(envelope: Envelope) -> dict[str, str | int]:
    """The envelope's stream and priority for its stored JSON (omitted when unset, so
    ordinary mail's envelope is stored as before)."""
    out: dict[str, str | int] = {}
    if envelope.stream:
        out["stream"] = envelope.stream
    if envelope.priority:
        out["priority"] = envelope.priority
    return out
