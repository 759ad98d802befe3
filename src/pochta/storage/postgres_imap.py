"""PostgreSQL part of the IMAP extensions' storage (interfaces_imap.py): METADATA entries,
save dates and SORT/THREAD keys; the twin of sqlite_imap.py, held to the same conformance
tests. Save dates are recorded by a trigger on ``messages`` inserts; entries, save dates
and keys go with their mailbox, message or blob."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping, Sequence

from .interfaces import NotFound
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
from .postgres_base import PostgresFeature, Transaction

MIGRATION = """
CREATE TABLE imap_metadata(
    owner bigint NOT NULL,
    mailbox_id bigint NOT NULL,
    entry text NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY(mailbox_id, owner, entry));
CREATE TABLE imap_savedate(
    mailbox_id bigint NOT NULL, uid bigint NOT NULL, saved double precision NOT NULL,
    PRIMARY KEY(mailbox_id, uid),
    FOREIGN KEY(mailbox_id, uid) REFERENCES messages ON DELETE CASCADE ON UPDATE CASCADE);
CREATE FUNCTION pochta_imap_saved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO imap_savedate VALUES (NEW.mailbox_id, NEW.uid,
        extract(epoch FROM clock_timestamp()))
        ON CONFLICT (mailbox_id, uid) DO UPDATE SET saved = excluded.saved;
    RETURN NULL;
END $$;
CREATE TRIGGER imap_savedate_insert AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION pochta_imap_saved();
CREATE FUNCTION pochta_imap_mailbox_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM imap_metadata WHERE mailbox_id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER imap_metadata_mailbox_delete AFTER DELETE ON mailboxes
    FOR EACH ROW EXECUTE FUNCTION pochta_imap_mailbox_gone();
CREATE TABLE imap_sortkeys(
    blob_id bigint PRIMARY KEY REFERENCES blobs ON DELETE CASCADE,
    date double precision, subject text NOT NULL, reply boolean NOT NULL,
    from_ text NOT NULL, to_ text NOT NULL, cc text NOT NULL, display_from text NOT NULL,
    display_to text NOT NULL, message_id text NOT NULL, refs text NOT NULL);
"""

# URLAUTH keys (RFC 4467) and ACL grants (RFC 4314): postgres.MIGRATIONS appends it
MIGRATION_2 = """
CREATE TABLE imap_urlauth_keys(
    mailbox_id bigint PRIMARY KEY REFERENCES mailboxes ON DELETE CASCADE,
    key bytea NOT NULL);
CREATE TABLE imap_acl(
    mailbox_id bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
    identifier text NOT NULL, rights text NOT NULL,
    PRIMARY KEY(mailbox_id, identifier));
CREATE INDEX imap_acl_identifier ON imap_acl(identifier);
"""

# the first THREAD after a restart without reading every message's keys (issue 15)
THREAD_SNAPSHOT_MIGRATION = """
CREATE TABLE imap_thread_snapshot(
    mailbox_id bigint PRIMARY KEY REFERENCES mailboxes ON DELETE CASCADE,
    uidvalidity bigint NOT NULL, uid_upto bigint NOT NULL, data bytea NOT NULL);
"""

# the first SORT after a restart without the store sorting every message (issue 15)
SORT_SNAPSHOT_MIGRATION = """
CREATE TABLE imap_sort_snapshot(
    mailbox_id bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
    criteria text NOT NULL, uidvalidity bigint NOT NULL, uid_upto bigint NOT NULL,
    written bigint NOT NULL, data bytea NOT NULL, PRIMARY KEY(mailbox_id, criteria));
"""

# every IMAP command asks what was expunged since its last look (changes_since)
EXPUNGED_MODSEQ_MIGRATION = """
CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged(mailbox_id, modseq);
"""

# SEARCH FROM/TO/CC/BCC/SUBJECT without reading every message (server/imap_message.py)
SEARCH_FIELDS_MIGRATION = """
CREATE TABLE IF NOT EXISTS imap_searchfields(
    blob_id bigint PRIMARY KEY REFERENCES blobs ON DELETE CASCADE, fields text NOT NULL);
