"""A real server with three POP3 listeners (STLS, implicit TLS, plaintext) on loopback.

Like the shared ``running_server`` (tests/conftest.py, which also makes password hashing
cheap for the session) but with a plaintext POP3 listener and adjustable limits."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pochta import passwords
from pochta.config import AuthConfig, Config, Limits, Listener, TLSConfig
from pochta.server.app import RunningServer, build_context, start_server
from pochta.server.context import ServerContext
from pochta.storage.interfaces import Account, Envelope, LocalTarget
from pochta.tlsutil import generate_self_signed
from tests.conftest import CHEAP_HASHER

HOST = "127.0.0.1"
USERS = {"alice@example.test": "alice-pass", "bob@example.test": "bob-pass"}


@dataclass
class Pop3Env:
    ctx: ServerContext
    running: RunningServer
    cert_path: Path
    tmp: Path
    accounts: dict[str, Account]
    host: str = HOST

    @property
    def port_stls(self) -> int:
        return self.running.port("pop3", "starttls")

    @property
    def port_tls(self) -> int:
        return self.running.port("pop3", "implicit")

    @property
    def port_plain(self) -> int:
        return self.running.port("pop3", "none")

    def client_ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_path))

    async def deliver(self, address: str, data: bytes) -> int:
        account = self.accounts[address]
        result = await self.ctx.store.accept(
            data, Envelope(sender="sender@example.test"), [LocalTarget(account.id)]
        )
        return result.local_uids[0][1]

    async def inbox_uids(self, address: str) -> list[int]:
        box = await self.ctx.store.get_mailbox(self.accounts[address].id, "INBOX")
        assert box is not None
        return [m.uid for m in await self.ctx.store.list_messages(box.id)]


async def make_env(tmp: Path, **limits: float) -> AsyncIterator[Pop3Env]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    generate_self_signed("mail.example.test", cert, key)
    config = Config(
        hostname="mail.example.test",
        data_dir=str(tmp / "data"),
        listeners=[
            Listener("pop3", 0, HOST, "starttls"),
            Listener("pop3", 0, HOST, "implicit"),
            Listener("pop3", 0, HOST, "none"),
        ],
        tls=TLSConfig(cert=str(cert), key=str(key)),
        limits=dataclasses.replace(Limits(), **limits),  # type: ignore[arg-type]
        auth=AuthConfig(failure_delay=0.0, failures_before_lockout=5, argon2_time_cost=1,
                        argon2_memory_kib=256, argon2_parallelism=1),
    )
    ctx = await build_context(config)
    accounts: dict[str, Account] = {}
    for domain in {a.split("@")[1] for a in USERS}:
        await ctx.store.add_domain(domain)
    for address, password in USERS.items():
        accounts[address] = await ctx.store.add_account(
            address, passwords.hash_password(password, hasher=CHEAP_HASHER),
            passwords.derive_scram(password)
        )
    running = await start_server(ctx, run_queue=False)
    try:
        yield Pop3Env(ctx, running, cert, tmp, accounts)
    finally:
        await running.close(grace=1.0)
        await ctx.store.close()


@pytest.fixture
async def pop3env(tmp_path: Path) -> AsyncIterator[Pop3Env]:
    async for env in make_env(tmp_path):
        yield env
