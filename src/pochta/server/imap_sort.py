"""SORT (RFC 5256, SORT=DISPLAY RFC 5957, ESORT RFC 5267, PARTIAL RFC 9394) and THREAD
(ORDEREDSUBJECT, REFERENCES). The orderings are pure (proto/imap/sort.py); this module
finds the matching messages and reads their headers."""

from __future__ import annotations

import bisect
import logging
from array import array
from typing import TypeVar

from ..proto.imap import bodystructure as bs
from ..proto.imap.errors import BadCharset
from ..proto.imap.parser import Reader
from ..proto.imap.search import Candidate, apply_partial
from ..proto.imap.sort import (
    Headers,
    SortItem,
    SortRequest,
    ThreadInput,
    ThreadLinks,
    collector_paused,
    compute_sort_keys,
    orderedsubject_answer,
    parse_sort,
    parse_thread,
    render_threads,
    seq_list,
    sort_items,
    thread_orderedsubject,
    thread_references,
)
from ..storage.interfaces import NotFound, StoreError
from ..storage.interfaces_imap import SortKeys, ThreadColumns
from . import imap_sortorder, imap_thread_snapshot
from .imap_message import BATCH, BATCH_MAX_SIZE, search_hits
from .imap_session import ImapSession, SearchUpdate

log = logging.getLogger("pochta.imap")

T = TypeVar("T")

HEADER_READ = 64 << 10  # the header of a message bigger than this is read alone


async def _header(s: ImapSession, c: Candidate) -> Headers | None:
    """The message's header (the bytes SEARCH loaded, else read from the store: the first
    HEADER_READ octets of a big message)."""
    data = c.data
    if data is None:
        try:
            if c.meta.size > HEADER_READ:
                chunks = []
                async for chunk in s.store.stream_blob(c.meta.blob_id, 0, HEADER_READ):
                    chunks.append(chunk)
                data = b"".join(chunks)
            else:
                data = await s.store.read_blob(c.meta.blob_id)
        except NotFound:
            return None
    header, _ = bs._split_header(data)
    return Headers(header)


async def _compute_keys(s: ImapSession, todo: list[Candidate]) -> dict[int, SortKeys]:
    """Compute and keep the sort keys of messages that have none kept yet (blob id ->
    keys); a message gone meanwhile is absent from the result."""
    out: dict[int, SortKeys] = {}
    for start in range(0, len(todo), BATCH):
        missing = todo[start : start + BATCH]
        blobs = await s.store.read_blobs([c.meta.blob_id for c in missing if c.data is None
                                          and c.meta.size <= BATCH_MAX_SIZE])
        new: dict[int, SortKeys] = {}
        for c in missing:
            await s.pause()
            if c.data is None and c.meta.blob_id in blobs:
                c.data = blobs[c.meta.blob_id]
            header = await _header(s, c)
            if header is not None:
                new[c.meta.blob_id] = compute_sort_keys(header)
        if new:
            try:
                await s.store.put_sort_keys(new)
            except StoreError as exc:  # a full disk: sort anyway, remember nothing
                log.warning("cannot keep sort keys: %s", exc)
        out.update(new)
    return out


async def _items(s: ImapSession, hits: list[Candidate], uid: bool) -> list[SortItem]:
    """The hits with their sort keys: kept by the store once computed (a SORT or THREAD
    of a big mailbox reads each header once, not every time)."""
    # one store call for the keys already kept (a warm mailbox has them all)
    known = await s.store.get_sort_keys([c.meta.blob_id for c in hits])
    known.update(await _compute_keys(s, [c for c in hits if c.meta.blob_id not in known]))
    items: list[SortItem] = []
    with collector_paused():  # one object per message, no cycles (see there)
        for c in hits:
            keys = known.get(c.meta.blob_id)
            if keys is not None:  # else expunged meanwhile
                items.append(SortItem(c.meta.uid if uid else c.seq, c.meta, keys))
    return items


