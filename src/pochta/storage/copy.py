"""``pochta store copy --to postgresql://…``: move an embedded installation into
PostgreSQL, keeping everything an IMAP or POP3 client has synchronised against.

Storage-internal (it knows both schemas, so nothing above the store has to): it reads a
consistent snapshot of the SQLite index (one read transaction; segments are append-only)
and writes the PostgreSQL tables in one transaction, row for row with their ids:
domains, accounts with their argon2id hashes and SCRAM keys, aliases, mailboxes with
UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, messages with their UIDs, flags, keywords and
MODSEQs, the expunged list (for QRESYNC), subscriptions, the accounts' allow/block lists
of senders, the outbound queue, every other feature's state (``STATE_TABLES``: Sieve
scripts and their memory, ACLs, METADATA, URLAUTH keys, save dates, app passwords, web
admins, the learning filter, holds, the sending API's keys, messages, events,
suppressions and webhooks, the mail log, DMARC and TLS report data), and every
referenced blob (checked against its checksum on the way). The target must be empty. DKIM
keys and the auth secret are files in the data directory: copy them to every node.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .interfaces import StoreError
from .postgres import BLOB_CHUNK, PostgresStore, translate_error
from .sqlite import check_blob

Progress = Callable[[str], None]
Row = tuple[Any, ...]
Conn = psycopg.AsyncConnection[Row]


@dataclass
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)
    blob_bytes: int = 0
    seconds: float = 0.0


def _blob(src_dir: Path, row: Row) -> bytes:
    blob_id, segment, offset, length, data, digest = row
    body: bytes
    if data is not None:
        body = bytes(data)
    else:
        path = src_dir / "blobs" / f"{segment}.seg"
        with open(path, "rb") as f:
            f.seek(int(offset))
            body = f.read(int(length))
    check_blob(blob_id, body, length, digest)  # corrupt source bytes are never copied
    return body


async def copy_sqlite_to_postgres(
    src_dir: Path, dsn: str, password: str | None, progress: Progress = print
) -> CopyReport:
    started = time.monotonic()
    report = CopyReport()
    db = src_dir / "pochta.db"
    if not db.exists():
        raise StoreError(f"{db}: no SQLite store here")
    target = await PostgresStore.open(dsn, password=password)  # creates/migrates the schema
    await target.close()
    src = sqlite3.connect(db)  # only read (a read-only open cannot attach a WAL)
    try:
        src.execute("BEGIN")  # one snapshot of the whole index (WAL)
        kwargs: dict[str, object] = {"password": password} if password else {}
        try:
            async with (await psycopg.AsyncConnection.connect(dsn, **kwargs) as conn,  # type: ignore[arg-type]
                        conn.transaction()):
                await _refuse_non_empty(conn)
                await _copy_rows(src, conn, report, progress)
                await _copy_state(src, conn, STATE_TABLES, report, progress)
                await _copy_blobs(src, src_dir, conn, report, progress)
                await _copy_dependents(src, conn, report, progress)
                # rows made by the target's own trigger as messages came in: the source's
                # save dates are the true ones (RFC 8514)
                await conn.execute(b"DELETE FROM imap_savedate")
                await _copy_state(src, conn, AFTER_MESSAGES, report, progress)
                await _set_sequences(src, conn)
        except psycopg.Error as exc:
            raise translate_error(exc) from exc
    finally:
        src.close()
    report.seconds = time.monotonic() - started
    return report


async def _refuse_non_empty(conn: Conn) -> None:
    for table in ("domains", "accounts", "messages", "queue"):
        cur = await conn.execute(f"SELECT count(*) FROM {table}".encode())  # noqa: S608
        row = await cur.fetchone()
        if row and row[0]:
            raise StoreError(f"the target already holds {table}: copy only into an empty "
                             "database (or schema)")


async def _insert(conn: Conn, table: str,
                  columns: str, rows: list[Row]) -> None:
    if not rows:
        return
    marks = ", ".join(["%s"] * len(rows[0]))
    async with conn.cursor() as cur:
        await cur.executemany(
            f"INSERT INTO {table}({columns}) VALUES ({marks})".encode(), rows  # noqa: S608
        )


# Every other feature's state, after the core tables they refer to (accounts,
# mailboxes), in an order their foreign keys accept. Both schemas name the columns
# alike; values are converted to the target's column types (``_convert``).
STATE_TABLES = (
    "sieve_scripts", "sieve_memory", "imap_acl", "imap_metadata", "imap_urlauth_keys",
    "app_passwords", "web_admins", "account_holds", "bayes_totals", "bayes_tokens",
    "bayes_learnt", "sending_api_keys", "sending_idempotency", "sending_messages",
    "sending_message_tags", "sending_events", "sending_suppressions", "sending_webhooks",
    "sending_webhook_log", "mail_events", "dmarc_results", "tls_results", "sts_policies",
)
AFTER_MESSAGES = ("imap_savedate", "queue_holds")  # they refer to messages, the queue
# rows of these whose account, mailbox, message or queue item is gone (SQLite enforces no
# foreign keys) belong to nothing: they stay behind
_OWNED = {
    "sieve_scripts": "account_id IN (SELECT id FROM accounts)",
    "app_passwords": "account_id IN (SELECT id FROM accounts)",
    "imap_acl": "mailbox_id IN (SELECT id FROM mailboxes)",
    "imap_urlauth_keys": "mailbox_id IN (SELECT id FROM mailboxes)",
    "imap_savedate": "(mailbox_id, uid) IN (SELECT mailbox_id, uid FROM messages)",
    "queue_holds": "item_id IN (SELECT id FROM queue)",
}
SERIAL = ("app_passwords", "sending_events", "sending_webhooks", "sending_webhook_log",
          "mail_events")  # bigserial ids: new rows continue after the copied ones


def _convert(value: Any, pg_type: str) -> Any:
    if value is None:
        return None
    if pg_type == "boolean":
        return bool(value)
    if pg_type in ("jsonb", "json"):
        return Jsonb(json.loads(value) if isinstance(value, str | bytes) else value)
    if pg_type == "bytea":
        return value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return value


async def _copy_state(src: sqlite3.Connection, conn: Conn, tables: tuple[str, ...],
                      report: CopyReport, progress: Progress) -> None:
    for table in tables:
        found = src.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                            (table,)).fetchone()
        if not found:  # a store that has not run since the feature came: nothing to copy
            continue
        have = {str(r[1]) for r in src.execute(f"PRAGMA table_info({table})")}
        cur = await conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE "
            "table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,))
        columns = [(str(name), str(kind)) for name, kind in await cur.fetchall()
                   if name in have]
        if not columns:
            raise StoreError(f"{table}: the target has no such table or no column in common")
        names = ", ".join(name for name, _ in columns)
        where = f" WHERE {_OWNED[table]}" if table in _OWNED else ""
        rows = [tuple(_convert(v, kind) for v, (_, kind) in zip(row, columns, strict=True))
                for row in src.execute(f"SELECT {names} FROM {table}{where}")]  # noqa: S608
        await _insert(conn, table, names, rows)
        report.rows[table] = len(rows)
        if rows:
            progress(f"{table}: {len(rows)}")


def _rows_if_table(src: sqlite3.Connection, table: str, query: str) -> list[Row]:
    """A table a store that has not run since its migration does not have yet: none."""
    found = src.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                        (table,)).fetchone()
    return src.execute(query).fetchall() if found else []


async def _copy_rows(src: sqlite3.Connection, conn: Conn,
                     report: CopyReport, progress: Progress) -> None:
    tables: list[tuple[str, str, list[Row]]] = [
        ("domains", "name", src.execute("SELECT name FROM domains").fetchall()),
        ("accounts",
         "id, address, password_hash, scram_salt, scram_iterations, scram_stored_key, "
         "scram_server_key, may_send_as_anyone, quota_bytes, apop_secret, disabled",
         [(*r[:7], bool(r[7]), r[8], r[9], bool(r[10])) for r in src.execute(
             "SELECT id, address, password_hash, scram_salt, scram_iterations, "
             "scram_stored_key, scram_server_key, may_send_as_anyone, quota_bytes, "
             "apop_secret, disabled FROM accounts")]),
        ("aliases", "source, targets",
         [(s, t.split("\n")) for s, t in src.execute("SELECT source, targets FROM aliases")]),
        ("mailboxes",
         "id, account_id, name, uidvalidity, uidnext, highestmodseq, special_use, "
         "first_recent_uid",
         src.execute("SELECT id, account_id, name, uidvalidity, uidnext, highestmodseq, "
                     "special_use, first_recent_uid FROM mailboxes").fetchall()),
        ("subscriptions", "account_id, name",
         src.execute("SELECT account_id, name FROM subscriptions").fetchall()),
        ("sender_rules", "account_id, pattern, action", _rows_if_table(
            src, "sender_rules", "SELECT account_id, pattern, action FROM sender_rules "
            "WHERE account_id IN (SELECT id FROM accounts)")),
    ]
    for table, columns, rows in tables:
        await _insert(conn, table, columns, rows)
        report.rows[table] = len(rows)
        progress(f"{table}: {len(rows)}")
    row = src.execute("SELECT value FROM meta WHERE key='last_uidvalidity'").fetchone()
    if row is not None:  # UIDVALIDITY is never handed out twice, before or after the move
        await conn.execute(
            "INSERT INTO counters(name, value) VALUES ('uidvalidity', %s) ON CONFLICT(name) "
            "DO UPDATE SET value=greatest(counters.value, excluded.value)", (int(row[0]),))


async def _copy_blobs(src: sqlite3.Connection, src_dir: Path,
                      conn: Conn, report: CopyReport,
                      progress: Progress) -> None:
    """Every blob a message or a queue item refers to, chunked as the PostgreSQL store
    keeps them."""
    rows = src.execute(
        "SELECT id, segment, offset, length, data, sha256 FROM blobs b WHERE "
        "EXISTS (SELECT 1 FROM messages m WHERE m.blob_id=b.id) OR "
        "EXISTS (SELECT 1 FROM queue q WHERE q.blob_id=b.id) ORDER BY id"
    )
    now = time.time()
    count = 0
    for row in rows:
        body = _blob(src_dir, row)
        digest = hashlib.sha256(body).digest()
        chunks = [body[i:i + BLOB_CHUNK] for i in range(0, len(body), BLOB_CHUNK)] or [b""]
        await conn.execute(
            "INSERT INTO blobs(id, length, sha256, chunks, created) VALUES (%s,%s,%s,%s,%s)",
            (row[0], len(body), digest, len(chunks), now))
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO blob_chunks(blob_id, seq, data) VALUES (%s,%s,%s)",
                [(row[0], seq, chunk) for seq, chunk in enumerate(chunks)])
        count += 1
        report.blob_bytes += len(body)
        if count % 1000 == 0:
            progress(f"blobs: {count} ({report.blob_bytes / 1e6:.1f} MB)")
    report.rows["blobs"] = count
    progress(f"blobs: {count} ({report.blob_bytes / 1e6:.1f} MB)")


async def _copy_dependents(src: sqlite3.Connection,
                           conn: Conn,
                           report: CopyReport, progress: Progress) -> None:
    messages = [
        (box, uid, blob, size, date, flags.split() if flags else [], modseq)
        for box, uid, blob, size, date, flags, modseq in src.execute(
            "SELECT mailbox_id, uid, blob_id, size, internaldate, flags, modseq FROM messages")
    ]
    queue = [
        (id_, mid, blob, Jsonb(json.loads(env)), rcpt, notify, orcpt, state, attempts, nxt,
         reply, created, priority)
        for id_, mid, blob, env, rcpt, notify, orcpt, state, attempts, nxt, reply, created,
        priority in src.execute(
            "SELECT id, message_id, blob_id, envelope, recipient, notify, orcpt, state, "
            "attempts, next_attempt, last_reply, created, priority FROM queue")
    ]
    tables: list[tuple[str, str, list[Row]]] = [
        ("messages", "mailbox_id, uid, blob_id, size, internaldate, flags, modseq", messages),
        ("expunged", "mailbox_id, uid, modseq",
         src.execute("SELECT mailbox_id, uid, modseq FROM expunged").fetchall()),
        ("queue", "id, message_id, blob_id, envelope, recipient, notify, orcpt, state, "
                  "attempts, next_attempt, last_reply, created, priority", queue),
    ]
    for table, columns, rows in tables:
        await _insert(conn, table, columns, rows)
        report.rows[table] = len(rows)
        progress(f"{table}: {len(rows)}")


async def _set_sequences(src: sqlite3.Connection,
                         conn: Conn) -> None:
    """New rows in PostgreSQL continue after the copied ids."""
    for table in ("accounts", "mailboxes", "blobs", "queue", *SERIAL):
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
            f"greatest((SELECT coalesce(max(id), 0) FROM {table}), 1))".encode())


def default_progress(line: str) -> None:
    print(f"  {line}", flush=True)


__all__ = ["CopyReport", "copy_sqlite_to_postgres", "default_progress"]
