"""Sieve scripts and the vacation/duplicate memory in the PostgreSQL store (``SieveStore``,
interfaces_sieve.py); the twin of sqlite_sieve.py, held to the same conformance tests."""

from __future__ import annotations

import time

from .interfaces import AlreadyExists, NotFound
from .interfaces_sieve import ScriptActive, SieveScriptInfo
from .postgres_base import PostgresFeature, Transaction

MIGRATION = """
CREATE TABLE sieve_scripts(
    account_id bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    name text NOT NULL,
    source text NOT NULL,
    active boolean NOT NULL DEFAULT false,
    updated double precision NOT NULL,
    PRIMARY KEY (account_id, name));
CREATE TABLE sieve_memory(key text PRIMARY KEY, expires double precision NOT NULL);
CREATE INDEX sieve_memory_expires ON sieve_memory(expires);
"""

TABLES = ("sieve_scripts", "sieve_memory")


class PostgresSieveMixin(PostgresFeature):
    async def put_sieve_script(self, account_id: int, name: str, source: str) -> None:
        async def fn(tx: Transaction) -> None:
            await tx.run(
                "INSERT INTO sieve_scripts(account_id, name, source, updated) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT(account_id, name) DO UPDATE SET "
                "source=excluded.source, updated=excluded.updated",
                (account_id, name, source, time.time()))

        await self._tx(fn)

    async def get_sieve_script(self, account_id: int, name: str) -> str | None:
        rows = await self._query(
            "SELECT source FROM sieve_scripts WHERE account_id=%s AND name=%s",
            (account_id, name))
        return str(rows[0][0]) if rows else None

    async def list_sieve_scripts(self, account_id: int) -> list[SieveScriptInfo]:
        rows = await self._query(
            "SELECT name, active, octet_length(source) FROM sieve_scripts "
            "WHERE account_id=%s ORDER BY name COLLATE \"C\"", (account_id,))
        return [SieveScriptInfo(str(n), bool(a), int(s)) for n, a, s in rows]

    async def delete_sieve_script(self, account_id: int, name: str) -> None:
        async def fn(tx: Transaction) -> None:
            row = await tx.one("SELECT active FROM sieve_scripts WHERE account_id=%s AND "
                               "name=%s FOR UPDATE", (account_id, name))
            if row is None:
                raise NotFound(f"no script {name!r}")
            if row[0]:
                raise ScriptActive(f"script {name!r} is active")
            await tx.run("DELETE FROM sieve_scripts WHERE account_id=%s AND name=%s",
                         (account_id, name))

        await self._tx(fn)

    async def rename_sieve_script(self, account_id: int, old: str, new: str) -> None:
        async def fn(tx: Transaction) -> None:
            if await tx.one("SELECT 1 FROM sieve_scripts WHERE account_id=%s AND name=%s",
                            (account_id, old)) is None:
                raise NotFound(f"no script {old!r}")
            if old == new:
                return
            if await tx.one("SELECT 1 FROM sieve_scripts WHERE account_id=%s AND name=%s",
                            (account_id, new)) is not None:
                raise AlreadyExists(f"script {new!r} exists")
            await tx.run("UPDATE sieve_scripts SET name=%s WHERE account_id=%s AND name=%s",
                         (new, account_id, old))

        await self._tx(fn)

    async def set_active_sieve_script(self, account_id: int, name: str | None) -> None:
        async def fn(tx: Transaction) -> None:
            if name is not None and await tx.one(
                    "SELECT 1 FROM sieve_scripts WHERE account_id=%s AND name=%s",
                    (account_id, name)) is None:
                raise NotFound(f"no script {name!r}")
            await tx.run("UPDATE sieve_scripts SET active=(name IS NOT DISTINCT FROM %s) "
                         "WHERE account_id=%s", (name, account_id))

        await self._tx(fn)

    async def get_active_sieve_script(self, account_id: int) -> tuple[str, str] | None:
        rows = await self._query(
            "SELECT name, source FROM sieve_scripts WHERE account_id=%s AND active",
            (account_id,))
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    async def remember_once(self, key: str, ttl: float, now: float | None = None) -> bool:
        at = time.time() if now is None else now

        async def fn(tx: Transaction) -> bool:
            # one statement: of two concurrent callers exactly one inserts or revives
            row = await tx.one(
                "INSERT INTO sieve_memory(key, expires) VALUES (%s, %s) ON CONFLICT(key) "
                "DO UPDATE SET expires=excluded.expires WHERE sieve_memory.expires <= %s "
                "RETURNING 1", (key, at + ttl, at))
            await tx.run("DELETE FROM sieve_memory WHERE key IN (SELECT key FROM "
                         "sieve_memory WHERE expires <= %s LIMIT 16)", (at,))
            return row is not None

        return await self._tx(fn)

    async def is_remembered(self, key: str, now: float | None = None) -> bool:
        at = time.time() if now is None else now
        rows = await self._query("SELECT 1 FROM sieve_memory WHERE key=%s AND expires > %s",
                                 (key, at))
        return bool(rows)
