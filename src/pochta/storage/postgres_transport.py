"""PostgreSQL tables of transport security (see interfaces_transport.py): the MTA-STS
policy cache, daily outbound TLS results (TLS-RPT) and daily inbound DMARC results.

``PostgresStore`` (storage/postgres.py) takes this in three lines: derive from
``PostgresTransportSecurity``, append ``MIGRATION`` to its ``MIGRATIONS`` and ``TABLES``'
names to its ``TABLES``. The mixin uses only the store's ``_query`` (reads) and ``_tx``
(one write transaction, given an object with ``run(query, args)``), so it imports nothing
from the driver.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .interfaces_transport import CachedSTSPolicy, DMARCResultRow, TLSResultRow

MIGRATION = """
CREATE TABLE sts_policies(
    domain text PRIMARY KEY,
    policy_id text NOT NULL,
    mode text NOT NULL,
    mx jsonb NOT NULL,
    max_age bigint NOT NULL,
    fetched double precision NOT NULL,
    text text NOT NULL DEFAULT '');
CREATE TABLE tls_results(
    day text NOT NULL,
    policy_domain text NOT NULL,
    policy_type text NOT NULL,
    policy_string jsonb NOT NULL,
    mx_host text NOT NULL,
    result text NOT NULL,
    receiving_ip text NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (day, policy_domain, policy_type, policy_string, mx_host, result,
                 receiving_ip));
CREATE TABLE dmarc_results(
    day text NOT NULL,
    header_from text NOT NULL,
    source_ip text NOT NULL,
    disposition text NOT NULL,
    dkim text NOT NULL,
    spf text NOT NULL,
    policy text NOT NULL,
    envelope_from text NOT NULL,
    spf_auth text NOT NULL,
    dkim_auth text NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (day, header_from, source_ip, disposition, dkim, spf, policy,
                 envelope_from, spf_auth, dkim_auth));
