"""THREAD REFERENCES / ORDEREDSUBJECT / rendering on 100,000 synthetic messages, the
pure functions alone (no store, no sockets): the cold path of THREAD without the store
read. The items are those of bench/imap_sortbox.py (reply chains of five, dates out of
arrival order, `Re:` subjects).

  .venv/bin/python bench/imap_thread_micro.py [--count 100000] [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable

from pochta.mail.model import MessageMeta, SortKeys
from pochta.proto.imap.sort import (
    SortItem,
    ThreadInput,
    ThreadLinks,
    orderedsubject_answer,
    orderedsubject_threads,
    references_answer,
    references_threads,
    render_threads,
    thread_orderedsubject,
    thread_references,
)

EPOCH = 1_704_067_200


def items(count: int) -> list[SortItem]:
    out: list[SortItem] = []
    for i in range(count):
        root = i - i % 5
        keys = SortKeys(
            date=float(EPOCH + ((i * 7919) % 100_000) * 60),
            subject=f"TOPIC {root * 31 % 20011}", reply=bool(i % 5),
            from_=f"SENDER{i % 97}", to="BIG", cc="", display_from=f"SENDER {i % 97}",
            display_to="BIG@EXAMPLE.TEST", message_id=f"<{i}@bench>",
            references=f"<{root}@bench>" if i % 5 else "")
        meta = MessageMeta(i + 1, i + 1, 2300, float(EPOCH + i), frozenset(), 1)
        out.append(SortItem(i + 1, meta, keys))
    return out


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    its = items(a.count)
    columns = ThreadInput.of_items(its)  # as THREAD ... ALL reads them from the store
    refs = thread_references(its)
    subj = thread_orderedsubject(its)
    cases: list[tuple[str, Callable[[], object]]] = [
        ("thread_references", lambda: thread_references(its)),
        ("thread_orderedsubject", lambda: thread_orderedsubject(its)),
        ("references_threads (columns)", lambda: references_threads(columns)),
        ("orderedsubject_threads (columns)", lambda: orderedsubject_threads(columns)),
        ("references_answer (columns, bytes)", lambda: references_answer(columns)),
        ("orderedsubject_answer (columns, bytes)", lambda: orderedsubject_answer(columns)),
        ("render_threads (REFERENCES)", lambda: render_threads(refs)),
        ("render_threads (ORDEREDSUBJECT)", lambda: render_threads(subj)),
    ]
    # arrivals linked into kept links (the server's path after an arrival): the links
    # of all but the last message, then the last one linked in and the answer written
    before = ThreadInput(columns.numbers[:-1], columns.dates[:-1], columns.subjects[:-1],
                         columns.replies[:-1], columns.message_ids[:-1],
                         columns.references[:-1])

    def arrival() -> tuple[ThreadLinks, float]:
        links = ThreadLinks(before)
        t0 = time.perf_counter()
        assert links.extend(columns)
        return links, time.perf_counter() - t0

    links, _ = arrival()
    from pochta.server import imap_thread_snapshot as snapshot
    from pochta.storage.interfaces_imap import ThreadColumns

    kept = ThreadColumns(columns.numbers, columns.dates, columns.subjects, columns.replies,
                         columns.message_ids, columns.references)
    data = snapshot.encode(kept, links)
    print(f"snapshot of columns and links: {len(data) / 1e6:.1f} MB")
    cases += [
        ("ThreadLinks (step 1, all messages)", lambda: ThreadLinks(columns)),
        ("ThreadLinks.answer (steps 2-5)", lambda: links.answer(columns)),
        ("snapshot encode", lambda: snapshot.encode(kept, links)),
        ("snapshot decode", lambda: snapshot.decode(data)),
    ]
    where = "last" if columns.dates[-1] == max(columns.dates) else "among the others"
    print(f"{'ThreadLinks.extend (one arrival)':34s} "
          f"{min(arrival()[1] for _ in range(a.repeat)) * 1000:8.1f} ms (best of "
          f"{a.repeat}, dated {where})")
    for name, fn in cases:
        print(f"{name:34s} {best(fn, a.repeat) * 1000:8.0f} ms (best of {a.repeat}, "
              f"{a.count} messages)")
    if a.profile:
        for name, fn in cases[:2]:
            prof = cProfile.Profile()
            prof.runcall(fn)
            print(f"--- {name}")
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
