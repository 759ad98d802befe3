"""/metrics, /healthz, /readyz: counters move with real SMTP traffic, access control."""

from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
import ssl
from collections.abc import AsyncIterator

import pytest

from pochta.metrics import Metrics
from pochta.web.health import is_loopback
from tests.conftest import Instance
from tests.web.helpers import WebServer, web_server


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = "^" + re.escape(name + (f"{{{want}}}" if want else "")) + r" (\S+)$"
    found = re.search(pattern, text, re.M)
    assert found, f"{name} {labels} not in metrics"
    return float(found.group(1))


def smtp_send(port: int, rcpt: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("someone@remote.test", [rcpt], b"Subject: hi\r\n\r\nhello\r\n")


def bad_login(port: int, ssl_context: ssl.SSLContext) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=30, context=ssl_context) as client, \
            contextlib.suppress(smtplib.SMTPAuthenticationError):
        client.login("alice@example.test", "wrong")


async def test_metrics_follow_traffic(web: WebServer) -> None:
    before = (await web.call("GET", "/metrics", tls=False)).text
    accepted0 = sample(before, "pochta_messages_accepted_total", role="mta") \
        if 'pochta_messages_accepted_total{role="mta"}' in before else 0.0
    await asyncio.to_thread(smtp_send, web.server.port("mta"), "alice@example.test")
    await asyncio.to_thread(bad_login, web.server.port("submission", "implicit"),
                            web.server.client_ssl())
    reply = await web.call("GET", "/metrics", tls=False)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = reply.text
    assert sample(text, "pochta_messages_accepted_total", role="mta") == accepted0 + 1
    assert sample(text, "pochta_smtp_accept_seconds_count", role="mta") >= 1
    assert 'pochta_smtp_accept_seconds_bucket{role="mta",le="+Inf"}' in text
    assert sample(text, "pochta_auth_failures_total", role="submission") >= 1
    assert sample(text, "pochta_connections_total", role="mta") >= 1
    assert sample(text, "pochta_connections_open", role="http") >= 1
    assert sample(text, "pochta_queue_depth", state="pending") == 0
    assert sample(text, "pochta_store_bytes", kind="disk") > 0  # read once a minute
    assert sample(text, "pochta_accounts") == 2
    assert "# TYPE pochta_smtp_accept_seconds histogram" in text


async def test_queue_depth_and_age(web: WebServer) -> None:
    # a remote recipient relayed by an authenticated user stays queued (no queue worker)
    def submit() -> None:
        with smtplib.SMTP_SSL("127.0.0.1", web.server.port("submission", "implicit"),
                              timeout=30, context=web.server.client_ssl()) as client:
            client.login("alice@example.test", "alice-pass")
            client.sendmail("alice@example.test", ["x@remote.test"],
                            b"From: alice@example.test\r\nSubject: q\r\n\r\nq\r\n")

    await asyncio.to_thread(submit)
    await asyncio.sleep(0.2)
    text = (await web.call("GET", "/metrics")).text
    assert sample(text, "pochta_queue_depth", state="pending") == 1
    assert 0 <= sample(text, "pochta_queue_oldest_age_seconds") < 60


async def test_health_and_ready(web: WebServer) -> None:
    assert (await web.call("GET", "/healthz")).text == "ok\n"
    reply = await web.call("GET", "/readyz", tls=False)
    assert (reply.status, reply.text) == (200, "ready\n")
    await web.store.close()  # a store that no longer answers: not ready
    reply = await web.call("GET", "/readyz", tls=False)
    assert reply.status == 503


@pytest.fixture
async def token_web(instance: Instance) -> AsyncIterator[WebServer]:
    async for s in web_server(instance, web={"metrics_token": "s3cret-token"}):
        yield s


async def test_metrics_token(token_web: WebServer) -> None:
    assert (await token_web.call("GET", "/metrics")).status == 403
    wrong = {"Authorization": "Bearer nope"}
    assert (await token_web.call("GET", "/metrics", wrong)).status == 403
    good = {"Authorization": "Bearer s3cret-token"}
    assert (await token_web.call("GET", "/metrics", good)).status == 200


def test_loopback_only_by_default() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("192.0.2.1") and not is_loopback("")


def test_text_format() -> None:
    m = Metrics()
    m.describe("t_seconds", "a test", (0.1, 1.0))
    m.inc("t_total", role='a"b')
    m.observe("t_seconds", 0.5)
    m.observe("t_seconds", 5.0)
    text = m.render([("t_gauge", "g", (("k", "v"),), 3)])
    assert 't_total{role="a\\"b"} 1' in text
    assert 't_seconds_bucket{le="0.1"} 0' in text
    assert 't_seconds_bucket{le="1"} 1' in text
    assert 't_seconds_bucket{le="+Inf"} 2' in text
    assert "t_seconds_sum 5.5" in text
    assert 't_gauge{k="v"} 3' in text
