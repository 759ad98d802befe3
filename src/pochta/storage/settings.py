"""The ``[storage]`` section: which backend holds the mail (``storage/factory.py`` opens
it). Imports no other part of Pochta (``pochta.config`` gathers it)."""

from __future__ import annotations

from dataclasses import dataclass, field


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class StorageConfig:
    backend: str = field(
        default="sqlite",
        metadata=_doc("sqlite (embedded, in data_dir) or postgresql (a database server: "
                      "set dsn)"),
    )
    dsn: str = field(
        default="",
        metadata=_doc(
            "postgresql: the connection string, postgresql://USER@HOST:PORT/DATABASE or "
            "host=/run/postgresql dbname=pochta (Unix socket); never with a password"
        ),
    )
    password_file: str = field(
        default="",
        metadata=_doc(
            "postgresql: file holding the password (relative to the config file); empty: "
            "PGPASSWORD from the environment, or none (peer or trust authentication)"
        ),
    )
    pool_size: int = field(
        default=10,
        metadata=_doc("postgresql: connections per Pochta process (plus one that listens "
                      "for changes made by other processes)"),
    )
    commit_interval: float = field(
        default=0.0,
        metadata=_doc(
            "seconds the group committer waits to gather more writes before an fsync "
            "(0: commit as soon as the previous fsync finished)"
        ),
    )
    fsync: str = field(
        default="optimized",
        metadata=_doc(
            "optimized: flag changes, expunges, subscriptions and \\Recent commit without "
            "waiting for the disk (a crash may undo the last of them, never lose a message); "
            "always: every commit is fsynced. What makes a message exist (delivery, APPEND, "
            "COPY, MOVE, the queue) is fsynced before the reply in both"
        ),
    )
    compact_interval: float = field(
        default=300.0,
        metadata=_doc(
            "seconds between background compactions, which give back the space of "
            "expunged and deleted messages (0: only `pochta store compact`)"
        ),
    )
    compact_min_age: float = field(
        default=60.0,
        metadata=_doc(
            "seconds a message's bytes are kept after the last reference went (a session "
            "may still be reading it)"
        ),
    )


def dsn_has_password(dsn: str) -> bool:
    """True if the connection string carries a password (refused: passwords belong in
    ``storage.password_file`` or ``PGPASSWORD``). ValueError if it is not one."""
    import psycopg  # local: libpq loads only for a PostgreSQL backend (every command checks)

    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise ValueError(f"storage.dsn: not a valid PostgreSQL connection string: {exc}"
                         ) from None
    return bool(params.get("password"))


def check(storage: StorageConfig) -> list[str]:
    """Problems beyond types, each as ``key: problem``."""
    problems: list[str] = []
    if storage.backend not in ("sqlite", "postgresql"):
        problems.append("storage.backend: must be sqlite or postgresql")
    if storage.fsync not in ("optimized", "always"):
        problems.append("storage.fsync: must be optimized or always")
    if storage.pool_size < 1:
        problems.append("storage.pool_size: must be at least 1")
    if storage.compact_interval < 0:
        problems.append("storage.compact_interval: must be >= 0")
    if storage.backend != "postgresql":
        return problems
    if not storage.dsn:
        problems.append("storage.dsn: required when storage.backend is postgresql")
        return problems
    try:
        if dsn_has_password(storage.dsn):
            problems.append("storage.dsn: must not contain a password: put it in "
                            "storage.password_file or PGPASSWORD")
    except ValueError as exc:
        problems.append(str(exc))
    return problems
