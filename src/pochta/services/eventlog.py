"""The searchable mail log (issue 19): SMTP session summaries, accepted messages, delivery
results and bounces written to the store's ``mail_events`` (interfaces_ops.py), for the
web admin's log view and the dashboard's charts.

Events are buffered and written in batches (one store transaction per ``FLUSH_DELAY`` or
``FLUSH_BATCH`` events), so the SMTP reply never waits for the log. A log line is not
mail: events still buffered when the process dies are lost (the text log has them too).
Old events are purged by age (``[web] log_days``) at most once an hour.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any

from ..storage.interfaces import StoreError
from ..storage.interfaces_ops import NewMailEvent

log = logging.getLogger(__name__)

FLUSH_DELAY = 0.5
FLUSH_BATCH = 500
MAX_BUFFER = 20_000  # events beyond this while the store is stuck are dropped
PURGE_EVERY = 3600.0
DEFAULT_DAYS = 30.0


class EventLog:
    def __init__(self, store: Any, days: float = DEFAULT_DAYS) -> None:
        self.store = store
        self.days = days
        self._buffer: list[NewMailEvent] = []
        self._task: asyncio.Task[None] | None = None
        self._last_purge = 0.0

    def record(self, event: NewMailEvent) -> None:
        if len(self._buffer) >= MAX_BUFFER:
            return
        self._buffer.append(event)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(FLUSH_DELAY)
        await self.flush()

    async def flush(self) -> None:
        """Write what is buffered now (tests call this to see their events at once)."""
        while self._buffer:
            batch, self._buffer = self._buffer[:FLUSH_BATCH], self._buffer[FLUSH_BATCH:]
            try:
                await self.store.record_mail_events(batch)
            except Exception as exc:  # a log line must never break mail (a closed store...)
                log.warning("mail log: %d event(s) not recorded: %s", len(batch), exc)
                return
        now = time.time()
        if self.days > 0 and now - self._last_purge > PURGE_EVERY:
            self._last_purge = now
            try:
                await self.store.purge_mail_events(now - self.days * 86400)
            except (StoreError, OSError) as exc:
                log.warning("mail log: purge failed: %s", exc)


_logs: weakref.WeakKeyDictionary[Any, EventLog] = weakref.WeakKeyDictionary()


def event_log(store: Any, days: float | None = None) -> EventLog:
    """The one EventLog of ``store`` in this process (made on first use)."""
    found = _logs.get(store)
    if found is None:
        found = _logs[store] = EventLog(store)
    if days is not None:
        found.days = days
    return found


async def flush_store(store: Any) -> None:
    """Write what ``store``'s log holds (the server calls this as it stops)."""
    found = _logs.get(store)
    if found is not None:
        if found._task is not None and found._task is not asyncio.current_task():
            found._task.cancel()
        await found.flush()


def record(store: Any, event: NewMailEvent) -> None:
    """Record ``event`` in the background; never raises (a log must not break mail)."""
    try:
        event_log(store).record(event)
    except (RuntimeError, TypeError) as exc:  # no running loop; an unhashable test double
        log.debug("mail log: not recorded: %s", exc)
