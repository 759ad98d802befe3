"""The one address normalisation rule (pochta.mail.addresses); its use over real sockets is in
tests/e2e/test_address_normalisation.py."""

from __future__ import annotations

import pytest

from pochta.mail.addresses import normalize_address, normalize_login, same_account


@pytest.mark.parametrize(("raw", "norm"), [
    ("Stra\u00dfe@example.test", "strasse@example.test"),
    ("Alice@EXAMPLE.test.", "alice@example.test"),
    ("J\u00f6rg@B\u00fccher.example", "j\u00f6rg@xn--bcher-kva.example"),
    # NFD input ("o" + combining diaeresis) and NFC input give one key
    ("Jo\u0308rg@example.test", "j\u00f6rg@example.test"),
    # casefold alone is not stable under the store's lower() for Cherokee; the rule is
    ("\u13a0\u13a1@example.test", "\uab70\uab71@example.test"),
])
def test_rule(raw: str, norm: str) -> None:
    assert normalize_address(raw) == norm
    assert normalize_address(norm) == norm and norm.lower() == norm
    assert normalize_login(raw) == norm and same_account(raw, norm)


def test_login_names_that_are_not_addresses() -> None:
    assert normalize_login("Stra\u00dfe") == "strasse"
    assert normalize_login("x@") == "x@"
    assert not same_account("admin@example.test", "strasse@example.test")
