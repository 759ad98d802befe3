"""Webhooks received by a test server: the signature verifies (the recipe of
docs/api.md), a 500 is retried, and a batch's events arrive complete and in order; the
delivery log and replay. Server-side request forgery: webhook URLs that reach loopback,
private, link-local (metadata) or reserved addresses are refused, at registration and at
every request (through the test's resolver), unless an admin allows the network;
redirects are never followed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pochta.sending import webhooks
from pochta.storage.interfaces_sending import EventKind
from tests.conftest import Instance
from tests.sending.helpers import SendingServer, sending_server


class Receiver:
    def __init__(self, fail_first: int, redirect: str = "") -> None:
        self.fail_left = fail_first
        self.posts: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 302 if redirect else 200
                if receiver.fail_left > 0:
                    receiver.fail_left -= 1
                    status = 500
                receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body,
                                       status))
                self.send_response(status)
                if redirect:
                    self.send_header("Location", redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict[str, object]]:
        return [e for _, body, status in self.posts if status == 200
                for e in json.loads(body)["events"]]


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    monkeypatch.setattr(webhooks, "BACKOFF_FIRST", 0.3)
    monkeypatch.setattr(webhooks, "POLL_INTERVAL", 0.1)
    r = Receiver(fail_first=1)
    yield r
    r.httpd.shutdown()


@pytest.fixture
async def hooks_api(instance: Instance) -> AsyncIterator[SendingServer]:
    """The admin allows webhooks to reach 127.0.0.1 (where the test receivers are)."""
    async for s in sending_server(instance, sending={"webhook_allow_networks": ["127.0.0.1/32"]}):
        yield s


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: float = 300) -> bool:
    """The verification recipe of docs/api.md."""
    ts = headers["x-pochta-timestamp"]
    if abs(time.time() - int(ts)) > tolerance:
        return False
    expected = "v1=" + hmac.new(secret.encode(), ts.encode() + b"." + body,
                                hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-pochta-signature"])


async def wait_for(cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.05)


async def test_webhooks_signed_retried_ordered_complete(hooks_api: SendingServer,
                                                        receiver: Receiver) -> None:
    api = hooks_api
    r = await api.call("POST", "/v1/webhooks", {"url": receiver.url})
    assert r.status == 201
    hook = r.json()
    secret = hook["secret"]
    recipients = [{"to": f"w{n}@remote.test", "variables": {"n": n}} for n in range(30)]
    r = await api.call("POST", "/v1/messages/batch", {"template": {
        "from": "alice@example.test", "subject": "{{n}}", "text": "x"},
        "recipients": recipients})
    ids = [m["recipients"][0]["id"] for m in r.json()["messages"]]
    await api.wait_events(EventKind.DELIVERED, 30)
    await wait_for(lambda: len(receiver.delivered()) >= 60)
    events = receiver.delivered()
    assert len(events) == 60  # 30 accepted + 30 delivered, none twice
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)  # type: ignore[type-var]
    for mid in ids:
        mine = [e["event"] for e in events if e["message_id"] == mid]
        assert mine == ["accepted", "delivered"]
    assert receiver.posts[0][2] == 500  # the first POST failed and was retried
    first_ok = next(p for p in receiver.posts if p[2] == 200)
    assert first_ok[1] == receiver.posts[0][1] or json.loads(first_ok[1])["events"][0][
        "id"] == json.loads(receiver.posts[0][1])["events"][0]["id"]
    for headers, body, _ in receiver.posts:
        assert verify(secret, headers, body)
        assert not verify(secret + "x", headers, body)
        assert not verify(secret, headers, body + b" ")
    # each attempt is logged once its POST has returned: the last one may still be on its way
    deadline = time.monotonic() + 10
    while True:
        log = (await api.call("GET", f"/v1/webhooks/{hook['id']}/log")).json()["attempts"]
        if log[0]["status"] == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert log[-1]["status"] == 500 and log[0]["status"] == 200
    # replay from the start: everything again
    before = len(receiver.delivered())
    r = await api.call("POST", f"/v1/webhooks/{hook['id']}/replay", {"after": 0})
    assert r.status == 200
    await wait_for(lambda: len(receiver.delivered()) >= before + 60)
    assert len(receiver.delivered()) == before + 60
    other = await api.add_key("other.test", "webhooks")
    r = await api.call("DELETE", f"/v1/webhooks/{hook['id']}", key=other)
    assert r.status == 404
    r = await api.call("DELETE", f"/v1/webhooks/{hook['id']}")
    assert r.status == 200


async def test_webhook_urls_reaching_internal_addresses_are_refused(api: SendingServer
                                                                   ) -> None:
    resolver = api.server.resolver
    resolver.a_records["internal.remote.test"] = ["10.1.2.3"]
    resolver.a_records["mixed.remote.test"] = ["93.184.216.34", "127.0.0.1"]
    resolver.aaaa_records["six.remote.test"] = ["fd00:ec2::254"]
    for url in ("http://127.0.0.1:8080/hook", "http://[::1]/", "https://localhost.:1/",
                "http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/",
                "http://192.168.1.1/", "http://100.64.0.1/", "http://[::ffff:127.0.0.1]/",
                "http://0.0.0.0/", "http://internal.remote.test/", "http://mixed.remote.test/",
                "http://six.remote.test/", "http://nothing.remote.test/"):
        r = await api.call("POST", "/v1/webhooks", {"url": url})
        assert r.status == 400, (url, r.body)
        assert r.json()["error"]["code"] == "forbidden_url", url
    assert (await api.call("GET", "/v1/webhooks")).json()["webhooks"] == []
    resolver.a_records["hooks.remote.test"] = ["93.184.216.34"]
    r = await api.call("POST", "/v1/webhooks", {"url": "https://hooks.remote.test/h"})
    assert r.status == 201


async def test_webhook_address_is_checked_at_every_request(api: SendingServer,
                                                           receiver: Receiver) -> None:
    """DNS rebinding: the name was public when the webhook was added and points at
    127.0.0.1 now; the request is refused and logged, the receiver sees nothing."""
    resolver = api.server.resolver
    resolver.a_records["hooks.remote.test"] = ["93.184.216.34"]
    port = receiver.httpd.server_address[1]
    r = await api.call("POST", "/v1/webhooks", {"url": f"http://hooks.remote.test:{port}/h"})
    assert r.status == 201
    hook = r.json()["id"]
    resolver.a_records["hooks.remote.test"] = ["127.0.0.1"]
    r = await api.call("POST", "/v1/messages", {"from": "alice@example.test",
                                                "to": "x@remote.test", "subject": "s",
                                                "text": "t"})
    assert r.status == 202

    async def attempts() -> list[dict[str, object]]:
        got = await api.call("GET", f"/v1/webhooks/{hook}/log")
        result: list[dict[str, object]] = got.json()["attempts"]
        return result

    deadline = time.monotonic() + 10
    while not await attempts() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    log = await attempts()
    assert log and log[0]["status"] == 0
    assert "hooks.remote.test has 127.0.0.1, a loopback address" in str(log[0]["detail"])
    await asyncio.sleep(0.5)
    assert receiver.posts == []


async def test_allowed_network_is_reached_by_name_and_redirects_are_not_followed(
        hooks_api: SendingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhooks, "BACKOFF_FIRST", 0.3)
    monkeypatch.setattr(webhooks, "POLL_INTERVAL", 0.1)
    target = Receiver(fail_first=0)
    redirector = Receiver(fail_first=0, redirect=target.url)
    try:
        hooks_api.server.resolver.a_records["hooks.remote.test"] = ["127.0.0.1"]
        port = redirector.httpd.server_address[1]
        r = await hooks_api.call("POST", "/v1/webhooks",
                                 {"url": f"http://hooks.remote.test:{port}/hook?x=1"})
        assert r.status == 201
        r = await hooks_api.call("POST", "/v1/messages", {
            "from": "alice@example.test", "to": "x@remote.test", "subject": "s", "text": "t"})
        assert r.status == 202
        await wait_for(lambda: len(redirector.posts) >= 2)
        headers, body, status = redirector.posts[0]
        assert status == 302 and headers["host"] == f"hooks.remote.test:{port}"
        assert json.loads(body)["events"][0]["event"] == "accepted"
        log = (await hooks_api.call("GET", "/v1/webhooks/1/log")).json()["attempts"]
        assert log[-1]["status"] == 302 and "not followed" in log[-1]["detail"]
        assert target.posts == []  # the redirect (to another port) was never requested
    finally:
        target.httpd.shutdown()
        redirector.httpd.shutdown()