async def _keep_view_keys(s: ImapSession, uids: list[int]) -> bool:
    """Compute and keep the keys of these messages of the view (new arrivals since the
    mailbox was last sorted: keys are computed lazily, not at delivery), so that the
    store can answer for the whole view. False when one of them is gone (expunged by
    another session) or has no readable header."""
    sel = s.selected
    if sel is None:
        return False
    todo = [Candidate(0, sel.meta[u], False) for u in uids if u in sel.meta]
    if len(todo) != len(uids):
        return False
    known = await s.store.get_sort_keys([c.meta.blob_id for c in todo])  # copies share
    todo = [c for c in todo if c.meta.blob_id not in known]
    kept = await _compute_keys(s, todo)
    return len(kept) == len(todo)


async def _sorted_by_store(s: ImapSession, req: SortRequest, uid: bool) -> list[int] | None:
    """SORT ... ALL of a mailbox whose keys the store already keeps: the store sorts (one
    query, no per-message Python), and the order is mapped onto this session's view. None
    when the store cannot answer for exactly this view (keys missing, or messages the
    session still shows were expunged meanwhile: either leaves one out): the caller
    sorts itself. The answer is kept for the view (``ServerContext.imap_threads``, as
    THREAD's): keys never change, so the same UIDs sort the same way again."""
    sel = s.selected
    if sel is None or req.search.key.op != "ALL" or not sel.uids:
        return None
    if s.core.uidonly and req.search.uses_seqs:
        return None  # search_hits gives the error
    view = sel.uids
    key = ("SORT", sel.info.id, sel.info.uidvalidity, tuple(req.criteria), uid, tuple(view))
    kept = s.ctx.imap_threads.get(key)
    if kept is not None:
        return array("I", kept).tolist()
    await _keep_newer_keys(s)
    # a kept order of the mailbox brought up to date (arrivals inserted, expunged
    # messages dropped), else the store sorts every message
    got = await imap_sortorder.view_order(s, req.criteria, lambda new: _keep_view_keys(s, new),
                                          seqs=not uid)
    uids, nums = got if got is not None else (await _store_sorted(s, req), None)
    if uids is None:
        return None
    numbers = uids if uid else nums if nums is not None else imap_sortorder.numbers(view, uids)
    s.ctx.imap_threads.put(key, array("I", numbers).tobytes())
    s.ctx.imap_columns.set_keyed_upto(sel.info, view[-1])
    return numbers


async def _store_sorted(s: ImapSession, req: SortRequest) -> list[int] | None:
    """The view's UIDs sorted by the store (one query of the whole mailbox)."""
    sel = s.selected
    assert sel is not None
    meta, view = sel.meta, sel.uids
    for attempt in range(2):
        try:
            uids = await s.store.sorted_uids(sel.info.id, req.criteria)
        except StoreError:
            return None
        uids = [u for u in uids if u in meta]  # newer arrivals are not in the view yet
        if len(uids) == len(view):
            await imap_sortorder.remembered(s, req.criteria, uids)
            return uids
        # messages of the view without kept keys (arrivals since the last SORT): keep
        # theirs and ask again, rather than reading every message's keys
        found = set(uids)
        if attempt or not await _keep_view_keys(s, [u for u in view if u not in found]):
            return None
    return None


async def _keep_newer_keys(s: ImapSession) -> None:
    """Before a SORT or THREAD ... ALL asks the store: compute and keep the keys of the
    view's messages after the UID up to which all are known to be kept (arrivals since
    the last one), so that one query of the whole mailbox answers."""
    sel = s.selected
    if sel is None or not sel.uids:
        return
    upto = s.ctx.imap_columns.keyed_upto(sel.info)
    if upto and sel.uids[-1] > upto:
        await _keep_view_keys(s, sel.uids[bisect.bisect_right(sel.uids, upto):])


