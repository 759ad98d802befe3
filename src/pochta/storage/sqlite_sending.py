"""The sending layer's tables in the SQLite store (see interfaces_sending.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from .interfaces import NotFound
from .interfaces_sending import (
    ALL_STREAMS,
    ApiKey,
    EventKind,
    EventQuery,
    NewEvent,
    SendingEvent,
    SentMessage,
    StatsRow,
    Suppression,
    Webhook,
    WebhookAttempt,
)
from .sqlite_base import Migration, SQLiteFeature

MIGRATIONS = [
    Migration("sending-1", """
CREATE TABLE sending_api_keys(
    key_id TEXT PRIMARY KEY, domain TEXT NOT NULL, scopes TEXT NOT NULL,
    secret_hash BLOB NOT NULL, created REAL NOT NULL, description TEXT NOT NULL);
CREATE TABLE sending_idempotency(
    domain TEXT NOT NULL, key TEXT NOT NULL, created REAL NOT NULL, reply TEXT NOT NULL,
    PRIMARY KEY(domain, key)) WITHOUT ROWID;
CREATE TABLE sending_messages(
    message_id TEXT PRIMARY KEY, domain TEXT NOT NULL, stream TEXT NOT NULL,
    recipient TEXT NOT NULL, sender TEXT NOT NULL, subject TEXT NOT NULL,
    tags TEXT NOT NULL, metadata TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE sending_message_tags(
    tag TEXT NOT NULL, message_id TEXT NOT NULL,
    PRIMARY KEY(tag, message_id)) WITHOUT ROWID;
CREATE TABLE sending_events(
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, domain TEXT NOT NULL,
    stream TEXT NOT NULL, message_id TEXT NOT NULL, recipient TEXT NOT NULL,
    kind TEXT NOT NULL, tags TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX sending_events_message ON sending_events(message_id);
CREATE INDEX sending_events_domain ON sending_events(domain, id);
CREATE INDEX sending_events_time ON sending_events(domain, time);
CREATE INDEX sending_events_recipient ON sending_events(domain, recipient, id);
CREATE TABLE sending_suppressions(
    domain TEXT NOT NULL, stream TEXT NOT NULL, address TEXT NOT NULL,
    reason TEXT NOT NULL, created REAL NOT NULL, detail TEXT NOT NULL,
    PRIMARY KEY(domain, address, stream)) WITHOUT ROWID;
CREATE TABLE sending_webhooks(
    id INTEGER PRIMARY KEY AUTOINCREMENT, domain TEXT NOT NULL, url TEXT NOT NULL,
    secret TEXT NOT NULL, cursor INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE sending_webhook_log(
    id INTEGER PRIMARY KEY AUTOINCREMENT, webhook_id INTEGER NOT NULL, time REAL NOT NULL,
    first_event INTEGER NOT NULL, last_event INTEGER NOT NULL, status INTEGER NOT NULL,
    detail TEXT NOT NULL);
CREATE INDEX sending_webhook_log_hook ON sending_webhook_log(webhook_id, id);
"""),
    # Streams queue separately (issue 18): the claim takes higher priorities first.
    Migration("sending-queue-priority", """
ALTER TABLE queue ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
CREATE INDEX queue_claim ON queue(priority, next_attempt)
    WHERE state IN ('pending','deferred');
"""),
]

SEP = "\x1f"  # tags are stored joined by the unit separator (never in a tag)


def _tags(text: str) -> tuple[str, ...]:
    return tuple(t for t in text.split(SEP) if t)


def _key(row: tuple[Any, ...]) -> ApiKey:
    return ApiKey(row[0], row[1], frozenset(s for s in row[2].split(",") if s), bytes(row[3]),
                  row[4], row[5])


def _event(row: tuple[Any, ...]) -> SendingEvent:
    return SendingEvent(row[0], row[1], row[2], row[3], row[4], row[5], EventKind(row[6]),
                        _tags(row[7]), row[8])


_EVENT_COLS = "id, time, domain, stream, message_id, recipient, kind, tags, detail"


def _insert_events(conn: sqlite3.Connection, events: Sequence[NewEvent]) -> int:
    n = 0
    for e in events:
        cur = conn.execute(
            "INSERT INTO sending_events(time, domain, stream, message_id, recipient, kind,"
            " tags, detail) SELECT ?, domain, stream, message_id, recipient, ?, tags, ?"
            " FROM sending_messages WHERE message_id = ?",
            (e.time, str(e.kind), e.detail, e.message_id))
        n += cur.rowcount
    return n


class SQLiteSendingMixin(SQLiteFeature):
    # --- API keys -------------------------------------------------------------------

    async def add_api_key(self, key: ApiKey) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute("INSERT INTO sending_api_keys VALUES (?, ?, ?, ?, ?, ?)",
                         (key.key_id, key.domain, ",".join(sorted(key.scopes)),
                          key.secret_hash, key.created, key.description))

        await self._write(fn)

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        rows = await self._query("SELECT * FROM sending_api_keys WHERE key_id = ?", (key_id,))
        return _key(rows[0]) if rows else None

    async def list_api_keys(self, domain: str | None = None) -> list[ApiKey]:
        if domain is None:
            rows = await self._query("SELECT * FROM sending_api_keys ORDER BY domain, created")
        else:
            rows = await self._query(
                "SELECT * FROM sending_api_keys WHERE domain = ? ORDER BY created", (domain,))
        return [_key(r) for r in rows]

    async def remove_api_key(self, key_id: str) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            if not conn.execute("DELETE FROM sending_api_keys WHERE key_id = ?",
                                (key_id,)).rowcount:
                raise NotFound(f"no API key {key_id}")

        await self._write(fn)

    # --- idempotency ----------------------------------------------------------------

    async def reserve_idempotency_key(self, domain: str, key: str, now: float) -> str | None:
        def fn(conn: sqlite3.Connection, _: int | None) -> str | None:
            row = conn.execute("SELECT reply FROM sending_idempotency WHERE domain = ? AND"
                               " key = ?", (domain, key)).fetchone()
            if row is not None:
                return str(row[0])
            conn.execute("INSERT INTO sending_idempotency VALUES (?, ?, ?, '')",
                         (domain, key, now))
            return None

        return await self._write(fn)

    async def finish_idempotency_key(self, domain: str, key: str, reply: str) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute("UPDATE sending_idempotency SET reply = ? WHERE domain = ? AND"
                         " key = ?", (reply, domain, key))

        await self._write(fn)

    async def release_idempotency_key(self, domain: str, key: str) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute("DELETE FROM sending_idempotency WHERE domain = ? AND key = ?",
                         (domain, key))

        await self._write(fn)

    async def purge_idempotency_keys(self, before: float) -> int:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            return conn.execute("DELETE FROM sending_idempotency WHERE created < ?",
                                (before,)).rowcount

        return await self._write(fn)

    # --- messages and events --------------------------------------------------------

    async def record_sent(self, messages: Sequence[SentMessage],
                          events: Sequence[NewEvent] = ()) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.executemany(
                "INSERT INTO sending_messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(m.message_id, m.domain, m.stream, m.recipient, m.sender, m.subject,
                  SEP.join(m.tags), m.metadata, m.created) for m in messages])
            conn.executemany(
                "INSERT OR IGNORE INTO sending_message_tags VALUES (?, ?)",
                [(t, m.message_id) for m in messages for t in m.tags])
            _insert_events(conn, events)

        await self._write(fn)

    async def forget_sent(self, message_ids: Sequence[str]) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            for table in ("sending_events", "sending_message_tags", "sending_messages"):
                conn.executemany(f"DELETE FROM {table} WHERE message_id = ?",  # noqa: S608
                                 [(m,) for m in message_ids])

        await self._write(fn)

    async def record_events(self, events: Sequence[NewEvent]) -> int:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            return _insert_events(conn, events)

        return await self._write(fn)

    async def get_sent(self, message_id: str) -> SentMessage | None:
        rows = await self._query("SELECT * FROM sending_messages WHERE message_id = ?",
                                 (message_id,))
        if not rows:
            return None
        r = rows[0]
        return SentMessage(r[0], r[1], r[2], r[3], r[4], r[5], _tags(r[6]), r[7], r[8])

    async def query_events(self, query: EventQuery) -> list[SendingEvent]:
        where = ["domain = ?", "id > ?"]
        args: list[Any] = [query.domain, query.after_id]
        if query.message_id is not None:
            where.append("message_id = ?")
            args.append(query.message_id)
        if query.recipient is not None:
            where.append("recipient = ?")
            args.append(query.recipient)
        if query.tag is not None:
            where.append("message_id IN (SELECT message_id FROM sending_message_tags"
                         " WHERE tag = ?)")
            args.append(query.tag)
        if query.kinds:
            where.append(f"kind IN ({','.join('?' * len(query.kinds))})")
            args.extend(str(k) for k in query.kinds)
        if query.since is not None:
            where.append("time >= ?")
            args.append(query.since)
        if query.until is not None:
            where.append("time < ?")
            args.append(query.until)
        args.append(query.limit)
        rows = await self._query(
            f"SELECT {_EVENT_COLS} FROM sending_events WHERE {' AND '.join(where)}"  # noqa: S608
            " ORDER BY id LIMIT ?", args)
        return [_event(r) for r in rows]

    async def event_stats(self, domain: str, since: float, until: float, bucket: int,
                          tag: str | None = None) -> list[StatsRow]:
        args: list[Any] = [bucket, bucket, domain, since, until]
        extra = ""
        if tag is not None:
            extra = (" AND message_id IN (SELECT message_id FROM sending_message_tags"
                     " WHERE tag = ?)")
            args.append(tag)
        sql = ("SELECT CAST(time / ? AS INTEGER) * ? AS b, stream, kind, count(*) FROM"
               " sending_events WHERE domain = ? AND time >= ? AND time < ?")
        rows = await self._query(
            sql + extra + " GROUP BY b, stream, kind ORDER BY b, stream, kind", args)
        return [StatsRow(float(r[0]), r[1], EventKind(r[2]), r[3]) for r in rows]

    async def delivery_times(self, domain: str, since: float, until: float,
                             tag: str | None = None, stream: str | None = None
                             ) -> list[float]:
        sql = ("SELECT d.time - a.time FROM sending_events d JOIN sending_events a"
               " ON a.message_id = d.message_id AND a.kind = 'accepted'"
               " WHERE d.domain = ? AND d.kind = 'delivered' AND d.time >= ? AND d.time < ?")
        args: list[Any] = [domain, since, until]
        if tag is not None:
            sql += (" AND d.message_id IN (SELECT message_id FROM sending_message_tags"
                    " WHERE tag = ?)")
            args.append(tag)
        if stream is not None:
            sql += " AND d.stream = ?"
            args.append(stream)
        return [float(r[0]) for r in await self._query(sql, args)]

    async def last_event_id(self) -> int:
        rows = await self._query("SELECT coalesce(max(id), 0) FROM sending_events")
        return int(rows[0][0])

    # --- suppressions ---------------------------------------------------------------

    async def add_suppressions(self, entries: Sequence[Suppression]) -> int:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            n = 0
            for s in entries:
                n += conn.execute(
                    "INSERT OR IGNORE INTO sending_suppressions VALUES (?, ?, ?, ?, ?, ?)",
                    (s.domain, s.stream, s.address, s.reason, s.created, s.detail)).rowcount
            return n

        return await self._write(fn)

    async def remove_suppression(self, domain: str, stream: str, address: str) -> bool:
        def fn(conn: sqlite3.Connection, _: int | None) -> bool:
            return conn.execute(
                "DELETE FROM sending_suppressions WHERE domain = ? AND stream = ? AND"
                " address = ?", (domain, stream, address)).rowcount > 0

        return await self._write(fn)

    async def list_suppressions(self, domain: str, stream: str | None = None,
                                after: str = "", limit: int = 1000) -> list[Suppression]:
        sql = "SELECT * FROM sending_suppressions WHERE domain = ? AND address > ?"
        args: list[Any] = [domain, after]
        if stream is not None:
            sql += " AND stream = ?"
            args.append(stream)
        rows = await self._query(sql + " ORDER BY address, stream LIMIT ?", [*args, limit])
        return [Suppression(*r) for r in rows]

    async def suppressed(self, domain: str, stream: str,
                         addresses: Sequence[str]) -> set[str]:
        found: set[str] = set()
        chunk = 500
        for i in range(0, len(addresses), chunk):
            part = list(addresses[i:i + chunk])
            marks = ",".join("?" * len(part))
            sql = ("SELECT address FROM sending_suppressions WHERE domain = ? AND stream IN"  # noqa: S608
                   " (?, ?) AND address IN (" + marks + ")")
            rows = await self._query(sql, [domain, stream, ALL_STREAMS, *part])
            found.update(r[0] for r in rows)
        return found

    # --- webhooks -------------------------------------------------------------------

    async def add_webhook(self, domain: str, url: str, secret: str, now: float,
                          cursor: int) -> Webhook:
        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            cur = conn.execute(
                "INSERT INTO sending_webhooks(domain, url, secret, cursor, created)"
                " VALUES (?, ?, ?, ?, ?)", (domain, url, secret, cursor, now))
            return int(cur.lastrowid or 0)

        hook_id = await self._write(fn)
        return Webhook(hook_id, domain, url, secret, cursor, now)

    async def list_webhooks(self, domain: str | None = None) -> list[Webhook]:
        if domain is None:
            rows = await self._query("SELECT * FROM sending_webhooks ORDER BY id")
        else:
            rows = await self._query(
                "SELECT * FROM sending_webhooks WHERE domain = ? ORDER BY id", (domain,))
        return [Webhook(*r) for r in rows]

    async def remove_webhook(self, domain: str, webhook_id: int) -> bool:
        def fn(conn: sqlite3.Connection, _: int | None) -> bool:
            return conn.execute("DELETE FROM sending_webhooks WHERE domain = ? AND id = ?",
                                (domain, webhook_id)).rowcount > 0

        return await self._write(fn)

    async def set_webhook_cursor(self, webhook_id: int, cursor: int) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute("UPDATE sending_webhooks SET cursor = ? WHERE id = ?",
                         (cursor, webhook_id))

        await self._write(fn)

    async def log_webhook_attempt(self, attempt: WebhookAttempt) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute(
                "INSERT INTO sending_webhook_log(webhook_id, time, first_event, last_event,"
                " status, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (attempt.webhook_id, attempt.time, attempt.first_event, attempt.last_event,
                 attempt.status, attempt.detail))

        await self._write(fn)

    async def webhook_attempts(self, webhook_id: int, limit: int = 100
                               ) -> list[WebhookAttempt]:
        rows = await self._query(
            "SELECT webhook_id, time, first_event, last_event, status, detail FROM"
            " sending_webhook_log WHERE webhook_id = ? ORDER BY id DESC LIMIT ?",
            (webhook_id, limit))
        return [WebhookAttempt(*r) for r in rows]
