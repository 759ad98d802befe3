"""WITHIN (RFC 5032): SEARCH OLDER and YOUNGER count back from now, by the internal date
with its time; the two are complements; over a real socket and in the pure evaluator."""

from __future__ import annotations

import time

import pytest

from pochta.mail.model import MessageMeta
from pochta.proto.imap.framer import RawCommand
from pochta.proto.imap.parser import ParseError, Reader
from pochta.proto.imap.search import Candidate, SearchContext, matches, parse_search
from tests.conftest import Server
from tests.imap.helpers import MESSAGE, connect, st


def _imap_date(ts: float) -> str:
    return time.strftime("%d-%b-%Y %H:%M:%S +0000", time.gmtime(ts))


async def test_older_and_younger(imap_server: Server) -> None:
    now = time.time()
    async with connect(imap_server) as c:
        await c.login()
        assert b" WITHIN" in (await c.cmd("CAPABILITY"))[0]
        # three messages: two days old, two hours old, just now
        for age in (2 * 86400, 2 * 3600, 0):
            resp = await c.cmd(b'APPEND INBOX "%s" {%d+}\r\n'
                               % (_imap_date(now - age).encode(), len(MESSAGE)) + MESSAGE)
            assert st(resp).startswith(b"OK"), resp
        await c.cmd("SELECT INBOX")
        checks = {
            "OLDER 86400": b"* SEARCH 1",  # older than a day
            "YOUNGER 86400": b"* SEARCH 2 3",
            "YOUNGER 3600": b"* SEARCH 3",
            "OLDER 3600 YOUNGER 86400": b"* SEARCH 2",  # RFC 5032 §1: within a window
            "NOT OLDER 3600": b"* SEARCH 3",
            "OLDER 31536000": b"* SEARCH",  # nothing is a year old
        }
        for program, expected in checks.items():
            resp = await c.cmd(f"SEARCH {program}")
            assert resp[0] == expected + b"\r\n", (program, resp)
        resp = await c.cmd("UID SEARCH RETURN (COUNT) YOUNGER 86400")
        assert b"COUNT 2" in resp[0], resp
        for bad in ("SEARCH OLDER 0", "SEARCH YOUNGER", "SEARCH OLDER -5", "SEARCH YOUNGER x"):
            resp = await c.cmd(bad)
            assert st(resp).startswith(b"BAD"), (bad, resp)


def test_evaluation_against_a_fixed_now() -> None:
    def age_match(program: str, internaldate: float, now: float) -> bool:
        key = parse_search(Reader(RawCommand((program.encode(),), (b"",)))).key
        meta = MessageMeta(uid=1, blob_id=1, size=10, internaldate=internaldate,
                           flags=frozenset(), modseq=1)
        return matches(key, Candidate(1, meta, False), SearchContext(1, 1, now=now))

    assert age_match("OLDER 60", 1000.0, 1060.0)  # exactly the interval: older
    assert not age_match("YOUNGER 60", 1000.0, 1060.0)
    assert age_match("YOUNGER 60", 1000.5, 1060.0)
    assert not age_match("OLDER 60", 1000.5, 1060.0)
    with pytest.raises(ParseError):
        parse_search(Reader(RawCommand((b"OLDER 0",), (b"",))))
