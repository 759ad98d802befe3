"""The IMAP extensions' storage (interfaces_imap.py): METADATA entries and save dates.
Runs on every backend of the conformance suite."""

from __future__ import annotations

import time

import pytest

from pochta.storage.interfaces import Envelope, LocalTarget, MailStore
from tests.storage.test_conformance import Factory, factory, store  # noqa: F401

ENV = Envelope(sender="a@elsewhere.test")
MSG = b"Subject: s\r\n\r\nbody\r\n"


async def _two_accounts(store: MailStore) -> tuple[int, int]:  # noqa: F811
    a = await store.add_account("a@example.test", "x", None)
    b = await store.add_account("b@example.test", "x", None)
    return a.id, b.id


async def test_metadata_private_shared_and_server(store: MailStore) -> None:  # noqa: F811
    a, b = await _two_accounts(store)
    box = await store.get_mailbox(a, "INBOX")
    assert box is not None
    assert await store.get_metadata(a, box.id) == {}
    await store.set_metadata(a, box.id, {"/private/comment": b"mine",
                                         "/shared/Comment": b"everyone's"})
    await store.set_metadata(b, box.id, {"/private/comment": b"b's own"})
    assert await store.get_metadata(a, box.id) == {"/private/comment": b"mine",
                                                   "/shared/comment": b"everyone's"}
    assert await store.get_metadata(b, box.id) == {"/private/comment": b"b's own",
                                                   "/shared/comment": b"everyone's"}
    await store.set_metadata(a, box.id, {"/private/comment": None,
                                         "/shared/comment": b"new"})
    assert await store.get_metadata(a, box.id) == {"/shared/comment": b"new"}
    # server entries (mailbox 0) are apart from every mailbox's; the /shared ones are the
    # administrator's (account 0, pochta metadata), the /private ones each account's
    await store.set_metadata(0, 0, {"/shared/admin": b"mailto:postmaster@example.test"})
    await store.set_metadata(a, 0, {"/private/vendor/x": b"a's"})
    assert await store.get_metadata(b, 0) == {"/shared/admin": b"mailto:postmaster@example.test"}
    assert await store.get_metadata(a, 0) == {"/shared/admin": b"mailto:postmaster@example.test",
                                              "/private/vendor/x": b"a's"}
    assert await store.get_metadata(0, 0) == {"/shared/admin": b"mailto:postmaster@example.test"}
    assert "/shared/admin" not in await store.get_metadata(a, box.id)
    await store.set_metadata(0, 0, {"/shared/admin": None})
    assert await store.get_metadata(b, 0) == {}
    # binary values (RFC 5464 allows literal8-free octets incl. NUL through literals)
    await store.set_metadata(a, box.id, {"/private/bin": b"\x00\xff"})
    assert (await store.get_metadata(a, box.id))["/private/bin"] == b"\x00\xff"


async def test_account_metadata_in_one_read(store: MailStore) -> None:  # noqa: F811
    a, b = await _two_accounts(store)
    inbox = await store.get_mailbox(a, "INBOX")
    other = await store.create_mailbox(a, "Lists")
    b_inbox = await store.get_mailbox(b, "INBOX")
    assert inbox is not None and b_inbox is not None
    assert await store.account_metadata(a) == {}
    await store.set_metadata(a, inbox.id, {"/private/comment": b"mine", "/shared/x": b"1"})
    await store.set_metadata(a, other.id, {"/shared/color": b"red"})
    await store.set_metadata(a, 0, {"/private/vendor/a": b"2"})
    await store.set_metadata(0, 0, {"/shared/admin": b"mailto:p@example.test"})
    await store.set_metadata(b, 0, {"/private/vendor/a": b"b's"})
    await store.set_metadata(b, b_inbox.id, {"/shared/comment": b"b's mailbox"})
    # b's mailbox and b's private entries are not a's; the administrator's shared
    # server entries are everyone's
    assert await store.account_metadata(a) == {
        inbox.id: {"/private/comment": b"mine", "/shared/x": b"1"},
        other.id: {"/shared/color": b"red"},
        0: {"/private/vendor/a": b"2", "/shared/admin": b"mailto:p@example.test"},
    }
    for box_id in (inbox.id, other.id, 0):
        assert (await store.account_metadata(a))[box_id] == await store.get_metadata(a, box_id)


