"""SQLite implementation of ``SpamStore`` (interfaces_spam.py): greylisting, the learning
filter's token counts and held accounts."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from .interfaces_spam import AccountHold, GreyEntry, SenderRule
from .sqlite_base import Migration, SQLiteFeature

MIGRATIONS = [
    Migration("spam-1", """
CREATE TABLE IF NOT EXISTS greylist (
    triplet TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    passed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS greylist_last_seen ON greylist(last_seen);
CREATE TABLE IF NOT EXISTS greylist_clients (
    client TEXT PRIMARY KEY,
    passes INTEGER NOT NULL,
    last_pass REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bayes_totals (
    account_id INTEGER PRIMARY KEY,
    spam INTEGER NOT NULL DEFAULT 0,
    ham INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS bayes_tokens (
    account_id INTEGER NOT NULL,
    token TEXT NOT NULL,
    spam INTEGER NOT NULL DEFAULT 0,
    ham INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, token)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bayes_learnt (
    account_id INTEGER NOT NULL,
    message_key TEXT NOT NULL,
    spam INTEGER NOT NULL,
    PRIMARY KEY (account_id, message_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS account_holds (
    address TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    since REAL NOT NULL
);
"""),
    # per-account allow/block lists; an account's own data goes with it (SQLite may give
    # a new account the id of the last one removed: it must not inherit anything)
    Migration("spam-2", """
CREATE TABLE IF NOT EXISTS sender_rules (
    account_id INTEGER NOT NULL,
    pattern TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('allow', 'block')),
    PRIMARY KEY (account_id, pattern)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS spam_account_gone AFTER DELETE ON accounts BEGIN
    DELETE FROM sender_rules WHERE account_id = old.id;
    DELETE FROM bayes_totals WHERE account_id = old.id;
    DELETE FROM bayes_tokens WHERE account_id = old.id;
    DELETE FROM bayes_learnt WHERE account_id = old.id;
END;
"""),
]

# SQLite's default limit of host parameters per statement is 32766; stay well below.
_CHUNK = 500


class SQLiteSpamMixin(SQLiteFeature):
    # --- greylisting --------------------------------------------------------------------

    async def greylist_touch(self, triplet: str, now: float, stale_before: float) -> GreyEntry:
        def fn(conn: sqlite3.Connection, _: int | None) -> GreyEntry:
            row = conn.execute(
                "SELECT first_seen, last_seen, passed FROM greylist WHERE triplet=?",
                (triplet,)).fetchone()
            if row is None or (not row[2] and row[1] < stale_before):
                conn.execute("INSERT OR REPLACE INTO greylist VALUES (?,?,?,0)",
                             (triplet, now, now))
                return GreyEntry(now, now, False)
            conn.execute("UPDATE greylist SET last_seen=? WHERE triplet=?", (now, triplet))
            return GreyEntry(float(row[0]), now, bool(row[2]))

        return await self._write(fn)

    async def greylist_pass(self, triplet: str, client: str, now: float) -> int:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            row = conn.execute("SELECT passed FROM greylist WHERE triplet=?",
                               (triplet,)).fetchone()
            first = row is None or not row[0]
            conn.execute(
                "INSERT INTO greylist VALUES (?,?,?,1) ON CONFLICT(triplet) DO UPDATE SET "
                "passed=1, last_seen=excluded.last_seen", (triplet, now, now))
            if first:
                conn.execute(
                    "INSERT INTO greylist_clients VALUES (?,1,?) ON CONFLICT(client) DO UPDATE "
                    "SET passes=passes+1, last_pass=excluded.last_pass", (client, now))
            found = conn.execute("SELECT passes FROM greylist_clients WHERE client=?",
                                 (client,)).fetchone()
            return int(found[0]) if found else 0

        return await self._write(fn)

    async def greylist_client_passes(self, client: str, not_before: float) -> int:
        rows = await self._query(
            "SELECT passes FROM greylist_clients WHERE client=? AND last_pass>=?",
            (client, not_before))
        return int(rows[0][0]) if rows else 0

    async def greylist_purge(self, before: float) -> int:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            cur = conn.execute("DELETE FROM greylist WHERE last_seen<?", (before,))
            conn.execute("DELETE FROM greylist_clients WHERE last_pass<?", (before,))
            return int(cur.rowcount)

        return await self._write(fn)

    # --- the learning filter ------------------------------------------------------------

    async def bayes_totals(self, account_id: int) -> tuple[int, int]:
        rows = await self._query("SELECT spam, ham FROM bayes_totals WHERE account_id=?",
                                 (account_id,))
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def bayes_tokens(
        self, account_id: int, tokens: Sequence[str]
    ) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        unique = list(dict.fromkeys(tokens))
        for i in range(0, len(unique), _CHUNK):
            part = unique[i:i + _CHUNK]
            marks = ",".join("?" * len(part))
            rows = await self._query(
                f"SELECT token, spam, ham FROM bayes_tokens WHERE account_id=? "  # noqa: S608
                f"AND token IN ({marks})", (account_id, *part))
            for token, spam, ham in rows:
                out[str(token)] = (int(spam), int(ham))
        return out

    async def bayes_train(
        self, account_id: int, message_key: str, tokens: Sequence[str], spam: bool
    ) -> bool:
        unique = list(dict.fromkeys(tokens))

        def apply(conn: sqlite3.Connection, as_spam: bool, delta: int) -> None:
            column = "spam" if as_spam else "ham"
            conn.execute("INSERT OR IGNORE INTO bayes_totals(account_id) VALUES (?)",
                         (account_id,))
            conn.execute(f"UPDATE bayes_totals SET {column}=max(0, {column}+?) "  # noqa: S608
                         "WHERE account_id=?", (delta, account_id))
            if delta > 0:
                conn.executemany(
                    f"INSERT INTO bayes_tokens(account_id, token, {column}) VALUES (?,?,1) "  # noqa: S608
                    f"ON CONFLICT(account_id, token) DO UPDATE SET {column}={column}+1",
                    [(account_id, t) for t in unique])
            else:
                conn.executemany(
                    f"UPDATE bayes_tokens SET {column}=max(0, {column}-1) "  # noqa: S608
                    "WHERE account_id=? AND token=?",
                    [(account_id, t) for t in unique])

        def fn(conn: sqlite3.Connection, _: int | None) -> bool:
            row = conn.execute(
                "SELECT spam FROM bayes_learnt WHERE account_id=? AND message_key=?",
                (account_id, message_key)).fetchone()
            if row is not None and bool(row[0]) == spam:
                return False
            if row is not None:
                apply(conn, not spam, -1)
            apply(conn, spam, 1)
            conn.execute("INSERT OR REPLACE INTO bayes_learnt VALUES (?,?,?)",
                         (account_id, message_key, int(spam)))
            return True

        return await self._write(fn)

    async def bayes_forget(self, account_id: int) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            for table in ("bayes_totals", "bayes_tokens", "bayes_learnt"):
                conn.execute(f"DELETE FROM {table} WHERE account_id=?",  # noqa: S608
                             (account_id,))

        await self._write(fn)

    async def mailbox_owner(self, mailbox_id: int) -> tuple[int, str | None] | None:
        rows = await self._query("SELECT account_id, special_use FROM mailboxes WHERE id=?",
                                 (mailbox_id,))
        if not rows:
            return None
        return int(rows[0][0]), (str(rows[0][1]) if rows[0][1] else None)

    async def message_blobs(self, mailbox_id: int, uids: Sequence[int]) -> dict[int, int]:
        out: dict[int, int] = {}
        wanted = sorted(set(uids))
        for i in range(0, len(wanted), _CHUNK):
            part = wanted[i:i + _CHUNK]
            rows = await self._query(
                f"SELECT uid, blob_id FROM messages WHERE mailbox_id=? AND uid IN "  # noqa: S608
                f"({','.join('?' * len(part))})", (mailbox_id, *part))
            out.update((int(u), int(b)) for u, b in rows)
        return out

    # --- held accounts ------------------------------------------------------------------

    async def hold_account(self, address: str, reason: str, now: float) -> bool:
        def fn(conn: sqlite3.Connection, _: int | None) -> bool:
            cur = conn.execute("INSERT OR IGNORE INTO account_holds VALUES (?,?,?)",
                               (address, reason, now))
            return cur.rowcount == 1

        return await self._write(fn)

    async def account_hold(self, address: str) -> AccountHold | None:
        rows = await self._query(
            "SELECT address, reason, since FROM account_holds WHERE address=?", (address,))
        return AccountHold(str(rows[0][0]), str(rows[0][1]), float(rows[0][2])) if rows else None

    async def release_account(self, address: str) -> bool:
        def fn(conn: sqlite3.Connection, _: int | None) -> bool:
            cur = conn.execute("DELETE FROM account_holds WHERE address=?", (address,))
            return cur.rowcount == 1

        return await self._write(fn)

    async def list_holds(self) -> list[AccountHold]:
        rows = await self._query("SELECT address, reason, since FROM account_holds "
                                 "ORDER BY since")
        return [AccountHold(str(a), str(r), float(s)) for a, r, s in rows]

    # --- allow and block lists ----------------------------------------------------------

    async def sender_rules(self, account_ids: Sequence[int]) -> dict[int, list[SenderRule]]:
        ids = sorted(set(account_ids))
        out: dict[int, list[SenderRule]] = {}
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i:i + _CHUNK]
            marks = ",".join("?" * len(chunk))  # placeholders only: the ids are parameters
            query = (f"SELECT account_id, pattern, action FROM sender_rules "  # noqa: S608
                     f"WHERE account_id IN ({marks}) ORDER BY account_id, pattern")
            rows = await self._query(query, chunk)
            for account_id, pattern, action in rows:
                out.setdefault(int(account_id), []).append(SenderRule(pattern, action))
        return out

    async def set_sender_rule(self, account_id: int, pattern: str, action: str | None
                              ) -> bool:
        def fn(conn: sqlite3.Connection, _: int | None) -> bool:
            if action is None:
                return conn.execute(
                    "DELETE FROM sender_rules WHERE account_id=? AND pattern=?",
                    (account_id, pattern)).rowcount > 0
            conn.execute(
                "INSERT INTO sender_rules VALUES (?,?,?) ON CONFLICT(account_id, pattern) "
                "DO UPDATE SET action=excluded.action", (account_id, pattern, action))
            return True

        return await self._write(fn)
