"""The operations tables in the SQLite store (``OpsStore``, interfaces_ops.py): the mail
log, app passwords, queue holds; plus count queries over the core tables."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from .interfaces import AlreadyExists, NotFound
from .interfaces_ops import EVENT_KINDS, AppPassword, MailEvent, NewMailEvent
from .sqlite_base import Migration, SQLiteFeature

MIGRATIONS = [
    Migration("ops-1", """
CREATE TABLE mail_events(
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL,
    message_id TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
    client_ip TEXT NOT NULL, tag TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX mail_events_ts ON mail_events(ts);
-- covers the dashboard's 24-hour aggregates (index only, no table reads)
CREATE INDEX mail_events_kind_ts ON mail_events(kind, ts, tag, sender, recipient);
CREATE INDEX mail_events_message ON mail_events(message_id, id) WHERE message_id != '';
CREATE INDEX mail_events_sender ON mail_events(sender, id) WHERE sender != '';
CREATE INDEX mail_events_recipient ON mail_events(recipient, id) WHERE recipient != '';
CREATE TABLE app_passwords(
    id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL, name TEXT NOT NULL,
    secret_hash BLOB NOT NULL, created REAL NOT NULL, last_used REAL,
    UNIQUE(account_id, name));
CREATE INDEX app_passwords_hash ON app_passwords(account_id, secret_hash);
CREATE TRIGGER app_passwords_gone AFTER DELETE ON accounts BEGIN
    DELETE FROM app_passwords WHERE account_id = OLD.id;
END;
CREATE TABLE queue_holds(item_id INTEGER PRIMARY KEY, held REAL NOT NULL);
CREATE TRIGGER queue_holds_gone AFTER DELETE ON queue BEGIN
    DELETE FROM queue_holds WHERE item_id = OLD.id;
END;
"""),
]

_EVENT_COLS = "id, ts, kind, message_id, sender, recipient, client_ip, tag, detail"
_APP_COLS = "id, account_id, name, secret_hash, created, last_used"


def _event(row: tuple[object, ...]) -> MailEvent:
    i, ts, kind, mid, sender, rcpt, ip, tag, detail = row
    return MailEvent(int(str(i)), float(str(ts)), str(kind), str(mid), str(sender), str(rcpt),
                     str(ip), str(tag), str(detail))


def _app(row: tuple[object, ...]) -> AppPassword:
    i, acc, name, digest, created, used = row
    assert isinstance(digest, bytes)
    return AppPassword(int(str(i)), int(str(acc)), str(name), bytes(digest),
                       float(str(created)), None if used is None else float(str(used)))


class SQLiteOpsMixin(SQLiteFeature):
    # -- mail log ------------------------------------------------------------------------

    async def record_mail_events(self, events: Sequence[NewMailEvent]) -> None:
        rows = [(e.ts, e.kind, e.message_id, e.sender.lower(), e.recipient.lower(),
                 e.client_ip, e.tag, e.detail) for e in events]
        if not rows:
            return

        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.executemany("INSERT INTO mail_events(ts, kind, message_id, sender, recipient,"
                             " client_ip, tag, detail) VALUES (?,?,?,?,?,?,?,?)", rows)

        await self._write(fn)

    async def search_mail_events(self, query: str = "", before_id: int | None = None,
                                 limit: int = 100) -> list[MailEvent]:
        top = before_id if before_id is not None else 2**62
        q = query.strip()
        if not q:
            rows = await self._query(f"SELECT {_EVENT_COLS} FROM mail_events WHERE id < ? "  # noqa: S608
                                     "ORDER BY id DESC LIMIT ?", (top, limit))
        else:
            # one indexed range per column, merged (an OR over three indexes)
            rows = await self._query(
                f"SELECT {_EVENT_COLS} FROM mail_events WHERE id IN ("  # noqa: S608
                "SELECT id FROM (SELECT id FROM mail_events WHERE message_id = ? "
                "AND message_id != '' AND id < ? "
                "ORDER BY id DESC LIMIT ?) UNION "
                "SELECT id FROM (SELECT id FROM mail_events WHERE sender = ? AND sender != '' "
                "AND id < ? ORDER BY id DESC LIMIT ?) UNION "
                "SELECT id FROM (SELECT id FROM mail_events WHERE recipient = ? "
                "AND recipient != '' AND id < ? ORDER BY id DESC LIMIT ?)) "
                "ORDER BY id DESC LIMIT ?",
                (q, top, limit, q.lower(), top, limit, q.lower(), top, limit, limit))
        return [_event(r) for r in rows]

    async def purge_mail_events(self, before: float) -> int:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            return conn.execute("DELETE FROM mail_events WHERE ts < ?", (before,)).rowcount

        return await self._write(fn)

    async def count_mail_events(self, since: float) -> dict[tuple[str, str], int]:
        # one index range per kind (a kind-first index): far cheaper than a time range
        # read through to the table
        sql = " UNION ALL ".join(
            "SELECT kind, tag, count(*) FROM mail_events WHERE kind = ? AND ts >= ? "
            "GROUP BY kind, tag" for _ in EVENT_KINDS)
        rows = await self._query(sql, [v for k in EVENT_KINDS for v in (k, since)])
        return {(str(k), str(t)): int(n) for k, t, n in rows}

    async def top_mail_addresses(self, kind: str, field: str, since: float,
                                 limit: int = 10) -> list[tuple[str, int]]:
        if field not in ("sender", "recipient"):
            raise ValueError(field)
        rows = await self._query(
            f"SELECT {field}, count(*) AS n FROM mail_events "  # noqa: S608
            f"WHERE kind = ? AND ts >= ? AND {field} != '' GROUP BY {field} "
            f"ORDER BY n DESC, {field} LIMIT ?", (kind, since, limit))
        return [(str(a), int(n)) for a, n in rows]

    # -- app passwords -------------------------------------------------------------------

    async def add_app_password(self, account_id: int, name: str, secret_hash: bytes,
                               created: float) -> int:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            if conn.execute("SELECT 1 FROM app_passwords WHERE account_id = ? AND name = ?",
                            (account_id, name)).fetchone():
                raise AlreadyExists(f"an app password named {name!r} exists")
            cur = conn.execute("INSERT INTO app_passwords(account_id, name, secret_hash, "
                               "created) VALUES (?,?,?,?)",
                               (account_id, name, secret_hash, created))
            return int(cur.lastrowid or 0)

        return await self._write(fn)

    async def list_app_passwords(self, account_id: int) -> list[AppPassword]:
        rows = await self._query(f"SELECT {_APP_COLS} FROM app_passwords "  # noqa: S608
                                 "WHERE account_id = ? ORDER BY name", (account_id,))
        return [_app(r) for r in rows]

    async def find_app_password(self, account_id: int, secret_hash: bytes
                                ) -> AppPassword | None:
        rows = await self._query(f"SELECT {_APP_COLS} FROM app_passwords "  # noqa: S608
                                 "WHERE account_id = ? AND secret_hash = ?",
                                 (account_id, secret_hash))
        return _app(rows[0]) if rows else None

    async def revoke_app_password(self, account_id: int, name: str) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            if conn.execute("DELETE FROM app_passwords WHERE account_id = ? AND name = ?",
                            (account_id, name)).rowcount == 0:
                raise NotFound(f"no app password named {name!r}")

        await self._write(fn)

    async def touch_app_password(self, password_id: int, when: float) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute("UPDATE app_passwords SET last_used = ? WHERE id = ?",
                         (when, password_id))

        await self._write(fn)

    # -- queue holds ---------------------------------------------------------------------

    async def hold_queue_items(self, item_ids: Sequence[int]) -> int:
        ids, now = list(item_ids), time.time()

        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            done = 0
            for item_id in ids:
                done += conn.execute(
                    "INSERT OR IGNORE INTO queue_holds(item_id, held) SELECT id, ? "
                    "FROM queue WHERE id = ? AND state IN ('pending','deferred')",
                    (now, item_id)).rowcount
            return done

        return await self._write(fn)

    async def release_held_queue_items(self, item_ids: Sequence[int]) -> int:
        ids = list(item_ids)

        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            return sum(conn.execute("DELETE FROM queue_holds WHERE item_id = ?",
                                    (i,)).rowcount for i in ids)

        return await self._write(fn)

    async def held_queue_ids(self) -> set[int]:
        return {int(r[0]) for r in await self._query("SELECT item_id FROM queue_holds")}

    # -- counts --------------------------------------------------------------------------

    async def count_accounts(self) -> int:
        return int((await self._query("SELECT count(*) FROM accounts"))[0][0])

    async def count_domains(self) -> int:
        return int((await self._query("SELECT count(*) FROM domains"))[0][0])

    async def queue_summary(self) -> tuple[dict[str, int], float | None]:
        rows = await self._query("SELECT state, count(*), min(created) FROM queue "
                                 "GROUP BY state")
        counts = {str(s): int(n) for s, n, _ in rows}
        waiting = [float(c) for s, _, c in rows if s in ("pending", "deferred")]
        return counts, min(waiting) if waiting else None
