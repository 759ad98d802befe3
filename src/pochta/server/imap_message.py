"""IMAP message commands: FETCH, STORE, SEARCH (ESEARCH, SEARCHRES), COPY, MOVE,
EXPUNGE, UID EXPUNGE and IDLE (RFC 9051 §6.4, RFC 6851, RFC 7162, RFC 2177)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ..proto.imap import bodystructure as bs
from ..proto.imap.acl import can_change_flag
from ..proto.imap.errors import (
    BadCharset,
    BadCommand,
    ExpungeIssued,
    NoPerm,
    OverQuota,
    ReadOnly,
    TryCreate,
    UnknownCte,
)
from ..proto.imap.fetch import (
    FetchAtt,
    FetchOptions,
    FetchPlan,
    FetchRequest,
    parse_fetch,
    render_items,
    response_head,
    split_streamed,
    streamable,
)
from ..proto.imap.parser import ParseError, Reader
from ..proto.imap.response import seq_set
from ..proto.imap.search import (
    Candidate,
    SearchContext,
    SearchProgram,
    apply_partial,
    matches,
    parse_search,
)
from ..proto.imap.selected import Selected
from ..proto.imap.seqset import SeqSet, parse_seqset
from ..proto.imap.session import IdleDone
from ..storage.interfaces import (
    FlagMode,
    MessageMeta,
    NotFound,
    QuotaExceeded,
    StorageFull,
    StoreError,
)
from . import imap_sieve
from .imap_session import CloseSession, ImapSession, SearchUpdate
from .imap_shared import resolve as resolve_mailbox

log = logging.getLogger("pochta.imap")

# SEARCH (and SORT, THREAD) read messages up to BATCH_MAX_SIZE in batches of BATCH
BATCH = 500
BATCH_MAX_SIZE = 64 << 10
# SEARCH on kept header texts: messages per store call (rows are small)
FIELDS_BATCH = 5000
# FETCH sends the literals of messages bigger than this from the store in chunks
STREAM_ABOVE = 1 << 20
STREAM_CHUNK = 256 << 10
HEADER_MAX = 256 << 10  # a longer header makes FETCH load the whole message
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def _sel(s: ImapSession) -> Selected:
    assert s.selected is not None
    return s.selected


def resolve(s: ImapSession, seqset: SeqSet, uid: bool) -> list[int]:
    """The uids a sequence set names, in ascending order."""
    sel = _sel(s)
    if seqset.saved:
        return sorted(u for u in sel.saved_uids if u in sel.meta)
    if uid:
        return seqset.uids(sel.uids)
    if not sel.uids and all(lo == -1 or hi == -1 for lo, hi in seqset.ranges):
        return []
    return [sel.uids[n - 1] for n in seqset.seqs(sel.count)]


async def _load(s: ImapSession, meta: MessageMeta) -> bytes | None:
    try:
        return await s.store.read_blob(meta.blob_id)
    except NotFound:
        return None


# --- FETCH ----------------------------------------------------------------------------


def _enable_condstore(s: ImapSession) -> None:
    """A CONDSTORE enabling command while a mailbox is selected also reports its
    HIGHESTMODSEQ, before the tagged reply (RFC 7162 §3.1)."""
    if not s.condstore and s.selected is not None:
        s.send(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % s.selected.modseq)
    s.condstore = True


async def cmd_fetch(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    seqset = parse_seqset(r)
    r.sp()
    req = parse_fetch(r)
    sel = _sel(s)
    if uid and not req.has("UID"):
        req.atts.insert(0, FetchAtt("UID"))
    if req.changedsince is not None or req.has("MODSEQ"):
        _enable_condstore(s)
    if req.vanished and (not uid or req.changedsince is None or not s.qresync):
        raise ParseError("VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC")
    uids = resolve(s, seqset, uid)
    if req.vanished and req.changedsince is not None:
        changes = await s.store.changes_since(sel.info.id, req.changedsince)
        gone = [u for u in changes.expunged if seqset.contains_uid(u, sel.top_uid)]
        if gone:
            s.send(b"* VANISHED (EARLIER) " + seq_set(gone) + b"\r\n")
    if req.changedsince is not None:
        uids = [u for u in uids if sel.meta[u].modseq > req.changedsince]
    if req.partial is not None:  # RFC 9394 §3.2: a window of the messages named
        uids = apply_partial(uids, req.partial)
    opts = FetchOptions(utf8=s.utf8, rev1_recent=s.rev1_recent, condstore=s.condstore,
                        uidonly=s.core.uidonly)
    if req.has("SAVEDATE") and uids:
        opts.save_dates = await s.store.save_dates(sel.info.id, uids)
    seen_set: set[int] = set()
    if req.sets_seen and not sel.readonly and "s" in s.rights:  # RFC 4314 §4
        unseen = [u for u in uids if "\\Seen" not in sel.meta[u].flags]
        if unseen:
            try:
                update = await s.store.store_flags(
                    sel.info.id, unseen, frozenset({"\\Seen"}), FlagMode.ADD)
            except StorageFull as exc:
                # reading goes on with a full disk; \Seen is not set (and not shown)
                log.warning("conn %s: cannot set \\Seen: %s", s.conn.conn_id, exc)
            else:
                for m in update.changed:
                    sel.update(m)
                    seen_set.add(m.uid)
    failed = False
    cache = s.ctx.imap_parts  # parsed messages, shared by the sessions (imap_cache.py)
    shows_flags = req.has("FLAGS")
    out: list[bytes] = []  # one write per batch of responses, not one per message
    pending = 0
    needs_body = req.needs_body  # asked once, not per message
    stream = needs_body and streamable(req)
    plan = FetchPlan(req, opts)  # the request's items sorted out once, not per message
    for n, u in enumerate(uids):
        await s.pause()
        meta = sel.meta[u]
        if stream and meta.size > STREAM_ABOVE:
            if shows_flags or u in seen_set:
                s.send(sel.announce(meta.flags))
            s.send(b"".join(out))
            out.clear()
            try:
                if await _fetch_streamed(s, sel.seq_of(u), meta, req, u in sel.recent, opts,
                                         u in seen_set):
                    continue
            except NotFound:
                failed = True  # expunged by another session meanwhile
                continue
        part = (await cache.get(sel.info, meta, functools.partial(_load, s, meta))
                if needs_body else None)
        if needs_body and part is None:
            failed = True  # expunged by another session meanwhile
            continue
        if shows_flags or u in seen_set:
            line = sel.announce(meta.flags)
            if line:
                out.append(line)
        try:
            # the part alone: its bytes are joined again (part.raw) only for the items
            # that send the whole message
            line = plan.render(sel.seq_of(u), meta, None, u in sel.recent,
                               extra_flags=u in seen_set, part=part)
        except bs.UnknownCTE:
            s.send(b"".join(out))
            raise UnknownCte from None
        out.append(line)
        pending += len(line)
        if n % 200 == 199 or pending > 256 << 10:
            s.send(b"".join(out))
            out.clear()
            pending = 0
            await s.flush()
    s.send(b"".join(out))
    await s.sync(allow_expunge=uid)
    if failed:
        raise ExpungeIssued
    else:
        s.ok(tag, "FETCH completed")


async def _header_of(s: ImapSession, meta: MessageMeta) -> bytes | None:
    """The header block of a stored message (with its blank line), read in chunks up to
    HEADER_MAX; None if it is longer."""
    buf = bytearray()
    chunks = s.store.stream_blob(meta.blob_id, 0, min(meta.size, HEADER_MAX), chunk=64 << 10)
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        async for chunk in chunks:
            buf += chunk
            if buf.startswith(b"\r\n"):
                return b"\r\n"  # no header fields at all
            end = _HEADER_END.search(buf)
            if end is not None:
                return bytes(buf[: end.end()])
    return None


async def _fetch_streamed(
    s: ImapSession, seq: int, meta: MessageMeta, req: FetchRequest, recent: bool,
    opts: FetchOptions, seen: bool,
) -> bool:
    """One FETCH response for a big message, its literals sent from the store in chunks
    (``stream_blob``) so the message is never whole in memory; False (nothing sent) when
    its header is too long to serve this way."""
    header = await _header_of(s, meta)
    if header is None:
        return False
    rest, streamed = split_streamed(req, meta.size, len(header))
    items = render_items(meta, rest, header, recent, opts, extra_flags=seen,
                         part=bs.parse(header))
    s.send(response_head(seq, meta.uid, opts) + b" ".join(items))
    for i, item in enumerate(streamed):
        s.send((b" " if items or i else b"") + item.prefix)
        if not item.length:
            continue
        await s.flush()
        chunks = s.store.stream_blob(meta.blob_id, item.offset, item.length, chunk=STREAM_CHUNK)
        async with contextlib.aclosing(chunks):  # type: ignore[type-var]
            async for chunk in chunks:
                s.send(chunk)
                await s.flush()
    s.send(b")\r\n")
    return True


# --- STORE ----------------------------------------------------------------------------


async def cmd_store(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    seqset = parse_seqset(r)
    r.sp()
    unchanged_since: int | None = None
    if r.accept("(UNCHANGEDSINCE "):
        unchanged_since = r.number()
        r.expect(")")
        r.sp()
        _enable_condstore(s)
    mode = FlagMode.REPLACE
    if r.accept("+"):
        mode = FlagMode.ADD
    elif r.accept("-"):
        mode = FlagMode.REMOVE
    r.expect("FLAGS")
    silent = r.accept(".SILENT")
    r.sp()
    if r.peek() == "(":
        flags = r.flag_list()
    else:
        flags = [r.flag()]
        while r.maybe_sp():
            flags.append(r.flag())
    r.end()
    sel = _sel(s)
    if sel.readonly:
        raise ReadOnly("Mailbox is read-only")
    wanted = frozenset(f for f in flags if f not in ("\\Recent", "\\*"))
    # RFC 4314 §4: \Seen needs s, \Deleted t, other flags w; a replace touches them all
    needed = ["\\Seen", "\\Deleted", "$any"] if mode is FlagMode.REPLACE else wanted
    if not all(can_change_flag(s.rights, f) for f in needed):
        raise NoPerm("Permission denied")
    uids = resolve(s, seqset, uid)
    live = [u for u in uids if u not in sel.pending_expunge]
    update = await s.store.store_flags(sel.info.id, live, wanted, mode, unchanged_since)
    for m in update.changed:
        sel.update(m)
        s.send(sel.announce(m.flags))  # a new keyword: FLAGS first, even for .SILENT
    changed = {m.uid for m in update.changed}
    for u in live:
        await s.pause()
        if u in update.failed_uids:
            continue
        if silent and not (s.condstore and u in changed):
            continue
        line = sel.flags_fetch(u, s.rev1_recent, s.condstore)
        if silent:  # .SILENT with CONDSTORE still reports the new MODSEQ (RFC 7162 §3.1.3)
            line = (b"* %d UIDFETCH (MODSEQ (%d))\r\n" % (u, sel.meta[u].modseq)
                    if sel.uidonly else b"* %d FETCH (UID %d MODSEQ (%d))\r\n" % (
                        sel.seq_of(u), u, sel.meta[u].modseq))
        s.send(line)
    await imap_sieve.after(s, "FLAG", sel.info, sorted(changed), sorted(wanted))  # RFC 6785
    await s.sync(allow_expunge=uid)
    if update.failed_uids:
        failed = sorted(update.failed_uids) if uid else sorted(
            sel.seq_of(u) for u in update.failed_uids)
        s.ok(tag, "Conditional STORE failed for some messages",
             "MODIFIED " + seq_set(failed).decode())
    else:
        s.ok(tag, "STORE completed")


# --- SEARCH ---------------------------------------------------------------------------


async def search_hits(s: ImapSession, prog: SearchProgram) -> list[Candidate]:
    """The messages of the selected mailbox that match, in sequence order (with their
    bytes when the program needed them)."""
    sel = _sel(s)
    if s.core.uidonly and prog.uses_seqs:
        raise BadCommand("Sequence numbers are not allowed after ENABLE UIDONLY",
                         "UIDREQUIRED")
    if prog.kept_terms() is not None:  # decided by the store: a Candidate per hit only
        found = await search_matches(s, prog)
        return [Candidate(seq, sel.meta[u], u in sel.recent)
                for seq, u in zip(found.seqs, found.uids, strict=True)]
    ctx = SearchContext(sel.count, sel.top_uid, sel.saved_uids)
    hits: list[Candidate] = []
    saved: dict[int, float] = {}
    if prog.uses_savedate:
        saved = await s.store.save_dates(sel.info.id, sel.uids)
    messages = sel.messages()
    if prog.key.op == "ALL":  # SORT/THREAD ... ALL: nothing to evaluate
        return [Candidate(seq, meta, meta.uid in sel.recent) for seq, meta in messages]
    if prog.needs_fields_only:
        return await _search_kept_fields(s, prog, ctx, messages, saved)
    for start in range(0, len(messages), BATCH):
        batch = messages[start : start + BATCH]
        blobs: dict[int, bytes] = {}
        if prog.needs_body:  # small messages in one store call per batch
            blobs = await s.store.read_blobs(
                [m.blob_id for _, m in batch if m.size <= BATCH_MAX_SIZE])
        for seq, meta in batch:
            await s.pause()
            c = Candidate(seq, meta, meta.uid in sel.recent, save_date=saved.get(meta.uid))
            if prog.needs_body:
                c.data = blobs.get(meta.blob_id)
                if c.data is None:
                    c.data = await _load(s, meta)
                if c.data is None:
                    continue
            if matches(prog.key, c, ctx):
                hits.append(c)
    return hits


async def _search_kept_fields(
    s: ImapSession, prog: SearchProgram, ctx: SearchContext,
    messages: list[tuple[int, MessageMeta]], saved: dict[int, float],
) -> list[Candidate]:
    """SEARCH FROM/TO/CC/BCC/SUBJECT (and flags, dates, sets around them) on the header
    texts the store keeps per message: no message is read once they are kept. A message
    whose texts are not kept yet is read, its texts computed as the header search always
    did (``Candidate.header_texts``) and kept for the next search."""
    sel = _sel(s)
    hits: list[Candidate] = []
    needle = prog.required_text
    # with a text every match needs, one store call: the messages whose kept texts lack
    # it come back as None and are passed over without a Candidate
    # (only worth it for many messages: a few unkept ones are asked for by blob id)
    known = (await s.store.kept_search_fields(sel.info.id, needle)
             if needle and len(messages) > FIELDS_BATCH else None)
    fast = prog.field_matcher()  # one FROM/TO/... key: no Candidate for a non-match
    for start in range(0, len(messages), FIELDS_BATCH):
        batch = messages[start : start + FIELDS_BATCH]
        kept: Mapping[int, str | None] = (
            known if known is not None
            else await s.store.get_search_fields([m.blob_id for _, m in batch]))
        missing = [m for _, m in batch if m.blob_id not in kept]
        blobs = await s.store.read_blobs(
            [m.blob_id for m in missing if m.size <= BATCH_MAX_SIZE]) if missing else {}
        new: dict[int, str] = {}
        for seq, meta in batch:
            await s.pause()
            texts = kept.get(meta.blob_id, "")
            if texts is None:
                continue  # kept, and without the text every match needs
            if texts and fast is not None:
                if fast(texts):
                    hits.append(Candidate(seq, meta, meta.uid in sel.recent))
                continue
            c = Candidate(seq, meta, meta.uid in sel.recent, save_date=saved.get(meta.uid))
            if texts:
                c.use_search_fields(texts)
            else:
                c.data = blobs.get(meta.blob_id)
                if c.data is None:
                    c.data = await _load(s, meta)
                if c.data is None:
                    continue
                computed = c.search_fields()
                if computed is not None:
                    new[meta.blob_id] = computed
            if matches(prog.key, c, ctx):
                hits.append(c)
        if new:
            try:
                await s.store.put_search_fields(new)
            except StoreError as exc:  # a full disk: answer anyway, remember nothing
                log.warning("cannot keep search fields: %s", exc)
    return hits


@dataclass(slots=True)
class Matches:
    """SEARCH's answer as parallel lists, in sequence order: no object per message."""

    seqs: list[int]
    uids: list[int]


