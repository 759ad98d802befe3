"""BURL (RFC 4468) end to end with real clients: imaplib saves a draft and signs a
``submit+`` URL with GENURLAUTH (RFC 4467), smtplib submits it with BURL instead of
uploading it again, and the message arrives; the URL works for nobody else, a reset key
ends it, and port 25 does not offer BURL."""

from __future__ import annotations

import asyncio
import imaplib
import re
import smtplib

from tests.conftest import Server
from tests.e2e.test_mta import inbox

DRAFT = (b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: by URL\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nSent without uploading.\r\n")
TAIL = "\r\n-- \r\nadded with BDAT\r\n"


def signed_url(server: Server, access: str, section: str = "") -> tuple[str, imaplib.IMAP4_SSL]:
    """APPEND the draft to alice's Drafts and GENURLAUTH a URL for ``access``."""
    imap = imaplib.IMAP4_SSL("127.0.0.1", server.port("imap", "implicit"),
                             ssl_context=server.client_ssl(), timeout=10)
    imap.login("alice@example.test", "alice-pass")
    imap.create("Drafts")  # there may be one already
    typ, data = imap.append("Drafts", r"(\Draft)", None, DRAFT)
    assert typ == "OK", data
    m = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
    assert m is not None, data
    rump = (f"imap://alice%40example.test@example.test/Drafts;UIDVALIDITY={m.group(1).decode()}"
            f"/;UID={m.group(2).decode()}{section};URLAUTH={access}")
    typ, data = imap.xatom("GENURLAUTH", f'"{rump}"', "INTERNAL")
    assert typ == "OK", data
    _, [url] = imap.response("GENURLAUTH")
    assert url is not None
    return url.decode().strip('"'), imap


def submit(server: Server, user: str, password: str,
           commands: list[str]) -> tuple[str, list[tuple[int, bytes]]]:
    with smtplib.SMTP_SSL("127.0.0.1", server.port("submission", "implicit"),
                          context=server.client_ssl(), timeout=10) as c:
        c.ehlo("laptop")
        before = c.esmtp_features.get("burl", "?")
        c.login(user, password)
        c.ehlo("laptop")
        assert c.esmtp_features.get("burl") == "imap", c.esmtp_features
        replies = []
        for line in commands:
            verb, _, arg = line.partition(" ")
            if verb == "BDAT":  # "BDAT <content>": the chunk's size is counted here
                chunk = arg.encode()
                c.send(f"BDAT {len(chunk)}\r\n".encode() + chunk)
                replies.append(c.getreply())
            else:
                replies.append(c.docmd(verb, arg))
        return before, replies


async def test_burl_submits_a_draft_from_imap(running_server: Server) -> None:
    def run() -> tuple[str, list[tuple[int, bytes]]]:
        url, imap = signed_url(running_server, "submit+alice@example.test")
        try:
            # IMAP's URLFETCH never hands out a submit+ URL (RFC 4467 §2.1): it is BURL's
            typ, _ = imap.xatom("URLFETCH", f'"{url}"')
            _, fetched = imap.response("URLFETCH")
            assert typ == "OK" and fetched[0] is not None and fetched[0].endswith(b" NIL"), \
                fetched
            return submit(running_server, "alice@example.test", "alice-pass", [
                "MAIL FROM:<alice@example.test>", "RCPT TO:<bob@example.test>",
                f"BURL {url}", "BDAT " + TAIL, f"BURL {url} LAST",
            ])
        finally:
            imap.logout()

    before, replies = await asyncio.to_thread(run)
    assert before == "", "BURL without arguments before AUTH (RFC 4468 §3.1)"
    assert [code for code, _ in replies] == [250, 250, 250, 250, 250], replies
    assert replies[2][1] == b"2.5.0 Waiting for additional BURL or BDAT commands"
    [stored] = await inbox(running_server, "bob@example.test")
    body = stored.split(b"\r\n\r\n", 1)[1]
    # the draft, the BDAT chunk and the draft again, in the order sent (RFC 4468 §3.2)
    assert body == b"Sent without uploading.\r\n" + TAIL.encode() + DRAFT, stored
    assert b"\r\nSubject: by URL\r\n" in stored and b"with ESMTPSA" in stored


async def test_refusals(running_server: Server) -> None:
    def run() -> list[list[tuple[int, bytes]]]:
        url, imap = signed_url(running_server, "submit+alice@example.test")
        for_bob, imap2 = signed_url(running_server, "submit+bob@example.test")
        imap2.logout()
        try:
            outcomes = []

            def attempt(user: str, to: str, burl: str) -> None:
                _, r = submit(running_server, f"{user}@example.test", f"{user}-pass", [
                    f"MAIL FROM:<{user}@example.test>", f"RCPT TO:<{to}@example.test>",
                    f"BURL {burl} LAST"])
                outcomes.append(r)

            attempt("bob", "alice", url)  # alice's submit+ URL is not bob's: 5.7.0
            forged = url[:-6] + ("000000" if not url.endswith("000000") else "111111")
            attempt("alice", "bob", forged)  # a forged token: 5.7.0
            # what alice signed for bob resolves for bob, and then submission's rules apply
            # to what it fetched as to any message: its From is alice's (RFC 4468 §8)
            attempt("bob", "alice", for_bob)
            typ, _ = imap.xatom("RESETKEY")  # ends every URL signed before (RFC 4467 §7.2)
            assert typ == "OK"
            attempt("alice", "bob", url)
            # a message expunged after signing: authorized, nothing to fetch: 5.6.6
            fresh, imap3 = signed_url(running_server, "submit+alice@example.test")
            imap3.logout()
            imap.select("Drafts")
            imap.store("1:*", "+FLAGS", r"(\Deleted)")
            imap.expunge()
            attempt("alice", "bob", fresh)
            return outcomes
        finally:
            imap.logout()

    outcomes = await asyncio.to_thread(run)
    refused = (554, b"5.7.0 IMAP URL authorization failed")
    assert [r[-1] for r in outcomes] == [
        refused, refused, outcomes[2][-1], refused,
        (554, b"5.6.6 IMAP URL resolution failed")], outcomes
    assert outcomes[2][-1] == (553, b"5.7.1 From: header address <alice@example.test> not "
                               b"owned by user bob@example.test"), outcomes[2]
    assert await inbox(running_server, "bob@example.test") == []
    assert await inbox(running_server, "alice@example.test") == []


HEADERS = ("From: alice@example.test\r\nTo: carol@example.test\r\nSubject: new header"
           "\r\n\r\n")


async def test_new_headers_with_a_stored_body_and_not_on_port_25(running_server: Server
                                                                 ) -> None:
    """The Lemonade forward: fresh headers by BDAT, the stored body by a TEXT section."""
    def run() -> tuple[list[tuple[int, bytes]], dict[str, str], tuple[int, bytes]]:
        url, imap = signed_url(running_server, "submit+alice@example.test",
                               section="/;SECTION=TEXT")
        imap.logout()
        _, r = submit(running_server, "alice@example.test", "alice-pass", [
            "MAIL FROM:<alice@example.test>", "RCPT TO:<bob@example.test>",
            "BDAT " + HEADERS, f"BURL {url} LAST"])
        with smtplib.SMTP("127.0.0.1", running_server.port("mta"), timeout=10) as c:
            c.ehlo("peer")
            return r, dict(c.esmtp_features), c.docmd("BURL", url + " LAST")

    r, mta_features, mta_reply = await asyncio.to_thread(run)
    assert r[-1][0] == 250, r
    [stored] = await inbox(running_server, "bob@example.test")
    assert b"\r\nSubject: new header\r\n" in stored and b"by URL" not in stored
    assert b"\r\nMessage-ID: <" in stored  # submission's rules ran on the whole
    assert stored.endswith(b"\r\n\r\nSent without uploading.\r\n"), stored
    assert "burl" not in mta_features
    assert mta_reply == (500, b"5.5.1 Command unrecognized")


async def test_a_big_message_by_url_is_spooled(running_server: Server) -> None:
    """A message over the SMTP spool threshold arrives by BURL like a big DATA: written to
    the spool as it comes, stored whole."""
    big = DRAFT.replace(b"Sent without uploading.\r\n",
                        b"".join(b"line %06d of a long draft\r\n" % i for i in range(40_000)))

    def run() -> list[tuple[int, bytes]]:
        imap = imaplib.IMAP4_SSL("127.0.0.1", running_server.port("imap", "implicit"),
                                 ssl_context=running_server.client_ssl(), timeout=30)
        imap.login("alice@example.test", "alice-pass")
        typ, data = imap.append("INBOX", None, None, big)
        m = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
        assert typ == "OK" and m is not None, data
        rump = (f"imap://alice%40example.test@example.test/INBOX;UIDVALIDITY="
                f"{m.group(1).decode()}/;UID={m.group(2).decode()};URLAUTH=submit+"
                "alice@example.test")
        typ, _ = imap.xatom("GENURLAUTH", f'"{rump}"', "INTERNAL")
        _, [url] = imap.response("GENURLAUTH")
        imap.logout()
        assert typ == "OK" and url is not None
        _, replies = submit(running_server, "alice@example.test", "alice-pass", [
            "MAIL FROM:<alice@example.test>", "RCPT TO:<bob@example.test>",
            f"BURL {url.decode().strip(chr(34))} LAST"])
        return replies

    replies = await asyncio.to_thread(run)
    assert replies[-1][0] == 250, replies
    assert len(big) > running_server.ctx.config.smtp.spool_threshold
    [stored] = await inbox(running_server, "bob@example.test")
    assert stored.endswith(b"line 039999 of a long draft\r\n"), stored[-200:]
    assert stored.count(b"of a long draft") == 40_000
