"""Webhooks received by a test server: the signature verifies (the recipe of
docs/api.md), a 500 is retried, and a batch's events arrive complete and in order; the
delivery log and replay."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pochta.sending import webhooks
from pochta.storage.interfaces_sending import EventKind
from tests.sending.helpers import SendingServer


class Receiver:
    def __init__(self, fail_first: int) -> None:
        self.fail_left = fail_first
        self.posts: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 200
                if receiver.fail_left > 0:
                    receiver.fail_left -= 1
                    status = 500
                receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body,
                                       status))
                self.send_response(status)
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


async def test_webhooks_signed_retried_ordered_complete(api: SendingServer,
                                                        receiver: Receiver) -> None:
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
