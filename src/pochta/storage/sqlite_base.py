"""What the SQLite store's feature modules build on.

A feature that keeps state in the store (Sieve scripts, greylisting, API keys, delivery
events, ...) adds one module ``storage/sqlite_<feature>.py`` with

* ``MIGRATIONS``: a list of ``Migration(name, sql)``, applied once each, in order, by
  ``SQLiteStore.open`` (names, not numbers, so features can be built side by side);
* a mixin class deriving from ``SQLiteFeature`` whose methods implement the feature's part
  of the storage contract with ``self._write`` (the group-committing writer) and
  ``self._query`` / ``self._read`` (the reader threads) or ``self._query_small`` (a
  read of a few rows that every IMAP command of some kind makes: on the event loop),

and lists both in ``storage/sqlite.py``. A data directory that has a migration this code
does not know was written by a newer Pochta, and is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Migration:
    name: str  # unique, e.g. "sieve-1"; never renamed once released
    sql: str  # CREATE TABLE/INDEX/TRIGGER statements, or ALTERs


class SQLiteFeature:
    """Base of the feature mixins: the store's writer and readers (SQLiteStore overrides
    both)."""

    async def _write(
        self,
        fn: Callable[[sqlite3.Connection, int | None], T],
        blob: bytes | None = None,
        touched: set[int] | None = None,
        durable: bool = True,
        small: bool = False,
    ) -> T:
        raise NotImplementedError

    async def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Several reads in one hop to a reader thread."""
        raise NotImplementedError

    async def _query_small(
        self, sql: str, args: Sequence[Any] = (), limit: int = 256
    ) -> list[tuple[Any, ...]]:
        """A read that usually returns a few rows, on the event loop's own connection
        (SQLiteStore: a reader thread only when it returns more than ``limit``)."""
        raise NotImplementedError
