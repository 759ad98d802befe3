"""Run `pochta ...` in-process in a worker thread (the test's loop keeps serving)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
from collections.abc import Iterator
from typing import Any

from pochta.cli import main

_lock = threading.Lock()


class _ThreadStdout(io.TextIOBase):
    """sys.stdout replacement that sends each thread's output to its own buffer."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback
        self.buffers: dict[int, io.StringIO] = {}

    def write(self, s: str) -> int:
        buf = self.buffers.get(threading.get_ident())
        if buf is None:
            return int(self.fallback.write(s))
        return buf.write(s)

    def flush(self) -> None:
        pass


_users = 0


@contextlib.contextmanager
def _captured() -> Iterator[_ThreadStdout]:
    """Install the per-thread stdout while any run_cli is active (they may overlap)."""
    import sys

    global _users
    with _lock:
        if _users == 0:
            sys.stdout = _ThreadStdout(sys.stdout)
        _users += 1
        cap = sys.stdout
    assert isinstance(cap, _ThreadStdout)
    try:
        yield cap
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                sys.stdout = cap.fallback


async def run_cli(*argv: str) -> tuple[int, str]:
    """(exit code, stdout) of `pochta argv...` run in a thread."""
    with _captured() as cap:

        def target() -> tuple[int, str]:
            buf = io.StringIO()
            cap.buffers[threading.get_ident()] = buf
            try:
                rc = main(list(argv))
            except SystemExit as exc:
                rc = int(exc.code or 0)
            finally:
                del cap.buffers[threading.get_ident()]
            return rc, buf.getvalue()

        return await asyncio.to_thread(target)


async def run_json(*argv: str) -> tuple[int, Any]:
    rc, out = await run_cli(*argv, "--json")
    return rc, json.loads(out)
