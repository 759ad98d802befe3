"""The web layer's tables in the SQLite store (see interfaces_web.py)."""

from __future__ import annotations

import sqlite3

from .interfaces import AlreadyExists, NotFound
from .interfaces_web import AdminAccount, WebSession
from .sqlite_base import Migration, SQLiteFeature

MIGRATIONS = [
    Migration("web-1", """
CREATE TABLE web_admins(
    name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE web_sessions(
    id_hash BLOB PRIMARY KEY, principal TEXT NOT NULL, csrf TEXT NOT NULL,
    created REAL NOT NULL, expires REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX web_sessions_principal ON web_sessions(principal);
CREATE INDEX web_sessions_expires ON web_sessions(expires);
"""),
]


class SQLiteWebMixin(SQLiteFeature):
    async def add_admin(self, name: str, password_hash: str, created: float) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            if conn.execute("SELECT 1 FROM web_admins WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"admin {name!r} exists")
            conn.execute("INSERT INTO web_admins VALUES (?, ?, ?)",
                         (name, password_hash, created))

        await self._write(fn)

    async def get_admin(self, name: str) -> AdminAccount | None:
        rows = await self._query("SELECT name, password_hash, created FROM web_admins "
                                 "WHERE name = ?", (name,))
        return AdminAccount(*rows[0]) if rows else None

    async def list_admins(self) -> list[AdminAccount]:
        rows = await self._query("SELECT name, password_hash, created FROM web_admins "
                                 "ORDER BY name")
        return [AdminAccount(*row) for row in rows]

    async def set_admin_password(self, name: str, password_hash: str) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            if conn.execute("UPDATE web_admins SET password_hash = ? WHERE name = ?",
                            (password_hash, name)).rowcount == 0:
                raise NotFound(f"no admin {name!r}")
            conn.execute("DELETE FROM web_sessions WHERE principal = ?", (f"admin:{name}",))

        await self._write(fn)

    async def remove_admin(self, name: str) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            if conn.execute("DELETE FROM web_admins WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"no admin {name!r}")
            conn.execute("DELETE FROM web_sessions WHERE principal = ?", (f"admin:{name}",))

        await self._write(fn)

    async def create_web_session(self, session: WebSession) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute("INSERT INTO web_sessions VALUES (?, ?, ?, ?, ?)",
                         (session.id_hash, session.principal, session.csrf, session.created,
                          session.expires))

        await self._write(fn)

    async def get_web_session(self, id_hash: bytes, now: float) -> WebSession | None:
        rows = await self._query("SELECT id_hash, principal, csrf, created, expires "
                                 "FROM web_sessions WHERE id_hash = ? AND expires > ?",
                                 (id_hash, now))
        if not rows:
            return None
        row = rows[0]
        return WebSession(bytes(row[0]), row[1], row[2], row[3], row[4])

    async def delete_web_session(self, id_hash: bytes) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute("DELETE FROM web_sessions WHERE id_hash = ?", (id_hash,))

        await self._write(fn)

    async def delete_web_sessions_of(self, principal: str) -> int:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            return conn.execute("DELETE FROM web_sessions WHERE principal = ?",
                                (principal,)).rowcount

        return await self._write(fn)

    async def purge_web_sessions(self, now: float) -> int:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            return conn.execute("DELETE FROM web_sessions WHERE expires <= ?", (now,)).rowcount

        return await self._write(fn)