async def test_metadata_follows_rename_and_goes_with_delete(store: MailStore  # noqa: F811
                                                            ) -> None:
    a, _ = await _two_accounts(store)
    box = await store.create_mailbox(a, "Projects")
    await store.set_metadata(a, box.id, {"/private/color": b"red"})
    await store.rename_mailbox(a, "Projects", "Work")
    renamed = await store.get_mailbox(a, "Work")
    assert renamed is not None
    assert await store.get_metadata(a, renamed.id) == {"/private/color": b"red"}
    await store.delete_mailbox(a, "Work")
    again = await store.create_mailbox(a, "Work")
    assert await store.get_metadata(a, again.id) == {}
    assert await store.get_metadata(a, renamed.id) == {}


async def test_save_dates_for_delivery_copy_and_move(store: MailStore) -> None:  # noqa: F811
    a, _ = await _two_accounts(store)
    before = time.time() - 1
    old = time.time() - 86400 * 30
    await store.accept(MSG, ENV, [LocalTarget(a, "INBOX", internaldate=old)])
    inbox = await store.get_mailbox(a, "INBOX")
    archive = await store.get_mailbox(a, "Archive")
    assert inbox is not None and archive is not None
    dates = await store.save_dates(inbox.id, [1, 99])
    assert set(dates) == {1} and before <= dates[1] <= time.time() + 1
    pairs = await store.copy_messages(inbox.id, [1], archive.id)
    copied = await store.save_dates(archive.id, [pairs[0][1]])
    assert copied[pairs[0][1]] >= dates[1]
    await store.expunge(archive.id, [pairs[0][1]])
    assert await store.save_dates(archive.id, [pairs[0][1]]) == {}
    moved = await store.move_messages(inbox.id, [1], archive.id)
    assert set(await store.save_dates(archive.id, [moved[0][1]])) == {moved[0][1]}
    assert await store.save_dates(inbox.id, [1]) == {}


async def test_read_blobs_in_batches(store: MailStore) -> None:  # noqa: F811
    a, _ = await _two_accounts(store)
    ids = []
    for n in range(3):
        body = b"Subject: %d\r\n\r\n" % n + b"x" * (n * 100_000)  # inline and segment blobs
        ids.append((await store.accept(body, ENV, [LocalTarget(a)])).blob_id)
    got = await store.read_blobs([*ids, ids[0], 999_999])
    assert set(got) == set(ids)
    for blob_id in ids:
        assert got[blob_id] == await store.read_blob(blob_id)


async def test_sort_keys_kept_per_blob(store: MailStore) -> None:  # noqa: F811
    from pochta.storage.interfaces_imap import SortKeys

    a, _ = await _two_accounts(store)
    blob = (await store.accept(MSG, ENV, [LocalTarget(a)])).blob_id
    assert await store.get_sort_keys([blob]) == {}
    keys = SortKeys(None, "HELLO", True, "BOB", "ALICE", "", "BOB B", "ALICE", "<m@x>",
                    "<a@x> <b@x>")
    await store.put_sort_keys({blob: keys, 999_999: keys})  # a blob that does not exist
    assert await store.get_sort_keys([blob, 999_999]) == {blob: keys}
    dated = SortKeys(1.5, "", False, "", "", "", "", "", "", "")
    await store.put_sort_keys({blob: dated})
    assert (await store.get_sort_keys([blob]))[blob] == dated


