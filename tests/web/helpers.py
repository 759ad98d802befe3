"""A running server with http listeners (plain and TLS) and a small HTTP client."""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tests.conftest import ALL_LISTENERS, Instance, Server, start_instance

HTTP_LISTENERS = [{"role": "http", "port": 0, "tls": "none", "address": "127.0.0.1"},
                  {"role": "http", "port": 0, "tls": "implicit", "address": "127.0.0.1"}]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


@dataclass
class WebServer:
    server: Server

    @property
    def store(self) -> Any:
        return self.server.store

    def url(self, path: str = "/", tls: bool = True) -> str:
        port = self.server.port("http", "implicit" if tls else "none")
        return f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}"

    async def call(self, method: str, path: str, headers: dict[str, str] | None = None,
                   body: bytes | None = None, tls: bool = True) -> Reply:
        port = self.server.port("http", "implicit" if tls else "none")

        def go() -> Reply:
            conn: http.client.HTTPConnection
            if tls:
                conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30,
                                                   context=self.server.client_ssl())
            else:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request(method, path, body=body, headers=headers or {})
                resp = conn.getresponse()
                return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                             resp.read())
            finally:
                conn.close()

        return await asyncio.to_thread(go)


async def web_server(instance: Instance, **overrides: Any) -> AsyncIterator[WebServer]:
    listeners = [dict(x, address="127.0.0.1") for x in ALL_LISTENERS] + HTTP_LISTENERS
    server = await start_instance(instance, listeners=listeners, **overrides)
    try:
        yield WebServer(server)
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()
