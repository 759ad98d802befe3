"""Vacation never answers the user's own mail (RFC 5230 §4.6), whatever the spelling of
the address: the comparison uses the one address normalisation."""

from __future__ import annotations

import pytest

from pochta.sieve.autoreply import vacation_refusal
from pochta.sieve.message import SieveMessage

MSG = SieveMessage(b"From: x@example.test\r\nTo: strasse@example.test\r\n\r\nhi\r\n")


@pytest.mark.parametrize("sender", ["Stra\u00dfe@Example.TEST", "strasse+tag@example.test.",
                                    "STRASSE@example.test"])
def test_own_address_in_any_spelling(sender: str) -> None:
    assert vacation_refusal(MSG, sender, {"strasse@example.test"}) == "message from the user"


def test_someone_else_gets_a_reply() -> None:
    assert vacation_refusal(MSG, "bob@example.test", {"strasse@example.test"}) is None
