"""A running server with http listeners, the queue worker and a recording SMTP peer for
remote.test; an HTTP client (http.client over TLS) for the API."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from pochta.sending.tokens import new_api_key
from pochta.storage.interfaces_sending import ApiKey, EventKind, EventQuery, SendingEvent
from tests.conftest import ALL_LISTENERS, Instance, Server, start_instance
from tests.queue.sink import Sink

HTTP_LISTENERS = [{"role": "http", "port": 0, "tls": "none", "address": "127.0.0.1"},
                  {"role": "http", "port": 0, "tls": "implicit", "address": "127.0.0.1"}]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class SendingServer:
    server: Server
    sink: Sink
    key: str  # send,events,suppressions,stats,webhooks for example.test

    @property
    def store(self) -> Any:
        return self.server.store

    async def add_key(self, domain: str, scopes: str) -> str:
        key_id, whole, hashed = new_api_key()
        await self.store.add_api_key(ApiKey(key_id, domain, frozenset(scopes.split(",")),
                                            hashed, time.time()))
        return whole

    async def call(self, method: str, path: str, body: Any = None, key: str | None = "",
                   headers: dict[str, str] | None = None, raw: bytes | None = None,
                   tls: bool = True) -> Reply:
        key = self.key if key == "" else key
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if key:
            hdrs["Authorization"] = f"Bearer {key}"
        port = self.server.port("http", "implicit" if tls else "none")

        def go() -> Reply:
            conn: http.client.HTTPConnection
            if tls:
                conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30,
                                                   context=self.server.client_ssl())
            else:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request(method, path, body=data, headers=hdrs)
                resp = conn.getresponse()
                return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                             resp.read())
            finally:
                conn.close()

        return await asyncio.to_thread(go)

    async def events(self, domain: str = "example.test", **kw: Any) -> list[SendingEvent]:
        result: list[SendingEvent] = await self.store.query_events(
            EventQuery(domain, limit=100000, **kw))
        return result

    async def wait_events(self, kind: EventKind, count: int, timeout: float = 10.0,
                          domain: str = "example.test") -> list[SendingEvent]:
        deadline = time.monotonic() + timeout
        while True:
            got = await self.events(domain, kinds=(kind,))
            if len(got) >= count or time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.05)


async def sending_server(instance: Instance, sink: Sink | None = None, **overrides: Any
                         ) -> AsyncIterator[SendingServer]:
    sink = sink or Sink()
    port = await sink.start()
    listeners = [dict(x, address="127.0.0.1") for x in ALL_LISTENERS] + HTTP_LISTENERS
    overrides.setdefault("routes", [{"domain": "remote.test", "host": "127.0.0.1",
                                     "port": port, "tls": "none"}])
    server = await start_instance(instance, run_queue=True, listeners=listeners, **overrides)
    await server.store.add_domain("other.test")
    s = SendingServer(server, sink, "")
    s.key = await s.add_key("example.test", "send,events,suppressions,stats,webhooks")
    try:
        yield s
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()
        await sink.close()


@pytest.fixture
async def api(instance: Instance) -> AsyncIterator[SendingServer]:
    async for s in sending_server(instance):
        yield s
