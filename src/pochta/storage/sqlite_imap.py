"""SQLite part of the IMAP extensions' storage (interfaces_imap.py): METADATA entries and
message save dates, added by named migrations (sqlite_base.py).

Save dates are recorded by a trigger on ``messages`` inserts (delivery, APPEND, COPY and
MOVE all insert a row), so no write path of the core store changes; entries and save dates
go with their mailbox or message by triggers too.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import sqlite3
from collections.abc import Mapping, Sequence

from .interfaces import NotFound, StorageCorrupt
from .interfaces_imap import (
    SEARCH_FIELD_PARTS,
    SORT_CRITERIA_MAX,
    SORT_SNAPSHOT_MAX,
    SORT_SNAPSHOTS,
    THREAD_SNAPSHOT_MAX,
    AclGrant,
    SortKeys,
    SortSnapshot,
    ThreadColumns,
    ThreadSnapshot,
)
from .sqlite_base import Migration, SQLiteFeature

BATCH = 500

# SORT criteria (RFC 5256, 5957) as columns of messages m joined with imap_sortkeys k
SORT_COLUMNS = {
    "DATE": "coalesce(k.date, m.internaldate)", "ARRIVAL": "m.internaldate",
    "SIZE": "m.size", "SUBJECT": "k.subject", "FROM": "k.from_", "TO": "k.to_",
    "CC": "k.cc", "DISPLAYFROM": "k.display_from", "DISPLAYTO": "k.display_to",
}

MIGRATIONS = [
    Migration("imap-1", """
