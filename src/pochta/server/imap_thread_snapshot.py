"""THREAD's state of a mailbox kept in the store (``ThreadSnapshot``), so that the first
THREAD after a restart neither reads every message's keys (100,000 rows: 140-260 ms of
CPU) nor links every message again (110-150 ms): the columns of the messages and the
REFERENCES links (``ThreadLinks.pack``) of the last view threaded, as flat arrays and
strings (9 MB for 100,000 messages; ~30 ms to load, the links' lists made on first use).

Never trusted beyond what it can vouch for: it belongs to one UIDVALIDITY, and a UID of
a mailbox with its UIDVALIDITY always names the same message, whose keys never change;
the caller maps it onto the session's view like the columns kept in memory (messages
expunged since left out, arrivals since read from the store), and its links are used
only when its rows are a first part of the view once the messages expunged since are
taken out of them (``ThreadLinks.remove``). A snapshot that does not decode, or of
another format, is ignored."""

from __future__ import annotations

import bisect
import itertools
import logging
import marshal
import operator
import zlib
from array import array

from ..proto.imap.sort import ThreadInput, ThreadLinks
from ..storage.interfaces import MailboxInfo, MailStore, StoreError
from ..storage.interfaces_imap import THREAD_SNAPSHOT_MAX, ThreadColumns, ThreadSnapshot
from .imap_cache import ColumnCache

log = logging.getLogger("pochta.imap")

# bumped whenever the kept keys (compute_sort_keys), ThreadLinks' lists or this layout
# change meaning
FORMAT = 2
# a new snapshot once the kept one misses this many of the view's rows (arrivals, or
# messages expunged since): writing one costs ~150 ms of CPU, so not after every change
EVERY = 1000
# smaller mailboxes thread from the store quickly enough: no snapshot
MIN_ROWS = 1000
RAW_MAX = 24 << 20  # a bigger snapshot is compressed (the store keeps at most 64 MiB)
_SEP = "\x00"  # between the strings of a column


def _strings(col: list[str]) -> str | list[str]:
    """A column of strings as one string (split in C when read), or as it is when one of
    them holds the separator."""
    joined = _SEP.join(col)
    return joined if joined.count(_SEP) == len(col) - 1 else col


def _unstrings(value: object, n: int) -> list[str] | None:
    if isinstance(value, str):
        out = value.split(_SEP) if n else []
    elif isinstance(value, list) and all(isinstance(x, str) for x in value):
        out = value
    else:
        return None
    return out if len(out) == n else None


def encode(cols: ThreadColumns, links: ThreadLinks | None) -> bytes:
    """Flat values only (numbers as array bytes, each string column as one string):
    decoding is a few C calls per column instead of an object per value in marshal
    (the Message-ID table of the links, a dict that took 40 ms to load, is not kept:
    ``ThreadLinks.unpack``)."""
    packed = links.pack() if links is not None else None
    raw = marshal.dumps((  # type: ignore[arg-type]  # (ints, bytes, str, lists, tuples)
        FORMAT, len(cols.uids), array("q", cols.uids).tobytes(),
        array("d", cols.dates).tobytes(), _strings(cols.subjects), bytes(cols.replies),
        _strings(cols.message_ids), _strings(cols.references), packed))
    # uncompressed up to a size: zlib's decompression was 15-25 ms of the first THREAD
    # (8 MB for 100,000 messages, against 2.2 MB compressed)
    return b"R" + raw if len(raw) <= RAW_MAX else b"Z" + zlib.compress(raw, 1)


def decode(data: bytes) -> tuple[ThreadColumns, ThreadLinks | None] | None:
    try:
        # written by this server into its own store; marshal builds values only (no code
        # runs), and every part is checked below
        if data[:1] == b"R":
            value = marshal.loads(memoryview(data)[1:])  # noqa: S302
        elif data[:1] == b"Z":
            value = marshal.loads(zlib.decompress(memoryview(data)[1:]))  # noqa: S302
        else:
            return None
    except (ValueError, EOFError, TypeError, zlib.error):
        return None
    if not isinstance(value, tuple) or len(value) != 9 or value[0] != FORMAT:
        return None
    _, n, uids_b, dates_b, subjects_v, replies_b, mids_v, refs_v, packed = value
    if not (isinstance(n, int) and isinstance(uids_b, bytes) and isinstance(dates_b, bytes)
            and isinstance(replies_b, bytes) and len(uids_b) == len(dates_b) == 8 * n
            and len(replies_b) == n):
        return None
    uids = array("q", uids_b).tolist()
    dates = array("d", dates_b).tolist()
    replies = list(map(bool, replies_b))
    subjects = _unstrings(subjects_v, n)
    mids = _unstrings(mids_v, n)
    refs = _unstrings(refs_v, n)
    if subjects is None or mids is None or refs is None:
        return None
    if not all(map(operator.lt, uids, itertools.islice(uids, 1, None))):
        return None  # not by UID ascending
    cols = ThreadColumns(uids, dates, subjects, replies, mids, refs)
    links = None
    if packed is not None:
        links = ThreadLinks.unpack(ThreadInput(uids, dates, subjects, replies, mids, refs),
                                   packed)
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
    cache.set_snapshot(box, snap.uid_upto, len(got[0].uids), got[1] is not None)
    return got


def behind(cache: ColumnCache, box: MailboxInfo, view: list[int],
           links: bool = False) -> int:
    """How many rows of the view the kept snapshot lacks or has too many (expunged
    since); a large number when none is known to be kept, or when ``links`` (this
    process has the view's links) and the kept one has none: an ORDEREDSUBJECT wrote it
    first, and without them the first REFERENCES after a restart links every message."""
    kept = cache.snapshot(box)
    if kept is None or (links and not kept[2]):
        return 1 << 30
    upto, rows, _ = kept
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
    cache.set_snapshot(box, cols.uids[-1], len(cols.uids), links is not None)