async def test_sorted_uids_from_kept_keys(store: MailStore) -> None:  # noqa: F811
    """The store sorts a mailbox by kept keys (RFC 5256 §3): DATE falls back to the
    internal date, REVERSE applies per criterion, ties go by UID; a message that
    has no keys is left out."""
    from pochta.storage.interfaces_imap import SortKeys

    a, _ = await _two_accounts(store)
    box = await store.get_mailbox(a, "INBOX")
    assert box is not None
    blobs = []
    for n, when in enumerate((300.0, 100.0, 200.0)):
        target = LocalTarget(a, internaldate=when)
        blobs.append((await store.accept(b"Subject: %d\r\n\r\nx" % n + b"y" * n, ENV,
                                         [target])).blob_id)
    assert await store.sorted_uids(box.id, [("DATE", False)]) == []  # no keys yet
    # uid 1: no Date (internal date 300), uid 2: date 250, uid 3: date 50
    # subjects: uid 1 and 3 tie ("B"), uid 2 "A\u00e9" sorts before "B" by code point
    keys = [SortKeys(None, "B", False, "zed", "", "", "", "", "", ""),
            SortKeys(250.0, "A\u00e9", False, "amy", "", "", "", "", "", ""),
            SortKeys(50.0, "B", False, "bob", "", "", "", "", "", "")]
    await store.put_sort_keys({blobs[0]: keys[0]})
    assert await store.sorted_uids(box.id, [("DATE", False)]) == [1]
    await store.put_sort_keys(dict(zip(blobs, keys, strict=True)))
    assert await store.sorted_uids(box.id, [("DATE", False)]) == [3, 2, 1]
    assert await store.sorted_uids(box.id, [("DATE", True)]) == [1, 2, 3]
    assert await store.sorted_uids(box.id, [("ARRIVAL", False)]) == [2, 3, 1]
    assert await store.sorted_uids(box.id, [("SIZE", True)]) == [3, 2, 1]
    assert await store.sorted_uids(box.id, [("SUBJECT", False)]) == [2, 1, 3]
    assert await store.sorted_uids(box.id, [("SUBJECT", True)]) == [1, 3, 2]
    assert await store.sorted_uids(box.id, [("SUBJECT", False), ("DATE", False)]) == [2, 3, 1]
    assert await store.sorted_uids(box.id, [("FROM", False)]) == [2, 3, 1]
    assert await store.sorted_uids(box.id, [("CC", False)]) == [1, 2, 3]  # all tie


async def test_thread_columns_from_kept_keys(store: MailStore) -> None:  # noqa: F811
    """THREAD's keys of a whole mailbox as columns by UID: the date falls back to the
    internal date, messages without kept keys are left out, and the columns follow
    expunge and copy (keys are per blob: a copy has them at once)."""
    from pochta.storage.interfaces_imap import SortKeys

    a, _ = await _two_accounts(store)
    box = await store.get_mailbox(a, "INBOX")
    assert box is not None
    empty = await store.thread_columns(box.id)
    assert (empty.uids, empty.dates, empty.message_ids) == ([], [], [])
    blobs = []
    for n, when in enumerate((300.0, 100.0, 200.0)):
        target = LocalTarget(a, internaldate=when)
        blobs.append((await store.accept(b"Subject: %d\r\n\r\nx" % n, ENV,
                                         [target])).blob_id)
    keys = [SortKeys(None, "B", False, "", "", "", "", "", "<1@x>", ""),
            SortKeys(250.5, "A\u00e9", True, "", "", "", "", "", "<2@x>", "<1@x> <0@x>"),
            SortKeys(50.0, "B", True, "", "", "", "", "", "", "<1@x>")]
    await store.put_sort_keys({blobs[0]: keys[0], blobs[2]: keys[2]})
    cols = await store.thread_columns(box.id)
    assert cols.uids == [1, 3]  # uid 2 has no kept keys yet
    await store.put_sort_keys({blobs[1]: keys[1]})
    cols = await store.thread_columns(box.id)
    assert cols.uids == [1, 2, 3]
    assert cols.dates == [300.0, 250.5, 50.0]
    assert cols.subjects == ["B", "A\u00e9", "B"]
    assert cols.replies == [False, True, True]
    assert cols.message_ids == ["<1@x>", "<2@x>", ""]
    assert cols.references == ["", "<1@x> <0@x>", "<1@x>"]
    some = await store.thread_columns(box.id, [3, 1, 999])
    assert (some.uids, some.dates, some.message_ids) == ([1, 3], [300.0, 50.0], ["<1@x>", ""])
    assert (await store.thread_columns(box.id, [])).uids == []
    await store.expunge(box.id, [2])
    assert (await store.thread_columns(box.id)).uids == [1, 3]
    assert (await store.thread_columns(box.id, [2])).uids == []
    other = await store.create_mailbox(a, "Other")
    await store.copy_messages(box.id, [3], other.id)
    copied = await store.thread_columns(other.id)
    assert (copied.uids, copied.dates, copied.references) == ([1], [50.0], ["<1@x>"])
    assert (await store.thread_columns(box.id)).uids == [1, 3]


