"""``pochta backup PATH`` and ``pochta restore PATH``: a consistent copy of a running
installation, and putting it back.

Theory of operation
-------------------
SQLite (the embedded store). The index is copied with SQLite's online backup API
(``sqlite3.Connection.backup``): one read transaction, so the copy is the index as it was
at one instant, while the server keeps writing (WAL: readers never block writers). Bodies
bigger than the inline limit live in append-only segment files; every blob the snapshot
knows lies below the end offset it records, and bytes below that offset never change
while the segment exists. So copying, per segment, the bytes up to the highest end offset
the snapshot references gives exactly the bodies of the snapshot. The one thing that can
interfere is compaction rewriting or deleting a segment between the snapshot and the
copy; every copied blob is therefore checked against its length and SHA-256 in the
snapshot, and the whole backup is taken again (up to three times) if one does not match.

PostgreSQL. ``pg_dump --format=custom`` of the configured database (only the schema the
DSN's search_path names, when that is not ``public``), taken in a REPEATABLE READ
transaction whose exported snapshot also gives the manifest's counts: dump and counts
describe the same instant. The password comes from ``storage.password_file`` (through
``PGPASSWORD`` for the child process), else libpq's usual PGPASSWORD or ~/.pgpass.

Both: the data directory's DKIM keys (``dkim/``) and the ``auth-secret``, which the server
needs to accept the session tokens and app passwords it issued, are copied beside the
store. ``manifest.json`` lists the counts (accounts, mailboxes, messages, their bytes,
blobs, queue items) and every file with its size and SHA-256.

Restore (with the server stopped) checks every file against the manifest first, refuses
a data directory whose store holds accounts, domains, messages or queue items (an empty
store, as ``pochta init`` leaves it, is replaced) or a database that holds them, copies the
files in (0600 in 0700 directories; the backup's DKIM keys and auth-secret replace files of
the same name), then opens the store through the contract and compares its counts with
the manifest.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from .. import __version__
from ..storage.factory import open_store, read_password
from .errors import TransferError
from .importer import Progress

FORMAT = "pochta-backup"
VERSION = 1
KEY_FILES = ("auth-secret",)
KEY_DIRS = ("dkim",)
COUNT_QUERIES = {
    "accounts": "SELECT count(*) FROM accounts",
    "domains": "SELECT count(*) FROM domains",
    "aliases": "SELECT count(*) FROM aliases",
    "mailboxes": "SELECT count(*) FROM mailboxes",
    "messages": "SELECT count(*) FROM messages",
    "message_bytes": "SELECT coalesce(sum(size), 0) FROM messages",
    "queue": "SELECT count(*) FROM queue",
}
ATTEMPTS = 3
CHUNK = 1024 * 1024


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(CHUNK):
            digest.update(data)
    return digest.hexdigest()


def _private_dir(path: Path) -> None:
    """``path`` and every directory made on the way to it are 0700."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)


def _copy_private(src: Path, dst: Path) -> None:
    _private_dir(dst.parent)
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o600)


