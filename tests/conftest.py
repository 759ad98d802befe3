"""Shared fixtures: a real server on 127.0.0.1 with a temporary data directory.

``running_server`` starts every role (mta, submission STARTTLS + implicit, imap, pop3)
on free loopback ports inside the test's event loop, with the domain example.test, users
alice@example.test / alice-pass and bob@example.test / bob-pass, a self-signed
certificate, and DNS answered by a ``StaticResolver`` (never the network).

The store is SQLite in the test's data directory, or, with ``POCHTA_TEST_BACKEND=postgresql``,
a fresh schema in a throwaway PostgreSQL cluster that the session starts
(``pg_cluster``, tests/pgcluster.py); ``make test`` runs the e2e, IMAP and queue tests
both ways.
External client programs must be started with ``asyncio.create_subprocess_exec`` (or
``run_tool``) so that the loop keeps serving while they run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop
from argon2 import PasswordHasher

from pochta import passwords
from pochta.config import Config, from_dict
from pochta.dns import StaticResolver
from pochta.server.app import RunningServer, build_context, start_server
from pochta.server.context import ServerContext
from pochta.storage.factory import open_store
from pochta.storage.interfaces import MailStore
from pochta.tlsutil import generate_self_signed
from tests.pgcluster import PgCluster, find_bin

USERS = {"alice@example.test": "alice-pass", "bob@example.test": "bob-pass"}
HOSTNAME = "mail.example.test"

TEST_BACKEND = os.environ.get("POCHTA_TEST_BACKEND", "sqlite")
if TEST_BACKEND not in ("sqlite", "postgresql"):
    raise RuntimeError(f"POCHTA_TEST_BACKEND={TEST_BACKEND!r}: sqlite or postgresql")

ALL_LISTENERS = [
    {"role": "mta", "port": 0, "tls": "starttls"},
    {"role": "submission", "port": 0, "tls": "starttls"},
    {"role": "submission", "port": 0, "tls": "implicit"},
    {"role": "imap", "port": 0, "tls": "starttls"},
    {"role": "imap", "port": 0, "tls": "implicit"},
    {"role": "pop3", "port": 0, "tls": "starttls"},
    {"role": "pop3", "port": 0, "tls": "implicit"},
]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests run on uvloop, the loop `pochta serve` uses."""
    return {"uvloop": uvloop.new_event_loop}


# argon2id with tiny parameters: same code path, milliseconds instead of 100s. The
# servers of the tests get them through [auth] (CHEAP_AUTH); hashes the tests store
# themselves are made with CHEAP_HASHER.
CHEAP_AUTH = {"argon2_time_cost": 1, "argon2_memory_kib": 256, "argon2_parallelism": 1}
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=256, parallelism=1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL server of our own for the whole session, stopped at its end."""
    if find_bin("initdb") is None:
        message = "PostgreSQL is not installed: run 'make deps' (Debian's postgresql)"
        if TEST_BACKEND == "postgresql":
            pytest.fail(message)
        pytest.skip(message)
    cluster = PgCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def storage_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The ``[storage]`` section of the shared fixtures' config (empty: SQLite)."""
    if TEST_BACKEND != "postgresql":
        return {}
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return {"backend": "postgresql", "dsn": cluster.fresh_dsn(), "pool_size": 4}


def storage_toml(settings: dict[str, Any]) -> str:
    """A ``[storage]`` table for a config file ("" for the SQLite default)."""
    if not settings:
        return ""
    # a JSON string is a TOML basic string
    return "[storage]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())


@dataclass
class Instance:
    dir: Path
    cert: Path
    key: Path
    raw_config: dict[str, Any]

    def config(self, **overrides: Any) -> Config:
        raw = {**self.raw_config, **overrides, "base_dir": str(self.dir)}
        if "auth" in overrides:  # a test's [auth] keeps the cheap argon2 parameters
            raw["auth"] = {**self.raw_config.get("auth", {}), **overrides["auth"]}
        return from_dict(raw)


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    generate_self_signed(HOSTNAME, cert, key)
    return cert, key


@pytest.fixture
def instance(tmp_path: Path, tls_pair: tuple[Path, Path], storage_settings: dict[str, Any]
             ) -> Instance:
    cert, key = tls_pair
    raw: dict[str, Any] = {
        "hostname": HOSTNAME,
        "data_dir": "data",
        "tls": {"cert": str(cert), "key": str(key)},
        "listeners": [dict(x, address="127.0.0.1") for x in ALL_LISTENERS],
        "auth": dict(CHEAP_AUTH),
        # on by default; off here so that the many FLAGS a test expects stay the ones it
        # set (tests/e2e/test_attachment_keywords.py turns it on)
        "imap": {"attachment_keywords": False},
    }
    if storage_settings:
        raw["storage"] = storage_settings
    return Instance(tmp_path, cert, key, raw)


async def populate(store: MailStore) -> None:
    await store.add_domain("example.test")
    for address, password in USERS.items():
        await store.add_account(address, passwords.hash_password(password, hasher=CHEAP_HASHER),
                                passwords.derive_scram(password))


@dataclass
class Server:
    running: RunningServer
    ctx: ServerContext
    store: MailStore
    resolver: StaticResolver
    cert: Path
    host: str = "127.0.0.1"

    def port(self, role: str, tls: str | None = None) -> int:
        return self.running.port(role, tls)

    def client_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cert))
        ctx.check_hostname = False
        return ctx


async def start_instance(instance: Instance, run_queue: bool = False, **overrides: Any
                         ) -> Server:
    config = instance.config(**overrides)
    store = await open_store(config)
    if not await store.list_domains():
        await populate(store)
    resolver = StaticResolver()
    ctx = await build_context(config, store=store, resolver=resolver)
    running = await start_server(ctx, run_queue=run_queue)
    return Server(running, ctx, store, resolver, instance.cert)


@pytest.fixture
async def running_server(instance: Instance) -> AsyncIterator[Server]:
    server = await start_instance(instance)
    try:
        yield server
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


@pytest.fixture
async def plus_server(instance: Instance) -> AsyncIterator[Server]:
    """running_server with ``[auth] scram_plus = true`` (SCRAM-SHA-256-PLUS offered)."""
    server = await start_instance(instance, auth={"scram_plus": True})
    try:
        yield server
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def run_tool(*argv: str, stdin: bytes | None = None, timeout: float = 60.0
                   ) -> tuple[int, str]:
    """Run an external program without blocking the loop; (exit code, stdout+stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace")


def need_tool(name: str) -> str:
    """The path of a Debian tool the Makefile installs; fail loudly if it is missing."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                  else None)
    if path is None:
        pytest.fail(f"{name} is not installed: run 'make deps' (the Makefile installs it)")
    return path
