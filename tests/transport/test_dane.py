"""DANE for SMTP (RFC 7672): TLSA matching, and the queue worker against a DNSSEC-signed
zone that NSD serves and Debian's unbound validates on loopback (real validation: a
bogus signature, an unsigned zone, DANE-EE, DANE-TA), plus a downgrade through a proxy that
strips STARTTLS."""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pochta.dns import MX, StaticResolver, TemporaryDNSError
from pochta.queue.dane import (
    DANE,
    DANEMismatch,
    StaticDNSSECResolver,
    TLSARecord,
    ValidatingResolver,
    check_chain,
    spki_of,
    tlsa_for_certificate,
)
from pochta.queue.routing import ConfigTLSPolicy
from pochta.queue.settings import QueueConfig
from pochta.queue.worker import QueueWorker
from pochta.storage.interfaces import Envelope, QueueState, RemoteRecipient
from pochta.storage.interfaces_transport import CachedSTSPolicy
from pochta.storage.sqlite import SQLiteStore
from pochta.tlsutil import server_context
from pochta.transport_security.mtasts import MTASTS, HTTPSPolicyFetcher
from pochta.transport_security.policy import TransportSecurityPolicy
from pochta.transport_security.tlsrpt import TLSResultRecorder
from tests.queue.conftest import FakeClock
from tests.queue.sink import Sink
from tests.transport.dnssec import DNSSECLab, tools_missing
from tests.transport.pki import CA, StripTLSProxy

MSG = b"From: alice@example.test\r\nTo: bob@x\r\nSubject: hi\r\n\r\nHi.\r\n"


def der_chain(chain_pem: Path) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER)
            for c in x509.load_pem_x509_certificates(chain_pem.read_bytes())]


def sha256_spki(der: bytes) -> str:
    return hashlib.sha256(spki_of(der)).hexdigest()


# -- matching (pure) -------------------------------------------------------------------------


def test_tlsa_parse_and_usability() -> None:
    r = TLSARecord.parse("3 1 1 0A0b 0c")
    assert (r.usage, r.selector, r.mtype, r.data) == (3, 1, 1, b"\x0a\x0b\x0c")
    assert r.usable and str(r) == "3 1 1 0a0b0c"
    assert not TLSARecord.parse("1 1 1 00").usable  # PKIX-EE: unusable for SMTP
    assert not TLSARecord.parse("0 0 1 00").usable
    with pytest.raises(ValueError):
        TLSARecord.parse("3 1")


def test_dane_ee_and_ta_matching(tmp_path: Path) -> None:
    ca = CA(tmp_path / "ca")
    chain = der_chain(ca.issue("mx.example.net")[0])
    ee = tlsa_for_certificate(chain[0])
    assert str(ee).startswith("3 1 1 ") and ee.data.hex() == sha256_spki(chain[0])
    # DANE-EE: any name, the key decides
    assert check_chain([ee], chain, ["some.other.name"]).startswith("DANE-EE")
    full = TLSARecord(3, 0, 2, hashlib.sha512(chain[0]).digest())
    assert check_chain([full], chain, ["x"]).startswith("DANE-EE")
    # DANE-TA: the CA's key, and the leaf must carry the MX name (or the domain)
    ta = TLSARecord(2, 1, 1, bytes.fromhex(sha256_spki(ca.der)))
    assert check_chain([ta], chain, ["mx.example.net", "example.net"]).startswith("DANE-TA")
    with pytest.raises(DANEMismatch):
        check_chain([ta], chain, ["mx.elsewhere.example", "elsewhere.example"])
    # the TA must be in the chain the server sent
    with pytest.raises(DANEMismatch):
        check_chain([ta], chain[:1], ["mx.example.net"])
    other = der_chain(CA(tmp_path / "o", "Other CA").issue("mx.example.net")[0])
    with pytest.raises(DANEMismatch):
        check_chain([ee, ta], other, ["mx.example.net"])
    with pytest.raises(DANEMismatch):
        check_chain([ee], [], ["mx.example.net"])


async def test_validating_resolver_refuses_nothing_but_reports_servfail() -> None:
    double = StaticDNSSECResolver(
        {("_25._tcp.mx.a.test", "TLSA"): ["3 1 1 00"], ("_25._tcp.mx.d.test", "TLSA"): [
            "3 1 1 00"]},
        secure={"_25._tcp.mx.a.test", "mx.a.test", "mx.b.test", "mx.c.test",
                "_25._tcp.mx.d.test"},
        bogus={"_25._tcp.mx.b.test"})
    dane = DANE(double)
    host = await dane.host("mx.a.test")
    assert host is not None and host.records == (TLSARecord(3, 1, 1, b"\0"),)
    bad = await dane.host("mx.b.test")
    assert bad is not None and "failed" in bad.failure
    assert await dane.host("mx.c.test") is None
    # RFC 7672 §2.2.2: an insecure address record: no DANE for that host
    assert await dane.host("mx.d.test") is None
    # nothing listens here: a timeout is a temporary failure
    with pytest.raises(TemporaryDNSError):
        await ValidatingResolver("127.0.0.1:9", timeout=0.5).lookup("x.test", "TLSA")


