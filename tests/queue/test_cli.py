"""``pochta queue ...`` against a real data directory."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from pochta.cli import main
from pochta.config import load
from pochta.storage.factory import open_store
from pochta.storage.interfaces import Envelope, QueueItem, QueueState, RemoteRecipient
from tests.conftest import storage_toml

MSG = b"From: alice@example.test\r\nSubject: queued one\r\n\r\nbody text\r\n"


@pytest.fixture
def setup(tmp_path: Path, storage_settings: dict[str, Any]) -> tuple[Path, str]:
    cfg = tmp_path / "pochta.toml"
    cfg.write_text('hostname = "mta.example.test"\ndata_dir = "data"\n'
                   + storage_toml(storage_settings))

    async def prep() -> str:
        store = await open_store(load(cfg))
        try:
            res = await store.accept(MSG, Envelope("alice@example.test"), [], [
                RemoteRecipient("bob@example.net"), RemoteRecipient("carol@example.org")])
            items = await store.list_queue()
            await store.update_queue_item(items[0].id, QueueState.DEFERRED,
                                          time.time() + 3600, "451 4.7.1 greylisted")
            await store.update_queue_item(items[1].id, QueueState.DELIVERED, time.time(),
                                          "250 2.0.0 ok")
            return res.message_id
        finally:
            await store.close()

    return cfg, asyncio.run(prep())


def items(tmp_path: Path) -> list[QueueItem]:
    async def get() -> list[QueueItem]:
        store = await open_store(load(tmp_path / "pochta.toml"))
        try:
            return await store.list_queue()
        finally:
            await store.close()

    return asyncio.run(get())


def test_list_shows_active_items(setup: tuple[Path, str], capsys: pytest.CaptureFixture[str]
                                 ) -> None:
    cfg, _qid = setup
    assert main(["-c", str(cfg), "queue", "list", "-v"]) == 0
    out = capsys.readouterr().out
    assert "bob@example.net" in out and "deferred" in out and "greylisted" in out
    assert "carol@example.org" not in out  # delivered: only with --all
    assert main(["-c", str(cfg), "queue", "list", "--all"]) == 0
    assert "carol@example.org" in capsys.readouterr().out


def test_show_prints_recipients_and_headers(
    setup: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, qid = setup
    assert main(["-c", str(cfg), "queue", "show", qid]) == 0
    out = capsys.readouterr().out
    assert f"Queue ID:    {qid}" in out
    assert "Subject: queued one" in out and "body text" not in out
    assert "<bob@example.net>" in out and "<carol@example.org>" in out
    assert main(["-c", str(cfg), "queue", "show", "nonexistent"]) == 1


def test_retry_and_flush_make_items_due(setup: tuple[Path, str], tmp_path: Path) -> None:
    cfg, _qid = setup
    before = time.time()
    bob = next(i for i in items(tmp_path) if i.recipient.address == "bob@example.net")
    assert bob.next_attempt > before + 3000
    assert main(["-c", str(cfg), "queue", "retry", str(bob.id)]) == 0
    bob = next(i for i in items(tmp_path) if i.id == bob.id)
    assert bob.state is QueueState.DEFERRED and bob.next_attempt <= time.time()
    assert main(["-c", str(cfg), "queue", "flush"]) == 0
    carol = next(i for i in items(tmp_path) if i.recipient.address == "carol@example.org")
    assert carol.state is QueueState.DELIVERED  # finished items are left alone


def test_delete_retires_without_bounce(setup: tuple[Path, str], tmp_path: Path) -> None:
    cfg, qid = setup
    assert main(["-c", str(cfg), "queue", "delete", qid]) == 0
    remaining = [i for i in items(tmp_path) if i.state in (QueueState.PENDING,
                                                             QueueState.DEFERRED)]
    assert remaining == []
    # No DSN was queued.
    assert all(i.envelope.sender != "" for i in items(tmp_path))


def test_retry_is_not_counted_as_an_attempt(setup: tuple[Path, str], tmp_path: Path) -> None:
    cfg, _qid = setup
    bob = next(i for i in items(tmp_path) if i.recipient.address == "bob@example.net")
    assert bob.attempts == 1
    for _ in range(3):
        assert main(["-c", str(cfg), "queue", "retry", str(bob.id)]) == 0
    assert main(["-c", str(cfg), "queue", "flush"]) == 0
    bob = next(i for i in items(tmp_path) if i.id == bob.id)
    assert bob.attempts == 1  # TRIES counts real delivery attempts only


async def test_retry_from_the_cli_wakes_the_running_worker(
    tmp_path: Path, storage_settings: dict[str, Any]
) -> None:
    """The real ``pochta queue retry`` in its own process: a worker that would otherwise
    sleep for an hour delivers within a couple of seconds."""
    import sys

    from pochta.dns import StaticResolver
    from pochta.queue.settings import QueueConfig, Route
    from pochta.queue.worker import QueueWorker

    from .sink import Sink

    cfg = tmp_path / "pochta.toml"
    cfg.write_text('hostname = "mta.example.test"\ndata_dir = "data"\n'
                   + storage_toml(storage_settings))
    sink = Sink()
    await sink.start()
    store = await open_store(load(cfg))
    await store.accept(MSG, Envelope("alice@example.test"), [],
                       [RemoteRecipient("bob@example.net")])
    (item,) = await store.list_queue()
    await store.update_queue_item(item.id, QueueState.DEFERRED, time.time() + 3600,
                                  "451 4.7.1 later")
    worker = QueueWorker(store, "mta.example.test", StaticResolver(),
                         QueueConfig(poll_interval=3600),
                         [Route("example.net", "127.0.0.1", sink.port, tls="none")])
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(1.0)  # the worker has made its pass and sleeps
        assert sink.recipients() == []
        pochta = str(Path(sys.executable).parent / "pochta")
        proc = await asyncio.create_subprocess_exec(
            pochta, "-c", str(cfg), "queue", "retry", str(item.id),
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert proc.returncode == 0 and b"told to retry" in out
        started = time.monotonic()
        while not sink.recipients() and time.monotonic() - started < 5:
            await asyncio.sleep(0.05)
        assert sink.recipients() == ["bob@example.net"]
        print(f"delivered {time.monotonic() - started:.2f} s after the CLI returned")
        assert time.monotonic() - started < 3
    finally:
        await worker.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
        await sink.close()
