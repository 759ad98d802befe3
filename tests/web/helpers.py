"""A running server with http listeners (plain and TLS) and a small HTTP client."""

from __future__ import annotations

import asyncio
import html
import http.client
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

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


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Client:
    """A tiny browser over WebServer.call: keeps cookies, finds CSRF tokens in forms."""

    web: WebServer
    cookies: dict[str, str] = field(default_factory=dict)
    last: Reply | None = None
    set_cookies: list[str] = field(default_factory=list)  # of the last reply

    def _take_cookies(self, reply: Reply, raw: list[tuple[str, str]]) -> None:
        self.set_cookies = [v for k, v in raw if k.lower() == "set-cookie"]
        for name, value in raw:
            if name.lower() != "set-cookie":
                continue
            pair = value.split(";", 1)[0]
            key, _, val = pair.partition("=")
            if "Max-Age=0" in value:
                self.cookies.pop(key, None)
            else:
                self.cookies[key] = val

    async def request(self, method: str, path: str, fields: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None) -> Reply:
        hdrs = dict(headers or {})
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if fields is not None:
            body = urlencode(fields).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        port = self.web.server.port("http", "implicit")

        def go() -> tuple[Reply, list[tuple[str, str]]]:
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30,
                                               context=self.web.server.client_ssl())
            try:
                conn.request(method, path, body=body, headers=hdrs)
                resp = conn.getresponse()
                raw = resp.getheaders()
                return Reply(resp.status, {k.lower(): v for k, v in raw}, resp.read()), raw
            finally:
                conn.close()

        reply, raw = await asyncio.to_thread(go)
        self._take_cookies(reply, raw)
        self.last = reply
        return reply

    async def get(self, path: str) -> Reply:
        return await self.request("GET", path)

    def csrf(self, reply: Reply | None = None) -> str:
        reply = reply or self.last
        assert reply is not None
        found = CSRF.search(reply.text)
        assert found, "no CSRF token on the page"
        return html.unescape(found.group(1))

    async def post(self, path: str, fields: dict[str, str], csrf: str | None = None) -> Reply:
        """POST a form with the CSRF token of the last page (``csrf=""``: none)."""
        data = dict(fields)
        token = self.csrf() if csrf is None else csrf
        if token:
            data["csrf"] = token
        return await self.request("POST", path, data)

    async def login(self, username: str, password: str) -> Reply:
        await self.get("/login")
        return await self.post("/login", {"username": username, "password": password})