def _fresh_destination(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise TransferError(f"{path}: exists and is not an empty directory; a backup goes "
                            "into a new one")
    _private_dir(path)


# --- backup ----------------------------------------------------------------------------


def backup(config: Any, dest: Path, progress: Progress) -> dict[str, Any]:
    _fresh_destination(dest)
    backend = config.storage.backend
    if backend == "postgresql":
        counts = _backup_postgres(config, dest, progress)
    else:
        counts = _backup_sqlite(config.data_path, dest, progress)
    _copy_keys(config.data_path, dest, progress)
    files = {}
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        rel = path.relative_to(dest).as_posix()
        files[rel] = {"size": path.stat().st_size, "sha256": _sha256_file(path)}
    manifest = {
        "format": FORMAT, "version": VERSION, "pochta": __version__, "backend": backend,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "counts": counts, "files": files,
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n",
                                        encoding="utf-8")
    os.chmod(dest / "manifest.json", 0o600)
    return manifest


def _copy_keys(data_dir: Path, dest: Path, progress: Progress) -> None:
    copied = 0
    for name in KEY_FILES:
        if (data_dir / name).is_file():
            _copy_private(data_dir / name, dest / name)
            copied += 1
    for name in KEY_DIRS:
        for path in sorted((data_dir / name).rglob("*")) if (data_dir / name).is_dir() else []:
            if path.is_file():
                _copy_private(path, dest / path.relative_to(data_dir))
                copied += 1
    progress(f"keys: {copied} file(s) (dkim/, auth-secret)")


def _backup_sqlite(data_dir: Path, dest: Path, progress: Progress) -> dict[str, int]:
    db = data_dir / "pochta.db"
    if not db.is_file():
        raise TransferError(f"{db}: no SQLite store here (check data_dir in the config)")
    for attempt in range(1, ATTEMPTS + 1):
        for leftover in (dest / "pochta.db", dest / "blobs"):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            elif leftover.exists():
                leftover.unlink()
        src = sqlite3.connect(db, timeout=30)
        copy = sqlite3.connect(dest / "pochta.db")
        try:
            src.backup(copy)  # one read transaction: the index at one instant
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            counts = {k: int(copy.execute(q).fetchone()[0]) for k, q in COUNT_QUERIES.items()}
            problem = _copy_segments(copy, data_dir / "blobs", dest / "blobs", progress)
            counts["blobs"] = int(copy.execute("SELECT count(*) FROM blobs").fetchone()[0])
        finally:
            src.close()
            copy.close()
        os.chmod(dest / "pochta.db", 0o600)
        if problem is None:
            progress(f"index: {counts['accounts']} account(s), {counts['mailboxes']} "
                     f"mailbox(es), {counts['messages']} message(s)")
            return counts
        progress(f"attempt {attempt}: {problem} (compaction ran meanwhile?); again")
    raise TransferError(f"no consistent copy after {ATTEMPTS} attempts: stop the "
                        "server's compaction ([storage] compact_interval) and try again")


def _copy_segments(index: sqlite3.Connection, src_dir: Path, dst_dir: Path,
                   progress: Progress) -> str | None:
    """Copy each segment up to the end of its last blob, then check every blob of the
    snapshot; a description of the first mismatch, or None."""
    ends = index.execute("SELECT segment, max(offset + length) FROM blobs "
                         "WHERE data IS NULL GROUP BY segment").fetchall()
    total = 0
    for segment, end in ends:
        src = src_dir / f"{segment}.seg"
        dst = dst_dir / f"{segment}.seg"
        _private_dir(dst_dir)
        try:
            with open(src, "rb") as fin, open(dst, "wb") as fout:
                left = int(end)
                while left > 0 and (data := fin.read(min(CHUNK, left))):
                    fout.write(data)
                    left -= len(data)
            os.chmod(dst, 0o600)
        except FileNotFoundError:
            return f"segment {segment} is gone"
        if left:
            return f"segment {segment} is shorter than the index says"
        total += int(end)
    progress(f"segments: {len(ends)} ({total / 1e6:.1f} MB)")
    files: dict[str, Any] = {}
    try:
        for blob_id, segment, offset, length, data, digest in index.execute(
                "SELECT id, segment, offset, length, data, sha256 FROM blobs"):
            if data is not None:
                body = bytes(data)
            else:
                f = files.get(segment)
                if f is None:
                    f = files[segment] = open(dst_dir / f"{segment}.seg", "rb")  # noqa: SIM115
                f.seek(int(offset))
                body = f.read(int(length))
            if len(body) != length or (
                    digest is not None and hashlib.sha256(body).digest() != bytes(digest)):
                return f"blob {blob_id} does not match the index"
    finally:
        for f in files.values():
            f.close()
    return None


def _pg_env(config: Any) -> dict[str, str]:
    env = dict(os.environ)
    password = read_password(config)
    if password is not None:
        env["PGPASSWORD"] = password
    return env


def _pg_tool(name: str) -> str:
    """The newest installed pg_dump/pg_restore (a newer one reads and writes older
    servers' dumps; Debian keeps each version under /usr/lib/postgresql/N/bin)."""
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    found = str(versions[-1]) if versions else shutil.which(name)
    if found is None:
        raise TransferError(f"{name} not found: install the PostgreSQL client tools "
                            "(Debian: postgresql-client) of the server's version or newer")
    return found


def _backup_postgres(config: Any, dest: Path, progress: Progress) -> dict[str, int]:
    dsn = config.storage.dsn
    password = read_password(config)
    kwargs: dict[str, Any] = {"password": password} if password else {}
    import psycopg  # local: libpq loads only to back up a PostgreSQL store

    with psycopg.connect(dsn, autocommit=True, **kwargs) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()
        schema = conn.execute("SELECT current_schema()").fetchone()
        assert snapshot is not None and schema is not None
        counts = {}
        for key, query in COUNT_QUERIES.items():
            row = conn.execute(query.encode()).fetchone()
            counts[key] = int(row[0]) if row else 0
        row = conn.execute(b"SELECT count(*) FROM blobs").fetchone()
        counts["blobs"] = int(row[0]) if row else 0
        argv = [_pg_tool("pg_dump"), "--format=custom", f"--snapshot={snapshot[0]}",
                "--no-owner", "--no-privileges",
                f"--file={dest / 'pochta.pgdump'}", f"--dbname={dsn}"]
        if schema[0] and schema[0] != "public":
            argv.append(f"--schema={schema[0]}")
        done = subprocess.run(argv, env=_pg_env(config), capture_output=True, text=True,
                              check=False)
        conn.execute("COMMIT")
    if done.returncode != 0:
        raise TransferError(f"pg_dump failed: {done.stderr.strip()}")
    os.chmod(dest / "pochta.pgdump", 0o600)
    progress(f"pg_dump: {counts['accounts']} account(s), {counts['mailboxes']} "
             f"mailbox(es), {counts['messages']} message(s), schema {schema[0]}")
    return counts


# --- restore ---------------------------------------------------------------------------


def read_manifest(src: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads(
            (src / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TransferError(f"{src}: no manifest.json here (not a pochta backup)") from None
    except ValueError as exc:
        raise TransferError(f"{src}/manifest.json: {exc}") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise TransferError(f"{src}: not a pochta backup of format version {VERSION}")
    return manifest


def check_files(src: Path, manifest: dict[str, Any]) -> None:
    for rel, want in manifest["files"].items():
        path = src / rel
        if not path.is_file():
            raise TransferError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != want["size"] or _sha256_file(path) != want["sha256"]:
            raise TransferError(f"{path}: does not match its checksum in the manifest")


def restore(config: Any, src: Path, progress: Progress) -> dict[str, Any]:
    manifest = read_manifest(src)
    backend = config.storage.backend
    if manifest["backend"] != backend:
        raise TransferError(f"the backup is of a {manifest['backend']} store and this "
                            f"config uses {backend} (pochta store copy moves between them)")
    check_files(src, manifest)
    progress(f"{len(manifest['files'])} file(s) match the manifest")
    data_dir: Path = config.data_path
    if backend == "postgresql":
        _restore_postgres(config, src, progress)
    else:
        _clear_empty_sqlite(data_dir)
        _private_dir(data_dir)
        for rel in manifest["files"]:
            if rel == "pochta.db" or rel.startswith("blobs/"):
                _copy_private(src / rel, data_dir / rel)
        progress("index and segments copied")
    for rel in manifest["files"]:
        top = rel.split("/", 1)[0]
        if top in KEY_FILES or top in KEY_DIRS:
            # the backup's keys win: they are the ones DNS publishes and tokens were made with
            if (data_dir / rel).exists():
                progress(f"replaced {rel} with the backup's")
            _copy_private(src / rel, data_dir / rel)
    counts = asyncio.run(store_counts(config))
    wanted = {k: manifest["counts"][k] for k in counts}
    if counts != wanted:
        raise TransferError(f"the restored store does not hold what the manifest says: "
                            f"{counts} != {wanted}")
    return manifest


def _clear_empty_sqlite(data_dir: Path) -> None:
    """Refuse a data directory whose store holds anything; remove an empty store (the
    one ``pochta init`` makes) so the backup's takes its place."""
    db = data_dir / "pochta.db"
    if db.exists():
        conn = sqlite3.connect(db)
        try:
            for table in ("accounts", "domains", "messages", "queue"):
                try:
                    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
                except sqlite3.Error:
                    row = None
                if row and row[0]:
                    raise TransferError(f"{data_dir} already holds a store with {table}: "
                                        "restore only into an empty data directory")
        finally:
            conn.close()
    blobs = data_dir / "blobs"
    if blobs.is_dir() and any(p.stat().st_size for p in blobs.iterdir() if p.is_file()):
        raise TransferError(f"{blobs} holds message segments: restore only into an empty "
                            "data directory")
    for name in ("pochta.db", "pochta.db-wal", "pochta.db-shm"):
        (data_dir / name).unlink(missing_ok=True)
    if blobs.is_dir():
        shutil.rmtree(blobs)


def _restore_postgres(config: Any, src: Path, progress: Progress) -> None:
    password = read_password(config)
    kwargs: dict[str, Any] = {"password": password} if password else {}
    import psycopg  # local: libpq loads only to restore a PostgreSQL store

    with psycopg.connect(config.storage.dsn, autocommit=True, **kwargs) as conn:
        for table in ("accounts", "domains", "messages", "queue"):
            exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
            if exists and exists[0] is not None:
                row = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()  # noqa: S608
                if row and row[0]:
                    raise TransferError(f"the database already holds {table}: restore "
                                        "only into an empty database")
    argv = [_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner",
            "--no-privileges", "--single-transaction", "--exit-on-error",
            f"--dbname={config.storage.dsn}", str(src / "pochta.pgdump")]
    done = subprocess.run(argv, env=_pg_env(config), capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise TransferError(f"pg_restore failed: {done.stderr.strip()}")
    progress("pg_restore: done")


async def store_counts(config: Any) -> dict[str, int]:
    """Counts through the store contract (what a client would see)."""
    store = await open_store(config)
    try:
        accounts = await store.list_accounts()
        counts = {"accounts": len(accounts), "domains": len(await store.list_domains()),
                  "aliases": len(await store.list_aliases()),
                  "mailboxes": 0, "messages": 0, "message_bytes": 0}
        for account in accounts:
            for box in await store.list_mailboxes(account.id):
                status = await store.mailbox_status(box.id)
                counts["mailboxes"] += 1
                counts["messages"] += status.messages
                counts["message_bytes"] += status.size
        return counts
    finally:
        await store.close()
