"""Streams and shaping (issue 18) end to end: the sending API queues, the queue worker
delivers to a real ``pochta sink`` subprocess.

* A receiver that rate-limits (``pochta sink --throttle``: 421 4.7.28 beyond N messages a
  second) slows the destination down and the bulk stream still completes.
* A transactional message is delivered within 1 s while a 10,000-message bulk send to the
  same domain is draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pochta.diag.sink import free_port
from pochta.storage.interfaces_sending import EventKind
from tests.conftest import Instance
from tests.sending.helpers import SendingServer, sending_server


@dataclass
class SinkProcess:
    """``pochta sink --json`` in its own process; each message line with its arrival."""

    proc: asyncio.subprocess.Process
    port: int
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            obj = json.loads(line)
            if obj.get("type") == "message":
                self.messages.append((time.monotonic(), obj))
            elif obj.get("type") == "summary":
                self.summary = obj

    def accepted(self) -> int:
        return sum(1 for _, m in self.messages if m["reply"] < 400)

    def arrival(self, recipient: str) -> float | None:
        return next((t for t, m in self.messages if recipient in m["recipients"]), None)

    async def stop(self) -> dict[str, Any]:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)  # it prints its summary as it exits
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 10)
        if self.reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self.reader, 5)
        return self.summary


@contextlib.asynccontextmanager
async def pochta_sink(*args: str) -> AsyncIterator[SinkProcess]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pochta", "sink", "--listen", f"127.0.0.1:{port}", "--json",
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    sink = SinkProcess(proc, port)
    sink.reader = asyncio.create_task(sink.read())
    for _ in range(200):  # listening?
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    try:
        yield sink
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if sink.reader is not None:
            sink.reader.cancel()


def _route(port: int) -> list[dict[str, Any]]:
    return [{"domain": "remote.test", "host": "127.0.0.1", "port": port, "tls": "none"}]


async def _bulk(api: SendingServer, first: int, count: int, stream: str = "bulk") -> None:
    template = {"from": "news@example.test", "subject": "News {{n}}", "text": "Issue {{n}}",
                "stream": stream, "tags": ["news"]}
    for start in range(first, first + count, 1000):
        recipients = [{"to": f"r{n}@remote.test", "variables": {"n": n}}
                      for n in range(start, min(start + 1000, first + count))]
        r = await api.call("POST", "/v1/messages/batch",
                           {"template": template, "recipients": recipients}, tls=False)
        assert r.status == 202, r.body


async def test_throttling_receiver_slows_us_down_and_the_stream_completes(
        instance: Instance) -> None:
    total = 200
    async with pochta_sink("--throttle", "40/1", "--count", str(total)) as sink:
        queue = {"poll_interval": 0.2, "throttle_retry": 0.5, "per_destination": 4}
        async for api in sending_server(instance, routes=_route(sink.port), queue=queue):
            await _bulk(api, 0, total)
            delivered = await api.wait_events(EventKind.DELIVERED, total, timeout=90)
            assert len(delivered) == total  # the stream completed
            deferred = await api.events(kinds=(EventKind.DEFERRED,))
            worker = api.server.ctx.queue_worker
            assert worker is not None
            shaper = worker.shaper(f"route:127.0.0.1:{sink.port}:none:")
        summary = await sink.stop()
    assert summary["accepted"] == total
    # The receiver pushed back, and every refusal was a recorded deferral of one copy ...
    assert summary["throttled"] > 0
    assert len(deferred) == summary["throttled"]
    assert all("421 4.7.28" in json.loads(e.detail)["reply"] for e in deferred)
    assert shaper.throttles > 0
    # ... but we slowed down instead of hammering: at 40 a second, 200 messages take 5 s
    # whatever we do, and a sender that ignores the 421s (4 connections reconnecting at
    # once) is refused hundreds of times in that span.
    assert summary["throttled"] <= total // 4, summary


async def test_transactional_message_overtakes_a_10000_message_bulk_drain(
        instance: Instance) -> None:
    total = 10_000
    async with pochta_sink() as sink:
        queue = {"poll_interval": 1.0, "per_destination": 4}
        async for api in sending_server(instance, routes=_route(sink.port), queue=queue):
            await _bulk(api, 0, total)
            # wait until the drain is well under way
            deadline = time.monotonic() + 120
            while sink.accepted() < 500 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert 500 <= sink.accepted() < total - 2000, "the bulk drain is not running"
            sent = time.monotonic()
            r = await api.call("POST", "/v1/messages", {
                "from": "shop@example.test", "to": "urgent@remote.test",
                "subject": "Reset your password", "text": "code 123456"}, tls=False)
            assert r.status == 202, r.body
            while sink.arrival("urgent@remote.test") is None and time.monotonic() < sent + 10:
                await asyncio.sleep(0.01)
            arrived = sink.arrival("urgent@remote.test")
            behind = total - sink.accepted()
            assert arrived is not None
            assert arrived - sent < 1.0, f"took {arrived - sent:.3f} s"
            assert behind > 1000  # the bulk send was still draining
            await api.wait_events(EventKind.DELIVERED, total + 1, timeout=240)
        assert sink.accepted() == total + 1
