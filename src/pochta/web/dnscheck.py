"""What DNS says now, record by record, against what ``pochta dns records`` says to
publish (the domain page of the web admin). Lookups go through the server's configured
resolver (``ServerContext.resolver``: tests give a resolver they control), all at once,
each bounded by ``timeout``.

Status per record: ``ok`` (published as recommended), ``different`` (a record of that
kind is there with another value), ``missing``, ``error`` (the lookup failed), or
``unchecked`` (the resolver has no lookup of that type).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..dns import DNSError
from ..policy.records import DNSRecord


@dataclass(frozen=True, slots=True)
class RecordCheck:
    record: DNSRecord
    status: str
    found: tuple[str, ...] = ()


def _norm_txt(value: str) -> str:
    return " ".join(value.replace(";", "; ").split()).lower()


def _norm_name(value: str) -> str:
    return " ".join(value.lower().split()).rstrip(".")


def _compare(rec: DNSRecord, found: list[str]) -> str:
    if rec.type == "MX":
        want = rec.value.split()[-1].rstrip(".").lower()
        hosts = [f.split()[-1].rstrip(".").lower() for f in found]
        return "ok" if want in hosts else ("different" if hosts else "missing")
    if rec.type in ("SRV", "CNAME"):
        if any(_norm_name(f) == _norm_name(rec.value) for f in found):
            return "ok"
        return "different" if found else "missing"
    # TXT: compare with the records of the same kind (v=spf1, v=DKIM1, v=DMARC1, ...)
    kind = rec.value.split(";")[0].split()[0].lower()
    same = [t for t in found if t.lower().startswith(kind)]
    if any(_norm_txt(t) == _norm_txt(rec.value) for t in same):
        return "ok"
    if kind == "v=dkim1":  # the key is what matters; tags may be written differently
        want_p = rec.value.split("p=")[-1]
        if any(want_p in t.replace(" ", "") for t in same):
            return "ok"
    return "different" if same else "missing"


async def _lookup(resolver: Any, rec: DNSRecord) -> list[str]:
    if rec.type == "MX":
        return [f"{m.preference} {m.host}." for m in await resolver.mx(rec.name)]
    method = {"TXT": "txt", "SRV": "srv", "CNAME": "cname"}.get(rec.type)
    fn = getattr(resolver, method, None) if method else None
    if fn is None:
        raise LookupError(rec.type)
    return [str(x) for x in await fn(rec.name)]


async def check_records(records: Sequence[DNSRecord], resolver: Any, timeout: float = 5.0
                        ) -> list[RecordCheck]:
    async def one(rec: DNSRecord) -> RecordCheck:
        try:
            found = await asyncio.wait_for(_lookup(resolver, rec), timeout)
        except LookupError:
            return RecordCheck(rec, "unchecked")
        except (DNSError, TimeoutError, OSError) as exc:
            return RecordCheck(rec, "error", (str(exc) or type(exc).__name__,))
        if rec.type == "TXT":  # show only the record kinds in question, not every TXT
            kind = rec.value.split(";")[0].split()[0].lower()
            found = [t for t in found if t.lower().startswith(kind)] or found[:3]
        return RecordCheck(rec, _compare(rec, found), tuple(found))

    return list(await asyncio.gather(*(one(r) for r in records)))
