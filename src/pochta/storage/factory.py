"""The one place that names a storage backend: ``open_store(config)`` opens the store the
``[storage]`` section asks for. Everything else works on the ``MailStore`` protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .interfaces import MailStore, StoreError
from .sqlite import SCHEMA_VERSION as SQLITE_VERSION
from .sqlite import SQLiteStore

if TYPE_CHECKING:
    from ..config import Config


def read_password(config: Config) -> str | None:
    """The PostgreSQL password from ``storage.password_file`` (one line; the trailing
    newline is not part of it), or None: libpq then reads PGPASSWORD (or ~/.pgpass)."""
    name = config.storage.password_file
    if not name:
        return None
    path = config.path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"storage.password_file: cannot read {path}: {exc}") from None
    password = text.rstrip("\r\n")
    if not password:
        raise StoreError(f"storage.password_file: {path} is empty")
    return password


async def open_store(config: Config) -> MailStore:
    storage = config.storage
    if storage.backend == "postgresql":
        # local: psycopg and libpq load only where PostgreSQL is the backend (every
        # `pochta` command passes here)
        from .postgres import PostgresStore

        return await PostgresStore.open(
            storage.dsn, password=read_password(config), pool_size=storage.pool_size,
            fsync_always=storage.fsync == "always",
        )

    return await SQLiteStore.open(config.data_path, storage.commit_interval,
                                  fsync_always=storage.fsync == "always")


def schema_version(store: MailStore) -> str:
    """The schema version the store's backend brings its database to on open."""
    if isinstance(store, SQLiteStore):
        return str(SQLITE_VERSION)
    from .postgres import SCHEMA_VERSION as PG_VERSION  # local: as in open_store
    from .postgres import PostgresStore

    return str(PG_VERSION if isinstance(store, PostgresStore) else SQLITE_VERSION)
