"""``SpamStore`` (interfaces_spam.py) for the PostgreSQL store, written against its
internals as they are on main (``_tx(fn)`` with a transaction object offering ``one``,
``all`` and ``run``; ``_query``; numbered ``MIGRATIONS``), but importing nothing of it, so
this branch type-checks without it.

To plug in after merging with the PostgreSQL backend (postgres.py):

* append ``MIGRATION`` to ``postgres.MIGRATIONS`` (one more schema version) and
  ``SPAM_TABLES`` to ``postgres.TABLES``;
* make ``PostgresStore`` derive from ``PostgresSpamMixin`` (before its other bases).

``tests/storage/test_spam_store.py`` then runs every test on PostgreSQL as well.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from .interfaces_spam import AccountHold, GreyEntry, SenderRule

T = TypeVar("T")

MIGRATION = """
    CREATE TABLE greylist(triplet text PRIMARY KEY, first_seen double precision NOT NULL,
        last_seen double precision NOT NULL, passed boolean NOT NULL DEFAULT false);
    CREATE INDEX greylist_last_seen ON greylist(last_seen);
    CREATE TABLE greylist_clients(client text PRIMARY KEY, passes bigint NOT NULL,
        last_pass double precision NOT NULL);
    CREATE TABLE bayes_totals(account_id bigint PRIMARY KEY, spam bigint NOT NULL DEFAULT 0,
        ham bigint NOT NULL DEFAULT 0);
    CREATE TABLE bayes_tokens(account_id bigint NOT NULL, token text NOT NULL,
        spam bigint NOT NULL DEFAULT 0, ham bigint NOT NULL DEFAULT 0,
        PRIMARY KEY(account_id, token));
    CREATE TABLE bayes_learnt(account_id bigint NOT NULL, message_key text NOT NULL,
        spam boolean NOT NULL, PRIMARY KEY(account_id, message_key));
    CREATE TABLE account_holds(address text PRIMARY KEY, reason text NOT NULL,
        since double precision NOT NULL);
"""
# per-account allow/block lists (spam/senderlists.py), gone with their account
MIGRATION_2 = """
    CREATE TABLE sender_rules(
        account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        pattern text NOT NULL,
        action text NOT NULL CHECK (action IN ('allow', 'block')),
        PRIMARY KEY(account_id, pattern));