"""

TABLES = ("imap_metadata", "imap_savedate", "imap_sortkeys", "imap_searchfields",
          "imap_urlauth_keys", "imap_acl", "imap_sort_snapshot")

# SORT criteria (RFC 5256, 5957) as columns of messages m joined with imap_sortkeys k;
# COLLATE "C": strings compare by code point, as SQLite and Python compare them
SORT_COLUMNS = {
    "DATE": "coalesce(k.date, m.internaldate)", "ARRIVAL": "m.internaldate",
    "SIZE": "m.size", "SUBJECT": 'k.subject COLLATE "C"', "FROM": 'k.from_ COLLATE "C"',
    "TO": 'k.to_ COLLATE "C"', "CC": 'k.cc COLLATE "C"',
    "DISPLAYFROM": 'k.display_from COLLATE "C"', "DISPLAYTO": 'k.display_to COLLATE "C"',
}


class PostgresImapState(PostgresFeature):
    async def read_blob(self, blob_id: int) -> bytes:
        raise NotImplementedError  # PostgresStore's

    async def get_metadata(self, account_id: int, mailbox_id: int) -> dict[str, bytes]:
        rows = await self._query(
            "SELECT entry, value FROM imap_metadata WHERE mailbox_id=%s AND owner IN (0, %s)",
            (mailbox_id, account_id))
        return {str(entry): bytes(value) for entry, value in rows}

    async def account_metadata(self, account_id: int) -> dict[int, dict[str, bytes]]:
        rows = await self._query(
            "SELECT mailbox_id, entry, value FROM imap_metadata WHERE owner IN (0, %s) AND "
            "(mailbox_id = 0 OR mailbox_id IN (SELECT id FROM mailboxes WHERE account_id=%s))",
            (account_id, account_id))
        out: dict[int, dict[str, bytes]] = {}
        for mailbox_id, entry, value in rows:
            out.setdefault(int(mailbox_id), {})[str(entry)] = bytes(value)
        return out

    async def set_metadata(
        self, account_id: int, mailbox_id: int, values: Mapping[str, bytes | None]
    ) -> None:
        items = [(e.lower(), v) for e, v in values.items()]

        async def fn(tx: Transaction) -> None:
            for entry, value in items:
                owner = account_id if entry.startswith("/private/") else 0
                if value is None:
                    await tx.run("DELETE FROM imap_metadata WHERE mailbox_id=%s AND owner=%s "
                                 "AND entry=%s", (mailbox_id, owner, entry))
                else:
                    await tx.run(
                        "INSERT INTO imap_metadata VALUES (%s, %s, %s, %s) ON CONFLICT "
                        "(mailbox_id, owner, entry) DO UPDATE SET value=excluded.value",
                        (owner, mailbox_id, entry, value))

        await self._tx(fn)

    async def read_blobs(self, blob_ids: Sequence[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for blob_id in dict.fromkeys(blob_ids):
            with contextlib.suppress(NotFound):
                out[blob_id] = await self.read_blob(blob_id)
        return out

    async def get_sort_keys(self, blob_ids: Sequence[int]) -> dict[int, SortKeys]:
        rows = await self._query(
            "SELECT blob_id, date, subject, reply, from_, to_, cc, display_from, display_to, "
            "message_id, refs FROM imap_sortkeys WHERE blob_id = ANY(%s)",
            (list(dict.fromkeys(blob_ids)),))
        return {int(r[0]): SortKeys(r[1], r[2], bool(r[3]), *r[4:]) for r in rows}

    async def get_search_fields(self, blob_ids: Sequence[int]) -> dict[int, str]:
        rows = await self._query(
            "SELECT blob_id, fields FROM imap_searchfields WHERE blob_id = ANY(%s)",
            (list(dict.fromkeys(blob_ids)),))
        return {int(r[0]): str(r[1]) for r in rows}

    async def kept_search_fields(
        self, mailbox_id: int, containing: str
    ) -> dict[int, str | None]:
        rows = await self._query(
            "SELECT m.blob_id, CASE WHEN strpos(f.fields, %s) > 0 THEN f.fields END "
            "FROM messages m JOIN imap_searchfields f ON f.blob_id = m.blob_id "
            "WHERE m.mailbox_id = %s", (containing, mailbox_id))
        return {int(r[0]): r[1] for r in rows}

    async def kept_search_uids(
        self, mailbox_id: int, terms: Sequence[tuple[int, str]]
    ) -> tuple[list[int], list[int]]:
        if not terms or any(not 0 <= i < SEARCH_FIELD_PARTS for i, _ in terms):
            raise ValueError("kept_search_uids: no terms, or a part that is not kept")
        # the whole text first (one scan rules out most rows), then the field's part
        where = " AND ".join(
            "strpos(f.fields, %s) > 0 AND strpos(split_part(f.fields, chr(30), "
            f"{int(i) + 1}), %s) > 0" for i, _ in terms)
        args = [x for _, needle in terms for x in (needle, needle)]
        # one walk of the mailbox: the matches and the messages with nothing kept
        rows = await self._query(
            "SELECT m.uid, f.blob_id IS NULL FROM messages m LEFT JOIN "  # noqa: S608
            "imap_searchfields f ON f.blob_id = m.blob_id WHERE m.mailbox_id = %s "
            f"AND (f.blob_id IS NULL OR ({where})) ORDER BY m.uid",  # fixed SQL
            (mailbox_id, *args))
        return ([int(u) for u, unkept in rows if not unkept],
                [int(u) for u, unkept in rows if unkept])

    async def unkept_search_blobs(
        self, after: int, limit: int
    ) -> tuple[list[tuple[int, int]], int]:
        top = await self._query("SELECT coalesce(max(blob_id), 0) FROM messages")
        rows = await self._query(
            "SELECT DISTINCT m.blob_id, m.size FROM messages m WHERE m.blob_id > %s "
            "AND NOT EXISTS (SELECT 1 FROM imap_searchfields f WHERE f.blob_id = "
            "m.blob_id) ORDER BY m.blob_id LIMIT %s", (after, limit))
        return [(int(b), int(n)) for b, n in rows], int(top[0][0])

    async def put_search_fields(self, fields: Mapping[int, str]) -> None:
        ids = list(fields)
        if not ids:
            return

        async def fn(tx: Transaction) -> None:
            # one statement for the batch; a blob deleted meanwhile is left out
            await tx.run(
                "INSERT INTO imap_searchfields SELECT f.b, f.t FROM unnest(%s::bigint[], "
                "%s::text[]) AS f(b, t) JOIN blobs ON blobs.id = f.b "
                "ON CONFLICT (blob_id) DO UPDATE SET fields = excluded.fields",
                (ids, [fields[b] for b in ids]))

        await self._tx(fn)

    async def sorted_uids(
        self, mailbox_id: int, criteria: Sequence[tuple[str, bool]]
    ) -> list[int]:
        order = ", ".join(SORT_COLUMNS[name] + (" DESC" if rev else "")
                          for name, rev in criteria)
        rows = await self._query(
            "SELECT m.uid FROM messages m JOIN imap_sortkeys k ON k.blob_id = m.blob_id "  # noqa: S608
            f"WHERE m.mailbox_id=%s ORDER BY {order}, m.uid",  # only fixed column names
            (mailbox_id,))
        return [int(r[0]) for r in rows]

    async def put_sort_keys(self, keys: Mapping[int, SortKeys]) -> None:
        rows = [(b, k.date, k.subject, k.reply, k.from_, k.to, k.cc, k.display_from,
                 k.display_to, k.message_id, k.references) for b, k in keys.items()]
        # PostgreSQL text holds no NUL: such a message's keys are not kept (SORT computes
        # them from its header each time), as its SEARCH texts are not
        rows = [r for r in rows if not any(isinstance(v, str) and "\x00" in v for v in r)]
        if not rows:
            return

        async def fn(tx: Transaction) -> None:
            for row in rows:
                # a blob deleted meanwhile has no row to describe: keep only live ones
                await tx.run(
                    "INSERT INTO imap_sortkeys SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                    "%s, %s WHERE EXISTS (SELECT 1 FROM blobs WHERE id = %s) ON CONFLICT "
                    "(blob_id) DO UPDATE SET date=excluded.date, subject=excluded.subject, "
                    "reply=excluded.reply, from_=excluded.from_, to_=excluded.to_, "
                    "cc=excluded.cc, display_from=excluded.display_from, "
                    "display_to=excluded.display_to, message_id=excluded.message_id, "
                    "refs=excluded.refs", (*row, row[0]))

        await self._tx(fn)

    async def thread_columns(
        self, mailbox_id: int, uids: Sequence[int] | None = None
    ) -> ThreadColumns:
        sql = ("SELECT m.uid, coalesce(k.date, m.internaldate), k.subject, k.reply, "
               "k.message_id, k.refs FROM messages m JOIN imap_sortkeys k "
               "ON k.blob_id = m.blob_id WHERE m.mailbox_id=%s")
        if uids is None:
            rows = await self._query(sql + " ORDER BY m.uid", (mailbox_id,))
        else:
            rows = await self._query(sql + " AND m.uid = ANY(%s) ORDER BY m.uid",
                                     (mailbox_id, sorted(set(uids))))
        if not rows:
            return ThreadColumns([], [], [], [], [], [])
        uid, dates, subjects, replies, mids, refs = map(list, zip(*rows, strict=True))
        return ThreadColumns([int(u) for u in uid], [float(d) for d in dates], subjects,
                             [bool(r) for r in replies], mids, refs)

    async def get_thread_snapshot(self, mailbox_id: int) -> ThreadSnapshot | None:
        rows = await self._query("SELECT uidvalidity, uid_upto, data FROM "
                                 "imap_thread_snapshot WHERE mailbox_id=%s", (mailbox_id,))
        if not rows:
            return None
        validity, upto, data = rows[0]
        return ThreadSnapshot(int(validity), int(upto), bytes(data))

    async def put_thread_snapshot(self, mailbox_id: int, snapshot: ThreadSnapshot) -> None:
        if len(snapshot.data) > THREAD_SNAPSHOT_MAX:
            raise ValueError("THREAD snapshot too big")

        async def fn(tx: Transaction) -> None:
            await tx.run(
                "INSERT INTO imap_thread_snapshot SELECT %s, %s, %s, %s WHERE EXISTS "
                "(SELECT 1 FROM mailboxes WHERE id=%s) ON CONFLICT (mailbox_id) DO UPDATE "
                "SET uidvalidity=excluded.uidvalidity, uid_upto=excluded.uid_upto, "
                "data=excluded.data",
                (mailbox_id, snapshot.uidvalidity, snapshot.uid_upto, snapshot.data,
                 mailbox_id))

        await self._tx(fn)

    async def get_sort_snapshot(self, mailbox_id: int, criteria: str) -> SortSnapshot | None:
        rows = await self._query("SELECT uidvalidity, uid_upto, data FROM imap_sort_snapshot "
                                 "WHERE mailbox_id=%s AND criteria=%s", (mailbox_id, criteria))
        if not rows:
            return None
        validity, upto, data = rows[0]
        return SortSnapshot(int(validity), int(upto), bytes(data))

    async def put_sort_snapshot(
        self, mailbox_id: int, criteria: str, snapshot: SortSnapshot
    ) -> None:
        if len(snapshot.data) > SORT_SNAPSHOT_MAX or len(criteria) > SORT_CRITERIA_MAX:
            raise ValueError("SORT snapshot too big")

        async def fn(tx: Transaction) -> None:
            await tx.run(
                "INSERT INTO imap_sort_snapshot SELECT %s, %s, %s, %s, (SELECT "
                "coalesce(max(written), 0) + 1 FROM imap_sort_snapshot WHERE mailbox_id=%s), "
                "%s WHERE EXISTS (SELECT 1 FROM mailboxes WHERE id=%s) ON CONFLICT "
                "(mailbox_id, criteria) DO UPDATE SET uidvalidity=excluded.uidvalidity, "
                "uid_upto=excluded.uid_upto, written=excluded.written, data=excluded.data",
                (mailbox_id, criteria, snapshot.uidvalidity, snapshot.uid_upto, mailbox_id,
                 snapshot.data, mailbox_id))
            await tx.run(
                "DELETE FROM imap_sort_snapshot WHERE mailbox_id=%s AND criteria NOT IN "
                "(SELECT criteria FROM imap_sort_snapshot WHERE mailbox_id=%s "
                "ORDER BY written DESC LIMIT %s)", (mailbox_id, mailbox_id, SORT_SNAPSHOTS))

        await self._tx(fn)

    async def save_dates(self, mailbox_id: int, uids: Sequence[int]) -> dict[int, float]:
        rows = await self._query(
            "SELECT uid, saved FROM imap_savedate WHERE mailbox_id=%s AND uid = ANY(%s)",
            (mailbox_id, list(uids)))
        return {int(u): float(t) for u, t in rows}

    async def urlauth_key(self, mailbox_id: int, create: bool) -> bytes | None:
        rows = await self._query(
            "SELECT key FROM imap_urlauth_keys WHERE mailbox_id=%s", (mailbox_id,))
        if rows or not create:
            return bytes(rows[0][0]) if rows else None
        key = secrets.token_bytes(32)

        async def fn(tx: Transaction) -> None:
            # the first writer wins; the mailbox must still exist
            await tx.run("INSERT INTO imap_urlauth_keys SELECT %s, %s WHERE EXISTS "
                         "(SELECT 1 FROM mailboxes WHERE id=%s) ON CONFLICT DO NOTHING",
                         (mailbox_id, key, mailbox_id))

        await self._tx(fn)
        return await self.urlauth_key(mailbox_id, False)

    async def reset_urlauth_keys(self, mailbox_ids: Sequence[int]) -> None:
        ids = list(mailbox_ids)

        async def fn(tx: Transaction) -> None:
            await tx.run("DELETE FROM imap_urlauth_keys WHERE mailbox_id = ANY(%s)", (ids,))

        if ids:
            await self._tx(fn)

    async def get_acl(self, mailbox_id: int) -> dict[str, str]:
        rows = await self._query(
            "SELECT identifier, rights FROM imap_acl WHERE mailbox_id=%s", (mailbox_id,))
        return {str(i): str(r) for i, r in rows}

    async def set_acl(self, mailbox_id: int, identifier: str, rights: str | None) -> None:
        async def fn(tx: Transaction) -> None:
            if not rights:
                await tx.run("DELETE FROM imap_acl WHERE mailbox_id=%s AND identifier=%s",
                             (mailbox_id, identifier))
                return
            await tx.run(
                "INSERT INTO imap_acl SELECT %s, %s, %s WHERE EXISTS (SELECT 1 FROM "
                "mailboxes WHERE id=%s) ON CONFLICT (mailbox_id, identifier) DO UPDATE "
                "SET rights=excluded.rights",
                (mailbox_id, identifier, "".join(sorted(set(rights))), mailbox_id))

        await self._tx(fn)

    async def acl_grants(self, identifiers: Sequence[str]) -> list[AclGrant]:
        rows = await self._query(
            "SELECT a.mailbox_id, m.account_id, m.name, a.identifier, a.rights "
            "FROM imap_acl a JOIN mailboxes m ON m.id = a.mailbox_id "
            "WHERE a.identifier = ANY(%s) ORDER BY m.account_id, m.name",
            (list(dict.fromkeys(identifiers)),))
        return [AclGrant(int(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]
