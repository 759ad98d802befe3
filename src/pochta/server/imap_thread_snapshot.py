"""THREAD's state of a mailbox kept in the store (``ThreadSnapshot``), so that the first
THREAD after a restart neither reads every message's keys (100,000 rows: 140-260 ms of
CPU) nor links every message again (110-150 ms): the columns of the messages and the
REFERENCES links (``ThreadLinks``) of the last view threaded, marshalled and compressed
(~3 MB for 100,000 messages; 60-80 ms to load).

Never trusted beyond what it can vouch for: it belongs to one UIDVALIDITY, and a UID of
a mailbox with its UIDVALIDITY always names the same message, whose keys never change;
the caller maps it onto the session's view like the columns kept in memory (messages
expunged since left out, arrivals since read from the store), and its links are used
only when its rows are a first part of the view (no expunge since). A snapshot that
does not decode, or of another format, is ignored."""

from __future__ import annotations

import bisect
import itertools
import logging
import marshal
import zlib

from ..proto.imap.sort import ThreadInput, ThreadLinks
from ..storage.interfaces import MailboxInfo, MailStore, StoreError
from ..storage.interfaces_imap import THREAD_SNAPSHOT_MAX, ThreadColumns, ThreadSnapshot
from .imap_cache import ColumnCache

log = logging.getLogger("pochta.imap")

# bumped whenever the kept keys (compute_sort_keys) or ThreadLinks' lists change meaning
FORMAT = 1
# a new snapshot once the kept one misses this many of the view's rows (arrivals, or
# messages expunged since): writing one costs ~150 ms of CPU, so not after every change
EVERY = 1000
# smaller mailboxes thread from the store quickly enough: no snapshot
MIN_ROWS = 1000


def encode(cols: ThreadColumns, links: ThreadLinks | None) -> bytes:
    state = links.state() if links is not None else None
    return zlib.compress(marshal.dumps((  # type: ignore[arg-type]  # (lists, dicts, str)
        FORMAT, cols.uids, cols.dates, cols.subjects, cols.replies, cols.message_ids,
        cols.references, state)), 1)


def decode(data: bytes) -> tuple[ThreadColumns, ThreadLinks | None] | None:
    try:
        # written by this server into its own store; marshal builds values only (no code
        # runs), and every part is checked below
        value = marshal.loads(zlib.decompress(data))  # noqa: S302
    except (ValueError, EOFError, TypeError, zlib.error):
        return None
    if not isinstance(value, tuple) or len(value) != 8 or value[0] != FORMAT:
        return None
    _, uids, dates, subjects, replies, mids, refs, state = value
    columns = (uids, dates, subjects, replies, mids, refs)
    if not all(isinstance(c, list) and len(c) == len(uids) for c in columns):
        return None
    if any(b <= a for a, b in itertools.pairwise(uids)):
        return None  # not by UID ascending
    cols = ThreadColumns(uids, dates, subjects, replies, mids, refs)
    links = None
    if state is not None:
        links = ThreadLinks.restore(ThreadInput(uids, dates, subjects, replies, mids, refs),
                                    state)
    return cols, links


async def load(store: MailStore, box: MailboxInfo, cache: ColumnCache
               ) -> tuple[ThreadColumns, ThreadLinks | None] | None:
    """The mailbox's kept snapshot if it is of this UIDVALIDITY and decodes (noting in
    ``cache`` what it covers), else None."""
    try:
        snap = await store.get_thread_snapshot(box.id)
    except StoreError:
        return None
    if snap is None or snap.uidvalidity != box.uidvalidity:
        return None
    got = decode(snap.data)
    if got is None or (got[0].uids and got[0].uids[-1] != snap.uid_upto):
        log.warning("ignoring the THREAD snapshot of mailbox %d", box.id)
        return None
    cache.set_snapshot(box, snap.uid_upto, len(got[0].uids))
    return got


def behind(cache: ColumnCache, box: MailboxInfo, view: list[int]) -> int:
    """How many rows of the view the kept snapshot lacks or has too many (expunged
    since); a large number when none is known to be kept."""
    kept = cache.snapshot(box)
    if kept is None:
        return 1 << 30
    upto, rows = kept
    covered = bisect.bisect_right(view, upto)
    return len(view) - covered + max(0, rows - covered)


async def save(store: MailStore, box: MailboxInfo, cache: ColumnCache, cols: ThreadColumns,
               links: ThreadLinks | None) -> None:
    """Keep a snapshot of these columns (and links, of the same rows) in the store."""
    if not cols.uids:
        return
    data = encode(cols, links)
    if len(data) > THREAD_SNAPSHOT_MAX:
        return
    try:
        await store.put_thread_snapshot(
            box.id, ThreadSnapshot(box.uidvalidity, cols.uids[-1], data))
    except StoreError as exc:  # a full disk: the snapshot is only a cache
        log.warning("cannot keep the THREAD snapshot: %s", exc)
        return
    cache.set_snapshot(box, cols.uids[-1], len(cols.uids))
