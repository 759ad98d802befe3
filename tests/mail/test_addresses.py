"""The one address normalisation rule (pochta.mail.addresses); its use over real sockets is in
tests/e2e/test_address_normalisation.py."""

from __future__ import annotations

import pytest

from pochta.mail.addresses import (
    AddressError,
    base_address,
    domain_key,
    domain_of,
    normalize_address,
    normalize_domain,
    normalize_login,
    same_account,
)


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


@pytest.mark.parametrize(("raw", "norm"), [
    # a quoted local part may hold @ and spaces; the last @ separates the domain
    ('"John Doe"@Example.TEST', '"john doe"@example.test'),
    ('"a@b"@example.test', '"a@b"@example.test'),
    # UTF-8 local part (RFC 6531) with an IDNA domain
    ("\u00c9lo\u00efse@\u00c9cole.example", "\u00e9lo\u00efse@xn--cole-9oa.example"),
    ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),  # A-labels stay
])
def test_quoted_and_international(raw: str, norm: str) -> None:
    assert normalize_address(raw) == norm


@pytest.mark.parametrize("bad", ["", "@example.test", "user@", "user", "a@b..c",
                                 "a@" + "x" * 64 + ".test"])
def test_not_addresses(bad: str) -> None:
    with pytest.raises(AddressError):
        normalize_address(bad)


def test_domain_key_agrees_with_normalize_domain_and_never_raises() -> None:
    for domain in ("Example.TEST.", "B\u00fccher.example", "stra\u00dfe.example"):
        assert domain_key(domain) == normalize_domain(domain)
    assert domain_key("a..b.") == "a..b"  # the IDNA codec refuses it; lower case kept
    assert domain_key("") == ""
    assert domain_of("Someone@Stra\u00dfe.Example") == "strasse.example"
    assert domain_of("mailto-target.example") == "mailto-target.example"


def test_base_address() -> None:
    assert base_address("User+tag@Example.test") == "User@example.test"
    assert base_address("+tag@example.test") == "+tag@example.test"
