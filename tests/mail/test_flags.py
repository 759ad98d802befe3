"""The IMAP system flags, one list for the IMAP core and Sieve's imap4flags."""

from __future__ import annotations

from pochta.mail.flags import SYSTEM_FLAGS, system_flag
from pochta.services.sieve import imap_flags


def test_system_flags() -> None:
    assert SYSTEM_FLAGS == ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
    assert system_flag("\\SEEN") == "\\Seen"
    assert system_flag("\\recent") is None  # RFC 9051 §2.3.2: not settable
    assert system_flag("Seen") is None


def test_sieve_keeps_system_flags_by_their_imap_spelling() -> None:
    flags = imap_flags(frozenset({"\\seen", "\\FLAGGED", "\\Bogus", "$label1", "bad(kw"}))
    assert flags == frozenset({"\\Seen", "\\Flagged", "$label1"})