async def test_search_fields_kept_per_blob_and_go_with_it(store: MailStore) -> None:  # noqa: F811
    a, _ = await _two_accounts(store)
    blob = (await store.accept(MSG, ENV, [LocalTarget(a)])).blob_id
    assert await store.get_search_fields([blob]) == {}
    text = "\x1falice <alice@x.test>\x1e\x1e\x1e\x1e\x1fh\u00e9llo"
    await store.put_search_fields({blob: text, 999_999: "x"})  # a blob that does not exist
    assert await store.get_search_fields([blob, 999_999]) == {blob: text}
    await store.put_search_fields({blob: "again"})
    assert await store.get_search_fields([blob]) == {blob: "again"}
    inbox = await store.get_mailbox(a, "INBOX")
    assert inbox is not None
    await store.expunge(inbox.id, [1])
    await store.compact(0.0)  # the blob's last reference went: its texts go with it
    assert await store.get_search_fields([blob]) == {}


async def test_kept_search_fields_of_a_mailbox(store: MailStore) -> None:  # noqa: F811
    a, _ = await _two_accounts(store)
    first = (await store.accept(MSG, ENV, [LocalTarget(a)])).blob_id
    second = (await store.accept(MSG + b"2", ENV, [LocalTarget(a)])).blob_id
    await store.accept(MSG + b"3", ENV, [LocalTarget(a)])  # nothing kept for it
    inbox = await store.get_mailbox(a, "INBOX")
    assert inbox is not None
    await store.put_search_fields({first: "\x1fann <ann@x.test>\x1e\x1e\x1e\x1e\x1fhi",
                                   second: "\x1fbob <bob@x.test>\x1e\x1e\x1e\x1e\x1fho"})
    assert await store.kept_search_fields(inbox.id, "ann@") == {
        first: "\x1fann <ann@x.test>\x1e\x1e\x1e\x1e\x1fhi", second: None}
    assert await store.kept_search_fields(inbox.id, "ANN") == {first: None, second: None}
    assert await store.kept_search_fields(inbox.id, "x.test") == {
        first: "\x1fann <ann@x.test>\x1e\x1e\x1e\x1e\x1fhi",
        second: "\x1fbob <bob@x.test>\x1e\x1e\x1e\x1e\x1fho"}


