"""A throwaway PostgreSQL cluster for the tests: ``initdb`` and ``pg_ctl`` from Debian's
``postgresql`` package (the Makefile installs it), in a temporary directory, owned by the
unprivileged ``postgres`` user when the tests run as root (initdb refuses root).

The server listens on 127.0.0.1 on a free port (password required: scram-sha-256) and on
a Unix socket in the temporary directory (trust), with ``fsync=on``. Each test gets its
own schema in one database (``fresh_dsn``): creating a schema takes milliseconds, a
database a good part of a second.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

PASSWORD = "pochta-test-secret"
DATABASE = "pochta"


def find_bin(name: str) -> str | None:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    root: Path
    port: int = 0
    user: str | None = None  # the account the server runs as (None: ourselves)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        # cwd: the postgres user may not be allowed into the checkout (e.g. under /root)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                              cwd=self.root)
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed: {proc.stdout}{proc.stderr}{tail}")

    @classmethod
    def start(cls) -> PgCluster:
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("PostgreSQL is not installed: run 'make deps' (it installs "
                               "Debian's postgresql package)")
        root = Path(tempfile.mkdtemp(prefix="pochta-pg-"))
        user = None
        if os.geteuid() == 0:
            user = "postgres"
            try:
                ent = pwd.getpwnam(user)
            except KeyError:
                raise RuntimeError("running as root, initdb needs the unprivileged 'postgres' "
                                   "user that Debian's postgresql package creates") from None
            os.chown(root, ent.pw_uid, ent.pw_gid)
        cluster = cls(root, _free_port(), user)
        (root / "pwfile").write_text(PASSWORD + "\n")
        (root / "sock").mkdir()
        if user is not None:
            ent = pwd.getpwnam(user)
            for p in (root / "pwfile", root / "sock"):
                os.chown(p, ent.pw_uid, ent.pw_gid)
        # -N: initdb's own files need no fsync for a throwaway cluster; the server runs
        # with fsync=on below.
        cluster._run(initdb, "-D", str(root / "data"), "-U", "postgres", "-N",
                     "--auth-local=trust", "--auth-host=scram-sha-256",
                     f"--pwfile={root / 'pwfile'}", "-E", "UTF8", "--locale=C.UTF-8")
        opts = (f"-c listen_addresses=127.0.0.1 -p {cluster.port} "
                f"-c unix_socket_directories={root / 'sock'} -c fsync=on "
                "-c synchronous_commit=on -c max_connections=400 -c shared_buffers=32MB")
        cluster._run(pg_ctl, "-D", str(root / "data"), "-l", str(root / "server.log"),
                     "-o", opts, "-w", "-t", "60", "start")
        with psycopg.connect(cluster.admin_dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        return cluster

    def stop(self) -> None:
        pg_ctl = find_bin("pg_ctl")
        if pg_ctl is not None:
            with contextlib.suppress(RuntimeError):
                self._run(pg_ctl, "-D", str(self.root / "data"), "-m", "immediate", "-w",
                          "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def admin_dsn(self, database: str = DATABASE) -> str:
        return f"host={self.socket_dir} port={self.port} user=postgres dbname={database}"

    def tcp_dsn(self, schema: str | None = None) -> str:
        dsn = f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"
        return dsn + (f"?options=-csearch_path%3D{schema}" if schema else "")

    def fresh_dsn(self, options: str = "") -> str:
        """A DSN (over the Unix socket) whose tables land in a new, empty schema;
        ``options`` adds server settings (``-cname=value``)."""
        schema = f"t{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}".encode())
        return f"{self.admin_dsn()} options='-csearch_path={schema} {options}'"

    def chown(self, path: Path) -> None:
        """Give a directory to the account the server runs as."""
        if self.user is not None:
            ent = pwd.getpwnam(self.user)
            os.chown(path, ent.pw_uid, ent.pw_gid)
