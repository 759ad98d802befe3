"""The sending layer's tables in the PostgreSQL store (see interfaces_sending.py); the twin
of sqlite_sending.py, held to the same conformance tests."""

from __future__ import annotations

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
from .postgres_base import PostgresFeature, Transaction

# Streams queue separately (issue 18): the claim takes higher priorities first.
MIGRATION_QUEUE_PRIORITY = """
ALTER TABLE queue ADD COLUMN priority integer NOT NULL DEFAULT 0;
CREATE INDEX queue_claim ON queue(priority DESC, next_attempt)
    WHERE state IN ('pending','deferred');
"""

MIGRATION = """
CREATE TABLE sending_api_keys(
    key_id text PRIMARY KEY, domain text NOT NULL, scopes text NOT NULL,
    secret_hash bytea NOT NULL, created double precision NOT NULL, description text NOT NULL);
CREATE TABLE sending_idempotency(
    domain text NOT NULL, key text NOT NULL, created double precision NOT NULL,
    reply text NOT NULL, PRIMARY KEY(domain, key));
CREATE TABLE sending_messages(
    message_id text PRIMARY KEY, domain text NOT NULL, stream text NOT NULL,
    recipient text NOT NULL, sender text NOT NULL, subject text NOT NULL,
    tags text NOT NULL, metadata text NOT NULL, created double precision NOT NULL);
CREATE TABLE sending_message_tags(
    tag text NOT NULL, message_id text NOT NULL, PRIMARY KEY(tag, message_id));
CREATE TABLE sending_events(
    id bigserial PRIMARY KEY, time double precision NOT NULL, domain text NOT NULL,
    stream text NOT NULL, message_id text NOT NULL, recipient text NOT NULL,
    kind text NOT NULL, tags text NOT NULL, detail text NOT NULL);
CREATE INDEX sending_events_message ON sending_events(message_id);
CREATE INDEX sending_events_domain ON sending_events(domain, id);
CREATE INDEX sending_events_time ON sending_events(domain, time);
CREATE INDEX sending_events_recipient ON sending_events(domain, recipient, id);
CREATE TABLE sending_suppressions(
    domain text NOT NULL, stream text NOT NULL, address text NOT NULL,
    reason text NOT NULL, created double precision NOT NULL, detail text NOT NULL,
    PRIMARY KEY(domain, address, stream));
CREATE TABLE sending_webhooks(
    id bigserial PRIMARY KEY, domain text NOT NULL, url text NOT NULL,
    secret text NOT NULL, cursor bigint NOT NULL, created double precision NOT NULL);
CREATE TABLE sending_webhook_log(
    id bigserial PRIMARY KEY, webhook_id bigint NOT NULL, time double precision NOT NULL,
    first_event bigint NOT NULL, last_event bigint NOT NULL, status integer NOT NULL,
    detail text NOT NULL);
CREATE INDEX sending_webhook_log_hook ON sending_webhook_log(webhook_id, id);
"""

TABLES = ("sending_api_keys", "sending_idempotency", "sending_messages",
          "sending_message_tags", "sending_events", "sending_suppressions",
          "sending_webhooks", "sending_webhook_log")


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


async def _insert_events(tx: Transaction, events: Sequence[NewEvent]) -> int:
    n = 0
    for e in events:
        n += await tx.run(
            "INSERT INTO sending_events(time, domain, stream, message_id, recipient, kind,"
            " tags, detail) SELECT %s, domain, stream, message_id, recipient, %s, tags, %s"
            " FROM sending_messages WHERE message_id = %s",
            (e.time, str(e.kind), e.detail, e.message_id))
    return n


