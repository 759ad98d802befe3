"""The operations tables in the PostgreSQL store (``OpsStore``, interfaces_ops.py); the
twin of sqlite_ops.py, held to the same conformance tests (tests/storage/test_ops_store.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from .interfaces import AlreadyExists, NotFound
from .interfaces_ops import EVENT_KINDS, AppPassword, MailEvent, NewMailEvent
from .postgres_base import PostgresFeature, Transaction

MIGRATION = """
CREATE TABLE mail_events(
    id bigserial PRIMARY KEY, ts double precision NOT NULL, kind text NOT NULL,
    message_id text NOT NULL, sender text NOT NULL, recipient text NOT NULL,
    client_ip text NOT NULL, tag text NOT NULL, detail text NOT NULL);
CREATE INDEX mail_events_ts ON mail_events(ts);
-- covers the dashboard's 24-hour aggregates (index only, no table reads)
CREATE INDEX mail_events_kind_ts ON mail_events(kind, ts, tag, sender, recipient);
CREATE INDEX mail_events_message ON mail_events(message_id, id) WHERE message_id != '';
CREATE INDEX mail_events_sender ON mail_events(sender, id) WHERE sender != '';
CREATE INDEX mail_events_recipient ON mail_events(recipient, id) WHERE recipient != '';
CREATE TABLE app_passwords(
    id bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    name text NOT NULL, secret_hash bytea NOT NULL, created double precision NOT NULL,
    last_used double precision, UNIQUE(account_id, name));
CREATE INDEX app_passwords_hash ON app_passwords(account_id, secret_hash);
CREATE TABLE queue_holds(
    item_id bigint PRIMARY KEY REFERENCES queue ON DELETE CASCADE,
    held double precision NOT NULL);