"""
SPAM_TABLES = ("greylist", "greylist_clients", "bayes_totals", "bayes_tokens",
               "bayes_learnt", "account_holds", "sender_rules")


class Tx(Protocol):
    async def one(self, query: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...
    async def all(self, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    async def run(self, query: str, args: Sequence[Any] = ()) -> int: ...


class PostgresSpamMixin:
    """The SpamStore methods; ``PostgresStore`` supplies ``_tx`` and ``_query``."""

    async def _tx(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def _query(self, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    # --- greylisting --------------------------------------------------------------------

    async def greylist_touch(self, triplet: str, now: float, stale_before: float) -> GreyEntry:
        async def fn(tx: Tx) -> GreyEntry:
            # one statement, so two nodes seeing a new triplet at once agree on first_seen
            row = await tx.one(
                "INSERT INTO greylist AS g VALUES (%s,%s,%s,false) ON CONFLICT(triplet) DO "
                "UPDATE SET first_seen=CASE WHEN NOT g.passed AND g.last_seen<%s "
                "THEN excluded.first_seen ELSE g.first_seen END, last_seen=excluded.last_seen "
                "RETURNING first_seen, last_seen, passed",
                (triplet, now, now, stale_before))
            assert row is not None
            return GreyEntry(float(row[0]), float(row[1]), bool(row[2]))

        return await self._tx(fn)

    async def greylist_pass(self, triplet: str, client: str, now: float) -> int:
        async def fn(tx: Tx) -> int:
            row = await tx.one("SELECT passed FROM greylist WHERE triplet=%s FOR UPDATE",
                               (triplet,))
            first = row is None or not row[0]
            await tx.run(
                "INSERT INTO greylist VALUES (%s,%s,%s,true) ON CONFLICT(triplet) DO UPDATE "
                "SET passed=true, last_seen=excluded.last_seen", (triplet, now, now))
            if first:
                await tx.run(
                    "INSERT INTO greylist_clients AS c VALUES (%s,1,%s) ON CONFLICT(client) "
                    "DO UPDATE SET passes=c.passes+1, last_pass=excluded.last_pass",
                    (client, now))
            found = await tx.one("SELECT passes FROM greylist_clients WHERE client=%s",
                                 (client,))
            return int(found[0]) if found else 0

        return await self._tx(fn)

    async def greylist_client_passes(self, client: str, not_before: float) -> int:
        rows = await self._query(
            "SELECT passes FROM greylist_clients WHERE client=%s AND last_pass>=%s",
            (client, not_before))
        return int(rows[0][0]) if rows else 0

    async def greylist_purge(self, before: float) -> int:
        async def fn(tx: Tx) -> int:
            gone = await tx.run("DELETE FROM greylist WHERE last_seen<%s", (before,))
            await tx.run("DELETE FROM greylist_clients WHERE last_pass<%s", (before,))
            return gone

        return await self._tx(fn)

    # --- the learning filter ------------------------------------------------------------

    async def bayes_totals(self, account_id: int) -> tuple[int, int]:
        rows = await self._query("SELECT spam, ham FROM bayes_totals WHERE account_id=%s",
                                 (account_id,))
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def bayes_tokens(
        self, account_id: int, tokens: Sequence[str]
    ) -> dict[str, tuple[int, int]]:
        rows = await self._query(
            "SELECT token, spam, ham FROM bayes_tokens WHERE account_id=%s "
            "AND token = ANY(%s)", (account_id, list(dict.fromkeys(tokens))))
        return {str(t): (int(s), int(h)) for t, s, h in rows}

    async def bayes_train(
        self, account_id: int, message_key: str, tokens: Sequence[str], spam: bool
    ) -> bool:
        unique = list(dict.fromkeys(tokens))

        async def apply(tx: Tx, as_spam: bool, delta: int) -> None:
            column = "spam" if as_spam else "ham"
            await tx.run(
                f"INSERT INTO bayes_totals AS b(account_id, {column}) VALUES (%s, greatest(0,%s)) "  # noqa: S608 (column is spam or ham)
                f"ON CONFLICT(account_id) DO UPDATE SET {column}=greatest(0, b.{column}+%s)",
                (account_id, delta, delta))
            if delta > 0:
                await tx.run(
                    f"INSERT INTO bayes_tokens AS b(account_id, token, {column}) "  # noqa: S608
                    f"SELECT %s, t, 1 FROM unnest(%s::text[]) AS t "
                    f"ON CONFLICT(account_id, token) DO UPDATE SET {column}=b.{column}+1",
                    (account_id, unique))
            else:
                await tx.run(
                    f"UPDATE bayes_tokens SET {column}=greatest(0, {column}-1) "  # noqa: S608
                    "WHERE account_id=%s AND token = ANY(%s)", (account_id, unique))

        async def fn(tx: Tx) -> bool:
            row = await tx.one(
                "SELECT spam FROM bayes_learnt WHERE account_id=%s AND message_key=%s "
                "FOR UPDATE", (account_id, message_key))
            if row is not None and bool(row[0]) == spam:
                return False
            if row is not None:
                await apply(tx, not spam, -1)
            await apply(tx, spam, 1)
            await tx.run(
                "INSERT INTO bayes_learnt VALUES (%s,%s,%s) ON CONFLICT(account_id, "
                "message_key) DO UPDATE SET spam=excluded.spam", (account_id, message_key, spam))
            return True

        return await self._tx(fn)

    async def bayes_forget(self, account_id: int) -> None:
        async def fn(tx: Tx) -> None:
            for table in SPAM_TABLES[2:5]:
                await tx.run(f"DELETE FROM {table} WHERE account_id=%s",  # noqa: S608
                             (account_id,))

        await self._tx(fn)

    async def mailbox_owner(self, mailbox_id: int) -> tuple[int, str | None] | None:
        rows = await self._query("SELECT account_id, special_use FROM mailboxes WHERE id=%s",
                                 (mailbox_id,))
        if not rows:
            return None
        return int(rows[0][0]), (str(rows[0][1]) if rows[0][1] else None)

    async def message_blobs(self, mailbox_id: int, uids: Sequence[int]) -> dict[int, int]:
        rows = await self._query(
            "SELECT uid, blob_id FROM messages WHERE mailbox_id=%s AND uid = ANY(%s)",
            (mailbox_id, sorted(set(uids))))
        return {int(u): int(b) for u, b in rows}

    # --- held accounts ------------------------------------------------------------------

    async def hold_account(self, address: str, reason: str, now: float) -> bool:
        async def fn(tx: Tx) -> bool:
            return await tx.run("INSERT INTO account_holds VALUES (%s,%s,%s) "
                                "ON CONFLICT DO NOTHING", (address, reason, now)) == 1

        return await self._tx(fn)

    async def account_hold(self, address: str) -> AccountHold | None:
        rows = await self._query(
            "SELECT address, reason, since FROM account_holds WHERE address=%s", (address,))
        return AccountHold(str(rows[0][0]), str(rows[0][1]), float(rows[0][2])) if rows else None

    async def release_account(self, address: str) -> bool:
        async def fn(tx: Tx) -> bool:
            return await tx.run("DELETE FROM account_holds WHERE address=%s", (address,)) == 1

        return await self._tx(fn)

    async def list_holds(self) -> list[AccountHold]:
        rows = await self._query("SELECT address, reason, since FROM account_holds "
                                 "ORDER BY since")
        return [AccountHold(str(a), str(r), float(s)) for a, r, s in rows]

    # --- allow and block lists ----------------------------------------------------------

    async def sender_rules(self, account_ids: Sequence[int]) -> dict[int, list[SenderRule]]:
        rows = await self._query(
            "SELECT account_id, pattern, action FROM sender_rules WHERE account_id=ANY(%s) "
            "ORDER BY account_id, pattern", (sorted(set(account_ids)),))
        out: dict[int, list[SenderRule]] = {}
        for account_id, pattern, action in rows:
            out.setdefault(int(account_id), []).append(SenderRule(str(pattern), str(action)))
        return out

    async def set_sender_rule(self, account_id: int, pattern: str, action: str | None
                              ) -> bool:
        async def fn(tx: Tx) -> bool:
            if action is None:
                return await tx.run(
                    "DELETE FROM sender_rules WHERE account_id=%s AND pattern=%s",
                    (account_id, pattern)) > 0
            await tx.run(
                "INSERT INTO sender_rules VALUES (%s,%s,%s) ON CONFLICT(account_id, pattern) "
                "DO UPDATE SET action=excluded.action", (account_id, pattern, action))
            return True

        return await self._tx(fn)
