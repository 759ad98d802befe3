"""Open and click tracking (issue 18), opt-in per domain/stream and per message, tested
with curl: rewritten links redirect only to the signed original URL (no open redirect),
the pixel is a GIF, both become events and statistics."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import re
import shutil
from collections.abc import AsyncIterator

import pytest

from pochta.sending.tracking import PIXEL
from pochta.storage.interfaces_sending import EventKind
from tests.conftest import Instance, run_tool
from tests.sending.helpers import SendingServer, sending_server

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed")

HTML = ('<html><body><p>Hello {{name}}</p>'
        '<a href="https://shop.example/item?id=1&amp;ref=2">the item</a> '
        "<A HREF='http://shop.example/b'>b</A> "
        '<a href="mailto:help@example.test">help</a></body></html>')


@pytest.fixture
async def tracked(instance: Instance) -> AsyncIterator[SendingServer]:
    sending = {"tracking": [{"domain": "example.test", "stream": "bulk", "opens": True,
                             "clicks": True}]}
    async for s in sending_server(instance, sending=sending,
                                  http={"public_url": "https://mail.example.test"}):
        yield s


def html_of(data: bytes) -> str:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            return str(part.get_content())
    raise AssertionError("no HTML part")


async def curl(api: SendingServer, path: str, *args: str) -> str:
    port = api.server.port("http", "none")
    assert CURL is not None
    code, out = await run_tool(CURL, "-s", "-o", "/dev/null", "-w",
                               "%{http_code} %{content_type} %{redirect_url}", *args,
                               f"http://127.0.0.1:{port}{path}")
    assert code == 0, out
    return out


async def test_tracked_bulk_copy_links_pixel_events_stats(tracked: SendingServer) -> None:
    api = tracked
    r = await api.call("POST", "/v1/messages/batch", {
        "template": {"from": "news@example.test", "subject": "Hi", "html": HTML,
                     "text": "plain https://shop.example/t", "stream": "bulk"},
        "recipients": [{"to": "ann@remote.test", "variables": {"name": "Ann"}},
                       {"to": "bob@remote.test", "variables": {"name": "Bob"}}]})
    assert r.status == 202, r.body
    ids = {m["recipients"][0]["to"]: m["recipients"][0]["id"] for m in r.json()["messages"]}
    await api.wait_events(EventKind.DELIVERED, 2)
    by_rcpt = {m.rcpts[0]: m.data for m in api.sink.messages}
    html = html_of(by_rcpt["ann@remote.test"])
    assert "shop.example/item" not in html and "http://shop.example/b" not in html
    assert 'href="mailto:help@example.test"' in html  # left alone
    links = re.findall(r"https://mail\.example\.test(/t/c/[A-Za-z0-9_.-]+)", html)
    [pixel] = re.findall(r'<img src="https://mail\.example\.test(/t/o/[A-Za-z0-9_.-]+)"', html)
    assert len(links) == 2 and html.index(pixel) < html.index("</body>")
    assert "plain https://shop.example/t" in by_rcpt["ann@remote.test"].decode()  # text part
    # each copy has its own tokens
    assert links[0] not in html_of(by_rcpt["bob@remote.test"])
    # a click redirects to the original URL (HTML entities decoded) and is an event
    out = await curl(api, links[0], "-A", "test-agent")
    assert out == "302 text/plain https://shop.example/item?id=1&ref=2", out
    assert (await curl(api, links[1])).endswith(" http://shop.example/b")
    # the pixel
    port = api.server.port("http", "none")
    assert CURL is not None
    code, body = await run_tool(CURL, "-s", f"http://127.0.0.1:{port}{pixel}")
    assert code == 0 and body.encode("latin-1", "replace")[:6] == PIXEL[:6]
    assert (await curl(api, pixel)).startswith("200 image/gif")
    # no open redirect: a token for another URL, a changed MAC, garbage
    token = links[0].removeprefix("/t/c/")
    body_b64, mac = token.split(".")
    payload = base64.urlsafe_b64decode(body_b64 + "=" * (-len(body_b64) % 4))
    evil = payload.split(b"\n")[0] + b"\nhttps://evil.example/"
    forged = base64.urlsafe_b64encode(evil).decode().rstrip("=") + "." + mac
    for bad in (f"/t/c/{forged}", f"/t/c/{body_b64}.{mac[:-2]}xx", "/t/c/garbage",
                "/t/o/ABCDEF123456.AAAA.gif"):
        assert (await curl(api, bad)).startswith("404 "), bad
    events = await api.events(kinds=(EventKind.CLICKED, EventKind.OPENED))
    clicks = [e for e in events if e.kind is EventKind.CLICKED]
    opens = [e for e in events if e.kind is EventKind.OPENED]
    assert [e.message_id for e in clicks] == [ids["ann@remote.test"]] * 2
    assert "https://shop.example/item?id=1&ref=2" in clicks[0].detail
    assert "test-agent" in clicks[0].detail
    assert len(opens) == 2 and opens[0].message_id == ids["ann@remote.test"]
    stats = (await api.call("GET", "/v1/stats?period=day")).json()
    [row] = [x for x in stats["stats"] if x["stream"] == "bulk"]
    assert row["clicked"] == 2 and row["opened"] == 2 and row["delivered"] == 2
    msg = (await api.call("GET", f"/v1/messages/{ids['ann@remote.test']}")).json()
    assert msg["status"] == "delivered"  # engagement does not change where the copy is


async def test_tracking_is_opt_in_and_per_message(tracked: SendingServer) -> None:
    api = tracked
    base = {"from": "shop@example.test", "subject": "s", "html": HTML}
    # transactional: not tracked by default; a message asks for clicks only
    for to, extra in (("plain@remote.test", {}),
                      ("clicks@remote.test", {"track": {"clicks": True}}),
                      ("off@remote.test", {"stream": "bulk", "track": False})):
        r = await api.call("POST", "/v1/messages", {**base, "to": to, **extra})
        assert r.status == 202, r.body
    r = await api.call("POST", "/v1/messages", {**base, "to": "x@remote.test",
                                                "track": {"opens": "yes"}})
    assert r.status == 400 and r.json()["error"]["code"] == "invalid_track"
    await api.wait_events(EventKind.DELIVERED, 3)
    by_rcpt = {m.rcpts[0]: html_of(m.data) for m in api.sink.messages}
    assert "https://shop.example/item?id=1&amp;ref=2" in by_rcpt["plain@remote.test"]
    assert "/t/" not in by_rcpt["plain@remote.test"]
    assert "/t/c/" in by_rcpt["clicks@remote.test"]
    assert "/t/o/" not in by_rcpt["clicks@remote.test"]
    assert "/t/" not in by_rcpt["off@remote.test"]


RAW_HTML = (b'<html><body><p>Caf\xc3\xa9</p><a href="https://shop.example/raw">raw</a>'
            b"</body></html>")


def raw_message(html_cte: str) -> bytes:
    """multipart/alternative with a text part and an HTML part in ``html_cte``, and an
    attached message whose own HTML must stay as it is."""
    if html_cte == "base64":
        html = base64.encodebytes(RAW_HTML)
    elif html_cte == "quoted-printable":
        import quopri

        html = quopri.encodestring(RAW_HTML)
    else:
        html = RAW_HTML
    return (b"From: shop@example.test\r\nTo: ann@remote.test\r\nSubject: raw\r\n"
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="m"\r\n\r\n'
            b'--m\r\nContent-Type: multipart/alternative; boundary="a"\r\n\r\n'
            b"--a\r\nContent-Type: text/plain\r\n\r\nsee https://shop.example/raw\r\n"
            b"--a\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: " + html_cte.encode() + b"\r\n\r\n"
            + html.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").rstrip(b"\r\n")
            + b"\r\n--a--\r\n"
            b"--m\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@y.test\r\nSubject: fwd\r\n"
            b'Content-Type: text/html\r\n\r\n<a href="https://forwarded.example/">f</a>\r\n'
            b"--m--\r\n")


def test_raw_html_parts_rewritten_in_their_own_encoding() -> None:
    from pochta.sending.rawtrack import html_rebuilder, rewrite_html_parts

    def mark(text: str) -> str:
        return text.replace("https://shop.example/raw", "https://t.example/c/1")

    for cte in ("7bit", "8bit", "quoted-printable", "base64"):
        data = raw_message(cte)
        out = rewrite_html_parts(data, mark)
        msg = email.message_from_bytes(out, policy=email.policy.default)
        html = [p for p in msg.walk() if p.get_content_type() == "text/html"]
        assert "https://t.example/c/1" in html[0].get_content() and "Café" in \
            html[0].get_content(), cte
        assert html[0]["Content-Transfer-Encoding"] == cte
        assert "https://forwarded.example/" in out.decode("utf-8", "replace")  # untouched
        assert b"see https://shop.example/raw" in out  # the text part too
        assert out.replace(b"https://t.example/c/1", b"") != data
        # everything outside the HTML part is byte for byte the sender's
        head, tail = data.split(b"Content-Transfer-Encoding: ", 1)[0], data.split(b"--a--")[1]
        assert out.startswith(head) and out.endswith(tail), cte
    # a 7bit part whose lines grow past 998 octets becomes quoted-printable
    long_html = raw_message("7bit").replace(b"<p>Caf\xc3\xa9</p>", b"<p>" + b"x" * 990 + b"</p>")
    out = rewrite_html_parts(long_html, mark)
    assert max(len(line) for line in out.split(b"\r\n")) <= 998
    assert b"Content-Transfer-Encoding: quoted-printable" in out
    assert html_rebuilder(b"From: a@b.test\r\n\r\nplain\r\n") is None  # nothing to track


async def test_raw_and_smtp_key_messages_are_tracked(tracked: SendingServer) -> None:
    """The API's raw messages and an API key's SMTP submissions (rawtrack.py)."""
    import smtplib

    api = tracked
    r = await api.call("POST", "/v1/messages", {
        "to": "ann@remote.test", "stream": "bulk",
        "raw": raw_message("quoted-printable").decode("utf-8")})
    assert r.status == 202, r.body

    def submit() -> None:
        port = api.server.port("submission", "implicit")
        with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10,
                              context=api.server.client_ssl()) as c:
            c.login("api", api.key)
            c.sendmail("shop@example.test", ["bob@remote.test"],
                       raw_message("base64").replace(b"Subject: raw",
                                                     b"X-Pochta-Stream: bulk\r\nSubject: raw"))

    await asyncio.to_thread(submit)
    await api.wait_events(EventKind.DELIVERED, 2)
    for m in api.sink.messages:
        html = html_of(m.data)
        links = re.findall(r"https://mail\.example\.test(/t/c/[A-Za-z0-9_.-]+)", html)
        assert len(links) == 1 and "/t/o/" in html and "Café" in html, m.rcpts
        assert b'href="https://forwarded.example/"' in m.data  # an attached message: as is
        out = await curl(api, links[0])
        assert out == "302 text/plain https://shop.example/raw", out
