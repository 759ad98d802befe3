"""Where the time of a cold THREAD REFERENCES on 100,000 messages goes, on the store side:
the kept sort keys read back (`get_sort_keys`, one reader-thread hop), the SortItems
built, threading and rendering — the steps of server/imap_sort.py's `_items` and
`cmd_thread` after SEARCH ALL, in one process, without sockets.

  .venv/bin/python bench/imap_thread_store.py --data-dir /tmp/thread-store [--count 100000]

The first run fills the store with bench/imap_sortbox.py's messages and keeps their sort
keys (as the first SORT or THREAD does); later runs only measure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from imap_sortbox import message

from pochta.proto.imap import bodystructure as bs
from pochta.proto.imap.search import Candidate
from pochta.proto.imap.sort import (
    Headers,
    SortItem,
    ThreadInput,
    collector_paused,
    compute_sort_keys,
    orderedsubject_answer,
    references_answer,
    render_threads,
    thread_orderedsubject,
    thread_references,
)
from pochta.storage.interfaces import Envelope, LocalTarget
from pochta.storage.sqlite import SQLiteStore

USER = "big@example.test"


async def run(data_dir: Path, count: int) -> None:
    fresh = not data_dir.exists()
    store = await SQLiteStore.open(data_dir, commit_interval=0.05)
    try:
        if fresh:
            await store.add_domain("example.test")
            await store.add_account(USER, "x", None)
        account = await store.get_account(USER)
        assert account is not None
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        if fresh:
            t0 = time.perf_counter()
            target = [LocalTarget(account.id, "INBOX")]
            for start in range(0, count, 1000):
                await asyncio.gather(*(store.accept(message(i), Envelope(sender=""), target)
                                       for i in range(start, min(count, start + 1000))))
            metas = await store.list_messages(box.id)
            for start in range(0, len(metas), 1000):
                part = metas[start : start + 1000]
                blobs = await store.read_blobs([m.blob_id for m in part])
                await store.put_sort_keys({
                    m.blob_id: compute_sort_keys(Headers(bs._split_header(blobs[m.blob_id])[0]))
                    for m in part})
            print(f"filled {len(metas)} messages, keys kept: {time.perf_counter() - t0:.1f} s")
        for _ in range(2):
            t = [time.perf_counter()]
            metas = await store.list_messages(box.id)
            hits = [Candidate(i, m, False) for i, m in enumerate(metas, 1)]
            t.append(time.perf_counter())
            known = await store.get_sort_keys([c.meta.blob_id for c in hits])
            t.append(time.perf_counter())
            with collector_paused():  # as server/imap_sort.py's _items
                items = [SortItem(c.seq, c.meta, known[c.meta.blob_id]) for c in hits]
            t.append(time.perf_counter())
            refs = thread_references(items)
            t.append(time.perf_counter())
            answer = render_threads(refs)
            t.append(time.perf_counter())
            thread_orderedsubject(items)
            t.append(time.perf_counter())
            ms = [f"{(b - a) * 1000:.0f}" for a, b in pairwise(t)]
            print(f"general path, {len(items)} messages: list_messages+candidates {ms[0]} ms, "
                  f"get_sort_keys {ms[1]} ms, SortItems {ms[2]} ms, "
                  f"thread_references {ms[3]} ms, render {ms[4]} ms "
                  f"({len(answer)} octets), thread_orderedsubject {ms[5]} ms")
            del metas, hits, known, items, refs
        for _ in range(3):
            # THREAD ... ALL's path (server/imap_sort.py's _thread_all): columns, then
            # threads straight to bytes
            t = [time.perf_counter()]
            cols = await store.thread_columns(box.id)
            t.append(time.perf_counter())
            m = ThreadInput(list(range(1, len(cols.uids) + 1)), cols.dates, cols.subjects,
                            cols.replies, cols.message_ids, cols.references)
            fast = references_answer(m)
            t.append(time.perf_counter())
            by_subject = orderedsubject_answer(m)
            t.append(time.perf_counter())
            ms = [f"{(b - a) * 1000:.0f}" for a, b in pairwise(t)]
            print(f"columns path, {len(cols.uids)} messages: thread_columns {ms[0]} ms, "
                  f"references_answer {ms[1]} ms ({len(fast)} octets), "
                  f"orderedsubject_answer {ms[2]} ms ({len(by_subject)} octets)")
    finally:
        await store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--count", type=int, default=100_000)
    a = ap.parse_args()
    asyncio.run(run(a.data_dir, a.count))


if __name__ == "__main__":
    main()