# -- the world: a signed zone, a validating resolver, an MX ---------------------------------


@dataclass
class Lab:
    dnssec: DNSSECLab
    ca: CA
    certs: dict[str, tuple[Path, Path]]  # host -> (chain, key) the MX presents
    rogue: tuple[Path, Path]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    missing = tools_missing()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (make test installs them)")
    d = tmp_path_factory.mktemp("dane")
    ca = CA(d / "ca")
    certs = {
        "mx.dane.test": ca.issue("unrelated.example"),  # DANE-EE ignores names
        "mxta.dane.test": ca.issue("mxta.dane.test"),
        "mxtaw.dane.test": ca.issue("not-the-mx.example"),
    }
    rogue = CA(d / "rogue", "Rogue CA").issue("mx.dane.test")
    ee = sha256_spki(der_chain(certs["mx.dane.test"][0])[0])
    ta = sha256_spki(ca.der)
    zone = [
        "ee MX 10 mx", "mx A 127.0.0.1", f"_25._tcp.mx TLSA 3 1 1 {ee}",
        "ta MX 10 mxta", "mxta A 127.0.0.1", f"_25._tcp.mxta TLSA 2 1 1 {ta}",
        "taw MX 10 mxtaw", "mxtaw A 127.0.0.1", f"_25._tcp.mxtaw TLSA 2 1 1 {ta}",
        "bogus MX 10 mxbad", "mxbad A 127.0.0.1", f"_25._tcp.mxbad TLSA 3 1 1 {ee}",
        "notlsa MX 10 mxplain", "mxplain A 127.0.0.1",
        "sts MX 10 mx",
    ]
    insecure = ["plain MX 10 mx", "mx A 127.0.0.1", f"_25._tcp.mx TLSA 3 1 1 {ee}"]
    dnssec = DNSSECLab(d / "dns")
    try:
        dnssec.start(zone, insecure, ["_25._tcp.mxbad.dane.test"])
        yield Lab(dnssec, ca, certs, rogue)
    finally:
        dnssec.stop()


@dataclass
class World:
    lab: Lab
    store: SQLiteStore
    clock: FakeClock
    resolver: StaticResolver

    async def deliver(self, rcpt: str, cert: tuple[Path, Path] | None, *,
                      strip: bool = False, mtasts: MTASTS | None = None,
                      ) -> tuple[QueueState, str, Sink]:
        sink = Sink(tls_context=server_context(*cert) if cert else None)
        await sink.start()
        proxy = StripTLSProxy(sink.port) if strip else None
        port = await proxy.start() if proxy else sink.port
        try:
            await self.store.accept(MSG, Envelope(sender="alice@example.test"), [],
                                    [RemoteRecipient(rcpt)])
            config = QueueConfig(smtp_port=port, connect_timeout=5, command_timeout=5,
                                 data_timeout=5)
            dane = DANE(ValidatingResolver(self.lab.dnssec.resolver_address, timeout=5),
                        port=25)
            hook = TransportSecurityPolicy(ConfigTLSPolicy([]), mtasts, dane)
            worker = QueueWorker(self.store, "mta.example.test", self.resolver, config,
                                 clock=self.clock, tls_policy=hook,
                                 cafile=str(self.lab.ca.cafile),
                                 tls_observer=TLSResultRecorder(self.store, self.clock))
            await worker.run_once()
        finally:
            if proxy:
                await proxy.close()
            await sink.close()
        item = [i for i in await self.store.list_queue() if i.recipient.address == rcpt][-1]
        return item.state, item.last_reply, sink


@pytest.fixture
async def world(lab: Lab, tmp_path: Path) -> AsyncIterator[World]:
    resolver = StaticResolver()  # routing's ordinary resolver; DANE asks unbound
    for domain, host in [("ee.dane.test", "mx.dane.test"), ("ta.dane.test", "mxta.dane.test"),
                         ("taw.dane.test", "mxtaw.dane.test"),
                         ("bogus.dane.test", "mxbad.dane.test"),
                         ("notlsa.dane.test", "mxplain.dane.test"),
                         ("sts.dane.test", "mx.dane.test"),
                         ("plain.insecure.test", "mx.insecure.test")]:
        resolver.mx_records[domain] = [MX(10, host)]
        resolver.a_records[host] = ["127.0.0.1"]
    store = await SQLiteStore.open(tmp_path / "data")
    try:
        yield World(lab, store, FakeClock(), resolver)
    finally:
        await store.close()