async def cmd_sort(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    req = parse_sort(r)
    if req.search.charset not in ("UTF-8", "US-ASCII"):
        raise BadCharset
    numbers = await _sorted_by_store(s, req, uid)
    if numbers is None:
        hits = await search_hits(s, req.search)
        # the sequence number breaks ties (RFC 5256 §3), also when UIDs are returned
        items = await _items(s, hits, uid=False)
        ordered = sort_items(items, req.criteria)
        numbers = [it.meta.uid if uid else it.seq for it in ordered]
    if req.returns is None:
        # (the list's repr is written in C: 100,000 numbers in 3/4 of join's time)
        s.send(b"* SORT " + repr(numbers)[1:-1].encode().replace(b",", b"") + b"\r\n"
               if numbers else b"* SORT\r\n")
    else:
        returns = [x for x in req.returns if x not in ("UPDATE", "CONTEXT")]
        if not req.returns:
            returns = ["ALL"]  # RETURN () means ALL (RFC 5267 §3.1)
        if "UPDATE" in req.returns:  # CONTEXT=SORT: keep the sorted result up to date
            sel = s.selected
            order = numbers if uid or sel is None else [sel.uids[n - 1] for n in numbers]
            s.contexts[tag] = SearchUpdate(
                req.search, uid, set(order), order=order,
                sorter=lambda uids: _resort(s, uids, req.criteria))
        parts = [b'* ESEARCH (TAG "' + tag.encode() + b'")']
        if uid:
            parts.append(b"UID")
        if numbers:
            if "MIN" in returns:
                parts.append(b"MIN %d" % numbers[0])
            if "MAX" in returns:
                parts.append(b"MAX %d" % numbers[-1])
            if "ALL" in returns:
                parts.append(b"ALL " + seq_list(numbers))
        if "COUNT" in returns:
            parts.append(b"COUNT %d" % len(numbers))
        if req.partial is not None:
            lo, hi = req.partial
            chosen = apply_partial(numbers, req.partial)
            rng = b"%d:%d" % (lo, hi)
            parts.append(b"PARTIAL (" + rng + b" " + (seq_list(chosen) if chosen else b"NIL")
                         + b")")
        s.send(b" ".join(parts) + b"\r\n")
    await s.sync(allow_expunge=uid)
    s.ok(tag, "SORT completed")


async def _resort(s: ImapSession, uids: set[int], criteria: list[tuple[str, bool]]
                  ) -> list[int]:
    """The UIDs of a sorted context in sort order again, after messages joined it."""
    sel = s.selected
    if sel is None:
        return []
    hits = [Candidate(sel.seq_of(u), sel.meta[u], u in sel.recent)
            for u in sorted(uids) if u in sel.meta]
    return [it.meta.uid for it in sort_items(await _items(s, hits, uid=False), criteria)]


async def cmd_thread(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    algorithm, search = parse_thread(r)
    if search.charset not in ("UTF-8", "US-ASCII"):
        raise BadCharset
    sel = s.selected
    key: tuple[object, ...] | None = None
    view: tuple[int, ...] = ()
    cache = s.ctx.imap_threads
    if sel is not None and search.key.op == "ALL":
        view = tuple(sel.uids)
        key = (sel.info.id, sel.info.uidvalidity, algorithm, uid, view)
    answer = cache.get(key) if key is not None else None
    if answer is None and key is not None:
        answer = await _thread_all(s, algorithm, uid)
        if answer is not None:
            cache.put(key, answer)
    if answer is None:
        hits = await search_hits(s, search)
        items = await _items(s, hits, uid)
        if algorithm == "ORDEREDSUBJECT":
            threads = thread_orderedsubject(items)
        else:
            threads = thread_references(items)
        answer = render_threads(threads)
        if key is not None and len(items) == len(hits) == len(view):
            cache.put(key, answer)  # (not when a message was expunged meanwhile)
    s.send(answer)
    await s.sync(allow_expunge=uid)
    s.ok(tag, "THREAD completed")


async def _thread_all(s: ImapSession, algorithm: str, uid: bool) -> bytes | None:
    """THREAD ... ALL from the store's kept keys as columns: no message objects, no
    SEARCH; the keys of messages that have none yet are computed and kept first, and the
    columns of the last mailboxes threaded stay in memory (``ColumnCache``), so a THREAD
    after an arrival reads the new messages' rows only. None when the store cannot
    answer for exactly this session's view (another session expunged one of its messages
    meanwhile): the caller takes the general path."""
    sel = s.selected
    if sel is None or not sel.uids:
        return None
    view = sel.uids
    cache = s.ctx.imap_columns
    cols = cache.get(sel.info)
    if cols is None and len(view) >= imap_thread_snapshot.MIN_ROWS:
        # the first THREAD of this mailbox since the start: its snapshot, if one is kept
        with collector_paused():
            kept = await imap_thread_snapshot.load(s.store, sel.info, cache)
        if kept is not None:
            cols, kept_links = kept
            cache.put(sel.info, cols)
            if kept_links is not None:
                cache.put_thread_links(sel.info, cols.uids, kept_links)
    if cols is None:
        await _keep_newer_keys(s)
    try:
        if cols is None:
            # (600,000 new objects: the collector would walk the server's heap meanwhile;
            # paused for this read only, other sessions run on without it a moment)
            with collector_paused():
                cols = await s.store.thread_columns(sel.info.id)
        if cols.uids != view:
            have = len(cols.uids)
            if view[:have] == cols.uids:  # (arrivals only: compared in C)
                missing = view[have:]
            else:
                found = set(cols.uids)
                missing = [u for u in view if u not in found]
            if missing:
                # messages without kept keys (arrivals since the last THREAD or SORT, or
                # all of them the first time): keep theirs, then read their rows
                if not await _keep_view_keys(s, missing):
                    return None
                cols = _merged(cols, await s.store.thread_columns(sel.info.id, missing))
    except StoreError:
        return None
    before = cols  # (with the rows of messages expunged since: their keys)
    if cols.uids != view:
        # only the view's rows (newer arrivals and expunged messages left out)
        gone = _gone_rows(cols.uids, view)
        if gone is None:
            return None
        cols = _without(cols, gone)
    # the view's rows are kept; also those of messages expunged since the kept links
    # were made, until a REFERENCES takes them out of the links (it needs their keys)
    behind_links = (before is not cols and algorithm != "REFERENCES"
                    and cache.kept_thread_links(sel.info) is not None
                    and cache.thread_links(sel.info, view) is None)
    cache.put(sel.info, before if behind_links else cols)
    cache.set_keyed_upto(sel.info, view[-1])
    numbers = view if uid else list(range(1, len(view) + 1))
    m = ThreadInput(numbers, cols.dates, cols.subjects, cols.replies, cols.message_ids,
                    cols.references)
    answer = (orderedsubject_answer(m) if algorithm == "ORDEREDSUBJECT"
              else _references(s, m, view, before))
    snapshot = imap_thread_snapshot
    if (len(view) >= snapshot.MIN_ROWS
            and snapshot.behind(cache, sel.info, view,
                                cache.thread_links(sel.info, view) is not None)
            >= snapshot.EVERY):
        links = cache.thread_links(sel.info, view)
        with collector_paused():
            if links is not None and links.rows != len(view):
                # (an ORDEREDSUBJECT after arrivals: the kept links cover fewer rows)
                if links.extend(m):
                    cache.put_thread_links(sel.info, view, links)
                else:
                    links = None
            await snapshot.save(s.store, sel.info, cache, cols, links)
    return answer


def _references(s: ImapSession, m: ThreadInput, view: list[int],
                before: ThreadColumns) -> bytes:
    """THREAD REFERENCES of the whole view: step 1 (the links) is kept per mailbox;
    messages expunged since the view it was made for are taken out
    (``ThreadLinks.remove``) and arrivals since linked in (``ThreadLinks.extend``)
    instead of linking every message again; after an expunge or an arrival that cannot
    be taken out or linked in exactly, every message is linked again (as Dovecot does
    after any expunge). ``before``: columns holding the expunged messages' rows."""
    sel = s.selected
    assert sel is not None
    cache = s.ctx.imap_columns
    links = cache.thread_links(sel.info, view)
    how = "kept"
    with collector_paused():
        if links is None:
            links = _after_expunges(cache.kept_thread_links(sel.info), view, m, before)
            how = "expunges taken out"
        if links is None or not links.extend(m):
            links = ThreadLinks(m)
            how = "all linked again"
    log.debug("THREAD REFERENCES of mailbox %d: links %s", sel.info.id, how)
    cache.put_thread_links(sel.info, view, links)
    return links.answer(m)


def _after_expunges(kept: tuple[list[int], ThreadLinks] | None, view: list[int],
                    m: ThreadInput, before: ThreadColumns) -> ThreadLinks | None:
    """The kept links with the rows of the messages expunged since taken out, when the
    other rows they were made for are a first part of the view and the expunged ones'
    keys are in ``before``; else None."""
    if kept is None:
        return None
    linked, links = kept
    if links.rows != len(linked) or len(linked) - len(view) > 64:
        return None
    extra = set(linked).difference(view)  # (set operations in C: 100,000 rows)
    if not extra or len(extra) > 64:
        return None
    gone = sorted([bisect.bisect_left(linked, u) for u in extra])
    rest = list(linked)
    for r in reversed(gone):
        del rest[r]
    if rest != view[: len(rest)]:
        return None
    mids: list[str] = []
    refs: list[str] = []
    for r in gone:
        at = bisect.bisect_left(before.uids, linked[r])
        if at == len(before.uids) or before.uids[at] != linked[r]:
            return None
        mids.append(before.message_ids[at])
        refs.append(before.references[at])
    return links if links.remove(gone, mids, refs, m) else None


def _gone_rows(have: list[int], want: list[int]) -> list[int] | None:
    """The rows of ``have`` whose UIDs ``want`` lacks (both ascending), when every UID
    of ``want`` is in ``have``; else None. Set operations and bisections in C, no
    Python loop over 100,000 rows (an expunge leaves a few)."""
    extra = set(have).difference(want)
    if len(have) - len(extra) != len(want):
        return None
    return sorted([bisect.bisect_left(have, u) for u in extra])


def _without(c: ThreadColumns, gone: list[int]) -> ThreadColumns:
    """The columns without these rows (ascending): copies with the few rows deleted
    (memmoves), or the rows kept picked one by one when many go."""
    if len(gone) > 64:
        goneset = set(gone)
        return _rows(c, [i for i in range(len(c.uids)) if i not in goneset])

    def drop(col: list[T]) -> list[T]:
        out = list(col)
        for r in reversed(gone):
            del out[r]
        return out

    return ThreadColumns(drop(c.uids), drop(c.dates), drop(c.subjects), drop(c.replies),
                         drop(c.message_ids), drop(c.references))


def _rows(c: ThreadColumns, rows: list[int]) -> ThreadColumns:
    """These rows of the columns, in this order."""
    def pick(col: list[T]) -> list[T]:
        return [col[i] for i in rows]

    return ThreadColumns(pick(c.uids), pick(c.dates), pick(c.subjects), pick(c.replies),
                         pick(c.message_ids), pick(c.references))


def _merged(a: ThreadColumns, b: ThreadColumns) -> ThreadColumns:
    """Rows of both, by UID (arrivals usually come after every row of a)."""
    if not b.uids:
        return a
    both = ThreadColumns(a.uids + b.uids, a.dates + b.dates, a.subjects + b.subjects,
                         a.replies + b.replies, a.message_ids + b.message_ids,
                         a.references + b.references)
    if not a.uids or a.uids[-1] < b.uids[0]:
        return both
    first: dict[int, int] = {}  # uid -> its row (b's rows come last and win)
    for i, u in enumerate(both.uids):
        first[u] = i
    return _rows(both, [first[u] for u in sorted(first)])
