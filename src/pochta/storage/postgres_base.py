"""What the PostgreSQL store's feature modules build on (the twin of sqlite_base.py).

A feature adds ``storage/postgres_<feature>.py`` with ``MIGRATION`` (SQL appended to
``postgres.MIGRATIONS``, so it gets the next schema version), ``TABLES`` (appended to
``postgres.TABLES``) and a mixin deriving from ``PostgresFeature`` that implements its part
of the contract with ``self._query`` (reads) and ``self._tx`` (one write transaction,
retried on deadlocks). It imports nothing from the driver.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Transaction(Protocol):
    async def one(self, query: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...
    async def all(self, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    async def run(self, query: str, args: Sequence[Any] = ()) -> int: ...


class PostgresFeature:
    """Base of the feature mixins (PostgresStore overrides both)."""

    async def _query(self, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def _tx(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        raise NotImplementedError