"""

TABLES = ("mail_events", "app_passwords", "queue_holds")

_EVENT_COLS = "id, ts, kind, message_id, sender, recipient, client_ip, tag, detail"
_APP_COLS = "id, account_id, name, secret_hash, created, last_used"


def _event(row: tuple[object, ...]) -> MailEvent:
    i, ts, kind, mid, sender, rcpt, ip, tag, detail = row
    return MailEvent(int(str(i)), float(str(ts)), str(kind), str(mid), str(sender), str(rcpt),
                     str(ip), str(tag), str(detail))


def _app(row: tuple[object, ...]) -> AppPassword:
    i, acc, name, digest, created, used = row
    assert isinstance(digest, (bytes, memoryview))
    return AppPassword(int(str(i)), int(str(acc)), str(name), bytes(digest),
                       float(str(created)), None if used is None else float(str(used)))


class PostgresOpsMixin(PostgresFeature):
    # -- mail log ------------------------------------------------------------------------

    async def record_mail_events(self, events: Sequence[NewMailEvent]) -> None:
        if not events:
            return
        cols = list(zip(*[(e.ts, e.kind, e.message_id, e.sender.lower(), e.recipient.lower(),
                           e.client_ip, e.tag, e.detail) for e in events], strict=True))

        async def fn(tx: Transaction) -> None:
            await tx.run(
                "INSERT INTO mail_events(ts, kind, message_id, sender, recipient, client_ip, "
                "tag, detail) SELECT * FROM unnest(%s::float8[], %s::text[], %s::text[], "
                "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[])",
                [list(c) for c in cols])

        await self._tx(fn)

    async def search_mail_events(self, query: str = "", before_id: int | None = None,
                                 limit: int = 100) -> list[MailEvent]:
        top = before_id if before_id is not None else 2**62
        q = query.strip()
        if not q:
            rows = await self._query(f"SELECT {_EVENT_COLS} FROM mail_events WHERE id < %s "  # noqa: S608
                                     "ORDER BY id DESC LIMIT %s", (top, limit))
        else:
            rows = await self._query(
                f"SELECT {_EVENT_COLS} FROM mail_events WHERE id IN ("  # noqa: S608
                "(SELECT id FROM mail_events WHERE message_id = %s AND message_id != '' "
                "AND id < %s ORDER BY id DESC LIMIT %s) UNION "
                "(SELECT id FROM mail_events WHERE sender = %s AND sender != '' AND id < %s "
                "ORDER BY id DESC LIMIT %s) UNION "
                "(SELECT id FROM mail_events WHERE recipient = %s AND recipient != '' "
                "AND id < %s ORDER BY id DESC LIMIT %s)) ORDER BY id DESC LIMIT %s",
                (q, top, limit, q.lower(), top, limit, q.lower(), top, limit, limit))
        return [_event(r) for r in rows]

    async def purge_mail_events(self, before: float) -> int:
        async def fn(tx: Transaction) -> int:
            return await tx.run("DELETE FROM mail_events WHERE ts < %s", (before,))

        return await self._tx(fn)

    async def count_mail_events(self, since: float) -> dict[tuple[str, str], int]:
        # one index range per kind (a kind-first index): far cheaper than a time range
        # read through to the table
        sql = " UNION ALL ".join(
            "SELECT kind, tag, count(*) FROM mail_events WHERE kind = %s AND ts >= %s "
            "GROUP BY kind, tag" for _ in EVENT_KINDS)
        rows = await self._query(sql, [v for k in EVENT_KINDS for v in (k, since)])
        return {(str(k), str(t)): int(n) for k, t, n in rows}

    async def top_mail_addresses(self, kind: str, field: str, since: float,
                                 limit: int = 10) -> list[tuple[str, int]]:
        if field not in ("sender", "recipient"):
            raise ValueError(field)
        rows = await self._query(
            f"SELECT {field}, count(*) AS n FROM mail_events "  # noqa: S608
            f"WHERE kind = %s AND ts >= %s AND {field} != '' GROUP BY {field} "
            f'ORDER BY n DESC, {field} COLLATE "C" LIMIT %s', (kind, since, limit))
        return [(str(a), int(n)) for a, n in rows]

    # -- app passwords -------------------------------------------------------------------

    async def add_app_password(self, account_id: int, name: str, secret_hash: bytes,
                               created: float) -> int:
        async def fn(tx: Transaction) -> int:
            row = await tx.one(
                "INSERT INTO app_passwords(account_id, name, secret_hash, created) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (account_id, name) DO NOTHING "
                "RETURNING id", (account_id, name, secret_hash, created))
            if row is None:
                raise AlreadyExists(f"an app password named {name!r} exists")
            return int(row[0])

        return await self._tx(fn)

    async def list_app_passwords(self, account_id: int) -> list[AppPassword]:
        rows = await self._query(f"SELECT {_APP_COLS} FROM app_passwords "  # noqa: S608
                                 'WHERE account_id = %s ORDER BY name COLLATE "C"',
                                 (account_id,))
        return [_app(r) for r in rows]

    async def find_app_password(self, account_id: int, secret_hash: bytes
                                ) -> AppPassword | None:
        rows = await self._query(f"SELECT {_APP_COLS} FROM app_passwords "  # noqa: S608
                                 "WHERE account_id = %s AND secret_hash = %s",
                                 (account_id, secret_hash))
        return _app(rows[0]) if rows else None

    async def revoke_app_password(self, account_id: int, name: str) -> None:
        async def fn(tx: Transaction) -> None:
            if await tx.run("DELETE FROM app_passwords WHERE account_id = %s AND name = %s",
                            (account_id, name)) == 0:
                raise NotFound(f"no app password named {name!r}")

        await self._tx(fn)

    async def touch_app_password(self, password_id: int, when: float) -> None:
        async def fn(tx: Transaction) -> None:
            await tx.run("UPDATE app_passwords SET last_used = %s WHERE id = %s",
                         (when, password_id))

        await self._tx(fn)

    # -- queue holds ---------------------------------------------------------------------

    async def hold_queue_items(self, item_ids: Sequence[int]) -> int:
        ids, now = sorted(set(item_ids)), time.time()

        async def fn(tx: Transaction) -> int:
            return await tx.run(
                "INSERT INTO queue_holds(item_id, held) SELECT id, %s FROM queue "
                "WHERE id = ANY(%s) AND state IN ('pending','deferred') "
                "ON CONFLICT (item_id) DO NOTHING", (now, ids))

        return await self._tx(fn)

    async def release_held_queue_items(self, item_ids: Sequence[int]) -> int:
        ids = sorted(set(item_ids))

        async def fn(tx: Transaction) -> int:
            return await tx.run("DELETE FROM queue_holds WHERE item_id = ANY(%s)", (ids,))

        return await self._tx(fn)

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
