"""SQLite tables of transport security (see interfaces_transport.py): the MTA-STS policy
cache, daily outbound TLS results (TLS-RPT) and daily inbound DMARC results."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from .interfaces_transport import CachedSTSPolicy, DMARCResultRow, TLSResultRow
from .sqlite_base import Migration, SQLiteFeature

MIGRATIONS = [
    Migration(
        "transport-security-1",
        """
        CREATE TABLE sts_policies(
            domain TEXT PRIMARY KEY,
            policy_id TEXT NOT NULL,
            mode TEXT NOT NULL,
            mx TEXT NOT NULL,          -- JSON list of patterns
            max_age INTEGER NOT NULL,
            fetched REAL NOT NULL,
            text TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE tls_results(
            day TEXT NOT NULL,
            policy_domain TEXT NOT NULL,
            policy_type TEXT NOT NULL,
            policy_string TEXT NOT NULL,   -- JSON list
            mx_host TEXT NOT NULL,
            result TEXT NOT NULL,
            receiving_ip TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (day, policy_domain, policy_type, policy_string, mx_host, result,
                         receiving_ip)
        );
        CREATE TABLE dmarc_results(
            day TEXT NOT NULL,
            header_from TEXT NOT NULL,
            source_ip TEXT NOT NULL,
            disposition TEXT NOT NULL,
            dkim TEXT NOT NULL,
            spf TEXT NOT NULL,
            policy TEXT NOT NULL,
            envelope_from TEXT NOT NULL,
            spf_auth TEXT NOT NULL,
            dkim_auth TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (day, header_from, source_ip, disposition, dkim, spf, policy,
                         envelope_from, spf_auth, dkim_auth)
        );
        """,
    ),
]

def _sts(row: tuple[object, ...]) -> CachedSTSPolicy:
    domain, pid, mode, mx, max_age, fetched, text = row
    return CachedSTSPolicy(str(domain), str(pid), str(mode), tuple(json.loads(str(mx))),
                           int(str(max_age)), float(str(fetched)), str(text))


class SQLiteTransportSecurity(SQLiteFeature):
    # -- MTA-STS -----------------------------------------------------------------------

    async def get_sts_policy(self, domain: str) -> CachedSTSPolicy | None:
        rows = await self._query(

            "SELECT domain, policy_id, mode, mx, max_age, fetched, text FROM sts_policies "
            "WHERE domain=?", (domain.lower(),))
        return _sts(rows[0]) if rows else None

    async def put_sts_policy(self, policy: CachedSTSPolicy) -> None:
        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO sts_policies"
                "(domain, policy_id, mode, mx, max_age, fetched, text) "
                "VALUES (?,?,?,?,?,?,?)",
                (policy.domain.lower(), policy.policy_id, policy.mode,
                 json.dumps(list(policy.mx)), policy.max_age, policy.fetched, policy.text),
            )

        await self._write(fn)

    async def delete_sts_policy(self, domain: str) -> bool:
        def fn(conn: sqlite3.Connection, _: int | None) -> bool:
            return conn.execute("DELETE FROM sts_policies WHERE domain=?",
                                (domain.lower(),)).rowcount > 0

        return await self._write(fn)

    async def list_sts_policies(self) -> list[CachedSTSPolicy]:
        rows = await self._query(
            "SELECT domain, policy_id, mode, mx, max_age, fetched, text FROM sts_policies "
            "ORDER BY domain")
        return [_sts(r) for r in rows]

    # -- TLS-RPT -----------------------------------------------------------------------

    async def record_tls_result(
        self, day: str, policy_domain: str, policy_type: str,
        policy_string: Sequence[str], mx_host: str, result: str,
        receiving_ip: str = "", count: int = 1,
    ) -> None:
        key = (day, policy_domain.lower(), policy_type, json.dumps(list(policy_string)),
               mx_host.lower(), result, receiving_ip)

        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute(
                "INSERT INTO tls_results VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(day, policy_domain, "
                "policy_type, policy_string, mx_host, result, receiving_ip) DO UPDATE "
                "SET count = count + excluded.count", (*key, count))

        await self._write(fn)

    async def tls_results(
        self, day: str | None = None, policy_domain: str | None = None
    ) -> list[TLSResultRow]:
        args = _args(day, policy_domain)
        rows = await self._query(
            "SELECT day, policy_domain, policy_type, policy_string, mx_host, result, "
            "receiving_ip, count FROM tls_results "
            "WHERE (? IS NULL OR day=?) AND (? IS NULL OR policy_domain=?) "
            "ORDER BY day, policy_domain, mx_host, result, policy_type, receiving_ip", args)
        return [TLSResultRow(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], r[5], r[6],
                             int(r[7])) for r in rows]

    async def delete_tls_results(self, day: str, policy_domain: str | None = None) -> int:
        args = _args(day, policy_domain)

        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            return conn.execute(
                "DELETE FROM tls_results WHERE (? IS NULL OR day=?) "
                "AND (? IS NULL OR policy_domain=?)", args).rowcount

        return await self._write(fn)

    # -- DMARC -------------------------------------------------------------------------

    async def record_dmarc_result(
        self, day: str, header_from: str, source_ip: str, disposition: str,
        dkim: str, spf: str, policy: str, count: int = 1, *,
        envelope_from: str = "", spf_auth: str = "", dkim_auth: str = "",
    ) -> None:
        key = (day, header_from.lower(), source_ip, disposition, dkim, spf, policy,
               envelope_from.lower(), spf_auth, dkim_auth)

        def fn(conn: sqlite3.Connection, _: int | None) -> None:
            conn.execute(
                "INSERT INTO dmarc_results(day, header_from, source_ip, disposition, dkim, spf, "
                "policy, envelope_from, spf_auth, dkim_auth, count) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(day, header_from, source_ip, "
                "disposition, dkim, spf, policy, envelope_from, spf_auth, dkim_auth) DO UPDATE "
                "SET count = count + excluded.count", (*key, count))

        await self._write(fn)

    async def dmarc_results(
        self, day: str | None = None, header_from: str | None = None
    ) -> list[DMARCResultRow]:
        args = _args(day, header_from)
        rows = await self._query(
            "SELECT day, header_from, source_ip, disposition, dkim, spf, policy, count, "
            "envelope_from, spf_auth, dkim_auth "
            "FROM dmarc_results WHERE (? IS NULL OR day=?) AND (? IS NULL OR header_from=?) "
            "ORDER BY day, header_from, source_ip, disposition, dkim, spf, policy", args)
        return [DMARCResultRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], int(r[7]), r[8],
                               r[9], r[10]) for r in rows]

    async def delete_dmarc_results(self, day: str, header_from: str | None = None) -> int:
        args = _args(day, header_from)

        def fn(conn: sqlite3.Connection, _: int | None) -> int:
            return conn.execute(
                "DELETE FROM dmarc_results WHERE (? IS NULL OR day=?) "
                "AND (? IS NULL OR header_from=?)", args).rowcount

        return await self._write(fn)


def _args(day: str | None, domain: str | None) -> tuple[str | None, ...]:
    d = domain.lower() if domain is not None else None
    return (day, day, d, d)
