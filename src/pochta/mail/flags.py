"""IMAP system flags (RFC 9051 §2.3.2), the ones every mailbox holds; Sieve's imap4flags
(RFC 5232) sets them by the same names."""

from __future__ import annotations

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_BY_LOWER = {f.lower(): f for f in SYSTEM_FLAGS}


def system_flag(name: str) -> str | None:
    """The IMAP spelling of a system flag named in any case; None if it is not one."""
    return _BY_LOWER.get(name.lower())
