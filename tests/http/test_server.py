"""The http role's driver over real sockets: keep-alive, limits and timeouts, JSON errors,
curl over TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator

import pytest

from tests.conftest import Instance, need_tool, run_tool
from tests.sending.helpers import SendingServer, sending_server


@pytest.fixture
async def fast(instance: Instance) -> AsyncIterator[SendingServer]:
    async for s in sending_server(instance, http={"request_timeout": 0.6, "idle_timeout": 0.6,
                                                  "max_body_bytes": 4096,
                                                  "max_header_bytes": 2048,
                                                  "max_requests_per_connection": 3}):
        yield s


async def raw(s: SendingServer, data: bytes, tls: bool = False, delay: float = 0.0,
              chunk: int = 0) -> tuple[bytes, float]:
    """Send ``data`` (in pieces of ``chunk`` bytes every ``delay`` s), read to EOF."""
    port = s.server.port("http", "implicit" if tls else "none")
    ctx = s.server.client_ssl() if tls else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    started = time.monotonic()
    received = bytearray()

    async def read_all() -> None:
        try:
            while chunk_in := await reader.read(65536):
                received.extend(chunk_in)
        except (ConnectionError, ssl.SSLError):
            pass

    reading = asyncio.create_task(read_all())
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    try:
        for piece in pieces:
            if reading.done():
                break
            writer.write(piece)
            await writer.drain()
            if delay:
                await asyncio.sleep(delay)
    except (ConnectionError, ssl.SSLError):
        pass
    await asyncio.wait_for(reading, 5)
    out = bytes(received)
    writer.close()
    return out, time.monotonic() - started


async def test_keep_alive_and_max_requests_per_connection(fast: SendingServer) -> None:
    one = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    out, _ = await raw(fast, one * 5)
    # three answered (the last with Connection: close), then the connection is closed
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.count(b"Connection: close") == 1


async def test_slow_client_gets_408_at_the_request_deadline(fast: SendingServer) -> None:
    head = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
    # slowloris: one byte every 0.1 s never completes the request within 0.6 s
    out, took = await raw(fast, head, delay=0.1, chunk=1)
    assert out.startswith(b"HTTP/1.1 408 ")
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
    assert took < 0.1 * len(head)


async def test_idle_connection_is_closed_without_an_answer(fast: SendingServer) -> None:
    out, took = await raw(fast, b"")
    assert out == b"" and 0.4 < took < 3


async def test_limits_give_json_errors(fast: SendingServer) -> None:
    big = (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: 5000\r\n\r\n" + b"x" * 5000)
    out, _ = await raw(fast, big)
    assert out.startswith(b"HTTP/1.1 413 ")
    assert b'"code":"body_too_large"' in out
    out, _ = await raw(fast, b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 3000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431 ") and b'"code":"headers_too_large"' in out
    out, _ = await raw(fast, b"BLAH\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ") and b'"code":"bad_request"' in out


async def test_unknown_paths_and_methods(api: SendingServer) -> None:
    r = await api.call("GET", "/nope")
    assert r.status == 404 and r.json()["error"]["code"] == "not_found"
    r = await api.call("PUT", "/v1/messages", {})
    assert r.status == 405 and r.json()["error"]["code"] == "method_not_allowed"


async def test_curl_over_tls_and_plain(api: SendingServer) -> None:
    curl = need_tool("curl")
    port = api.server.port("http", "implicit")
    code, out = await run_tool(curl, "-sS", "--cacert", str(api.server.cert),
                               "--resolve", f"mail.example.test:{port}:127.0.0.1",
                               f"https://mail.example.test:{port}/openapi.json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["openapi"].startswith("3.1") and "/v1/messages" in doc["paths"]
    plain = api.server.port("http", "none")
    code, out = await run_tool(curl, "-sS", "-i", f"http://127.0.0.1:{plain}/v1/events")
    assert code == 0 and " 401 " in out.splitlines()[0]
    assert '"code":"unauthorized"' in out
