"""Keep the SEARCH header texts (FROM/TO/CC/BCC/SUBJECT, ``proto.imap.search.
search_fields_of``) and the SORT/THREAD keys (``proto.imap.sort.compute_sort_keys``) of
every stored message in the background, so that the first SEARCH or SORT on a mailbox is
as fast as the later ones (the store decides SEARCH on the kept texts; SORT reads kept
keys instead of every message).

New messages (delivery, APPEND, Sieve, DSNs, another process) are picked up within
``interval`` after their commit, in batches: nothing is added to the path that
acknowledges a message, and a crash before the texts are kept loses nothing (they are
derived; a SEARCH reads a message whose texts are missing and keeps them). Old messages,
kept before this existed, are done the same way from the first blob on, ``batch`` at a
time with the event loop given back between messages. COPY and MOVE share the blob, so
its texts; expunge and blob collection drop them with the blob (store triggers).

One keeper works at a time for the whole store: every ``serve --workers`` process and
every node sharing a PostgreSQL database starts one, and the one holding the store lock
``KEEPER_LOCK`` does the work (the texts are the same whoever computes them; N keepers
would read and write each new message N times). The others look again every
``KEEPER_LEASE / 3`` seconds and take over when the holder stops or dies (its lease runs
out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

from ..proto.imap.bodystructure import Headers, _split_header
from ..proto.imap.search import search_fields_of
from ..proto.imap.sort import compute_sort_keys
from ..services.locks import PROCESS_ID
from ..storage.interfaces import MailStore, NotFound, StoreError
from ..storage.interfaces_imap import SortKeys

log = logging.getLogger(__name__)

BATCH = 200  # messages per store read and write
BATCH_MAX_SIZE = 64 << 10  # bigger messages: only their header is read, one at a time
HEADER_MAX = 256 << 10  # a longer header is left to SEARCH (it reads the message)
_HEADER_END = re.compile(rb"\n\r?\n")  # as proto/imap/bodystructure.py splits a header
SORT_HEADER_READ = 64 << 10  # server/imap_sort.py HEADER_READ: what SORT reads of a message
YIELD_EVERY = 10  # messages between two returns to the event loop (~1-2 ms of work)
BACKFILL_LOG = 10_000  # a run of at least this many messages is logged (INFO)
KEEPER_LOCK = "imap-search-keeper"
KEEPER_LEASE = 30.0  # seconds; renewed every third of it while this process keeps


async def keep_once(
    store: MailStore, after: int = 0, batch: int = BATCH
) -> tuple[int, int, bool]:
    """One batch of messages whose texts are not kept, blob ids above ``after``: (where
    the next batch starts: the last blob done, or the highest stored when this batch
    reached it; texts kept; whether more may follow at once: the batch was full)."""
    todo, top = await store.unkept_search_blobs(after, batch)
    full = len(todo) == batch
    upto = todo[-1][0] if full else max(top, after)
    if not todo:
        return upto, 0, False
    blobs = await store.read_blobs([b for b, size in todo if size <= BATCH_MAX_SIZE])
    fields: dict[int, str] = {}
    keys: dict[int, SortKeys] = {}
    for i, (blob_id, size) in enumerate(todo):
        data = blobs.get(blob_id)
        if data is None:
            try:
                data = await _head(store, blob_id, size)
            except NotFound:  # expunged and collected meanwhile
                continue
            if data is None:
                continue  # a header longer than HEADER_MAX: SEARCH reads that message
        headers = Headers(_split_header(data)[0])
        text = search_fields_of(headers)
        if text is not None:  # None: a NUL or a separator; SEARCH reads it each time
            fields[blob_id] = text
        # SORT's and THREAD's keys from the same header: the first SORT of a mailbox
        # filled by delivery then reads kept keys instead of every message. They must be
        # the keys SORT computes itself (kept orders mix both): from at most the first
        # SORT_HEADER_READ octets of a message bigger than that, as SORT reads it
        if size > SORT_HEADER_READ and len(data) > SORT_HEADER_READ:
            headers = Headers(_split_header(data[:SORT_HEADER_READ])[0])
        keys[blob_id] = compute_sort_keys(headers)
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
    await store.put_search_fields(fields)
    if keys:
        await store.put_sort_keys(keys)
    return upto, len(fields), full


async def _head(store: MailStore, blob_id: int, size: int) -> bytes | None:
    """The start of a big message up to the end of its header (at most HEADER_MAX bytes,
    streamed: a 25 MB message is never whole in memory for its header texts); None when
    the header is longer."""
    buf = bytearray()
    chunks = store.stream_blob(blob_id, 0, min(size, HEADER_MAX), chunk=64 << 10)
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        async for chunk in chunks:
            buf += chunk
            if buf.startswith((b"\r\n", b"\n")) or _HEADER_END.search(buf):
                return bytes(buf)
    return bytes(buf) if len(buf) == size else None


async def keep_forever(store: MailStore, interval: float = 1.0, rescan: float = 600.0,
                       owner: str = f"{PROCESS_ID}:searchkeep",
                       lease: float = KEEPER_LEASE) -> None:
    """Run ``keep_once`` until cancelled while this process holds ``KEEPER_LOCK``: batch
    after batch while there is work, then a look every ``interval`` seconds for new blobs
    (two indexed reads from where the last look ended), and from the first blob again
    every ``rescan`` seconds (a blob committed out of id order, PostgreSQL's concurrent
    deliveries, is not missed for long). Without the lock it waits and asks again."""
    try:
        await _keep_while_held(store, interval, rescan, owner, lease)
    finally:  # cancelled (shutdown): let another process take over at once
        with contextlib.suppress(StoreError):
            await asyncio.shield(store.unlock(KEEPER_LOCK, owner))


async def _keep_while_held(store: MailStore, interval: float, rescan: float, owner: str,
                           lease: float) -> None:
    after, since = 0, time.monotonic()
    run_kept, run_start = 0, time.monotonic()
    renewed = -lease  # never: take the lock before the first batch
    while True:
        if time.monotonic() - renewed >= lease / 3:
            try:
                held = await store.try_lock(KEEPER_LOCK, owner, lease)
            except StoreError as exc:
                log.warning("cannot take the search keeper's lock: %s", exc)
                held = False
            if not held:  # another process keeps; start from the first blob if we take over
                after, renewed = 0, -lease
                await asyncio.sleep(lease / 3)
                continue
            renewed = time.monotonic()
        try:
            after, kept, more = await keep_once(store, after)
        except StoreError as exc:  # a full disk or a lost database: try again later
            log.warning("cannot keep search texts: %s", exc)
            await asyncio.sleep(max(interval, 10.0))
            continue
        if kept and not run_kept:
            run_start = time.monotonic()
        run_kept += kept
        if more:
            await asyncio.sleep(0)
            continue
        if run_kept >= BACKFILL_LOG:  # a backfill, not the flow of new mail
            log.info("kept the search texts of %d messages in %.1f s", run_kept,
                     time.monotonic() - run_start)
        run_kept = 0
        await asyncio.sleep(interval)
        if time.monotonic() - since >= rescan:
            after, since = 0, time.monotonic()
