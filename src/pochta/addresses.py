"""Address normalisation shared by the directory, SMTP and the CLI."""

from __future__ import annotations


class AddressError(ValueError):
    pass


def normalize_domain(domain: str) -> str:
    """Lower-case ASCII form of a domain; U-labels become A-labels (IDNA, RFC 5891)."""
    domain = domain.strip().rstrip(".")
    if not domain:
        raise AddressError("empty domain")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise AddressError(f"invalid domain {domain!r}") from None
    return ascii_domain.lower()


def split_address(address: str) -> tuple[str, str]:
    """``local@domain`` -> (local, normalised domain). The last @ separates them."""
    local, sep, domain = address.rpartition("@")
    if not sep or not local:
        raise AddressError(f"{address!r} is not an address (local@domain)")
    return local, normalize_domain(domain)


def normalize_address(address: str) -> str:
    """Canonical form for lookups: case-folded local part, ASCII lower-case domain."""
    local, domain = split_address(address.strip())
    return f"{local.casefold()}@{domain}"


def base_address(address: str, separator: str = "+") -> str:
    """Subaddressing: ``user+tag@domain`` -> ``user@domain`` (RFC 5233 style)."""
    local, domain = split_address(address)
    base = local.split(separator, 1)[0]
    return f"{base or local}@{domain}"
