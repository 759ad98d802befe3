"""Transport-security state (storage contract, interfaces_transport.py): the MTA-STS
policy cache, TLS-RPT results and DMARC results. Runs on every backend of the conformance
suite."""

from __future__ import annotations

from pathlib import Path

from pochta.storage.interfaces import MailStore
from pochta.storage.interfaces_transport import CachedSTSPolicy
from tests.storage.test_conformance import Factory, factory, store  # noqa: F401


async def test_sts_policy_cache(store: MailStore) -> None:  # noqa: F811
    assert await store.get_sts_policy("example.net") is None
    pol = CachedSTSPolicy("Example.NET", "20260101", "enforce", ("mx1.example.net",
                          "*.example.net"), 86400, 1000.0, "version: STSv1\n")
    await store.put_sts_policy(pol)
    got = await store.get_sts_policy("example.net")
    assert got is not None
    assert got.domain == "example.net" and got.mx == ("mx1.example.net", "*.example.net")
    assert got.mode == "enforce" and got.max_age == 86400 and got.fetched == 1000.0
    assert got.expires == 87400.0 and got.text == "version: STSv1\n"
    # replaced on refresh
    await store.put_sts_policy(CachedSTSPolicy("example.net", "2", "testing", (), 60, 5.0))
    got = await store.get_sts_policy("EXAMPLE.net")
    assert got is not None and got.policy_id == "2" and got.mode == "testing"
    await store.put_sts_policy(CachedSTSPolicy("a.example", "1", "none", (), 60, 5.0))
    assert [p.domain for p in await store.list_sts_policies()] == ["a.example",
                                                                   "example.net"]
    assert await store.delete_sts_policy("a.example")
    assert not await store.delete_sts_policy("a.example")
    assert [p.domain for p in await store.list_sts_policies()] == ["example.net"]


async def test_tls_results_are_summed_per_key(store: MailStore) -> None:  # noqa: F811
    pol = ("version: STSv1", "mode: enforce")
    for _ in range(3):
        await store.record_tls_result("2026-12-01", "example.net", "sts", pol,
                                      "mx.example.net", "success", "192.0.2.1")
    await store.record_tls_result("2026-12-01", "example.net", "sts", pol,
                                  "mx.example.net", "certificate-host-mismatch",
                                  "192.0.2.1", count=2)
    await store.record_tls_result("2026-12-02", "example.net", "sts", pol,
                                  "mx.example.net", "success")
    await store.record_tls_result("2026-12-01", "other.test", "no-policy-found", (),
                                  "mx.other.test", "success")
    day1 = await store.tls_results("2026-12-01", "example.net")
    assert [(r.result, r.count) for r in day1] == [("certificate-host-mismatch", 2),
                                                   ("success", 3)]
    assert day1[0].policy_string == pol and day1[0].receiving_ip == "192.0.2.1"
    assert len(await store.tls_results("2026-12-01")) == 3
    assert len(await store.tls_results()) == 4
    assert await store.delete_tls_results("2026-12-01", "example.net") == 2
    assert [r.policy_domain for r in await store.tls_results("2026-12-01")] == ["other.test"]
    assert await store.delete_tls_results("2026-12-01") == 1
    assert [r.day for r in await store.tls_results()] == ["2026-12-02"]


async def test_dmarc_results_are_summed_per_key(store: MailStore) -> None:  # noqa: F811
    for _ in range(2):
        await store.record_dmarc_result("2026-12-01", "Sender.example", "192.0.2.7", "none",
                                        "pass", "fail", "reject")
    await store.record_dmarc_result("2026-12-01", "sender.example", "192.0.2.9", "reject",
                                    "fail", "fail", "reject", count=3,
                                    envelope_from="Bulk.example", spf_auth="bulk.example:fail",
                                    dkim_auth="bulk.example:fail,x.test:pass")
    await store.record_dmarc_result("2026-12-01", "sender.example", "192.0.2.9", "reject",
                                    "fail", "fail", "reject",
                                    envelope_from="bulk.example", spf_auth="bulk.example:fail",
                                    dkim_auth="bulk.example:fail,x.test:pass")
    rows = await store.dmarc_results("2026-12-01", "sender.example")
    assert [(r.source_ip, r.disposition, r.count) for r in rows] == [
        ("192.0.2.7", "none", 2), ("192.0.2.9", "reject", 4)]
    assert rows[0].dkim == "pass" and rows[0].spf == "fail" and rows[0].policy == "reject"
    assert rows[0].envelope_from == "" and rows[0].dkim_auth == ""
    assert (rows[1].envelope_from, rows[1].spf_auth, rows[1].dkim_auth) == (
        "bulk.example", "bulk.example:fail", "bulk.example:fail,x.test:pass")
    assert await store.delete_dmarc_results("2026-12-01") == 2
    assert await store.dmarc_results() == []


async def test_transport_state_survives_reopen(factory: Factory, tmp_path: Path) -> None:  # noqa: F811
    s = await factory(tmp_path)
    await s.put_sts_policy(CachedSTSPolicy("example.net", "1", "enforce", ("mx.example.net",),
                                           600, 1.0))
    await s.record_tls_result("2026-12-01", "example.net", "sts", (), "mx.example.net",
                              "success")
    await s.close()
    s = await factory(tmp_path)
    try:
        assert await s.get_sts_policy("example.net") is not None
        assert len(await s.tls_results()) == 1
    finally:
        await s.close()