async def test_kept_search_uids_decide_per_field(store: MailStore) -> None:  # noqa: F811
    """The store decides SEARCH FROM/TO/... on the kept texts: a needle counts only in
    its field's part; messages whose texts are not kept come back apart; COPY shares the
    texts (same blob), expunge takes the message out."""
    a, _ = await _two_accounts(store)
    texts = {  # FROM, TO, CC, BCC, SUBJECT; "\x1f" before each value
        1: "\x1fann <ann@x.test>\x1e\x1fbob <bob@x.test>\x1fcarol\x1e\x1e\x1e\x1fhi ann",
        2: "\x1fbob <bob@x.test>\x1e\x1fann <ann@x.test>\x1e\x1fdave\x1e\x1fzed\x1e\x1fh\u00e9",
        3: "\x1e\x1e\x1e\x1e",  # no such fields at all
    }
    blobs = {}
    for uid in (1, 2, 3, 4):
        blobs[uid] = (await store.accept(MSG + b"%d" % uid, ENV, [LocalTarget(a)])).blob_id
    inbox = await store.get_mailbox(a, "INBOX")
    assert inbox is not None
    await store.put_search_fields({blobs[u]: t for u, t in texts.items()})  # 4: not kept
    box = inbox.id
    assert await store.kept_search_uids(box, [(0, "ann")]) == ([1], [4])
    assert await store.kept_search_uids(box, [(1, "ann")]) == ([2], [4])
    assert await store.kept_search_uids(box, [(4, "ann")]) == ([1], [4])
    assert await store.kept_search_uids(box, [(1, "carol")]) == ([1], [4])
    assert await store.kept_search_uids(box, [(2, "dave")]) == ([2], [4])
    assert await store.kept_search_uids(box, [(3, "zed")]) == ([2], [4])
    assert await store.kept_search_uids(box, [(4, "h\u00e9")]) == ([2], [4])
    assert await store.kept_search_uids(box, [(4, "H\u00e9")]) == ([], [4])  # caller folds
    assert await store.kept_search_uids(box, [(0, "x.test")]) == ([1, 2], [4])
    assert await store.kept_search_uids(box, [(1, "x.test")]) == ([1, 2], [4])  # also in FROM
    assert await store.kept_search_uids(box, [(1, "zed")]) == ([], [4])  # only a later part
    assert await store.kept_search_uids(box, [(0, "x.test"), (1, "bob")]) == ([1], [4])
    assert await store.kept_search_uids(box, [(2, "ann")]) == ([], [4])
    await store.put_search_fields({blobs[4]: texts[1]})
    assert await store.kept_search_uids(box, [(0, "ann")]) == ([1, 4], [])
    other = await store.create_mailbox(a, "Other")
    await store.copy_messages(box, [2], other.id)
    assert await store.kept_search_uids(other.id, [(1, "ann")]) == ([1], [])
    await store.expunge(box, [1])
    assert await store.kept_search_uids(box, [(0, "ann")]) == ([4], [])


async def test_unkept_search_blobs(store: MailStore) -> None:  # noqa: F811
    a, _ = await _two_accounts(store)
    assert await store.unkept_search_blobs(0, 10) == ([], 0)
    blobs = [(await store.accept(MSG + b"%d" % i, ENV, [LocalTarget(a)])).blob_id
             for i in range(4)]
    size, top = len(MSG) + 1, blobs[-1]
    assert await store.unkept_search_blobs(0, 10) == ([(b, size) for b in blobs], top)
    assert await store.unkept_search_blobs(blobs[0], 2) == (
        [(b, size) for b in blobs[1:3]], top)
    await store.put_search_fields({blobs[1]: "\x1e\x1e\x1e\x1e"})
    assert await store.unkept_search_blobs(0, 10) == (
        [(b, size) for b in (blobs[0], blobs[2], blobs[3])], top)
    assert await store.unkept_search_blobs(blobs[3], 10) == ([], top)


async def test_kept_search_uids_refuses_parts_not_kept(store: MailStore) -> None:  # noqa: F811
    for terms in ([], [(5, "x")], [(-1, "x")]):
        with pytest.raises(ValueError):
            await store.kept_search_uids(1, terms)


