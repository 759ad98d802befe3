"""URLAUTH (RFC 4467) and URLAUTH=BINARY (RFC 5524): GENURLAUTH, URLFETCH by the owner,
another user and nobody else, RESETKEY, expiry; the pure URL grammar and token."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from pochta.proto.imap.imapurl import BadUrl
from pochta.proto.imap.urlauth import authorized_url, may_fetch, parse_auth_url, verify
from pochta.services.urlauth import Requester, allowed
from tests.conftest import Server
from tests.imap.helpers import MESSAGE, connect, joined, st

RUMP = "imap://joe@example.com/INBOX/;uid=20/;section=1.2;urlauth=submit+fred"


def test_rfc4467_rump_and_token() -> None:
    u = parse_auth_url(RUMP, authorized=False)
    assert (u.user, u.host, u.message.mailbox, u.message.uid, u.message.path) == (
        "joe", "example.com", "INBOX", 20, (1, 2))
    assert (u.access, u.access_user, u.owner_address()) == ("submit", "fred",
                                                             "joe@example.com")
    signed = authorized_url(b"k" * 32, RUMP)
    assert re.fullmatch(re.escape(RUMP) + r":internal:[0-9a-f]{64}", signed)
    a = parse_auth_url(signed, authorized=True)
    assert a.rump == RUMP and verify(b"k" * 32, a) and not verify(b"x" * 32, a)
    tampered = parse_auth_url(signed.replace("uid=20", "uid=21"), authorized=True)
    assert not verify(b"k" * 32, tampered)
    # submit+ is for submission's BURL (RFC 4468), never for URLFETCH
    assert not may_fetch(a, "fred", datetime.now(UTC))
    now = datetime.now(UTC)
    assert allowed(a, Requester(submitter="FRED"), now)
    assert not allowed(a, Requester(submitter="joe"), now)  # not even the owner
    assert not allowed(a, Requester(fetcher="fred"), now)
    anyone = parse_auth_url(RUMP.replace("submit+fred", "anonymous"), authorized=False)
    assert not allowed(anyone, Requester(submitter="fred"), now)  # BURL takes submit+ only
    late = parse_auth_url(RUMP.replace(";urlauth", ";expire=2020-01-01T00:00:00Z;urlauth"),
                          authorized=False)
    assert not allowed(late, Requester(submitter="fred"), now)
    for bad in ("imap://example.com/INBOX/;uid=1;urlauth=anonymous",  # no user
                "imap://j@h/INBOX/;uid=1",  # no ;URLAUTH=
                "imap://j@h/INBOX/;uid=1;urlauth=nobody",
                "imap://j@h/INBOX/;uid=1;expire=yesterday;urlauth=anonymous"):
        with pytest.raises(BadUrl):
            parse_auth_url(bad, authorized=False)
    with pytest.raises(BadUrl):
        parse_auth_url(RUMP, authorized=True)  # no token


def test_expire_and_access() -> None:
    url = parse_auth_url("imap://j@h/INBOX/;uid=1;expire=2030-01-01T00:00:00Z;"
                         "urlauth=user+bob@h", authorized=False)
    assert may_fetch(url, "BOB@h", datetime(2029, 1, 1, tzinfo=UTC))
    assert not may_fetch(url, "eve@h", datetime(2029, 1, 1, tzinfo=UTC))
    assert not may_fetch(url, "bob@h", datetime(2030, 1, 1, tzinfo=UTC))


async def test_genurlauth_urlfetch_resetkey(imap_server: Server) -> None:
    async with connect(imap_server) as alice, connect(imap_server) as bob:
        await alice.login()
        await bob.login("bob@example.test", "bob-pass")
        assert b" URLAUTH " in (await alice.cmd("CAPABILITY"))[0]
        await alice.cmd(b"APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)
        base = "imap://alice@example.test/INBOX/;uid=1"
        resp = await alice.cmd(f'GENURLAUTH "{base};urlauth=user+bob@example.test" INTERNAL '
                               f'"{base}/;section=TEXT;urlauth=authuser" INTERNAL')
        m = re.match(rb"\* GENURLAUTH (\S+) (\S+)\r\n", resp[0])  # astrings: atoms here
        assert m is not None and st(resp).startswith(b"OK"), resp
        for_bob, for_all = m.group(1).decode(), m.group(2).decode()
        resp = await bob.cmd(f'URLFETCH "{for_bob}" "{for_all}"')
        assert joined(resp).startswith(
            b"* URLFETCH " + for_bob.encode() + b" {%d}\r\n" % len(MESSAGE) + MESSAGE
            + b" " + for_all.encode() + b" {21}\r\nBody text line one.\r\n\r\n"), resp
        # alice may not use bob's URL; a changed token or UID gives NIL
        resp = await alice.cmd(f'URLFETCH "{for_bob}"')
        assert resp[0] == f"* URLFETCH {for_bob} NIL\r\n".encode(), resp
        forged = for_all[:-4] + ("0000" if not for_all.endswith("0000") else "1111")
        resp = await bob.cmd(f'URLFETCH "{forged}"')
        assert resp[0].endswith(b" NIL\r\n"), resp
        # URLAUTH=BINARY: the structure and the decoded content
        resp = await bob.cmd(f'URLFETCH ("{for_all}" BODYPARTSTRUCTURE BODY)')
        assert b'(BODYPARTSTRUCTURE ("TEXT" "PLAIN"' in resp[0], resp
        # only the owner signs, and only URLs of mailboxes that exist
        resp = await bob.cmd(f'GENURLAUTH "{base};urlauth=authuser" INTERNAL')
        assert st(resp).startswith(b"NO"), resp
        resp = await alice.cmd('GENURLAUTH "imap://alice@example.test/Nope/;uid=1;'
                               'urlauth=authuser" INTERNAL')
        assert st(resp).startswith(b"NO [NONEXISTENT]"), resp
        # RESETKEY: every URL signed before stops working
        assert st(await alice.cmd("RESETKEY INBOX")).startswith(b"OK")
        resp = await bob.cmd(f'URLFETCH "{for_bob}"')
        assert resp[0] == f"* URLFETCH {for_bob} NIL\r\n".encode(), resp
        assert st(await alice.cmd("RESETKEY")).startswith(b"OK")
        assert st(await alice.cmd("RESETKEY Nope")).startswith(b"NO [NONEXISTENT]")
