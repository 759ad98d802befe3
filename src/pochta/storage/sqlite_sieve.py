"""Sieve scripts and the vacation/duplicate memory in the SQLite store (``SieveStore``,
interfaces_sieve.py). Scripts go when their account goes (a trigger)."""

from __future__ import annotations

import sqlite3
import time

from .interfaces import AlreadyExists, NotFound
from .interfaces_sieve import ScriptActive, SieveScriptInfo
from .sqlite_base import Migration, SQLiteFeature

MIGRATIONS = [
    Migration("sieve-1", """
CREATE TABLE IF NOT EXISTS sieve_scripts(
    account_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    PRIMARY KEY (account_id, name));
CREATE TABLE IF NOT EXISTS sieve_memory(key TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sieve_memory_expires ON sieve_memory(expires);
CREATE TRIGGER IF NOT EXISTS sieve_account_gone AFTER DELETE ON accounts BEGIN
    DELETE FROM sieve_scripts WHERE account_id = old.id;
END;
"""),
]


class SQLiteSieveMixin(SQLiteFeature):
    async def put_sieve_script(self, account_id: int, name: str, source: str) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute(
                "INSERT INTO sieve_scripts(account_id, name, source, updated) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(account_id, name) DO UPDATE SET "
                "source=excluded.source, updated=excluded.updated",
                (account_id, name, source, time.time()))

        await self._write(fn)

    async def get_sieve_script(self, account_id: int, name: str) -> str | None:
        rows = await self._query(
            "SELECT source FROM sieve_scripts WHERE account_id=? AND name=?", (account_id, name))
        return str(rows[0][0]) if rows else None

    async def list_sieve_scripts(self, account_id: int) -> list[SieveScriptInfo]:
        rows = await self._query(
            "SELECT name, active, length(CAST(source AS BLOB)) FROM sieve_scripts "
            "WHERE account_id=? ORDER BY name", (account_id,))
        return [SieveScriptInfo(str(n), bool(a), int(s)) for n, a, s in rows]

    async def delete_sieve_script(self, account_id: int, name: str) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            row = conn.execute("SELECT active FROM sieve_scripts WHERE account_id=? AND name=?",
                               (account_id, name)).fetchone()
            if row is None:
                raise NotFound(f"no script {name!r}")
            if row[0]:
                raise ScriptActive(f"script {name!r} is active")
            conn.execute("DELETE FROM sieve_scripts WHERE account_id=? AND name=?",
                         (account_id, name))

        await self._write(fn)

    async def rename_sieve_script(self, account_id: int, old: str, new: str) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            if conn.execute("SELECT 1 FROM sieve_scripts WHERE account_id=? AND name=?",
                            (account_id, old)).fetchone() is None:
                raise NotFound(f"no script {old!r}")
            if old == new:
                return
            if conn.execute("SELECT 1 FROM sieve_scripts WHERE account_id=? AND name=?",
                            (account_id, new)).fetchone() is not None:
                raise AlreadyExists(f"script {new!r} exists")
            conn.execute("UPDATE sieve_scripts SET name=? WHERE account_id=? AND name=?",
                         (new, account_id, old))

        await self._write(fn)

    async def set_active_sieve_script(self, account_id: int, name: str | None) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            if name is not None and conn.execute(
                    "SELECT 1 FROM sieve_scripts WHERE account_id=? AND name=?",
                    (account_id, name)).fetchone() is None:
                raise NotFound(f"no script {name!r}")
            conn.execute("UPDATE sieve_scripts SET active=(name IS ?) WHERE account_id=?",
                         (name, account_id))

        await self._write(fn)

    async def get_active_sieve_script(self, account_id: int) -> tuple[str, str] | None:
        rows = await self._query(
            "SELECT name, source FROM sieve_scripts WHERE account_id=? AND active=1",
            (account_id,))
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    async def remember_once(self, key: str, ttl: float, now: float | None = None) -> bool:
        at = time.time() if now is None else now

        def fn(conn: sqlite3.Connection, _: int | None) -> bool:
            row = conn.execute("SELECT expires FROM sieve_memory WHERE key=?",
                               (key,)).fetchone()
            if row is not None and row[0] > at:
                return False
            conn.execute("INSERT OR REPLACE INTO sieve_memory(key, expires) VALUES (?, ?)",
                         (key, at + ttl))
            # forget a few expired entries on the way
            conn.execute("DELETE FROM sieve_memory WHERE rowid IN (SELECT rowid FROM "
                         "sieve_memory WHERE expires <= ? LIMIT 16)", (at,))
            return True

        return await self._write(fn)

    async def is_remembered(self, key: str, now: float | None = None) -> bool:
        at = time.time() if now is None else now
        rows = await self._query("SELECT 1 FROM sieve_memory WHERE key=? AND expires > ?",
                                 (key, at))
        return bool(rows)
