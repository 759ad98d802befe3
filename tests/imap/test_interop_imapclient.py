"""Interop: the imapclient library (PyPI) against the real server over implicit TLS.

imapclient parses responses much more strictly than imaplib (ENVELOPE, BODYSTRUCTURE,
ESEARCH, CONDSTORE, IDLE, folder flags), so a grammar slip shows up here as an exception.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from imapclient import IMAPClient  # type: ignore[import-untyped]

from tests.conftest import Server
from tests.imap.helpers import MESSAGE

MULTIPART = (
    b"From: =?UTF-8?Q?Zo=C3=AB?= <zoe@example.test>\r\n"
    b"To: alice@example.test, Bob <bob@example.test>\r\n"
    b"Subject: =?UTF-8?B?UHLDvGZ1bmc=?=\r\n"
    b"Date: Tue, 8 Feb 1994 10:00:00 +0000\r\n"
    b"Message-ID: <mp@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n"
    b"\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"hello\r\n"
    b"--XX\r\n"
    b"Content-Type: application/octet-stream; name=a.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAEC\r\n"
    b"--XX--\r\n"
)


def _client(server: Server) -> IMAPClient:
    c = IMAPClient(server.host, port=server.port("imap", "implicit"), ssl=True,
                   ssl_context=server.client_ssl(), timeout=10)
    c.normalise_times = False  # keep INTERNALDATE's zone
    c.login("alice@example.test", "alice-pass")
    return c


def _session(server: Server) -> dict[str, Any]:
    out: dict[str, Any] = {}
    c = _client(server)
    try:
        caps = c.capabilities()
        out["caps"] = caps
        folders = c.list_folders()
        out["special"] = {name: flags for flags, _, name in folders}
        when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
        r1 = c.append("INBOX", MESSAGE, flags=[b"\\Flagged", b"$Label1"], msg_time=when)
        out["appenduid"] = r1
        c.append("INBOX", MULTIPART)
        c.create_folder("Projects/2024")
        out["folders_after"] = [name for _, _, name in c.list_folders("", "Projects*")]
        sel = c.select_folder("INBOX")
        out["select"] = sel
        out["search"] = c.search(["FROM", "zoe"])
        out["search_all"] = c.search()
        out["search_unseen"] = c.search("UNSEEN")
        fetched = c.fetch([1, 2], ["ENVELOPE", "BODYSTRUCTURE", "FLAGS", "INTERNALDATE",
                                  "RFC822.SIZE", "MODSEQ"])
        out["fetched"] = fetched
        out["peek"] = c.fetch([2], ["BODY.PEEK[1]", "BINARY.SIZE[2]"])
        out["flags_after_peek"] = c.get_flags([2])
        out["set_flags"] = c.add_flags([2], [b"\\Seen"])
        out["copy"] = c.copy([1], "Projects/2024")
        out["move"] = c.move([2], "Archive")
        out["status"] = c.folder_status("Projects/2024", ["MESSAGES", "UIDNEXT", "UNSEEN"])
        out["archive"] = c.folder_status("Archive", ["MESSAGES"])
        c.delete_messages([1])
        out["expunge"] = c.expunge()
        out["final"] = c.search()
        c.unselect_folder()
        c.delete_folder("Projects/2024")
        out["gone"] = [name for _, _, name in c.list_folders("", "Projects*")]
    finally:
        c.logout()
    return out


async def test_imapclient_session(imap_server: Server) -> None:
    r = await asyncio.to_thread(_session, imap_server)
    for cap in (b"IMAP4REV1", b"IDLE", b"UIDPLUS", b"MOVE", b"CONDSTORE", b"SPECIAL-USE"):
        assert cap in r["caps"], r["caps"]
    assert b"\\Sent" in r["special"]["Sent"] and b"\\Trash" in r["special"]["Trash"]
    assert b"APPENDUID" in r["appenduid"]
    assert "Projects/2024" in r["folders_after"]
    assert r["select"][b"EXISTS"] == 2 and r["select"][b"UIDVALIDITY"] > 0
    assert r["search"] == [2] and r["search_all"] == [1, 2] and r["search_unseen"] == [1, 2]

    first, second = r["fetched"][1], r["fetched"][2]
    env = first[b"ENVELOPE"]
    assert env.subject == b"Hello there"
    assert env.from_[0].name == b"Bob" and env.from_[0].mailbox == b"bob"
    assert env.message_id == b"<m1@example.test>"
    assert set(first[b"FLAGS"]) - {b"\\Recent"} == {b"\\Flagged", b"$Label1"}
    assert first[b"INTERNALDATE"] == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert first[b"RFC822.SIZE"] == len(MESSAGE)
    assert first[b"MODSEQ"][0] > 0
    env2 = second[b"ENVELOPE"]
    assert env2.subject == b"=?UTF-8?B?UHLDvGZ1bmc=?="  # ENVELOPE is raw (RFC 9051 7.5.2)
    assert len(env2.to) == 2
    bs = second[b"BODYSTRUCTURE"]
    # media types are case-insensitive (RFC 2045 5.1); we send them upper-case like Dovecot
    assert bs.is_multipart and bs[1].lower() == b"mixed"
    assert (bs[0][0][0].lower(), bs[0][0][1].lower()) == (b"text", b"plain")
    assert bs[0][0][6] == 5  # body size in octets
    assert bs[0][1][0].lower() == b"application" and bs[0][1][5].lower() == b"base64"

    peek = r["peek"][2]
    assert peek[b"BODY[1]"] == b"hello"
    # (imapclient cannot parse a literal8, which BINARY[2] with NULs needs: RFC 3516 4.1)
    assert peek[b"BINARY.SIZE[2]"] == 3
    assert b"\\Seen" not in r["flags_after_peek"][2]
    assert b"\\Seen" in r["set_flags"][2]
    # (imapclient.copy() drops the tagged COPYUID text; the STATUS below checks the copy)
    assert r["status"][b"MESSAGES"] == 1 and r["status"][b"UNSEEN"] == 1
    assert r["archive"][b"MESSAGES"] == 1
    assert r["final"] == []
    assert r["gone"] == []


def _idle(server: Server, started: asyncio.Event, loop: asyncio.AbstractEventLoop
          ) -> list[Any]:
    c = _client(server)
    try:
        c.select_folder("INBOX")
        c.idle()
        loop.call_soon_threadsafe(started.set)
        deadline = time.monotonic() + 5
        got: list[Any] = []
        while time.monotonic() < deadline and not any(b"EXISTS" in r for r in got):
            got += c.idle_check(timeout=1)
        c.idle_done()
        return got
    finally:
        c.logout()


async def test_imapclient_idle_sees_append(imap_server: Server) -> None:
    started = asyncio.Event()
    task = asyncio.create_task(asyncio.to_thread(
        _idle, imap_server, started, asyncio.get_running_loop()))
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.sleep(0.1)

    def append() -> None:
        c = _client(imap_server)
        try:
            c.append("INBOX", MESSAGE)
        finally:
            c.logout()

    await asyncio.to_thread(append)
    got = await asyncio.wait_for(task, 10)
    assert (1, b"EXISTS") in got, got
