"""Transport security in the admin tools: `pochta queue show` (the MTA-STS policy and TLS
results of the recipients' domains), `pochta check` (fetches the MTA-STS policy), and
`pochta dns records` (the TLSA record of our certificate, with a warning on key change)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from pochta.config import from_dict
from pochta.diag.check import check_domain
from pochta.dns import MX, StaticResolver
from pochta.policy import cli as policy_cli
from pochta.queue.cli import cmd_show
from pochta.queue.dane import TLSARecord, spki_of
from pochta.storage.interfaces import Envelope, RemoteRecipient
from pochta.storage.interfaces_transport import CachedSTSPolicy
from pochta.storage.sqlite import SQLiteStore
from pochta.tlsutil import generate_self_signed
from pochta.transport_security.mtasts import HTTPSPolicyFetcher
from tests.transport.pki import CA, PolicyServer


async def test_queue_show_has_policy_and_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    store = await SQLiteStore.open(tmp_path / "data")
    try:
        await store.accept(b"Subject: x\r\n\r\nx\r\n", Envelope(sender="a@example.test"), [],
                           [RemoteRecipient("bob@example.net")])
        await store.put_sts_policy(CachedSTSPolicy("example.net", "7", "enforce",
                                                   ("mx.example.net",), 86400, 4e9))
        await store.record_tls_result("2026-12-01", "example.net", "sts", (),
                                      "mx.example.net", "certificate-expired")
        item = (await store.list_queue())[0]
        assert await cmd_show(argparse.Namespace(id=item.message_id, body=False), store) == 0
        out = capsys.readouterr().out
        assert "MTA-STS:     example.net: mode=enforce id=7 mx=mx.example.net (valid" in out
        assert "TLS results: example.net: sts:certificate-expired 1" in out
    finally:
        await store.close()


async def test_check_fetches_the_policy(tmp_path: Path) -> None:
    ca = CA(tmp_path / "ca")
    server = PolicyServer(ca.context("mta-sts.example.net"),
                          body="version: STSv1\nmode: enforce\nmx: mx1.example.net\n"
                               "max_age: 86400\n")
    await server.start()
    try:
        r = StaticResolver()
        r.mx_records["example.net"] = [MX(10, "mx1.example.net"), MX(20, "mx2.example.net")]
        r.a_records["mx1.example.net"] = ["127.0.0.1"]
        r.a_records["mx2.example.net"] = ["127.0.0.1"]
        r.a_records["mta-sts.example.net"] = ["127.0.0.1"]
        r.txt_records["_mta-sts.example.net"] = ["v=STSv1; id=42"]
        fetcher = HTTPSPolicyFetcher(r, cafile=str(ca.cafile), port=server.port, timeout=5)
        found = [f for f in await check_domain("example.net", r, (), fetcher)
                 if f.check == "mta-sts"]
        msgs = [(f.status, f.message) for f in found]
        assert ("ok", "id=42") in msgs
        assert ("ok", "policy: mode=enforce mx=mx1.example.net max_age=86400") in msgs
        assert any(s == "fail" and "mx2.example.net" in m for s, m in msgs)
        # an untrusted policy certificate is a failure with its TLS-RPT name
        bad = HTTPSPolicyFetcher(r, port=server.port, timeout=5)  # system store only
        found = [f for f in await check_domain("example.net", r, (), bad)
                 if f.check == "mta-sts" and f.status == "fail"]
        assert found and "sts-webpki-invalid" in found[0].message
    finally:
        await server.close()


def test_dns_records_prints_tlsa_and_warns_on_key_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = from_dict({"hostname": "mail.example.org", "data_dir": str(tmp_path / "data"),
                        "base_dir": str(tmp_path)})
    generate_self_signed("mail.example.org", tmp_path / "tls/cert.pem", tmp_path / "tls/key.pem")

    def records() -> str:
        parser = argparse.ArgumentParser(prog="pochta")
        policy_cli.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["dns", "records", "example.org"])
        out = io.StringIO()
        assert args.func(args, config, domains=None, out=out) == 0
        return out.getvalue()

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def expected() -> str:
        cert = x509.load_pem_x509_certificate((tmp_path / "tls/cert.pem").read_bytes())
        der = cert.public_bytes(serialization.Encoding.DER)
        return str(TLSARecord(3, 1, 1, __import__("hashlib").sha256(spki_of(der)).digest()))

    text = records()
    assert f"_25._tcp.mail.example.org.\t3600\tIN\tTLSA\t{expected()}" in text
    assert "warning" not in capsys.readouterr().err
    records()  # same key: still no warning
    assert "warning" not in capsys.readouterr().err
    generate_self_signed("mail.example.org", tmp_path / "tls/cert.pem", tmp_path / "tls/key.pem")
    from pochta.transport_security.records import own_tlsa

    _, warning = own_tlsa(config, remember=False)  # what the server logs at start
    assert "key changed" in warning
    text = records()
    assert expected() in text
    assert "key changed" in capsys.readouterr().err
    assert own_tlsa(config, remember=False)[1] == ""


def test_an_all_digit_queue_id_is_a_queue_id_not_an_item_number() -> None:
    """One queue id in ~280 is twelve decimal digits: `queue show` once took it for an item
    number and found nothing (a CI run failed on it)."""
    from pochta.queue.cli import _select
    from pochta.storage.interfaces import QueueItem, QueueState

    def item(ident: int, queue_id: str) -> QueueItem:
        return QueueItem(id=ident, message_id=queue_id, blob_id=1,
                         envelope=Envelope(sender="a@example.test"),
                         recipient=RemoteRecipient("bob@example.net"),
                         state=QueueState.PENDING, attempts=0, next_attempt=0.0,
                         last_reply="", created=0.0)

    items = [item(1, "753448968337"), item(2, "ABCDEF012345"), item(3, "ABCDEF012345")]
    assert [i.id for i in _select(items, "753448968337")] == [1]
    assert [i.id for i in _select(items, "abcdef012345")] == [2, 3]
    assert [i.id for i in _select(items, "2")] == [2]
    assert _select(items, "999") == []
