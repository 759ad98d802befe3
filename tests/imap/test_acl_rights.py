"""ACL rights (RFC 4314), pure: the RFC's SETACL examples, obsolete rights, identifiers,
the union of grants, what STORE and SELECT need."""

from __future__ import annotations

import pytest

from pochta.proto.imap.acl import (
    AclError,
    can_change_flag,
    identifier,
    identifiers_of,
    modify,
    normalize,
    read_only,
    rights_for,
)


def test_rfc4314_setacl_examples() -> None:
    # §3.1 "SETACL INBOX/Drafts John lrQswicda": Q is no right here
    with pytest.raises(AclError):
        normalize("lrQswicda")
    # §2.1.1: c is k, d is x t e; "+cda" adds them, "-d" takes x t e away again
    assert modify("", "+cda") == "aektx"
    assert modify("aektx", "-d") == "ak"
    assert modify("lr", "lrswi") == "ilrsw"  # no sign: replaces
    assert modify("lrs", "-s") == "lr"
    assert normalize("rwipslxetad") == "aeilprstwx"  # the owner example of §3.3 (d: x t e)
    assert normalize("") == ""


def test_identifiers_and_union() -> None:
    assert identifier("Bob@Example.Test") == "bob@example.test"
    assert identifier("anyone") == "anyone"
    assert identifier("-Bob@Example.Test") == "-bob@example.test"  # negative (§2)
    assert identifier("-anyone") == "-anyone"
    assert identifier("@Example.Test") == "@example.test"  # a domain group
    assert identifier("-Team@example.test") == "-team@example.test"  # an alias group
    for bad in ("fred", "", "a b@c", "-", "--bob@example.test", "-fred", "a@b@c", "bob@"):
        with pytest.raises(AclError):
            identifier(bad)
    acl = {"bob@example.test": "lr", "authenticated": "s", "anyone": "l"}
    assert rights_for(acl, "BOB@example.test") == "lrs"
    assert rights_for(acl, "eve@example.test") == "ls"
    assert rights_for({}, "eve@example.test") == ""
    assert rights_for(acl, None) == "l"  # unauthenticated: anyone's only
    # negative rights: the union of positive grants less the union of negative ones
    acl |= {"-bob@example.test": "s", "-anyone": "r"}
    assert rights_for(acl, "bob@example.test") == "l"
    assert rights_for(acl, "eve@example.test") == "ls"
    acl["-authenticated"] = "l"
    assert rights_for(acl, "eve@example.test") == "s" and rights_for(acl, None) == "l"


def test_groups() -> None:
    """An alias listing the user and the user's domain are groups; their negative
    grants take rights away as any other's do (RFC 4314 §2)."""
    acl = {"team@example.test": "lrs", "@example.test": "l", "@other.test": "w"}
    assert rights_for(acl, "bob@example.test", ["team@example.test"]) == "lrs"
    assert rights_for(acl, "eve@example.test") == "l"  # the domain only
    assert rights_for(acl, "eve@other.test", ["team@example.test"]) == "lrsw"
    assert rights_for(acl, None) == ""  # groups need a login
    acl["-team@example.test"] = "s"
    assert rights_for(acl, "bob@example.test", ["team@example.test"]) == "lr"
    assert "team@example.test" in identifiers_of("bob@example.test", ["team@example.test"])
    assert "@example.test" in identifiers_of("Bob@Example.test")


def test_store_and_select_needs() -> None:
    assert can_change_flag("s", "\\Seen") and not can_change_flag("s", "\\Deleted")
    assert can_change_flag("t", "\\deleted") and not can_change_flag("t", "\\Flagged")
    assert can_change_flag("w", "$Label") and not can_change_flag("w", "\\Seen")
    assert read_only("lr") and read_only("lrpa")
    assert not read_only("lri") and not read_only("lrs")