async def test_kept_search_uids_random_texts(store: MailStore) -> None:  # noqa: F811
    """The store's per-part substring test is Python's ``needle in part`` on random kept
    texts (short values of a small alphabet with a non-ASCII letter, so needles cross
    value boundaries, repeat in several parts and sit at either end)."""
    import random

    rnd = random.Random(5)
    a, _ = await _two_accounts(store)
    alphabet = "ab\u00e9 "
    texts: dict[int, str] = {}
    blobs: dict[int, int] = {}
    for uid in range(1, 41):
        parts = ["".join("\x1f" + "".join(rnd.choice(alphabet) for _ in range(
            rnd.randint(0, 4))) for _ in range(rnd.randint(0, 2))) for _ in range(5)]
        texts[uid] = "\x1e".join(parts)
        blobs[uid] = (await store.accept(MSG + b"%d" % uid, ENV, [LocalTarget(a)])).blob_id
    await store.put_search_fields({blobs[u]: t for u, t in texts.items()})
    inbox = await store.get_mailbox(a, "INBOX")
    assert inbox is not None
    for _ in range(60):
        terms = [(rnd.randrange(5), "".join(rnd.choice(alphabet) for _ in range(
            rnd.randint(1, 3)))) for _ in range(rnd.randint(1, 2))]
        expected = [u for u, t in texts.items()
                    if all(n in t.split("\x1e")[i] for i, n in terms)]
        assert await store.kept_search_uids(inbox.id, terms) == (expected, []), terms


async def test_thread_snapshot_replaced_bounded_and_gone_with_the_mailbox(
        store: MailStore) -> None:  # noqa: F811
    from pochta.storage.interfaces_imap import THREAD_SNAPSHOT_MAX, ThreadSnapshot

    a, _ = await _two_accounts(store)
    box = await store.get_mailbox(a, "INBOX")
    assert box is not None
    assert await store.get_thread_snapshot(box.id) is None
    first = ThreadSnapshot(box.uidvalidity, 7, b"\x00snap\xff" * 1000)
    await store.put_thread_snapshot(box.id, first)
    assert await store.get_thread_snapshot(box.id) == first
    second = ThreadSnapshot(box.uidvalidity, 9, b"again")
    await store.put_thread_snapshot(box.id, second)  # one per mailbox: replaced
    assert await store.get_thread_snapshot(box.id) == second
    with pytest.raises(ValueError):
        await store.put_thread_snapshot(box.id, ThreadSnapshot(
            box.uidvalidity, 9, b"x" * (THREAD_SNAPSHOT_MAX + 1)))
    assert await store.get_thread_snapshot(box.id) == second
    await store.put_thread_snapshot(999_999, first)  # no such mailbox: nothing kept
    assert await store.get_thread_snapshot(999_999) is None
    other = await store.create_mailbox(a, "Other")
    await store.put_thread_snapshot(other.id, first)
    await store.rename_mailbox(a, "Other", "Renamed")  # the same mailbox: kept
    assert await store.get_thread_snapshot(other.id) == first
    await store.delete_mailbox(a, "Renamed")
    assert await store.get_thread_snapshot(other.id) is None
    assert await store.get_thread_snapshot(box.id) == second