async def search_matches(s: ImapSession, prog: SearchProgram) -> Matches:
    """SEARCH's answer. A program of FROM/TO/CC/BCC/SUBJECT keys is decided by the store
    on the kept texts and comes back as UIDs: no message read, no Candidate per message."""
    terms = prog.kept_terms()
    if terms is None or (s.core.uidonly and prog.uses_seqs):
        hits = await search_hits(s, prog)
        return Matches([c.seq for c in hits], [c.meta.uid for c in hits])
    sel = _sel(s)
    found, unkept = await s.store.kept_search_uids(sel.info.id, terms)
    with _collector_paused():  # 100,000 numbers: no cycles, nothing for the collector
        seq = dict(zip(sel.uids, range(1, len(sel.uids) + 1), strict=True))
        # UIDs the session has not been told about yet are left out (no sequence number)
        uids = [u for u in found if u in seq]
        seqs = list(map(seq.__getitem__, uids))
        todo = [(seq[u], sel.meta[u]) for u in unkept if u in seq]
    if todo:  # texts not kept yet (the keeper has not reached them): read and keep them
        ctx = SearchContext(sel.count, sel.top_uid, sel.saved_uids)
        extra = await _search_kept_fields(s, prog, ctx, todo, {})
        both = sorted([*zip(seqs, uids, strict=True), *((c.seq, c.meta.uid) for c in extra)])
        seqs, uids = [q for q, _ in both], [u for _, u in both]
    return Matches(seqs, uids)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Building a long list of small objects makes the cycle collector walk the whole
    heap again and again; they make no cycles, so it waits until the list is built."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


