"""The web layer's tables in the PostgreSQL store (``WebStore``, interfaces_web.py); the
twin of sqlite_web.py, held to the same conformance tests (tests/storage/test_web_store.py).

Written to the feature-mixin pattern of postgres_base.py: postgres.py appends
``MIGRATION`` to its ``MIGRATIONS``, ``TABLES`` to its ``TABLES``, and derives
``PostgresStore`` from ``PostgresWebMixin``.
"""

from __future__ import annotations

from .interfaces import AlreadyExists, NotFound
from .interfaces_web import AdminAccount, WebSession
from .postgres_base import PostgresFeature, Transaction

MIGRATION = """
CREATE TABLE web_admins(
    name text PRIMARY KEY, password_hash text NOT NULL, created double precision NOT NULL);
CREATE TABLE web_sessions(
    id_hash bytea PRIMARY KEY, principal text NOT NULL, csrf text NOT NULL,
    created double precision NOT NULL, expires double precision NOT NULL);
CREATE INDEX web_sessions_principal ON web_sessions(principal);
CREATE INDEX web_sessions_expires ON web_sessions(expires);
"""

TABLES = ("web_admins", "web_sessions")


class PostgresWebMixin(PostgresFeature):
    async def add_admin(self, name: str, password_hash: str, created: float) -> None:
        async def fn(tx: Transaction) -> None:
            done = await tx.run("INSERT INTO web_admins VALUES (%s, %s, %s) "
                                "ON CONFLICT (name) DO NOTHING", (name, password_hash, created))
            if done == 0:
                raise AlreadyExists(f"admin {name!r} exists")

        await self._tx(fn)

    async def get_admin(self, name: str) -> AdminAccount | None:
        rows = await self._query("SELECT name, password_hash, created FROM web_admins "
                                 "WHERE name = %s", (name,))
        return AdminAccount(str(rows[0][0]), str(rows[0][1]), float(rows[0][2])) if rows else None

    async def list_admins(self) -> list[AdminAccount]:
        rows = await self._query("SELECT name, password_hash, created FROM web_admins "
                                 "ORDER BY name COLLATE \"C\"")
        return [AdminAccount(str(n), str(h), float(c)) for n, h, c in rows]

    async def set_admin_password(self, name: str, password_hash: str) -> None:
        async def fn(tx: Transaction) -> None:
            if await tx.run("UPDATE web_admins SET password_hash = %s WHERE name = %s",
                            (password_hash, name)) == 0:
                raise NotFound(f"no admin {name!r}")
            await tx.run("DELETE FROM web_sessions WHERE principal = %s", (f"admin:{name}",))

        await self._tx(fn)

    async def remove_admin(self, name: str) -> None:
        async def fn(tx: Transaction) -> None:
            if await tx.run("DELETE FROM web_admins WHERE name = %s", (name,)) == 0:
                raise NotFound(f"no admin {name!r}")
            await tx.run("DELETE FROM web_sessions WHERE principal = %s", (f"admin:{name}",))

        await self._tx(fn)

    async def create_web_session(self, session: WebSession) -> None:
        async def fn(tx: Transaction) -> None:
            await tx.run("INSERT INTO web_sessions VALUES (%s, %s, %s, %s, %s)",
                         (session.id_hash, session.principal, session.csrf, session.created,
                          session.expires))

        await self._tx(fn)

    async def get_web_session(self, id_hash: bytes, now: float) -> WebSession | None:
        rows = await self._query("SELECT id_hash, principal, csrf, created, expires "
                                 "FROM web_sessions WHERE id_hash = %s AND expires > %s",
                                 (id_hash, now))
        if not rows:
            return None
        row = rows[0]
        return WebSession(bytes(row[0]), str(row[1]), str(row[2]), float(row[3]),
                          float(row[4]))

    async def delete_web_session(self, id_hash: bytes) -> None:
        async def fn(tx: Transaction) -> None:
            await tx.run("DELETE FROM web_sessions WHERE id_hash = %s", (id_hash,))

        await self._tx(fn)

    async def delete_web_sessions_of(self, principal: str) -> int:
        async def fn(tx: Transaction) -> int:
            return await tx.run("DELETE FROM web_sessions WHERE principal = %s", (principal,))

        return await self._tx(fn)

    async def purge_web_sessions(self, now: float) -> int:
        async def fn(tx: Transaction) -> int:
            return await tx.run("DELETE FROM web_sessions WHERE expires <= %s", (now,))

        return await self._tx(fn)