async def test_sort_snapshots_replaced_bounded_and_gone_with_the_mailbox(
        store: MailStore) -> None:  # noqa: F811
    from pochta.storage.interfaces_imap import SORT_SNAPSHOT_MAX, SORT_SNAPSHOTS, SortSnapshot

    a, _ = await _two_accounts(store)
    box = await store.get_mailbox(a, "INBOX")
    assert box is not None
    assert await store.get_sort_snapshot(box.id, "DATE") is None
    first = SortSnapshot(box.uidvalidity, 7, b"\x00snap\xff" * 1000)
    await store.put_sort_snapshot(box.id, "DATE", first)
    assert await store.get_sort_snapshot(box.id, "DATE") == first
    assert await store.get_sort_snapshot(box.id, "REVERSE DATE") is None  # per criteria
    second = SortSnapshot(box.uidvalidity, 9, b"again")
    await store.put_sort_snapshot(box.id, "DATE", second)  # replaced
    assert await store.get_sort_snapshot(box.id, "DATE") == second
    with pytest.raises(ValueError):
        await store.put_sort_snapshot(box.id, "DATE", SortSnapshot(
            box.uidvalidity, 9, b"x" * (SORT_SNAPSHOT_MAX + 1)))
    with pytest.raises(ValueError):
        await store.put_sort_snapshot(box.id, "X" * 201, first)
    assert await store.get_sort_snapshot(box.id, "DATE") == second
    # at most SORT_SNAPSHOTS per mailbox: the least recently written go
    names = [f"SIZE {i}" for i in range(SORT_SNAPSHOTS)]
    for name in names:
        await store.put_sort_snapshot(box.id, name, first)
    assert await store.get_sort_snapshot(box.id, "DATE") is None
    await store.put_sort_snapshot(box.id, names[0], second)  # written again: newest
    await store.put_sort_snapshot(box.id, "FROM", first)
    assert await store.get_sort_snapshot(box.id, names[0]) == second
    assert await store.get_sort_snapshot(box.id, names[1]) is None
    assert await store.get_sort_snapshot(box.id, names[2]) == first
    await store.put_sort_snapshot(999_999, "DATE", first)  # no such mailbox: nothing kept
    assert await store.get_sort_snapshot(999_999, "DATE") is None
    other = await store.create_mailbox(a, "Other")
    await store.put_sort_snapshot(other.id, "DATE", first)
    await store.rename_mailbox(a, "Other", "Renamed")  # the same mailbox: kept
    assert await store.get_sort_snapshot(other.id, "DATE") == first
    await store.delete_mailbox(a, "Renamed")
    assert await store.get_sort_snapshot(other.id, "DATE") is None
    assert await store.get_sort_snapshot(box.id, "FROM") == first


async def test_store_sort_and_an_updated_order_agree(store: MailStore) -> None:  # noqa: F811
    """The store's ORDER BY and the keys SORT's kept orders are brought up to date with
    (proto/imap/sortorder.py) order alike: strings by code point (non-ASCII, astral,
    U+FFFF, combining marks), numbers as numbers, ties by UID, REVERSE per criterion; a
    kept order of some messages with the others inserted by bisection equals the
    store's sort of them all."""
    import random

    from pochta.proto.imap.sort import SORT_KEYS
    from pochta.proto.imap.sortorder import Insertion, sort_key
    from pochta.storage.interfaces_imap import SortKeys

    rng = random.Random(5957)
    strings = ["", "a", "A", "ab", "É", "E\u0301", "\u00ff", "\U0001f600", "\uffff", "z", "Z"]

    def text() -> str:
        return "".join(rng.choice(strings) for _ in range(rng.randint(0, 3)))

    a, _ = await _two_accounts(store)
    box = await store.get_mailbox(a, "INBOX")
    assert box is not None
    keys: dict[int, SortKeys] = {}
    for _ in range(60):
        target = LocalTarget(a, internaldate=float(rng.choice([100, 200, 200.25, 300])))
        blob = (await store.accept(b"Subject: s\r\n\r\n" + b"x" * rng.randint(0, 3), ENV,
                                   [target])).blob_id
        keys[blob] = SortKeys(rng.choice([None, 50.0, 200.0, 200.25]), text(), False,
                              text(), text(), text(), text(), text(), "", "")
    await store.put_sort_keys(keys)
    metas = {m.uid: m for m in await store.list_messages(box.id)}
    for _ in range(40):
        names = rng.sample(sorted(SORT_KEYS), rng.randint(1, 3))
        crit = [(n, rng.random() < 0.5) for n in names]
        by_store = await store.sorted_uids(box.id, crit)

        def key(u: int, crit: list[tuple[str, bool]] = crit) -> tuple[object, ...]:
            return sort_key(crit, metas[u], keys[metas[u].blob_id])

        assert by_store == sorted(metas, key=key), crit
        old = set(rng.sample(sorted(metas), rng.randint(0, len(metas))))
        ins = Insertion([u for u in by_store if u in old],
                        [(key(u), u) for u in metas if u not in old])
        while want := ins.wanted():
            ins.feed({u: key(u) for u in want})
        assert ins.result() == by_store, crit
