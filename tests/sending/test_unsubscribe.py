"""One-click unsubscribe (RFC 8058): the headers on bulk mail, covered by the DKIM
signature (checked with dkimpy); the POST exactly as RFC 8058 §3.2 shows, with curl; the
confirmation page; the mailto URI; forged tokens refused."""

from __future__ import annotations

import asyncio
import re

import dkim as dkimpy

from pochta.policy import dkim
from pochta.storage.interfaces_sending import EventKind
from tests.conftest import need_tool, run_tool
from tests.e2e.smtpclient import RawClient
from tests.sending.helpers import SendingServer

BULK = {"from": "alice@example.test", "to": "reader@remote.test", "subject": "News",
        "text": "this week", "stream": "bulk"}


async def send_bulk(api: SendingServer) -> tuple[str, bytes]:
    r = await api.call("POST", "/v1/messages", BULK)
    mid = r.json()["recipients"][0]["id"]
    await api.wait_events(EventKind.DELIVERED, 1)
    [m] = [m for m in api.sink.messages if mid in m.sender]
    return mid, m.data


def unfold(data: bytes, name: bytes) -> str:
    m = re.search(rb"^" + name + rb":(.*?)\r\n(?![ \t])", data, re.M | re.S | re.I)
    assert m is not None, name
    return re.sub(rb"\r\n[ \t]+", b" ", m.group(1)).decode().strip()


async def test_headers_are_dkim_signed_and_one_click_works_with_curl(
        api: SendingServer) -> None:
    keys = await asyncio.to_thread(dkim.ensure_domain_keys, api.server.ctx.config.data_path,
                                   "example.test", ("rsa",), 1024)
    records = {k.dns_name: dkim.dns_txt_record(k) for k in keys}
    mid, data = await send_bulk(api)
    lu = unfold(data, b"List-Unsubscribe")
    https, mailto = re.findall(r"<([^>]+)>", lu)
    assert https.startswith("https://mail.example.test:")
    assert mailto.startswith("mailto:bounces+") and "@example.test" in mailto
    assert unfold(data, b"List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    sig = unfold(data, b"DKIM-Signature")
    signed = re.search(r"h=([^;]+)", sig)
    assert signed is not None
    names = [h.strip().lower() for h in signed.group(1).replace(" ", "").split(":")]
    assert "list-unsubscribe" in names and "list-unsubscribe-post" in names

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records[name.decode().rstrip(".")].encode()

    assert dkimpy.verify(data, dnsfunc=dnsfunc), "dkimpy says the signature does not verify"

    # RFC 8058 §3.2: POST, form-encoded body "List-Unsubscribe=One-Click", no cookies
    curl = need_tool("curl")
    port = api.server.port("http", "implicit")
    url = https.replace("mail.example.test", "127.0.0.1")
    url = re.sub(r":\d+/", f":{port}/", url)
    code, out = await run_tool(curl, "-sS", "-k", "-i", "-X", "POST",
                               "-H", "Content-Type: application/x-www-form-urlencoded",
                               "--data", "List-Unsubscribe=One-Click", url)
    assert code == 0 and " 200 " in out.splitlines()[0], out
    assert await api.store.suppressed("example.test", "bulk", ["reader@remote.test"]) == {
        "reader@remote.test"}
    [ev] = await api.events(kinds=(EventKind.UNSUBSCRIBED,))
    assert ev.message_id == mid and '"one-click"' in ev.detail
    # the next bulk send skips the address; transactional mail still reaches it
    r = await api.call("POST", "/v1/messages", BULK)
    assert r.json()["recipients"][0]["status"] == "suppressed"
    r = await api.call("POST", "/v1/messages", {**BULK, "stream": "transactional"})
    assert r.json()["recipients"][0]["status"] == "queued"


async def test_page_for_browsers_and_forged_tokens(api: SendingServer) -> None:
    _, data = await send_bulk(api)
    https = re.findall(r"<([^>]+)>", unfold(data, b"List-Unsubscribe"))[0]
    path = "/" + https.split("/", 3)[3]
    page = await api.call("GET", path, key=None)
    assert page.status == 200 and b"<form method=\"post\"" in page.body
    assert b"reader@remote.test" in page.body
    # a GET (link scanners) unsubscribes nobody
    assert await api.store.suppressed("example.test", "bulk", ["reader@remote.test"]) == set()
    forged = path[:-3] + ("000" if not path.endswith("000") else "111")
    r = await api.call("POST", forged, key=None, raw=b"List-Unsubscribe=One-Click",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 404
    r = await api.call("POST", path, key=None, raw=b"confirm=1",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200 and b"no more" in r.body
    assert await api.store.suppressed("example.test", "bulk", ["reader@remote.test"]) == {
        "reader@remote.test"}


async def test_mailto_unsubscribe(api: SendingServer) -> None:
    mid, data = await send_bulk(api)
    mailto = re.findall(r"<([^>]+)>", unfold(data, b"List-Unsubscribe"))[1]
    address = mailto.removeprefix("mailto:").split("?")[0]
    c = await RawClient.connect(api.server.port("mta"))
    await c.reply()
    await c.cmd("EHLO mx.remote.test")
    await c.cmd("MAIL FROM:<reader@remote.test>")
    assert (await c.cmd(f"RCPT TO:<{address}>"))[0] == 250
    await c.cmd("DATA")
    reply = await c.cmd("From: reader@remote.test\r\nSubject: unsubscribe\r\n\r\n\r\n.")
    assert reply[0] == 250, reply
    assert await api.store.suppressed("example.test", "bulk", ["reader@remote.test"]) == {
        "reader@remote.test"}
    [ev] = await api.events(kinds=(EventKind.UNSUBSCRIBED,))
    assert ev.message_id == mid
    # a forged return path is an unknown user like any other
    await c.cmd("MAIL FROM:<x@remote.test>")
    local, domain = address.split("@")
    forged = local[:-4] + ("0000" if not local.endswith("0000") else "1111") + "@" + domain
    assert (await c.cmd(f"RCPT TO:<{forged}>"))[0] == 550
    await c.close()
