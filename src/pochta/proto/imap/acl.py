"""ACL (RFC 4314) rights, pure: parsing a SETACL modification, combining grants, what
each command needs. Rights are sets of letters kept as sorted strings.

The owner of a mailbox has every right implicitly (``OWNER_RIGHTS``); others have the
union of their grants to their address, their groups, ``authenticated`` and ``anyone``,
less the union of the negative rights (``-identifier``, RFC 4314 §2) of the same:
``-bob@x w`` takes ``w`` from bob whatever ``anyone`` or a group grants.

Groups (RFC 4314 §2 leaves them to the implementation): ``@example.org``, every account
of that domain, and an alias (``team@example.org``), every address it lists as a
target. A team inbox is shared once with its alias; who is in the team is the alias.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# RFC 4314 §2.1 (l r s w i p k x t e a); c and d are RFC 2086's, mapped as §2.1.1 says
OWNER_RIGHTS = "aeiklprstwx"
ALL_RIGHTS = set(OWNER_RIGHTS)
OBSOLETE = {"c": "k", "d": "etx"}
SPECIAL_IDS = ("anyone", "authenticated")
# LISTRIGHTS for anyone but the owner: nothing required, each right on its own
OPTIONAL_GROUPS = ("l", "r", "s", "w", "i", "p", "k", "x", "t", "e", "a")
_IDENTIFIER = re.compile(r"[\x21-\x7e]{1,320}\Z")


class AclError(ValueError):
    """A SETACL argument this server does not accept."""


def normalize(rights: str) -> str:
    """Letters as a sorted string; c and d expanded (RFC 4314 §2.1.1)."""
    out: set[str] = set()
    for ch in rights.lower():
        if ch in OBSOLETE:
            out |= set(OBSOLETE[ch])
        elif ch in ALL_RIGHTS:
            out.add(ch)
        elif ch.isdigit():
            continue  # RFC 4314 §2.1: rights 0-9 are for implementations; none here
        else:
            raise AclError(f"unknown right {ch!r}")
    return "".join(sorted(out))


def modify(current: str, mod: str) -> str:
    """SETACL's ``mod-rights``: ``+xyz`` adds, ``-xyz`` removes, else replaces (§3.1)."""
    if mod.startswith("+"):
        return normalize(current + normalize(mod[1:]))
    if mod.startswith("-"):
        drop = set(normalize(mod[1:]))
        return "".join(c for c in current if c not in drop)
    return normalize(mod)


def identifier(value: str) -> str:
    """An identifier SETACL accepts: an address (an account's or an alias's, lower case),
    ``@domain`` (the domain's accounts), ``anyone`` or ``authenticated``, each also with a
    leading ``-`` (negative rights, RFC 4314 §2)."""
    negative = value.startswith("-")
    name = value[1:] if negative else value
    if not _IDENTIFIER.match(name) or name.startswith("-"):
        raise AclError("invalid identifier")
    low = name.lower()
    local, at, domain = low.rpartition("@")
    if low not in SPECIAL_IDS and (not at or not domain or "@" in local):
        raise AclError("an identifier is an address, @domain, anyone or authenticated")
    return "-" + low if negative else low


def domain_group(address: str) -> str:
    """The group of every account of the address's domain: ``@example.org``."""
    return "@" + address.rpartition("@")[2].lower()


def positive(identifier: str) -> str:
    """The identifier a negative one (``-bob@x``) takes rights from."""
    return identifier[1:] if identifier.startswith("-") else identifier


def identifiers_of(address: str | None, groups: Sequence[str] = ()) -> list[str]:
    """Every identifier whose grants count for this account (None: an unauthenticated
    client, as an SMTP sender), with its alias ``groups``: positive and negative."""
    if address is None:
        ids = ["anyone"]
    else:
        ids = [address.lower(), *groups, domain_group(address), "authenticated", "anyone"]
    return ids + ["-" + i for i in ids]


def rights_for(acl: dict[str, str], address: str | None, groups: Sequence[str] = ()
               ) -> str:
    """What ``address`` (an authenticated account, not the owner; None: anyone at all,
    unauthenticated) in the alias ``groups`` may do: the union of its positive grants
    less the union of its negative ones (RFC 4314 §2)."""
    got: set[str] = set()
    denied: set[str] = set()
    for who in identifiers_of(address, groups):
        (denied if who.startswith("-") else got).update(acl.get(who, ""))
    return "".join(sorted(got - denied))


def can_change_flag(rights: str, flag: str) -> bool:
    """STORE (RFC 4314 §4): \\Seen needs s, \\Deleted t, every other flag w."""
    low = flag.lower()
    if low == "\\seen":
        return "s" in rights
    if low == "\\deleted":
        return "t" in rights
    return "w" in rights


def read_only(rights: str) -> bool:
    """SELECT gives READ-ONLY when the user can change nothing in the mailbox."""
    return not set(rights) & set("stwie")