async def cmd_search(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    prog = parse_search(r)
    if prog.charset not in ("UTF-8", "US-ASCII"):
        raise BadCharset
    sel = _sel(s)
    if prog.uses_modseq:
        _enable_condstore(s)
    hits = await search_matches(s, prog)
    numbers = hits.uids if uid else hits.seqs
    highest = max((sel.meta[u].modseq for u in hits.uids), default=0) if prog.uses_modseq else 0
    if prog.returns is None and not s.rev2:
        line = b"* SEARCH" + (b" " + " ".join(map(str, numbers)).encode() if numbers else b"")
        if prog.uses_modseq and numbers:
            line += b" (MODSEQ %d)" % highest
        s.send(line + b"\r\n")
    else:
        returns = list(prog.returns or ["ALL"])  # RETURN () means ALL (RFC 4731 §3.1)
        if "CONTEXT" in returns:  # a hint that more searches will follow (RFC 5267 §4.2)
            returns.remove("CONTEXT")
        if "UPDATE" in returns:  # CONTEXT=SEARCH: keep the result up to date
            s.contexts[tag] = SearchUpdate(prog, uid, set(hits.uids))
        if "SAVE" in returns:
            sel.saved_uids = frozenset(hits.uids)
            returns.remove("SAVE")  # SAVE alone: no ESEARCH response (RFC 5182 §2.4)
        if returns:
            parts = [b'* ESEARCH (TAG "' + tag.encode() + b'")']
            if uid:
                parts.append(b"UID")
            if numbers:
                if "MIN" in returns:
                    parts.append(b"MIN %d" % min(numbers))
                if "MAX" in returns:
                    parts.append(b"MAX %d" % max(numbers))
                if "ALL" in returns:
                    parts.append(b"ALL " + seq_set(sorted(numbers)))
            if "COUNT" in returns:
                parts.append(b"COUNT %d" % len(numbers))
            if prog.partial is not None:  # RFC 9394 §3.1
                chosen = apply_partial(sorted(numbers), prog.partial)
                parts.append(b"PARTIAL (%d:%d " % prog.partial
                             + (seq_set(chosen) if chosen else b"NIL") + b")")
            if prog.uses_modseq and numbers and returns:
                if set(returns) <= {"MIN", "MAX"}:
                    # only MIN/MAX: the MODSEQ of the messages returned (RFC 7162 §3.1.5)
                    shown = {min(numbers), max(numbers)} if len(returns) == 2 else {
                        min(numbers) if returns == ["MIN"] else max(numbers)}
                    highest = max(sel.meta[u].modseq for n, u in zip(
                        numbers, hits.uids, strict=True) if n in shown)
                parts.append(b"MODSEQ %d" % highest)
            s.send(b" ".join(parts) + b"\r\n")
    await s.sync(allow_expunge=uid)
    s.ok(tag, "SEARCH completed")


async def cmd_cancelupdate(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    """CANCELUPDATE "tag" ... (RFC 5267 §4.5): stop updating those searches."""
    tags = [r.string()]
    while r.maybe_sp():
        tags.append(r.string())
    r.end()
    for t in tags:
        s.contexts.pop(t, None)
    s.ok(tag, "CANCELUPDATE completed")


# --- COPY / MOVE / EXPUNGE ------------------------------------------------------------


async def _copy(s: ImapSession, tag: str, r: Reader, uid: bool, move: bool) -> None:
    seqset = parse_seqset(r)
    r.sp()
    name = r.mailbox()
    r.end()
    sel = _sel(s)
    if move and sel.readonly:
        raise ReadOnly("Mailbox is read-only")
    if move and not {"t", "e"} <= set(s.rights):  # MOVE expunges from the source
        raise NoPerm("Permission denied")
    box = await resolve_mailbox(s, name)
    if box is None:
        raise TryCreate("No such mailbox")
    if "i" not in box.rights:  # RFC 4314 §4: COPY and MOVE need i on the target
        raise NoPerm("Permission denied")
    target = box.info
    uids = [u for u in resolve(s, seqset, uid) if u not in sel.pending_expunge]
    if not uids:
        s.ok(tag, "Nothing to do")
        return
    try:
        if move:
            pairs = await s.store.move_messages(sel.info.id, uids, target.id)
        else:
            pairs = await s.store.copy_messages(sel.info.id, uids, target.id)
    except QuotaExceeded:
        raise OverQuota from None
    s.added(target.id, [b for _, b in pairs])
    await imap_sieve.after(s, "COPY", target, [b for _, b in pairs])  # RFC 6785
    src = seq_set([a for a, _ in pairs]).decode()
    dst = ",".join(str(b) for _, b in pairs)
    code = f"COPYUID {target.uidvalidity} {src} {dst}" if pairs else None
    if move:
        if code:
            s.send(f"* OK [{code}] Moved\r\n".encode())  # RFC 6851 §4.3
        await s.sync(allow_expunge=True)
        s.ok(tag, "MOVE completed")
    else:
        await s.sync(allow_expunge=uid)
        s.ok(tag, "COPY completed", code)


async def cmd_copy(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    await _copy(s, tag, r, uid, move=False)


async def cmd_move(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    await _copy(s, tag, r, uid, move=True)


async def cmd_expunge(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    sel = _sel(s)
    only: list[int] | None = None
    if uid:
        seqset = parse_seqset(r)
        only = resolve(s, seqset, True)
    r.end()
    if sel.readonly:
        raise ReadOnly("Mailbox is read-only")
    if "e" not in s.rights:  # RFC 4314 §4: EXPUNGE needs e
        raise NoPerm("Permission denied")
    if only is None:
        # the store removes what is \Deleted at its write; the sync below reports every
        # change, flags and expunges, so no look before it (one read less per EXPUNGE)
        await s.store.expunge(sel.info.id)
    else:
        await s.sync(allow_expunge=True)  # learn the current \Deleted flags first
        doomed = [u for u in only if u in sel.meta and "\\Deleted" in sel.meta[u].flags]
        if doomed:
            await s.store.expunge(sel.info.id, doomed)
    await s.sync(allow_expunge=True)
    s.ok(tag, "EXPUNGE completed", f"HIGHESTMODSEQ {sel.modseq}" if s.condstore else None)


# --- IDLE (RFC 2177, RFC 9051 §6.3.13) -------------------------------------------------


async def cmd_idle(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    """The core watches for DONE (``IdleDone``); the driver waits for the client or a
    change in the selected mailbox, whichever comes first, and reports changes at once."""
    r.end()
    s.core.begin_idle(tag)
    await s.sync(allow_expunge=True)
    await s.flush()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + s.idle_timeout
    reader: asyncio.Task[bytes] | None = None
    waiter: asyncio.Task[bool] | None = None
    notified: asyncio.Future[None] | None = None  # NOTIFY: other mailboxes changed
    try:
        while True:
            event = s.core.next_event()
            if isinstance(event, IdleDone):
                return  # the core answered OK (DONE) or BAD
            remaining = deadline - loop.time()
            if remaining <= 0:
                s.core.bye("Autologout; idle for too long")
                raise CloseSession
            if reader is None:
                reader = asyncio.ensure_future(s.conn.read(None))
            if waiter is None and s.watcher is not None:
                waiter = asyncio.ensure_future(s.watcher.wait(None))
            pending: set[asyncio.Future[object]] = {reader}  # type: ignore[arg-type]
            if waiter is not None:
                pending.add(waiter)  # type: ignore[arg-type]
            if notified is None and s.notify_wait is not None:
                notified = asyncio.ensure_future(s.notify_wait())
            if notified is not None:
                pending.add(notified)  # type: ignore[arg-type]
            done, _ = await asyncio.wait(pending, timeout=min(remaining, 60.0),
                                         return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                data = reader.result()
                reader = None
                if not data:
                    raise CloseSession
                s.core.receive_data(data)
            if waiter is not None and waiter in done:
                waiter = None
            if notified is not None and notified in done:
                notified = None
            # changes (or a periodic poll): tell the client at once
            await s.sync(allow_expunge=True)
            await s.flush()
    finally:
        for task in (reader, waiter, notified):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
