"""kill -9 of a process in the middle of deliveries: a restart resumes every unfinished
recipient and never resends to one whose delivery was confirmed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from pochta.config import Config, from_dict
from pochta.dns import StaticResolver
from pochta.queue.settings import QueueConfig, Route
from pochta.queue.worker import QueueWorker
from pochta.storage.factory import open_store
from pochta.storage.interfaces import Envelope, QueueState, RemoteRecipient

from .sink import Sink

CHILD = """
import asyncio, json, sys
from pochta.config import from_dict
from pochta.dns import StaticResolver
from pochta.queue.settings import QueueConfig, Route
from pochta.queue.worker import QueueWorker
from pochta.storage.factory import open_store

async def main() -> None:
    store = await open_store(from_dict(json.loads(sys.argv[1])))
    routes = [Route("one.example", "127.0.0.1", int(sys.argv[2]), tls="none"),
              Route("two.example", "127.0.0.1", int(sys.argv[3]), tls="none")]
    worker = QueueWorker(store, "mta.example.test", StaticResolver(), QueueConfig(), routes)
    await worker.run()

asyncio.run(main())
"""

SRC = str(Path(__file__).resolve().parents[2] / "src")


async def wait_for(cond: object, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.05)


async def test_kill_9_mid_delivery_then_restart(
    tmp_path: Path, storage_settings: dict[str, Any]
) -> None:
    raw = {"hostname": "mta.example.test", "base_dir": str(tmp_path),
           "storage": storage_settings}
    config: Config = from_dict(raw)
    one, two = Sink(), Sink(hold=asyncio.Event())
    await one.start()
    await two.start()
    store = await open_store(config)
    msg = b"Subject: durable\r\n\r\nbody\r\n"
    await store.accept(msg, Envelope("alice@example.test"), [], [
        RemoteRecipient("a@one.example"), RemoteRecipient("b@two.example")])
    await store.close()
    env = {**os.environ, "PYTHONPATH": SRC}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, json.dumps(raw), str(one.port), str(two.port), env=env)
    try:
        # one.example is confirmed; two.example got the message but no reply yet.
        await wait_for(lambda: one.messages and two.messages)

        async def confirmed() -> bool:
            s = await open_store(config)
            try:
                items = {i.recipient.address: i for i in await s.list_queue()}
            finally:
                await s.close()
            return items["a@one.example"].state is QueueState.DELIVERED

        for _ in range(200):
            if await confirmed():
                break
            await asyncio.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert two.hold is not None
    two.hold.set()
    two.hold = None
    store = await open_store(config)
    try:
        items = {i.recipient.address: i for i in await store.list_queue()}
        assert items["a@one.example"].state is QueueState.DELIVERED
        assert items["b@two.example"].state is QueueState.PENDING
        routes = [Route("one.example", "127.0.0.1", one.port, tls="none"),
                  Route("two.example", "127.0.0.1", two.port, tls="none")]
        worker = QueueWorker(store, "mta.example.test", StaticResolver(),
                             QueueConfig(connect_timeout=5, command_timeout=5), routes)
        assert await worker.run_once() == 1  # only the unconfirmed recipient
        assert {i.state for i in await store.list_queue()} == {QueueState.DELIVERED}
        assert one.recipients() == ["a@one.example"]  # never twice
        # two.example saw it twice: its 250 never reached us (the RFC 1047 window).
        assert two.recipients() == ["b@two.example", "b@two.example"]
    finally:
        await store.close()
        await one.close()
        await two.close()
