"""`pochta check DOMAIN` with DNS answered by a StaticResolver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pochta.diag import check, common
from pochta.dns import MX, StaticResolver
from pochta.policy import dkim, records

from .helpers import run_cli, run_json
from .schema import CHECK, assert_valid


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> StaticResolver:
    r = StaticResolver()
    monkeypatch.setattr(common, "make_resolver", lambda *a, **k: r)
    # no network: the MTA-STS policy fetch is tested in tests/transport/test_cli.py
    monkeypatch.setattr(check, "make_policy_fetcher", lambda *a, **k: None)
    return r


def publish(r: StaticResolver, recs: list[records.DNSRecord]) -> None:
    for rec in recs:
        if rec.type == "MX":
            pref, host = rec.value.split()
            r.mx_records.setdefault(rec.name, []).append(MX(int(pref), host.rstrip(".")))
        elif rec.type == "TXT":
            r.txt_records.setdefault(rec.name, []).append(rec.value)


def good_domain(r: StaticResolver, tmp_path: Path) -> list[str]:
    """example.test as `pochta dns records` says to publish it, with working rDNS."""
    keys = [dkim.generate_key(tmp_path, "example.test", "sel1", "rsa", 2048),
            dkim.generate_key(tmp_path, "example.test", "sel2", "ed25519")]
    publish(r, records.records_for("example.test", "mail.example.test", keys))
    r.a_records["mail.example.test"] = ["93.184.216.34"]
    r.aaaa_records["mail.example.test"] = ["2a00:1450:4001::25"]
    r.ptr_records["93.184.216.34"] = ["mail.example.test"]
    r.ptr_records["2a00:1450:4001::25"] = ["mail.example.test"]
    return ["sel1", "sel2"]


def by_check(doc: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [f for f in doc["findings"] if f["check"] == check]


async def test_records_pochta_recommends_pass(resolver: StaticResolver,
                                              tmp_path: Path) -> None:
    sels = good_domain(resolver, tmp_path)
    rc, doc = await run_json("check", "example.test", "-s", sels[0], "-s", sels[1])
    assert_valid(doc, CHECK)
    bad = [f for f in doc["findings"] if f["status"] in ("warn", "fail")]
    assert rc == 0, bad
    msgs = " | ".join(f["message"] for f in doc["findings"])
    assert "MX: 10 mail.example.test" in msgs
    assert "reverse DNS mail.example.test (forward-confirmed)" in msgs
    assert "RSA key of 2048 bits" in msgs and "ed25519 key" in msgs
    assert "p=quarantine" in msgs
    assert "(2 DNS lookups of 10)" not in msgs  # "mx" alone is one lookup
    assert "(1 DNS lookups of 10)" in msgs


async def test_broken_domain(resolver: StaticResolver) -> None:
    r = resolver
    r.mx_records["bad.test"] = [MX(10, "mx1.bad.test"), MX(20, "mx2.bad.test")]
    r.a_records["mx1.bad.test"] = ["10.0.0.5"]
    r.ptr_records["10.0.0.5"] = ["somewhere.else.test"]
    r.txt_records["bad.test"] = ["v=spf1 include:a.bad.test ?all"]
    r.txt_records["a.bad.test"] = ["v=spf1 a mx a mx a mx a mx a mx a mx -all"]
    r.a_records["a.bad.test"] = ["192.0.2.9"]
    r.mx_records["a.bad.test"] = [MX(10, "mx1.bad.test")]
    r.txt_records["_dmarc.bad.test"] = ["v=DMARC1; p=none"]
    r.txt_records["weak._domainkey.bad.test"] = ["v=DKIM1; k=rsa; p=" + _rsa_b64(1024)]
    r.txt_records["gone._domainkey.bad.test"] = ["v=DKIM1; p="]
    r.txt_records["_mta-sts.bad.test"] = ["v=STSv1; id=not-valid!"]
    r.txt_records["_smtp._tls.bad.test"] = ["v=TLSRPTv1; rua=ftp://x"]
    rc, doc = await run_json("check", "bad.test", "-s", "weak", "-s", "gone", "-s", "none")
    assert rc == 1
    assert_valid(doc, CHECK)
    status = {(f["check"], f["status"]) for f in doc["findings"]}
    text = {f["message"]: f for f in doc["findings"]}

    def find(fragment: str) -> dict[str, Any]:
        return next(f for m, f in text.items() if fragment in m)

    assert find("mx2.bad.test has no A/AAAA")["status"] == "fail"
    assert find("not publicly routable")["status"] == "warn"
    assert find("not forward-confirmed")["status"] == "warn"
    assert find("13 DNS lookups")["status"] == "fail"
    assert find("p=none")["status"] == "warn"
    assert find("no rua=")["status"] == "warn"
    assert find("RSA key of 1024 bits")["status"] == "warn"
    assert find("revoked")["status"] == "warn"
    assert find("no key record at none._domainkey")["status"] == "fail"
    assert find("no valid id=")["status"] == "fail"
    assert ("tls-rpt", "fail") in status
    for f in doc["findings"]:
        if f["status"] in ("warn", "fail"):
            assert f["fix"], f


def _rsa_b64(bits: int) -> str:
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


async def test_spf_syntax_error_and_plus_all(resolver: StaticResolver) -> None:
    resolver.mx_records["s.test"] = [MX(0, "")]
    resolver.txt_records["s.test"] = ["v=spf1 ip4:300.1.1.1 -all"]
    rc, doc = await run_json("check", "s.test")
    assert rc == 1
    spf = by_check(doc, "spf")
    assert spf[0]["status"] == "fail" and "invalid" in spf[0]["message"]
    assert by_check(doc, "mx")[0]["status"] == "info"  # null MX
    assert "RFC 7505" in by_check(doc, "mx")[0]["message"]
    resolver.txt_records["s.test"] = ["v=spf1 +all"]
    rc, doc = await run_json("check", "s.test")
    assert any(f["status"] == "fail" and "+all" in f["message"] for f in by_check(doc, "spf"))
    resolver.txt_records["s.test"] = ["v=spf1 ip4:192.0.2.0/24 ?all"]
    rc, doc = await run_json("check", "s.test")
    assert any(f["status"] == "warn" and "'?all'" in f["message"] for f in by_check(doc, "spf"))
    assert any(f["status"] == "ok" and "(0 DNS lookups of 10)" in f["message"]
               for f in by_check(doc, "spf"))


async def test_no_records_at_all(resolver: StaticResolver) -> None:
    rc, out = await run_cli("check", "empty.test")
    assert rc == 1
    assert "FAIL  mx" in out and "cannot receive mail" in out
    assert "WARN  spf" in out and "fix: publish 'empty.test. IN TXT \"v=spf1 -all\"'" in out
    assert "failures" in out


async def test_null_mx_must_be_alone_and_two_spf(resolver: StaticResolver) -> None:
    resolver.mx_records["n.test"] = [MX(0, ""), MX(10, "mx.n.test")]
    resolver.txt_records["n.test"] = ["v=spf1 -all", "v=spf1 mx -all"]
    rc, doc = await run_json("check", "n.test")
    assert rc == 1
    assert by_check(doc, "mx")[0]["status"] == "fail"
    assert "2 SPF records" in by_check(doc, "spf")[0]["message"]


async def test_dns_failure_exit_3(resolver: StaticResolver) -> None:
    resolver.fail.add("down.test")
    rc, doc = await run_json("check", "down.test")
    assert rc == 3
    assert "SERVFAIL" in doc["error"]


async def test_send_uses_mx(resolver: StaticResolver) -> None:
    from pochta.diag.sink import Sink, SinkOptions

    sink = Sink(SinkOptions(port=0))
    port = await sink.start()
    resolver.mx_records["mx.test"] = [MX(20, "backup.mx.test"), MX(10, "127.0.0.1")]
    try:
        rc, doc = await run_json("send", "--to", "user@mx.test", "--port", str(port),
                                 "--from", "a@b.test")
    finally:
        await sink.close()
    assert rc == 0
    assert doc["server"] == "127.0.0.1"
    assert sink.records[0].recipients == ["user@mx.test"]
