"""``pochta serve`` with one process, or ``--workers N`` processes sharing the listeners.

Each worker is a whole server (every role, its own event loop, its own queue worker)
bound to the same addresses with SO_REUSEPORT, so the kernel spreads connections over
the cores. What must hold across workers lives in the store: queue items are claimed with
leases, mailbox changes reach IDLE in other workers (SQLite: a HIGHESTMODSEQ poll every
250 ms; PostgreSQL: LISTEN/NOTIFY), the POP3 maildrop lock and the counters are store
rows. On SQLite every worker has the WAL fdatasynced before it answers 250, and SQLite's
WAL lets one of them write at a time: the workers take turns on a flock()ed file (each
still group-commits, and fsyncs outside the lock; see storage/sqlite.py).

With at least as many usable CPUs as workers, worker i runs on the i-th CPU only
(``pin_workers``, on by default).

The parent only supervises: it opens the store once (migrations run before any worker
starts), starts the workers, restarts one that dies unexpectedly (with a growing delay),
and passes SIGTERM/SIGINT on for a clean shutdown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

from ..config import Config
from ..logsetup import setup_logging
from ..storage.factory import open_store
from .app import serve_forever

log = logging.getLogger("pochta.workers")

MAX_WORKERS = 64


def run_one(config: Config, worker: int | None = None) -> int:
    """One server process on uvloop until SIGTERM/SIGINT."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop  # local: not installed on every platform (pyproject: not on win32)

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    # The objects of the start (modules, config, tables) live as long as the process:
    # out of the collector's sight, a full collection no longer walks them; and a young
    # collection every 7,000 allocations, not 700 (each IMAP command makes hundreds).
    gc.freeze()
    gc.set_threshold(7000, 10, 10)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(serve_forever(config, worker=worker))
    except KeyboardInterrupt:
        return 0


def worker_cpu(index: int, workers: int, cpus: set[int]) -> int | None:
    """The one CPU worker ``index`` of ``workers`` runs on, or None (fewer than two
    workers, or not one usable CPU each: then the kernel places them)."""
    if workers < 2 or workers > len(cpus):
        return None
    return sorted(cpus)[index]


def _pin(config: Config, index: int) -> None:
    """Each worker on its own core: two busy workers that the kernel moves about (next to
    the clients' processes) spent ~10 % more CPU per SMTP message than pinned ones
    (docs/performance.md §12). Set before the store's threads start, which inherit it."""
    if not config.pin_workers or not hasattr(os, "sched_setaffinity"):
        return
    cpu = worker_cpu(index, config.workers, os.sched_getaffinity(0))
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _child(config: Config, index: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns ^C into SIGTERM
    _pin(config, index)
    raise SystemExit(run_one(config, worker=index))


def supervise(config: Config, workers: int) -> int:
    """Run ``workers`` server processes until SIGTERM/SIGINT; returns the exit status."""
    setup_logging(config.log.level, config.log.format)
    config = dataclasses.replace(config, workers=workers)  # each worker knows it is one of N
    asyncio.run(_prepare_store(config))
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs: dict[int, BaseProcess] = {}
    restarts: dict[int, float] = {}

    def start(index: int) -> None:
        proc = ctx.Process(target=_child, args=(config, index), name=f"pochta-worker-{index}")
        proc.start()
        procs[index] = proc
        log.info("worker %d started (pid %s)", index, proc.pid)

    for index in range(workers):
        start(index)
    status = 0
    while not stopping:
        time.sleep(0.2)
        for index, proc in list(procs.items()):
            if proc.is_alive() or stopping:
                continue
            code = proc.exitcode
            if code == 2:  # a configuration error: restarting cannot help
                log.error("worker %d refused the configuration; stopping", index)
                stopping, status = True, 2
                break
            delay = min(30.0, restarts.get(index, 0.5) * 2)
            restarts[index] = delay
            log.error("worker %d (pid %s) exited with %s; restarting in %.0f s",
                      index, proc.pid, code, delay)
            time.sleep(delay)
            start(index)
    for proc in procs.values():
        if proc.is_alive() and proc.pid is not None:
            proc.terminate()  # SIGTERM: each worker says goodbye to its clients
    for proc in procs.values():
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    log.info("all workers stopped")
    return status


async def _prepare_store(config: Config) -> None:
    """Migrations run once, here, before any worker opens the store."""
    store = await open_store(config)
    await store.close()