CREATE TABLE IF NOT EXISTS imap_metadata(
    owner INTEGER NOT NULL,          -- the account for /private/ entries, 0 for /shared/
    mailbox_id INTEGER NOT NULL,     -- 0: server entries
    entry TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY(mailbox_id, owner, entry)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS imap_savedate(
    mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, saved REAL NOT NULL,
    PRIMARY KEY(mailbox_id, uid)) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS imap_savedate_insert AFTER INSERT ON messages BEGIN
    INSERT OR REPLACE INTO imap_savedate
        VALUES (new.mailbox_id, new.uid, (julianday('now') - 2440587.5) * 86400.0);
END;
CREATE TRIGGER IF NOT EXISTS imap_savedate_delete AFTER DELETE ON messages BEGIN
    DELETE FROM imap_savedate WHERE mailbox_id = old.mailbox_id AND uid = old.uid;
END;
CREATE TRIGGER IF NOT EXISTS imap_metadata_mailbox_delete AFTER DELETE ON mailboxes BEGIN
    DELETE FROM imap_metadata WHERE mailbox_id = old.id;
END;
"""),
    Migration("imap-2", """
CREATE TABLE IF NOT EXISTS imap_sortkeys(
    blob_id INTEGER PRIMARY KEY,
    date REAL, subject TEXT NOT NULL, reply INTEGER NOT NULL, from_ TEXT NOT NULL,
    to_ TEXT NOT NULL, cc TEXT NOT NULL, display_from TEXT NOT NULL,
    display_to TEXT NOT NULL, message_id TEXT NOT NULL, refs TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS imap_sortkeys_blob_delete AFTER DELETE ON blobs BEGIN
    DELETE FROM imap_sortkeys WHERE blob_id = old.id;
END;
"""),
    # every IMAP command asks what was expunged since its last look (changes_since):
    # without this index that walks every expunged row the mailbox ever had
    Migration("imap-expunged-modseq", """
CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged(mailbox_id, modseq);
"""),
    # SEARCH FROM/TO/CC/BCC/SUBJECT without reading every message (server/imap_message.py)
    Migration("imap-searchfields", """
CREATE TABLE IF NOT EXISTS imap_searchfields(blob_id INTEGER PRIMARY KEY, fields TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS imap_searchfields_blob_delete AFTER DELETE ON blobs BEGIN
    DELETE FROM imap_searchfields WHERE blob_id = old.id;
END;
"""),
    # URLAUTH keys (RFC 4467) and ACL grants (RFC 4314)
    Migration("imap-3", """
CREATE TABLE IF NOT EXISTS imap_urlauth_keys(
    mailbox_id INTEGER PRIMARY KEY, key BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS imap_acl(
    mailbox_id INTEGER NOT NULL, identifier TEXT NOT NULL, rights TEXT NOT NULL,
    PRIMARY KEY(mailbox_id, identifier)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS imap_acl_identifier ON imap_acl(identifier);
CREATE TRIGGER IF NOT EXISTS imap_acl_mailbox_delete AFTER DELETE ON mailboxes BEGIN
    DELETE FROM imap_acl WHERE mailbox_id = old.id;
    DELETE FROM imap_urlauth_keys WHERE mailbox_id = old.id;
END;
"""),
    # the first THREAD after a restart without reading every message's keys (issue 15)
    Migration("imap-thread-snapshot", """
CREATE TABLE IF NOT EXISTS imap_thread_snapshot(
    mailbox_id INTEGER PRIMARY KEY, uidvalidity INTEGER NOT NULL,
    uid_upto INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS imap_thread_snapshot_mailbox_delete AFTER DELETE ON mailboxes
BEGIN
    DELETE FROM imap_thread_snapshot WHERE mailbox_id = old.id;
END;
"""),
    # the first SORT after a restart without the store sorting every message (issue 15)
    Migration("imap-sort-snapshot", """
CREATE TABLE IF NOT EXISTS imap_sort_snapshot(
    mailbox_id INTEGER NOT NULL, criteria TEXT NOT NULL, uidvalidity INTEGER NOT NULL,
    uid_upto INTEGER NOT NULL, written INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY(mailbox_id, criteria));
CREATE TRIGGER IF NOT EXISTS imap_sort_snapshot_mailbox_delete AFTER DELETE ON mailboxes
BEGIN
    DELETE FROM imap_sort_snapshot WHERE mailbox_id = old.id;
END;
"""),
]


def _field_has(index: int) -> str:
    """SQL true when the ``index``-th "\x1e"-separated part of ``f.fields`` (the kept
    SEARCH texts, proto/imap/search.py) holds the needle bound to the one "?": the
    needle's first occurrence after the part's start comes before the next separator (it
    holds none). On the UTF-8 bytes (a BLOB): SQLite counts characters in text, and a
    byte match of UTF-8 is a character match."""
    rest, needle = "CAST(f.fields AS BLOB)", "CAST(? AS BLOB)"
    for _ in range(index):
        rest = f"substr({rest}, instr({rest}, x'1e') + 1)"
    if index == SEARCH_FIELD_PARTS - 1:  # the last part runs to the end
        return f"instr({rest}, {needle}) > 0"
    return f"instr({rest}, {needle}) BETWEEN 1 AND instr({rest}, x'1e')"


class SQLiteImapState(SQLiteFeature):
    async def get_metadata(self, account_id: int, mailbox_id: int) -> dict[str, bytes]:
        rows = await self._query_small(  # the primary key's range (imapsieve: every APPEND)
            "SELECT entry, value FROM imap_metadata WHERE mailbox_id=? AND owner IN (0, ?)",
            (mailbox_id, account_id))
        return {str(entry): bytes(value) for entry, value in rows}

    async def account_metadata(self, account_id: int) -> dict[int, dict[str, bytes]]:
        rows = await self._query(
            "SELECT mailbox_id, entry, value FROM imap_metadata WHERE owner IN (0, ?) AND "
            "(mailbox_id = 0 OR mailbox_id IN (SELECT id FROM mailboxes WHERE account_id=?))",
            (account_id, account_id))
        out: dict[int, dict[str, bytes]] = {}
        for mailbox_id, entry, value in rows:
            out.setdefault(int(mailbox_id), {})[str(entry)] = bytes(value)
        return out

    async def set_metadata(
        self, account_id: int, mailbox_id: int, values: Mapping[str, bytes | None]
    ) -> None:
        items = [(e.lower(), v) for e, v in values.items()]

        def write(conn: sqlite3.Connection, _blob: int | None) -> None:
            for entry, value in items:
                owner = account_id if entry.startswith("/private/") else 0
                if value is None:
                    conn.execute("DELETE FROM imap_metadata WHERE mailbox_id=? AND owner=? "
                                 "AND entry=?", (mailbox_id, owner, entry))
                else:
                    conn.execute("INSERT OR REPLACE INTO imap_metadata VALUES (?, ?, ?, ?)",
                                 (owner, mailbox_id, entry, value))

        await self._write(write)

    async def read_blob(self, blob_id: int) -> bytes:
        raise NotImplementedError  # SQLiteStore's

    async def read_blobs(self, blob_ids: Sequence[int]) -> dict[int, bytes]:
        """Blobs inside the index come in batches of BATCH ids per query (a SORT of
        100,000 messages was 100,000 queries); segment blobs one by one."""
        out: dict[int, bytes] = {}
        wanted = list(dict.fromkeys(blob_ids))
        for i in range(0, len(wanted), BATCH):
            part = wanted[i : i + BATCH]
            marks = ",".join("?" * len(part))
            rows = await self._query(
                "SELECT id, length, data, sha256 FROM blobs "  # noqa: S608
                f"WHERE id IN ({marks})", part)  # only "?" placeholders are formatted in
            for blob_id, length, data, digest in rows:
                if data is None:
                    with contextlib.suppress(NotFound):
                        out[blob_id] = await self.read_blob(blob_id)
                    continue
                value = bytes(data)
                if len(value) != length or (
                        digest is not None and hashlib.sha256(value).digest() != bytes(digest)):
                    raise StorageCorrupt(f"blob {blob_id} does not match its checksum: run "
                                         "pochta store verify")
                out[blob_id] = value
        return out

    async def get_sort_keys(self, blob_ids: Sequence[int]) -> dict[int, SortKeys]:
        wanted = list(dict.fromkeys(blob_ids))

        def read(conn: sqlite3.Connection) -> dict[int, SortKeys]:
            # every batch in one hop to the reader thread (a SORT of a big mailbox asks
            # for all its messages' keys at once)
            out: dict[int, SortKeys] = {}
            for i in range(0, len(wanted), BATCH):
                part = wanted[i : i + BATCH]
                marks = ",".join("?" * len(part))
                rows = conn.execute(
                    "SELECT blob_id, date, subject, reply, from_, to_, cc, display_from, "  # noqa: S608
                    f"display_to, message_id, refs FROM imap_sortkeys WHERE blob_id IN ({marks})",
                    part).fetchall()  # only "?" placeholders are formatted in
                for r in rows:
                    out[int(r[0])] = SortKeys(r[1], r[2], bool(r[3]), *r[4:])
            return out

        return await self._read(read)

    async def put_sort_keys(self, keys: Mapping[int, SortKeys]) -> None:
        rows = [(b, k.date, k.subject, int(k.reply), k.from_, k.to, k.cc, k.display_from,
                 k.display_to, k.message_id, k.references) for b, k in keys.items()]

        def write(conn: sqlite3.Connection, _blob: int | None) -> None:
            # a blob deleted meanwhile has no row to describe: keep only live ones
            conn.executemany(
                "INSERT OR REPLACE INTO imap_sortkeys SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM blobs WHERE id = ?)",
                [(*r, r[0]) for r in rows])

        if rows:
            # derived data, computed again if a crash loses it (as the SEARCH texts)
            await self._write(write, durable=False)

    async def get_search_fields(self, blob_ids: Sequence[int]) -> dict[int, str]:
        wanted = list(dict.fromkeys(blob_ids))

        def read(conn: sqlite3.Connection) -> dict[int, str]:
            out: dict[int, str] = {}
            for i in range(0, len(wanted), BATCH):
                part = wanted[i : i + BATCH]
                marks = ",".join("?" * len(part))
                out.update(conn.execute(
                    "SELECT blob_id, fields FROM imap_searchfields "  # noqa: S608
                    f"WHERE blob_id IN ({marks})", part).fetchall())  # only "?" formatted in
            return out

        return await self._read(read)

    async def kept_search_fields(
        self, mailbox_id: int, containing: str
    ) -> dict[int, str | None]:
        def read(conn: sqlite3.Connection) -> dict[int, str | None]:
            return dict(conn.execute(
                "SELECT m.blob_id, CASE WHEN instr(f.fields, ?) > 0 THEN f.fields END "
                "FROM messages m JOIN imap_searchfields f ON f.blob_id = m.blob_id "
                "WHERE m.mailbox_id = ?", (containing, mailbox_id)).fetchall())

        return await self._read(read)

    async def kept_search_uids(
        self, mailbox_id: int, terms: Sequence[tuple[int, str]]
    ) -> tuple[list[int], list[int]]:
        if not terms or any(not 0 <= i < SEARCH_FIELD_PARTS for i, _ in terms):
            raise ValueError("kept_search_uids: no terms, or a part that is not kept")
        # the whole text first (one C scan rules out most rows), then the field's part
        where = " AND ".join(
            f"instr(CAST(f.fields AS BLOB), CAST(? AS BLOB)) > 0 AND {_field_has(i)}"
            for i, _ in terms)
        args = [x for _, needle in terms for x in (needle, needle)]

        def read(conn: sqlite3.Connection) -> tuple[list[int], list[int]]:
            # one walk of the mailbox: the matches and the messages with nothing kept
            rows = conn.execute(
                "SELECT m.uid, f.blob_id IS NULL FROM messages m LEFT JOIN "  # noqa: S608
                "imap_searchfields f ON f.blob_id = m.blob_id WHERE m.mailbox_id = ? "
                f"AND (f.blob_id IS NULL OR ({where})) ORDER BY m.uid",  # fixed SQL
                (mailbox_id, *args)).fetchall()
            return [u for u, unkept in rows if not unkept], [u for u, unkept in rows if unkept]

        return await self._read(read)

    async def unkept_search_blobs(
        self, after: int, limit: int
    ) -> tuple[list[tuple[int, int]], int]:
        def read(conn: sqlite3.Connection) -> tuple[list[tuple[int, int]], int]:
            top = conn.execute("SELECT coalesce(max(blob_id), 0) FROM messages").fetchone()
            rows = conn.execute(
                "SELECT DISTINCT m.blob_id, m.size FROM messages m WHERE m.blob_id > ? "
                "AND NOT EXISTS (SELECT 1 FROM imap_searchfields f WHERE f.blob_id = "
                "m.blob_id) ORDER BY m.blob_id LIMIT ?", (after, limit)).fetchall()
            return [(int(b), int(n)) for b, n in rows], int(top[0])

        return await self._read(read)

    async def put_search_fields(self, fields: Mapping[int, str]) -> None:
        rows = [(b, f, b) for b, f in fields.items()]

        def write(conn: sqlite3.Connection, _blob: int | None) -> None:
            # a blob deleted meanwhile has no row to describe: keep only live ones
            conn.executemany(
                "INSERT OR REPLACE INTO imap_searchfields SELECT ?, ? "
                "WHERE EXISTS (SELECT 1 FROM blobs WHERE id = ?)", rows)

        if rows:
            # derived data, computed again if a crash loses it
            await self._write(write, durable=False)

    async def sorted_uids(
        self, mailbox_id: int, criteria: Sequence[tuple[str, bool]]
    ) -> list[int]:
        order = ", ".join(SORT_COLUMNS[name] + (" DESC" if rev else "")
                          for name, rev in criteria)

        def read(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                "SELECT m.uid FROM messages m JOIN imap_sortkeys k ON k.blob_id = m.blob_id "  # noqa: S608
                f"WHERE m.mailbox_id=? ORDER BY {order}, m.uid",  # only fixed column names
                (mailbox_id,)).fetchall()
            return [r[0] for r in rows]

        return await self._read(read)

    async def thread_columns(
        self, mailbox_id: int, uids: Sequence[int] | None = None
    ) -> ThreadColumns:
        sql = ("SELECT m.uid, coalesce(k.date, m.internaldate), k.subject, k.reply, "
               "k.message_id, k.refs FROM messages m JOIN imap_sortkeys k "
               "ON k.blob_id = m.blob_id WHERE m.mailbox_id=?")
        wanted = sorted(set(uids)) if uids is not None else None

        def read(conn: sqlite3.Connection) -> ThreadColumns:
            if wanted is None:
                rows = conn.execute(sql + " ORDER BY m.uid", (mailbox_id,)).fetchall()
            else:
                rows = []
                for i in range(0, len(wanted), BATCH):
                    part = wanted[i : i + BATCH]
                    rows += conn.execute(
                        sql + f" AND m.uid IN ({','.join('?' * len(part))}) ORDER BY m.uid",
                        (mailbox_id, *part)).fetchall()  # only "?" placeholders formatted in
            if not rows:
                return ThreadColumns([], [], [], [], [], [])
            uid, dates, subjects, replies, mids, refs = map(list, zip(*rows, strict=True))
            return ThreadColumns(uid, [float(d) for d in dates], subjects,
                                 [bool(r) for r in replies], mids, refs)

        return await self._read(read)

    async def get_thread_snapshot(self, mailbox_id: int) -> ThreadSnapshot | None:
        rows = await self._query("SELECT uidvalidity, uid_upto, data FROM "
                                 "imap_thread_snapshot WHERE mailbox_id=?", (mailbox_id,))
        if not rows:
            return None
        validity, upto, data = rows[0]
        return ThreadSnapshot(int(validity), int(upto), bytes(data))

    async def put_thread_snapshot(self, mailbox_id: int, snapshot: ThreadSnapshot) -> None:
        if len(snapshot.data) > THREAD_SNAPSHOT_MAX:
            raise ValueError("THREAD snapshot too big")

        def write(conn: sqlite3.Connection, _blob: int | None) -> None:
            conn.execute("INSERT OR REPLACE INTO imap_thread_snapshot SELECT ?, ?, ?, ? "
                         "WHERE EXISTS (SELECT 1 FROM mailboxes WHERE id=?)",
                         (mailbox_id, snapshot.uidvalidity, snapshot.uid_upto,
                          snapshot.data, mailbox_id))

        await self._write(write)

    async def get_sort_snapshot(self, mailbox_id: int, criteria: str) -> SortSnapshot | None:
        rows = await self._query("SELECT uidvalidity, uid_upto, data FROM imap_sort_snapshot "
                                 "WHERE mailbox_id=? AND criteria=?", (mailbox_id, criteria))
        if not rows:
            return None
        validity, upto, data = rows[0]
        return SortSnapshot(int(validity), int(upto), bytes(data))

    async def put_sort_snapshot(
        self, mailbox_id: int, criteria: str, snapshot: SortSnapshot
    ) -> None:
        if len(snapshot.data) > SORT_SNAPSHOT_MAX or len(criteria) > SORT_CRITERIA_MAX:
            raise ValueError("SORT snapshot too big")

        def write(conn: sqlite3.Connection, _blob: int | None) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO imap_sort_snapshot SELECT ?, ?, ?, ?, "
                "(SELECT coalesce(max(written), 0) + 1 FROM imap_sort_snapshot "
                "WHERE mailbox_id=?), ? WHERE EXISTS (SELECT 1 FROM mailboxes WHERE id=?)",
                (mailbox_id, criteria, snapshot.uidvalidity, snapshot.uid_upto, mailbox_id,
                 snapshot.data, mailbox_id))
            conn.execute(
                "DELETE FROM imap_sort_snapshot WHERE mailbox_id=? AND criteria NOT IN "
                "(SELECT criteria FROM imap_sort_snapshot WHERE mailbox_id=? "
                "ORDER BY written DESC LIMIT ?)", (mailbox_id, mailbox_id, SORT_SNAPSHOTS))

        # derived data: a crash that loses it costs one full sort
        await self._write(write, durable=False)

    async def save_dates(self, mailbox_id: int, uids: Sequence[int]) -> dict[int, float]:
        out: dict[int, float] = {}
        wanted = list(uids)
        for i in range(0, len(wanted), 500):
            part = wanted[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = await self._query(
                "SELECT uid, saved FROM imap_savedate WHERE mailbox_id=? "  # noqa: S608
                f"AND uid IN ({marks})",  # only "?" placeholders are formatted in
                (mailbox_id, *part))
            out.update({int(u): float(t) for u, t in rows})
        return out

    async def urlauth_key(self, mailbox_id: int, create: bool) -> bytes | None:
        rows = await self._query(
            "SELECT key FROM imap_urlauth_keys WHERE mailbox_id=?", (mailbox_id,))
        if rows or not create:
            return bytes(rows[0][0]) if rows else None
        key = secrets.token_bytes(32)

        def write(conn: sqlite3.Connection, _blob: int | None) -> None:
            # the first writer wins; the mailbox must still exist
            conn.execute("INSERT OR IGNORE INTO imap_urlauth_keys SELECT ?, ? "
                         "WHERE EXISTS (SELECT 1 FROM mailboxes WHERE id=?)",
                         (mailbox_id, key, mailbox_id))

        await self._write(write)
        return await self.urlauth_key(mailbox_id, False)

    async def reset_urlauth_keys(self, mailbox_ids: Sequence[int]) -> None:
        ids = [(i,) for i in mailbox_ids]

        def write(conn: sqlite3.Connection, _blob: int | None) -> None:
            conn.executemany("DELETE FROM imap_urlauth_keys WHERE mailbox_id=?", ids)

        if ids:
            await self._write(write)

    async def get_acl(self, mailbox_id: int) -> dict[str, str]:
        rows = await self._query(
            "SELECT identifier, rights FROM imap_acl WHERE mailbox_id=?", (mailbox_id,))
        return {str(i): str(r) for i, r in rows}

    async def set_acl(self, mailbox_id: int, identifier: str, rights: str | None) -> None:
        def write(conn: sqlite3.Connection, _blob: int | None) -> None:
            if not rights:
                conn.execute("DELETE FROM imap_acl WHERE mailbox_id=? AND identifier=?",
                             (mailbox_id, identifier))
                return
            conn.execute("INSERT OR REPLACE INTO imap_acl SELECT ?, ?, ? "
                         "WHERE EXISTS (SELECT 1 FROM mailboxes WHERE id=?)",
                         (mailbox_id, identifier, "".join(sorted(set(rights))), mailbox_id))

        await self._write(write)

    async def acl_grants(self, identifiers: Sequence[str]) -> list[AclGrant]:
        wanted = list(dict.fromkeys(identifiers))
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        # every LIST asks, and usually there is no grant: on the loop, unsorted (the
        # identifier index bounds the walk), sorted here like the ORDER BY would
        rows = await self._query_small(
            "SELECT a.mailbox_id, m.account_id, m.name, a.identifier, a.rights "  # noqa: S608
            "FROM imap_acl a JOIN mailboxes m ON m.id = a.mailbox_id "
            f"WHERE a.identifier IN ({marks})",
            wanted)  # only "?" placeholders are formatted in
        rows.sort(key=lambda r: (r[1], r[2]))
        return [AclGrant(int(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]