async def test_dane_ee_delivers_whatever_the_name(
    world: World, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pochta.queue")
    state, _, sink = await world.deliver("bob@ee.dane.test", world.lab.certs["mx.dane.test"])
    assert state is QueueState.DELIVERED and sink.messages[0].tls
    assert any("cert=dane" in r.getMessage() and "dane=DANE-EE" in r.getMessage()
               for r in caplog.records)
    rows = await world.store.tls_results(policy_domain="ee.dane.test")
    assert [(r.policy_type, r.result) for r in rows] == [("tlsa", "success")]
    assert rows[0].policy_string[0].startswith("3 1 1 ")


async def test_dane_ee_wrong_key_defers(world: World) -> None:
    state, reply, sink = await world.deliver("bob@ee.dane.test", world.lab.rogue)
    assert state is QueueState.DEFERRED and "DANE" in reply and "4.7.5" in reply
    assert sink.messages == []
    rows = await world.store.tls_results(policy_domain="ee.dane.test")
    assert [r.result for r in rows] == ["validation-failure"]


async def test_dane_ta_checks_chain_and_name(world: World) -> None:
    state, _, _ = await world.deliver("bob@ta.dane.test", world.lab.certs["mxta.dane.test"])
    assert state is QueueState.DELIVERED
    state, reply, sink = await world.deliver("bob@taw.dane.test",
                                             world.lab.certs["mxtaw.dane.test"])
    assert state is QueueState.DEFERRED and "DANE-TA" in reply and sink.messages == []


async def test_bogus_tlsa_signature_defers_without_connecting(world: World) -> None:
    state, reply, sink = await world.deliver("bob@bogus.dane.test",
                                             world.lab.certs["mx.dane.test"])
    assert state is QueueState.DEFERRED and "TLSA lookup" in reply and "SERVFAIL" in reply
    assert sink.connections == 0
    rows = await world.store.tls_results(policy_domain="bogus.dane.test")
    assert [(r.policy_type, r.result) for r in rows] == [("tlsa", "dnssec-invalid")]


async def test_downgrade_blocked_by_dane(world: World) -> None:
    state, reply, sink = await world.deliver("bob@ee.dane.test",
                                             world.lab.certs["mx.dane.test"], strip=True)
    assert state is QueueState.DEFERRED and "4.7.4" in reply and "DANE" in reply
    assert sink.messages == []


async def test_unsigned_zone_and_missing_tlsa_stay_opportunistic(world: World) -> None:
    # TLSA records in an unsigned zone are ignored (RFC 7672 §2.2): a STARTTLS stripper
    # gets the message, as for any domain without a policy
    state, _, sink = await world.deliver("bob@plain.insecure.test", world.lab.rogue,
                                         strip=True)
    assert state is QueueState.DELIVERED and not sink.messages[0].tls
    # a signed zone whose MX host has no TLSA record (authenticated denial): no DANE
    state, _, sink = await world.deliver("bob@notlsa.dane.test", None)
    assert state is QueueState.DELIVERED and not sink.messages[0].tls


async def test_dane_takes_precedence_over_mta_sts(world: World) -> None:
    """MTA-STS enforce names the MX, whose certificate is not valid for Web PKI (wrong
    name), but its DANE-EE record matches: DANE decides (RFC 8461 §2), delivered."""
    await world.store.put_sts_policy(CachedSTSPolicy(
        "sts.dane.test", "1", "enforce", ("mx.dane.test",), 86400, world.clock()))
    world.resolver.txt_records["_mta-sts.sts.dane.test"] = ["v=STSv1; id=1"]
    sts = MTASTS(world.store, world.resolver,
                 HTTPSPolicyFetcher(world.resolver, port=9), clock=world.clock)
    state, _, sink = await world.deliver("bob@sts.dane.test", world.lab.certs["mx.dane.test"],
                                         mtasts=sts)
    assert state is QueueState.DELIVERED and sink.messages[0].tls
    rows = await world.store.tls_results(policy_domain="sts.dane.test")
    assert [(r.policy_type, r.result) for r in rows] == [("tlsa", "success")]


def test_ssl_chain_access() -> None:
    """Python 3.11/3.12 expose the peer chain only on the private _sslobj."""
    import _ssl

    sock_type = getattr(_ssl, "_SSLSocket", None)
    assert hasattr(sock_type, "get_unverified_chain") or hasattr(
        ssl.SSLObject, "get_unverified_chain")
