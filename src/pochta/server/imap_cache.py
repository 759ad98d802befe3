"""The IMAP driver's cache of parsed messages, one per server process (owned by
``ServerContext.imap_parts``, shared by every IMAP session of the process)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from ..proto.imap import bodystructure as bs
from ..proto.imap.sort import ThreadLinks
from ..storage.interfaces import MailboxInfo, MessageMeta
from ..storage.interfaces_imap import ThreadColumns

_PartKey = tuple[int, int, int, int, int, float]


class PartCache:
    """Parsed messages, most recently used last, bounded in bytes. Several clients (or one
    client's successive FETCHes) asking for the same message parse it once. The key holds
    the mailbox (id and UIDVALIDITY), UID, size and date as well as the blob id, so a blob id
    reused after a deletion does not alias an old message.

    Sessions that miss the same message at the same time (every client of a shared folder
    FETCHes a new arrival) wait for the first one's read and parse instead of repeating it:
    a message is read and parsed once, and counted once in ``size`` (counting it once per
    concurrent miss made ``size`` grow past every real entry, until the cache kept almost
    nothing and nearly every FETCH read and parsed its message again).

    APPEND puts the bytes it stored (``put_appended``): clients of a folder FETCH a new
    message soon after it arrives, and then read nothing from the store; the bytes are
    parsed at the first FETCH that needs them (never, for a message nobody reads)."""

    def __init__(self, max_bytes: int = 8 << 20,
                 parse: Callable[[bytes], bs.Part] = bs.parse) -> None:
        self.max_bytes = max_bytes
        self.parse = parse  # a test counts the parses
        self.size = 0  # the bytes of the messages in ``parts``
        # a parsed message, or the bytes of an appended one not parsed yet; its size
        self.parts: OrderedDict[_PartKey, tuple[bs.Part | bytes, int]] = OrderedDict()
        # misses being read and parsed now: their result (None: gone) or a failure
        self.loading: dict[_PartKey, asyncio.Future[tuple[bool, bs.Part | None]]] = {}

    async def get(self, box: MailboxInfo, meta: MessageMeta,
                  load: Callable[[], Awaitable[bytes | None]]) -> bs.Part | None:
        """The parsed message; ``load`` reads its bytes when it is not cached (None: the
        message is gone)."""
        key = (meta.blob_id, box.id, box.uidvalidity, meta.uid, meta.size, meta.internaldate)
        entry = self.parts.get(key)
        if entry is not None:
            self.parts.move_to_end(key)
            held = entry[0]
            if isinstance(held, bytes):
                held = self.parse(held)
                self.parts[key] = (held, entry[1])
            return held
        pending = self.loading.get(key)
        if pending is not None:
            # shield: a waiter's cancellation must not cancel the reader's future
            ok, shared = await asyncio.shield(pending)
            if ok:
                return shared
            return await self._load(key, load)  # the reader failed: try on our own
        fut: asyncio.Future[tuple[bool, bs.Part | None]] = (
            asyncio.get_running_loop().create_future())
        self.loading[key] = fut
        try:
            loaded = await self._load(key, load)
        except BaseException:
            fut.set_result((False, None))  # waiters read it themselves (no shared error)
            raise
        else:
            fut.set_result((True, loaded))
        finally:
            del self.loading[key]
        return loaded

    async def _load(self, key: _PartKey,
                    load: Callable[[], Awaitable[bytes | None]]) -> bs.Part | None:
        data = await load()
        if data is None:
            return None
        part = self.parse(data)
        self._keep(key, part, len(data))
        return part

    def put_appended(self, box: MailboxInfo, uid: int, blob_id: int, internaldate: float,
                     data: bytes) -> None:
        """The bytes just stored as message ``uid`` of ``box`` (APPEND), under the key
        its ``MessageMeta`` will give."""
        self._keep((blob_id, box.id, box.uidvalidity, uid, len(data), internaldate), data,
                   len(data))

    def _keep(self, key: _PartKey, held: bs.Part | bytes, size: int) -> None:
        if size > self.max_bytes // 16:
            return
        old = self.parts.pop(key, None)
        if old is not None:
            self.size -= old[1]
        self.parts[key] = (held, size)
        self.size += size
        while self.size > self.max_bytes:
            _, (_, dropped) = self.parts.popitem(last=False)
            self.size -= dropped


class ThreadCache:
    """THREAD ... ALL answers and SORT ... ALL orders (packed numbers) of the last few
    mailbox views, shared by the IMAP sessions of one process (owned by
    ``ServerContext.imap_threads``; clients ask again on every refresh of a threaded or
    sorted list). A view is the exact tuple of its UIDs: messages never change their
    keys, so the same UIDs (in the same mailbox and UIDVALIDITY) give the same answer;
    any arrival or expunge makes a new view and a new computation."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.answers: OrderedDict[tuple[object, ...], bytes] = OrderedDict()

    def get(self, key: tuple[object, ...]) -> bytes | None:
        answer = self.answers.get(key)
        if answer is not None:
            self.answers.move_to_end(key)
        return answer

    def put(self, key: tuple[object, ...], answer: bytes) -> None:
        self.answers[key] = answer
        while len(self.answers) > self.size:
            self.answers.popitem(last=False)


class ColumnCache:
    """The THREAD keys (``ThreadColumns``) of the last few mailboxes threaded, shared by
    the IMAP sessions of one process (``ServerContext.imap_columns``), so that a THREAD
    after an arrival reads the new messages' keys only, not the whole mailbox's again
    (100,000 rows: 250-350 ms of CPU in the server). Correct because a message's keys
    never change: a UID of a mailbox (with its UIDVALIDITY) always names the same
    message; the caller keeps only the UIDs of a session's view, and asks the store
    for the ones it lacks. About 30 MB for a mailbox of 100,000 messages, hence few."""

    def __init__(self, size: int = 2, marks: int = 1000) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[int, int], ThreadColumns] = OrderedDict()
        self.marks = marks
        self.keyed: OrderedDict[tuple[int, int], int] = OrderedDict()
        # REFERENCES' step 1 over the rows of some view: (its UIDs, the links)
        self.links: dict[tuple[int, int], tuple[list[int], ThreadLinks]] = {}
        # what the mailbox's snapshot in the store covers: (its highest UID, its rows)
        self.snapshots: OrderedDict[tuple[int, int], tuple[int, int, bool]] = OrderedDict()

    def keyed_upto(self, box: MailboxInfo) -> int:
        """A UID up to which every message of the mailbox has its sort keys kept (0:
        unknown): SORT and THREAD compute the keys of the later ones before they ask the
        store, instead of finding them missing after a query of the whole mailbox."""
        return self.keyed.get((box.id, box.uidvalidity), 0)

    def set_keyed_upto(self, box: MailboxInfo, uid: int) -> None:
        key = (box.id, box.uidvalidity)
        self.keyed[key] = max(uid, self.keyed.get(key, 0))
        self.keyed.move_to_end(key)
        while len(self.keyed) > self.marks:
            self.keyed.popitem(last=False)

    def snapshot(self, box: MailboxInfo) -> tuple[int, int, bool] | None:
        """(highest UID, rows, whether it holds the links) of the THREAD snapshot this
        process last read or wrote for the mailbox; None: unknown (none read or written
        since the start)."""
        return self.snapshots.get((box.id, box.uidvalidity))

    def set_snapshot(self, box: MailboxInfo, upto: int, rows: int, links: bool) -> None:
        key = (box.id, box.uidvalidity)
        self.snapshots[key] = (upto, rows, links)
        self.snapshots.move_to_end(key)
        while len(self.snapshots) > self.marks:
            self.snapshots.popitem(last=False)

    def get(self, box: MailboxInfo) -> ThreadColumns | None:
        key = (box.id, box.uidvalidity)
        cols = self.entries.get(key)
        if cols is not None:
            self.entries.move_to_end(key)
        return cols

    def put(self, box: MailboxInfo, cols: ThreadColumns) -> None:
        self.entries[(box.id, box.uidvalidity)] = cols
        self.entries.move_to_end((box.id, box.uidvalidity))
        while len(self.entries) > self.size:
            old, _ = self.entries.popitem(last=False)
            self.links.pop(old, None)

    def thread_links(self, box: MailboxInfo, uids: list[int]) -> ThreadLinks | None:
        """The kept REFERENCES links of this mailbox if they cover a first part of these
        UIDs (a view of it before arrivals, or this very view), else None. The caller
        extends them in place (``ThreadLinks.extend``) and puts them back."""
        kept = self.links.get((box.id, box.uidvalidity))
        if kept is None:
            return None
        linked, links = kept
        n = len(linked)
        if n > len(uids) or links.rows != n or uids[:n] != linked:
            return None
        return links

    def kept_thread_links(self, box: MailboxInfo) -> tuple[list[int], ThreadLinks] | None:
        """The kept REFERENCES links of this mailbox and the UIDs they were made for,
        whatever view they were made for (after an expunge: ``ThreadLinks.remove``)."""
        return self.links.get((box.id, box.uidvalidity))

    def put_thread_links(self, box: MailboxInfo, uids: list[int], links: ThreadLinks) -> None:
        """Keep the links of these UIDs (with the mailbox's columns: only for the last
        few mailboxes threaded), unless the kept ones cover more of this view already
        (another session's view with later arrivals: sessions behind do not undo
        theirs)."""
        key = (box.id, box.uidvalidity)
        if key not in self.entries:
            return
        kept = self.links.get(key)
        if kept is not None and kept[1].rows >= 0:
            linked = kept[0]
            if len(linked) > len(uids) and linked[: len(uids)] == uids:
                return
        self.links[key] = (list(uids), links)