class PostgresSendingMixin(PostgresFeature):
    # --- API keys -------------------------------------------------------------------

    async def add_api_key(self, key: ApiKey) -> None:
        async def fn(tx: Transaction) -> None:
            await tx.run("INSERT INTO sending_api_keys VALUES (%s, %s, %s, %s, %s, %s)",
                         (key.key_id, key.domain, ",".join(sorted(key.scopes)),
                          key.secret_hash, key.created, key.description))

        await self._tx(fn)

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        rows = await self._query("SELECT * FROM sending_api_keys WHERE key_id = %s", (key_id,))
        return _key(rows[0]) if rows else None

    async def list_api_keys(self, domain: str | None = None) -> list[ApiKey]:
        if domain is None:
            rows = await self._query("SELECT * FROM sending_api_keys ORDER BY domain, created")
        else:
            rows = await self._query(
                "SELECT * FROM sending_api_keys WHERE domain = %s ORDER BY created", (domain,))
        return [_key(r) for r in rows]

    async def remove_api_key(self, key_id: str) -> None:
        async def fn(tx: Transaction) -> None:
            if not await tx.run("DELETE FROM sending_api_keys WHERE key_id = %s", (key_id,)):
                raise NotFound(f"no API key {key_id}")

        await self._tx(fn)

    # --- idempotency ----------------------------------------------------------------

    async def reserve_idempotency_key(self, domain: str, key: str, now: float) -> str | None:
        async def fn(tx: Transaction) -> str | None:
            # one statement: of two concurrent retries exactly one reserves the key
            inserted = await tx.one(
                "INSERT INTO sending_idempotency VALUES (%s, %s, %s, '') ON CONFLICT "
                "(domain, key) DO NOTHING RETURNING 1", (domain, key, now))
            if inserted is not None:
                return None
            row = await tx.one("SELECT reply FROM sending_idempotency WHERE domain = %s AND"
                               " key = %s", (domain, key))
            return str(row[0]) if row is not None else ""

        return await self._tx(fn)

    async def finish_idempotency_key(self, domain: str, key: str, reply: str) -> None:
        async def fn(tx: Transaction) -> None:
            await tx.run("UPDATE sending_idempotency SET reply = %s WHERE domain = %s AND"
                         " key = %s", (reply, domain, key))

        await self._tx(fn)

    async def release_idempotency_key(self, domain: str, key: str) -> None:
        async def fn(tx: Transaction) -> None:
            await tx.run("DELETE FROM sending_idempotency WHERE domain = %s AND key = %s",
                         (domain, key))

        await self._tx(fn)

    async def purge_idempotency_keys(self, before: float) -> int:
        async def fn(tx: Transaction) -> int:
            return await tx.run("DELETE FROM sending_idempotency WHERE created < %s",
                                (before,))

        return await self._tx(fn)

    # --- messages and events --------------------------------------------------------

    async def record_sent(self, messages: Sequence[SentMessage],
                          events: Sequence[NewEvent] = ()) -> None:
        async def fn(tx: Transaction) -> None:
            for m in messages:
                await tx.run(
                    "INSERT INTO sending_messages VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (m.message_id, m.domain, m.stream, m.recipient, m.sender, m.subject,
                     SEP.join(m.tags), m.metadata, m.created))
                for t in m.tags:
                    await tx.run("INSERT INTO sending_message_tags VALUES (%s, %s) "
                                 "ON CONFLICT DO NOTHING", (t, m.message_id))
            await _insert_events(tx, events)

        await self._tx(fn)

    async def forget_sent(self, message_ids: Sequence[str]) -> None:
        async def fn(tx: Transaction) -> None:
            for table in ("sending_events", "sending_message_tags", "sending_messages"):
                await tx.run(f"DELETE FROM {table} WHERE message_id = ANY(%s)",  # noqa: S608
                             (list(message_ids),))

        await self._tx(fn)

    async def record_events(self, events: Sequence[NewEvent]) -> int:
        async def fn(tx: Transaction) -> int:
            return await _insert_events(tx, events)

        return await self._tx(fn)

    async def get_sent(self, message_id: str) -> SentMessage | None:
        rows = await self._query("SELECT * FROM sending_messages WHERE message_id = %s",
                                 (message_id,))
        if not rows:
            return None
        r = rows[0]
        return SentMessage(r[0], r[1], r[2], r[3], r[4], r[5], _tags(r[6]), r[7], r[8])

    async def query_events(self, query: EventQuery) -> list[SendingEvent]:
        where = ["domain = %s", "id > %s"]
        args: list[Any] = [query.domain, query.after_id]
        if query.message_id is not None:
            where.append("message_id = %s")
            args.append(query.message_id)
        if query.recipient is not None:
            where.append("recipient = %s")
            args.append(query.recipient)
        if query.tag is not None:
            where.append("message_id IN (SELECT message_id FROM sending_message_tags"
                         " WHERE tag = %s)")
            args.append(query.tag)
        if query.kinds:
            where.append("kind = ANY(%s)")
            args.append([str(k) for k in query.kinds])
        if query.since is not None:
            where.append("time >= %s")
            args.append(query.since)
        if query.until is not None:
            where.append("time < %s")
            args.append(query.until)
        args.append(query.limit)
        rows = await self._query(
            f"SELECT {_EVENT_COLS} FROM sending_events WHERE {' AND '.join(where)}"  # noqa: S608
            " ORDER BY id LIMIT %s", args)
        return [_event(r) for r in rows]

    async def event_stats(self, domain: str, since: float, until: float, bucket: int,
                          tag: str | None = None) -> list[StatsRow]:
        args: list[Any] = [bucket, bucket, domain, since, until]
        extra = ""
        if tag is not None:
            extra = (" AND message_id IN (SELECT message_id FROM sending_message_tags"
                     " WHERE tag = %s)")
            args.append(tag)
        sql = ("SELECT floor(time / %s)::bigint * %s AS b, stream, kind, count(*) FROM"
               " sending_events WHERE domain = %s AND time >= %s AND time < %s")
        rows = await self._query(
            sql + extra + " GROUP BY b, stream, kind ORDER BY b, stream, kind", args)
        return [StatsRow(float(r[0]), r[1], EventKind(r[2]), r[3]) for r in rows]

    async def delivery_times(self, domain: str, since: float, until: float,
                             tag: str | None = None, stream: str | None = None
                             ) -> list[float]:
        sql = ("SELECT d.time - a.time FROM sending_events d JOIN sending_events a"
               " ON a.message_id = d.message_id AND a.kind = 'accepted'"
               " WHERE d.domain = %s AND d.kind = 'delivered' AND d.time >= %s"
               " AND d.time < %s")
        args: list[Any] = [domain, since, until]
        if tag is not None:
            sql += (" AND d.message_id IN (SELECT message_id FROM sending_message_tags"
                    " WHERE tag = %s)")
            args.append(tag)
        if stream is not None:
            sql += " AND d.stream = %s"
            args.append(stream)
        return [float(r[0]) for r in await self._query(sql, args)]

    async def last_event_id(self) -> int:
        rows = await self._query("SELECT coalesce(max(id), 0) FROM sending_events")
        return int(rows[0][0])

    # --- suppressions ---------------------------------------------------------------

    async def add_suppressions(self, entries: Sequence[Suppression]) -> int:
        async def fn(tx: Transaction) -> int:
            n = 0
            for s in entries:
                n += await tx.run(
                    "INSERT INTO sending_suppressions VALUES (%s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (s.domain, s.stream, s.address, s.reason, s.created, s.detail))
            return n

        return await self._tx(fn)

    async def remove_suppression(self, domain: str, stream: str, address: str) -> bool:
        async def fn(tx: Transaction) -> bool:
            return await tx.run(
                "DELETE FROM sending_suppressions WHERE domain = %s AND stream = %s AND"
                " address = %s", (domain, stream, address)) > 0

        return await self._tx(fn)

    async def list_suppressions(self, domain: str, stream: str | None = None,
                                after: str = "", limit: int = 1000) -> list[Suppression]:
        sql = "SELECT * FROM sending_suppressions WHERE domain = %s AND address > %s"
        args: list[Any] = [domain, after]
        if stream is not None:
            sql += " AND stream = %s"
            args.append(stream)
        rows = await self._query(sql + ' ORDER BY address COLLATE "C", stream LIMIT %s',
                                 [*args, limit])
        return [Suppression(*r) for r in rows]

    async def suppressed(self, domain: str, stream: str,
                         addresses: Sequence[str]) -> set[str]:
        rows = await self._query(
            "SELECT address FROM sending_suppressions WHERE domain = %s AND stream IN"
            " (%s, %s) AND address = ANY(%s)", [domain, stream, ALL_STREAMS, list(addresses)])
        return {r[0] for r in rows}

    # --- webhooks -------------------------------------------------------------------

    async def add_webhook(self, domain: str, url: str, secret: str, now: float,
                          cursor: int) -> Webhook:
        async def fn(tx: Transaction) -> int:
            row = await tx.one(
                "INSERT INTO sending_webhooks(domain, url, secret, cursor, created)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id", (domain, url, secret, cursor, now))
            assert row is not None
            return int(row[0])

        hook_id = await self._tx(fn)
        return Webhook(hook_id, domain, url, secret, cursor, now)

    async def list_webhooks(self, domain: str | None = None) -> list[Webhook]:
        if domain is None:
            rows = await self._query("SELECT * FROM sending_webhooks ORDER BY id")
        else:
            rows = await self._query(
                "SELECT * FROM sending_webhooks WHERE domain = %s ORDER BY id", (domain,))
        return [Webhook(*r) for r in rows]

    async def remove_webhook(self, domain: str, webhook_id: int) -> bool:
        async def fn(tx: Transaction) -> bool:
            return await tx.run("DELETE FROM sending_webhooks WHERE domain = %s AND id = %s",
                                (domain, webhook_id)) > 0

        return await self._tx(fn)

    async def set_webhook_cursor(self, webhook_id: int, cursor: int) -> None:
        async def fn(tx: Transaction) -> None:
            await tx.run("UPDATE sending_webhooks SET cursor = %s WHERE id = %s",
                         (cursor, webhook_id))

        await self._tx(fn)

    async def log_webhook_attempt(self, attempt: WebhookAttempt) -> None:
        async def fn(tx: Transaction) -> None:
            await tx.run(
                "INSERT INTO sending_webhook_log(webhook_id, time, first_event, last_event,"
                " status, detail) VALUES (%s, %s, %s, %s, %s, %s)",
                (attempt.webhook_id, attempt.time, attempt.first_event, attempt.last_event,
                 attempt.status, attempt.detail))

        await self._tx(fn)

    async def webhook_attempts(self, webhook_id: int, limit: int = 100
                               ) -> list[WebhookAttempt]:
        rows = await self._query(
            "SELECT webhook_id, time, first_event, last_event, status, detail FROM"
            " sending_webhook_log WHERE webhook_id = %s ORDER BY id DESC LIMIT %s",
            (webhook_id, limit))
        return [WebhookAttempt(*r) for r in rows]
