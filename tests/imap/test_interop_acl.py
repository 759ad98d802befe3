"""Interop: imapclient (PyPI) shares a team mailbox with ACL (RFC 4314) and the other
user reads it in the "Other Users" namespace (RFC 2342), with imapclient's own parsers
for NAMESPACE, GETACL and LIST, and its SORT on the shared mailbox."""

from __future__ import annotations

import asyncio
from typing import Any

from imapclient import IMAPClient  # type: ignore[import-untyped]

from tests.conftest import Server
from tests.imap.helpers import MESSAGE

TEAM = "Other Users/alice@example.test/Team"


def _client(server: Server, user: str, password: str) -> IMAPClient:
    c = IMAPClient(server.host, port=server.port("imap", "implicit"), ssl=True,
                   ssl_context=server.client_ssl(), timeout=10)
    c.login(user, password)
    return c


def _share(server: Server) -> dict[str, Any]:
    out: dict[str, Any] = {}
    alice = _client(server, "alice@example.test", "alice-pass")
    bob = _client(server, "bob@example.test", "bob-pass")
    try:
        alice.create_folder("Team")
        alice.append("Team", MESSAGE)
        out["before"] = [name for _, _, name in bob.list_folders()]
        out["setacl"] = alice.setacl("Team", "bob@example.test", "lrs")
        out["getacl"] = alice.getacl("Team")
        ns = bob.namespace()
        out["namespace"] = (ns.personal, ns.other, ns.shared)
        out["after"] = [name for _, _, name in bob.list_folders()]
        out["select"] = bob.select_folder(TEAM)
        out["fetch"] = bob.fetch([1], ["BODY[]", "FLAGS"])
        out["sort"] = bob.sort(["SUBJECT"])
        try:
            bob.add_flags([1], [b"\\Flagged"])
        except IMAPClient.Error as exc:
            out["flag_error"] = str(exc)
        # empty rights remove the grant; imapclient would send "" as nothing at all
        alice.setacl("Team", "bob@example.test", "\"\"")
        bob.unselect_folder()
        out["revoked"] = [name for _, _, name in bob.list_folders()]
    finally:
        alice.logout()
        bob.logout()
    return out


async def test_imapclient_shares_a_team_mailbox(imap_server: Server) -> None:
    r = await asyncio.to_thread(_share, imap_server)
    assert TEAM not in r["before"]
    assert r["getacl"] == [(b"alice@example.test", b"aeiklprstwx"),
                           (b"bob@example.test", b"lrs")], r["getacl"]
    assert r["namespace"] == ((("", "/"),), (("Other Users/", "/"),), (("Public/", "/"),)), \
        r["namespace"]
    assert TEAM in r["after"], r["after"]
    assert r["fetch"][1][b"BODY[]"] == MESSAGE
    assert b"\\Seen" in r["fetch"][1][b"FLAGS"]  # s granted: FETCH BODY[] sets it
    assert r["sort"] == [1]
    assert "NOPERM" in r.get("flag_error", ""), r
    assert TEAM not in r["revoked"]
