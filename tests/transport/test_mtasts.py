"""MTA-STS (RFC 8461) outbound: policy parsing, fetching over HTTPS with a test CA, the
cache in the store, and enforce/testing semantics in the queue worker (real sockets on
127.0.0.1, DNS from a static table, a fake clock)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pochta.dns import MX, StaticResolver
from pochta.queue.routing import ConfigTLSPolicy
from pochta.queue.settings import QueueConfig, TLSPolicy
from pochta.queue.worker import QueueWorker
from pochta.storage.interfaces import Envelope, QueueState, RemoteRecipient
from pochta.storage.interfaces_transport import CachedSTSPolicy
from pochta.storage.sqlite import SQLiteStore
from pochta.transport_security.mtasts import (
    MTASTS,
    HTTPSPolicyFetcher,
    PolicyError,
    mx_matches,
    parse_policy,
    parse_txt,
)
from pochta.transport_security.policy import TransportSecurityPolicy
from pochta.transport_security.tlsrpt import TLSResultRecorder
from tests.queue.conftest import FakeClock
from tests.queue.sink import Sink
from tests.transport.pki import CA, PolicyServer, StripTLSProxy

MSG = b"From: alice@example.test\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nHi.\r\n"
ENFORCE = "version: STSv1\nmode: enforce\nmx: mx.example.net\nmax_age: 86400\n"


# -- pure parts ---------------------------------------------------------------------------


def test_parse_txt() -> None:
    assert parse_txt(["v=STSv1; id=20260101T000000;"]) == "20260101T000000"
    assert parse_txt(["v=spf1 -all", "v=STSv1;id=abc"]) == "abc"
    assert parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # two: no policy
    assert parse_txt(["v=STSv1; id=bad-id!"]) is None
    assert parse_txt(["v=STSv1; id=" + "a" * 33]) is None
    assert parse_txt([]) is None


def test_parse_policy() -> None:
    p = parse_policy("version: STSv1\r\nmode: enforce\r\nmx: mx1.example.net\r\n"
                     "mx: *.backup.example.net\r\nmax_age: 604800\r\nextension: ignored\r\n")
    assert p.mode == "enforce" and p.max_age == 604800
    assert p.mx == ("mx1.example.net", "*.backup.example.net")
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 1\n").mx == ()
    assert parse_policy("version: STSv1\nmode: testing\nmx: a.b\nmax_age: 99999999999"[:-1]
                        ).max_age == 31_557_600
    for bad in ("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1",
                "version: STSv1\nmode: strict\nmx: a\nmax_age: 1",
                "version: STSv1\nmode: enforce\nmax_age: 1",
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: soon",
                "<html>not a policy</html>"):
        with pytest.raises(PolicyError) as exc:
            parse_policy(bad)
        assert exc.value.result == "sts-policy-invalid"


def test_mx_patterns() -> None:
    assert mx_matches("mx.example.net", "MX.example.net.")
    assert mx_matches("*.example.net", "mx1.example.net")
    assert not mx_matches("*.example.net", "a.b.example.net")  # one label only
    assert not mx_matches("*.example.net", "example.net")
    assert not mx_matches("mx.example.net", "mx.example.net.evil.test")


# -- the world: a CA, a policy host, an MX -------------------------------------------------


@dataclass
class World:
    store: SQLiteStore
    clock: FakeClock
    ca: CA
    resolver: StaticResolver
    policy: PolicyServer
    sink: Sink
    tmp: Path

    def worker(self, mx_port: int | None = None, tls_policies: list[TLSPolicy] | None = None,
               **cfg: object) -> QueueWorker:
        config = QueueConfig(smtp_port=mx_port or self.sink.port, connect_timeout=5,
                             command_timeout=5, data_timeout=5,
                             tls_policies=tls_policies or [], **cfg)  # type: ignore[arg-type]
        hook = TransportSecurityPolicy(ConfigTLSPolicy(config.tls_policies), self.mtasts)
        return QueueWorker(self.store, "mta.example.test", self.resolver, config,
                           clock=self.clock, tls_policy=hook, cafile=str(self.ca.cafile),
                           tls_observer=TLSResultRecorder(self.store, self.clock),
                           bounce_sink=self.bounce)

    @property
    def mtasts(self) -> MTASTS:
        if not hasattr(self, "_mtasts"):
            fetcher = HTTPSPolicyFetcher(self.resolver, cafile=str(self.ca.cafile),
                                         port=self.policy.port, timeout=5)
            self._mtasts = MTASTS(self.store, self.resolver, fetcher, clock=self.clock,
                                  txt_interval=300)
        return self._mtasts

    bounces: list[bytes] | None = None

    async def bounce(self, data: bytes, rcpt: str, env: Envelope) -> None:
        if self.bounces is None:
            self.bounces = []
        self.bounces.append(data)

    async def enqueue(self, rcpt: str = "bob@example.net") -> None:
        await self.store.accept(MSG, Envelope(sender="alice@example.test"), [],
                                [RemoteRecipient(rcpt)])

    async def item(self, rcpt: str = "bob@example.net") -> tuple[QueueState, str]:
        items = [i for i in await self.store.list_queue()
                 if i.recipient.address == rcpt]
        return items[-1].state, items[-1].last_reply


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = FakeClock()
    ca = CA(tmp_path / "ca")
    policy = PolicyServer(ca.context("mta-sts.example.net"), body=ENFORCE)
    await policy.start()
    sink = Sink(tls_context=ca.context("mx.example.net"))
    await sink.start()
    resolver = StaticResolver()
    resolver.mx_records["example.net"] = [MX(10, "mx.example.net")]
    resolver.a_records["mx.example.net"] = ["127.0.0.1"]
    resolver.a_records["mta-sts.example.net"] = ["127.0.0.1"]
    resolver.txt_records["_mta-sts.example.net"] = ["v=STSv1; id=1"]
    store = await SQLiteStore.open(tmp_path / "data")
    try:
        yield World(store, clock, ca, resolver, policy, sink, tmp_path)
    finally:
        await store.close()
        await sink.close()
        await policy.close()


# -- enforce --------------------------------------------------------------------------------


async def test_enforce_delivers_over_verified_tls_and_records_success(
    world: World, caplog: pytest.LogCaptureFixture,
) -> None:
    await world.enqueue()
    caplog.set_level(logging.INFO, logger="pochta.queue")
    await world.worker().run_once()
    assert world.sink.messages and world.sink.messages[0].tls
    state, _ = await world.item()
    assert state is QueueState.DELIVERED
    assert any("cert=verified policy=sts" in r.getMessage() for r in caplog.records)
    cached = await world.store.get_sts_policy("example.net")
    assert cached is not None and cached.mode == "enforce" and cached.policy_id == "1"
    rows = await world.store.tls_results(policy_domain="example.net")
    assert [(r.policy_type, r.mx_host, r.result, r.count) for r in rows] == [
        ("sts", "mx.example.net", "success", 1)]
    assert "mode: enforce" in rows[0].policy_string


async def test_enforce_mx_outside_policy_defers_then_bounces_with_reason(
    world: World,
) -> None:
    world.policy.body = ENFORCE.replace("mx.example.net", "mail.example.net")
    await world.enqueue()
    worker = world.worker()
    await worker.run_once()
    state, reply = await world.item()
    assert state is QueueState.DEFERRED
    assert "4.7.5" in reply and "MTA-STS" in reply and "mail.example.net" in reply
    assert world.sink.connections == 0  # never even connected to the MX outside the policy
    world.clock.advance(6 * 86400)
    await worker.run_once()
    state, reply = await world.item()
    assert state is QueueState.FAILED and "MTA-STS" in reply
    assert world.bounces and b"5.4.7" in world.bounces[0] and b"MTA-STS" in world.bounces[0]


@pytest.mark.parametrize("bad", ["wrong-name", "other-ca", "expired"])
async def test_enforce_refuses_an_invalid_certificate(world: World, bad: str) -> None:
    if bad == "wrong-name":
        ctx = world.ca.context("other.example.net")
        expect = "certificate-host-mismatch"
    elif bad == "other-ca":
        ctx = CA(world.tmp / "rogue", "Rogue CA").context("mx.example.net")
        expect = "certificate-not-trusted"
    else:
        ctx = world.ca.context("mx.example.net", expired=True)
        expect = "certificate-expired"
    bad_sink = Sink(tls_context=ctx)
    await bad_sink.start()
    try:
        await world.enqueue()
        await world.worker(bad_sink.port).run_once()
        state, reply = await world.item()
        assert state is QueueState.DEFERRED and "4.7.5" in reply and "MTA-STS" in reply
        assert bad_sink.messages == []
        rows = await world.store.tls_results(policy_domain="example.net")
        assert [(r.result, r.count) for r in rows] == [(expect, 1)]
    finally:
        await bad_sink.close()


async def test_downgrade_blocked_under_enforce_allowed_without_policy(world: World) -> None:
    """A man in the middle strips STARTTLS: with MTA-STS enforce the message stays queued;
    for a domain without a policy it goes in plaintext (opportunistic TLS, RFC 7435)."""
    proxy = StripTLSProxy(world.sink.port)
    await proxy.start()
    try:
        await world.enqueue()
        await world.worker(proxy.port).run_once()
        state, reply = await world.item()
        assert proxy.stripped >= 1
        assert state is QueueState.DEFERRED and "4.7.4" in reply and "MTA-STS" in reply
        assert world.sink.messages == []
        rows = await world.store.tls_results(policy_domain="example.net")
        assert [r.result for r in rows] == ["starttls-not-supported"]

        world.resolver.mx_records["plain.example"] = [MX(10, "mx.example.net")]
        await world.enqueue("carol@plain.example")
        await world.worker(proxy.port).run_once()
        state, _ = await world.item("carol@plain.example")
        assert state is QueueState.DELIVERED
        assert world.sink.messages and not world.sink.messages[0].tls
    finally:
        await proxy.close()


async def test_admin_tls_policy_overrides_mta_sts(world: World) -> None:
    proxy = StripTLSProxy(world.sink.port)
    await proxy.start()
    try:
        await world.enqueue()
        await world.worker(proxy.port,
                           tls_policies=[TLSPolicy("example.net", "may")]).run_once()
        assert (await world.item())[0] is QueueState.DELIVERED
    finally:
        await proxy.close()


# -- testing and none -----------------------------------------------------------------------


async def test_testing_mode_delivers_and_reports(world: World) -> None:
    world.policy.body = ENFORCE.replace("enforce", "testing")
    bad_sink = Sink(tls_context=world.ca.context("other.example.net"))
    await bad_sink.start()
    try:
        await world.enqueue()
        await world.worker(bad_sink.port).run_once()
        assert (await world.item())[0] is QueueState.DELIVERED
        assert bad_sink.messages and bad_sink.messages[0].tls
        rows = await world.store.tls_results(policy_domain="example.net")
        assert [(r.policy_type, r.result) for r in rows] == [
            ("sts", "certificate-host-mismatch")]
    finally:
        await bad_sink.close()


async def test_mode_none_changes_nothing(world: World) -> None:
    world.policy.body = "version: STSv1\nmode: none\nmax_age: 86400\n"
    proxy = StripTLSProxy(world.sink.port)
    await proxy.start()
    try:
        await world.enqueue()
        await world.worker(proxy.port).run_once()
        assert (await world.item())[0] is QueueState.DELIVERED
    finally:
        await proxy.close()


# -- the cache ------------------------------------------------------------------------------


async def test_cache_refresh_on_id_change_and_before_max_age(world: World) -> None:
    sts = world.mtasts
    first = await sts.policy("example.net")
    assert first is not None and world.policy.requests == 1
    # warm: no HTTPS, and no DNS either within txt_interval
    world.resolver.queries.clear()
    assert await sts.policy("example.net") == first
    assert world.policy.requests == 1 and world.resolver.queries == []
    # same id after txt_interval: one TXT lookup, no fetch
    world.clock.advance(301)
    assert (await sts.policy("example.net")) == first and world.policy.requests == 1
    assert ("TXT", "_mta-sts.example.net") in world.resolver.queries
    # a new id: fetched again
    world.resolver.txt_records["_mta-sts.example.net"] = ["v=STSv1; id=2"]
    world.policy.body = ENFORCE.replace("86400", "3600")
    world.clock.advance(301)
    second = await sts.policy("example.net")
    assert second is not None and second.policy_id == "2" and second.max_age == 3600
    assert world.policy.requests == 2
    # past half of max_age with the same id: refreshed proactively
    world.clock.advance(1801)
    third = await sts.policy("example.net")
    assert third is not None and third.fetched > second.fetched
    assert world.policy.requests == 3


async def test_failed_fetch_keeps_cached_policy_until_it_expires(world: World) -> None:
    sts = world.mtasts
    assert await sts.policy("example.net") is not None
    world.resolver.txt_records["_mta-sts.example.net"] = ["v=STSv1; id=9"]
    world.policy.status = "500 Internal Server Error"
    world.clock.advance(301)
    kept = await sts.policy("example.net")
    assert kept is not None and kept.policy_id == "1"
    # the TXT record is gone: the cached policy still applies (RFC 8461 §5.1)
    world.resolver.txt_records.pop("_mta-sts.example.net")
    world.clock.advance(301)
    assert await sts.policy("example.net") is not None
    world.clock.advance(86400)
    assert await sts.policy("example.net") is None  # expired


@pytest.mark.parametrize("problem", ["untrusted", "not-found", "html", "redirect"])
async def test_unusable_policy_host_means_no_policy(world: World, problem: str) -> None:
    if problem == "untrusted":
        rogue = PolicyServer(CA(world.tmp / "rogue", "Rogue CA").context("mta-sts.example.net"),
                             body=ENFORCE)
        await rogue.start()
        world.policy.port = rogue.port
    elif problem == "not-found":
        world.policy.status = "404 Not Found"
    elif problem == "html":
        world.policy.content_type = "text/html"
    else:
        world.policy.status = "301 Moved Permanently"
    fetcher = HTTPSPolicyFetcher(world.resolver, cafile=str(world.ca.cafile),
                                 port=world.policy.port, timeout=5)
    with pytest.raises(PolicyError) as exc:
        await fetcher.fetch("example.net")
    if problem == "untrusted":
        assert exc.value.result == "sts-webpki-invalid"
        await rogue.close()
    failures: list[str] = []
    sts = MTASTS(world.store, world.resolver, fetcher, clock=world.clock,
                 on_failure=lambda d, k, lines, h, result: failures.append(result))
    if problem != "untrusted":
        assert await sts.policy("example.net") is None
        assert len(failures) == 1


async def test_cached_policy_survives_restart(world: World) -> None:
    await world.store.put_sts_policy(CachedSTSPolicy(
        "example.net", "1", "enforce", ("mx.example.net",), 86400, world.clock(), ENFORCE))
    world.policy.status = "500 Internal Server Error"  # would fail if it were fetched
    sts = world.mtasts
    got = await sts.policy("example.net")
    assert got is not None and got.mode == "enforce" and world.policy.requests == 0
