"""The one address normalisation of the program.

Every place that turns an address into a lookup key goes through ``normalize_address``
(or ``normalize_login`` for login names that may not be addresses): the CLI when it
creates accounts and aliases, delivery (RCPT TO, alias targets), sender-ownership checks,
and every login (SMTP AUTH, IMAP LOGIN/AUTHENTICATE, POP3 USER/APOP/AUTH, SASL authzid).
Two normalisations that disagreed once locked a user out: an account created as
``Straße@example.test`` was stored as ``strasse@`` (casefold) but looked up with
``lower()`` as ``straße@`` at login.

The rule:

* Domain: trailing dot removed, U-labels to A-labels with Python's built-in ``idna``
  codec, then ASCII lower case. Domains are case-insensitive (RFC 5321 §2.4). That codec
  is IDNA 2003 (RFC 3490): its nameprep maps ``ß`` to ``ss`` (``straße.example`` ->
  ``strasse.example``) where IDNA 2008 (RFC 5891) gives ``xn--strae-oqa.example``;
  changing that would re-key stored domains, so it stays, and stays the same everywhere.
* Local part: case-insensitive. RFC 5321 §2.4 lets the receiving host decide, and users
  expect ``Alice`` and ``alice`` to be one mailbox; the store keys accounts in lower
  case as well. ASCII local parts are simply lower-cased. Non-ASCII local parts (RFC
  6531) are brought to NFC (RFC 6532 §3.1 recommends NFC), then Unicode full case
  folding (``str.casefold``: ``Straße`` -> ``strasse``), then ``lower()`` and NFC again,
  so the result is a fixed point of this function and of the store's own ``lower()``.

Case-sensitive local parts are not offered: the store compares keys in lower case.
"""

from __future__ import annotations

import unicodedata


class AddressError(ValueError):
    pass


def normalize_domain(domain: str) -> str:
    """Lower-case ASCII form of a domain; U-labels become A-labels (IDNA 2003 codec)."""
    domain = domain.strip().rstrip(".")
    if not domain:
        raise AddressError("empty domain")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise AddressError(f"invalid domain {domain!r}") from None
    return ascii_domain.lower()


def domain_key(domain: str) -> str:
    """``normalize_domain`` for comparing and routing; a name the IDNA codec refuses
    (an empty or over-long label) keeps its lower-case form, so this never raises and
    agrees with ``normalize_domain`` on every valid domain."""
    try:
        return normalize_domain(domain)
    except AddressError:
        return domain.strip().rstrip(".").lower()


def domain_of(address: str) -> str:
    """The ``domain_key`` of the part after the last @; a string without @ is taken as a
    domain. Never raises: for routing and policy lookups, not for validation."""
    return domain_key(address.rpartition("@")[2])


def normalize_local(local: str) -> str:
    """The case-insensitive key of a local part (see the module docstring)."""
    if local.isascii():
        return local.lower()
    folded = unicodedata.normalize("NFC", local).casefold()
    return unicodedata.normalize("NFC", folded.lower())


def split_address(address: str) -> tuple[str, str]:
    """``local@domain`` -> (local, normalised domain). The last @ separates them."""
    local, sep, domain = address.rpartition("@")
    if not sep or not local:
        raise AddressError(f"{address!r} is not an address (local@domain)")
    return local, normalize_domain(domain)


def normalize_address(address: str) -> str:
    """Canonical form for lookups and storage: normalised local part @ A-label domain."""
    local, domain = split_address(address.strip())
    return f"{normalize_local(local)}@{domain}"


def normalize_login(name: str) -> str:
    """``normalize_address`` for a login name; a name that is not a valid address (no @,
    a bad domain) gets the local-part rule as a whole, so it still finds nothing and
    is still counted consistently by the brute-force limiter. Never raises."""
    try:
        return normalize_address(name)
    except AddressError:
        return normalize_local(name.strip())


def normalize_alias_source(source: str) -> str:
    """An alias source: an address, or ``@domain`` for a domain's catch-all."""
    if source.strip().startswith("@"):
        return "@" + normalize_domain(source.strip()[1:])
    return normalize_address(source)


def same_account(a: str, b: str) -> bool:
    """Whether two login names denote the same account (SASL authzid vs authcid)."""
    return normalize_login(a) == normalize_login(b)


def base_address(address: str, separator: str = "+") -> str:
    """Subaddressing: ``user+tag@domain`` -> ``user@domain`` (RFC 5233 style)."""
    local, domain = split_address(address)
    base = local.split(separator, 1)[0]
    return f"{base or local}@{domain}"