"""

TABLES = ("sts_policies", "tls_results", "dmarc_results")

_STS = "SELECT domain, policy_id, mode, mx, max_age, fetched, text FROM sts_policies"


def _sts(row: tuple[Any, ...]) -> CachedSTSPolicy:
    domain, pid, mode, mx, max_age, fetched, text = row
    items = json.loads(mx) if isinstance(mx, str) else mx
    return CachedSTSPolicy(str(domain), str(pid), str(mode), tuple(items), int(max_age),
                           float(fetched), str(text))


def _args(day: str | None, domain: str | None) -> tuple[str | None, ...]:
    d = domain.lower() if domain is not None else None
    return (day, day, d, d)


class PostgresTransportSecurity:
    async def _query(self, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def _tx(self, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        raise NotImplementedError

    async def _run(self, query: str, args: Sequence[Any]) -> int:
        async def fn(tx: Any) -> int:
            return int(await tx.run(query, args))

        return int(await self._tx(fn))

    # -- MTA-STS -----------------------------------------------------------------------

    async def get_sts_policy(self, domain: str) -> CachedSTSPolicy | None:
        rows = await self._query(_STS + " WHERE domain=%s", (domain.lower(),))
        return _sts(rows[0]) if rows else None

    async def put_sts_policy(self, policy: CachedSTSPolicy) -> None:
        await self._run(
            "INSERT INTO sts_policies(domain, policy_id, mode, mx, max_age, fetched, text) "
            "VALUES (%s,%s,%s,%s::jsonb,%s,%s,%s) ON CONFLICT(domain) DO UPDATE SET "
            "policy_id=excluded.policy_id, mode=excluded.mode, mx=excluded.mx, "
            "max_age=excluded.max_age, fetched=excluded.fetched, text=excluded.text",
            (policy.domain.lower(), policy.policy_id, policy.mode, json.dumps(list(policy.mx)),
             policy.max_age, policy.fetched, policy.text))

    async def delete_sts_policy(self, domain: str) -> bool:
        return await self._run("DELETE FROM sts_policies WHERE domain=%s",
                               (domain.lower(),)) > 0

    async def list_sts_policies(self) -> list[CachedSTSPolicy]:
        return [_sts(r) for r in await self._query(_STS + " ORDER BY domain")]

    # -- TLS-RPT -----------------------------------------------------------------------

    async def record_tls_result(
        self, day: str, policy_domain: str, policy_type: str,
        policy_string: Sequence[str], mx_host: str, result: str,
        receiving_ip: str = "", count: int = 1,
    ) -> None:
        await self._run(
            "INSERT INTO tls_results VALUES (%s,%s,%s,%s::jsonb,%s,%s,%s,%s) "
            "ON CONFLICT(day, policy_domain, policy_type, policy_string, mx_host, result, "
            "receiving_ip) DO UPDATE SET count = tls_results.count + excluded.count",
            (day, policy_domain.lower(), policy_type, json.dumps(list(policy_string)),
             mx_host.lower(), result, receiving_ip, count))

    async def tls_results(
        self, day: str | None = None, policy_domain: str | None = None
    ) -> list[TLSResultRow]:
        rows = await self._query(
            "SELECT day, policy_domain, policy_type, policy_string, mx_host, result, "
            "receiving_ip, count FROM tls_results "
            "WHERE (%s::text IS NULL OR day=%s) AND (%s::text IS NULL OR policy_domain=%s) "
            "ORDER BY day, policy_domain, mx_host, result, policy_type, receiving_ip",
            _args(day, policy_domain))
        out = []
        for r in rows:
            lines = json.loads(r[3]) if isinstance(r[3], str) else r[3]
            out.append(TLSResultRow(r[0], r[1], r[2], tuple(lines), r[4], r[5], r[6],
                                    int(r[7])))
        return out

    async def delete_tls_results(self, day: str, policy_domain: str | None = None) -> int:
        return await self._run(
            "DELETE FROM tls_results WHERE (%s::text IS NULL OR day=%s) "
            "AND (%s::text IS NULL OR policy_domain=%s)", _args(day, policy_domain))

    # -- DMARC -------------------------------------------------------------------------

    async def record_dmarc_result(
        self, day: str, header_from: str, source_ip: str, disposition: str,
        dkim: str, spf: str, policy: str, count: int = 1, *,
        envelope_from: str = "", spf_auth: str = "", dkim_auth: str = "",
    ) -> None:
        await self._run(
            "INSERT INTO dmarc_results(day, header_from, source_ip, disposition, dkim, spf, "
            "policy, envelope_from, spf_auth, dkim_auth, count) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT(day, header_from, "
            "source_ip, disposition, dkim, spf, policy, envelope_from, spf_auth, dkim_auth) "
            "DO UPDATE SET count = dmarc_results.count + excluded.count",
            (day, header_from.lower(), source_ip, disposition, dkim, spf, policy,
             envelope_from.lower(), spf_auth, dkim_auth, count))

    async def dmarc_results(
        self, day: str | None = None, header_from: str | None = None
    ) -> list[DMARCResultRow]:
        rows = await self._query(
            "SELECT day, header_from, source_ip, disposition, dkim, spf, policy, count, "
            "envelope_from, spf_auth, dkim_auth FROM dmarc_results "
            "WHERE (%s::text IS NULL OR day=%s) AND (%s::text IS NULL OR header_from=%s) "
            "ORDER BY day, header_from, source_ip, disposition, dkim, spf, policy",
            _args(day, header_from))
        return [DMARCResultRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], int(r[7]), r[8],
                               r[9], r[10]) for r in rows]

    async def delete_dmarc_results(self, day: str, header_from: str | None = None) -> int:
        return await self._run(
            "DELETE FROM dmarc_results WHERE (%s::text IS NULL OR day=%s) "
            "AND (%s::text IS NULL OR header_from=%s)", _args(day, header_from))
