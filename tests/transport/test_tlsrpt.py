"""TLS-RPT (RFC 8460): the daily aggregate report built from recorded results, checked
against a JSON schema written from §4.4; the report mail (§5.3); sending to rua; reading
received reports in the shapes Google and Microsoft send."""

from __future__ import annotations

import argparse
import email
import email.policy
import gzip
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import jsonschema
import pytest

from pochta.config import from_dict
from pochta.dns import StaticResolver
from pochta.storage.sqlite import SQLiteStore
from pochta.transport_security.cli import cmd_report_tls, parse_tlsrpt, summarize_tlsrpt
from pochta.transport_security.reporter import send_due_tls_reports
from pochta.transport_security.tlsrpt import (
    build_report,
    parse_rua,
    report_message,
    send_reports,
)

RESULT_TYPES = [
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
    "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
    "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
]

# RFC 8460 §4.4 as a JSON schema (the RFC gives the fields in prose and an example)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["organization-name", "date-range", "contact-info", "report-id", "policies"],
    "properties": {
        "organization-name": {"type": "string"},
        "contact-info": {"type": "string"},
        "report-id": {"type": "string", "minLength": 1},
        "date-range": {
            "type": "object", "required": ["start-datetime", "end-datetime"],
            "properties": {
                "start-datetime": {"type": "string",
                                   "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
                "end-datetime": {"type": "string",
                                 "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
            },
        },
        "policies": {"type": "array", "items": {
            "type": "object", "required": ["policy", "summary"],
            "properties": {
                "policy": {
                    "type": "object", "required": ["policy-type", "policy-domain"],
                    "properties": {
                        "policy-type": {"enum": ["tlsa", "sts", "no-policy-found"]},
                        "policy-string": {"type": "array", "items": {"type": "string"}},
                        "policy-domain": {"type": "string"},
                        "mx-host": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "summary": {
                    "type": "object",
                    "required": ["total-successful-session-count",
                                 "total-failure-session-count"],
                    "properties": {
                        "total-successful-session-count": {"type": "integer", "minimum": 0},
                        "total-failure-session-count": {"type": "integer", "minimum": 0},
                    },
                },
                "failure-details": {"type": "array", "items": {
                    "type": "object", "required": ["result-type", "failed-session-count"],
                    "properties": {
                        "result-type": {"enum": RESULT_TYPES},
                        "sending-mta-ip": {"type": "string"},
                        "receiving-mx-hostname": {"type": "string"},
                        "receiving-mx-helo": {"type": "string"},
                        "receiving-ip": {"type": "string"},
                        "failed-session-count": {"type": "integer", "minimum": 1},
                        "additional-information": {"type": "string"},
                        "failure-reason-code": {"type": "string"},
                    },
                }},
            },
        }},
    },
}

STS = ("version: STSv1", "mode: enforce", "mx: mx.example.net", "max_age: 86400")


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = await SQLiteStore.open(tmp_path / "data")
    for _ in range(5):
        await s.record_tls_result("2026-12-01", "example.net", "sts", STS, "mx.example.net",
                                  "success", "192.0.2.1")
    await s.record_tls_result("2026-12-01", "example.net", "sts", STS, "mx.example.net",
                              "certificate-host-mismatch", "192.0.2.1", count=2)
    await s.record_tls_result("2026-12-01", "example.net", "tlsa", ("3 1 1 abcd",),
                              "mx2.example.net", "success")
    await s.record_tls_result("2026-12-01", "quiet.example", "no-policy-found", (),
                              "mx.quiet.example", "starttls-not-supported")
    yield s
    await s.close()


async def test_report_matches_schema_and_counts(store: SQLiteStore) -> None:
    rows = await store.tls_results("2026-12-01", "example.net")
    report = build_report(rows, "2026-12-01", "Example Org", "mailto:tls@mta.example.test")
    jsonschema.validate(report, SCHEMA)
    assert report["date-range"] == {"start-datetime": "2026-12-01T00:00:00Z",
                                    "end-datetime": "2026-12-02T00:00:00Z"}
    by_type = {p["policy"]["policy-type"]: p for p in report["policies"]}
    sts = by_type["sts"]
    assert sts["summary"] == {"total-successful-session-count": 5,
                              "total-failure-session-count": 2}
    assert sts["policy"]["mx-host"] == ["mx.example.net"]
    assert sts["failure-details"] == [{
        "result-type": "certificate-host-mismatch", "receiving-mx-hostname": "mx.example.net",
        "receiving-ip": "192.0.2.1", "failed-session-count": 2}]
    assert by_type["tlsa"]["summary"]["total-successful-session-count"] == 1


def test_rua_parsing() -> None:
    assert parse_rua(["v=TLSRPTv1; rua=mailto:a@x.test,https://r.x.test/tls"]) == [
        "mailto:a@x.test", "https://r.x.test/tls"]
    assert parse_rua(["v=TLSRPTv1;rua=mailto:a@x.test", "v=TLSRPTv1;rua=mailto:b@x.test"]) == []
    assert parse_rua(["v=spf1 -all"]) == []


async def test_report_mail(store: SQLiteStore) -> None:
    rows = await store.tls_results("2026-12-01", "example.net")
    report = build_report(rows, "2026-12-01", "Example Org", "mailto:x@y", "rid-1")
    data = report_message(report, "example.net", "reports@mta.example.test",
                          "tls@example.net", "mta.example.test")
    assert b"\r\n" in data and b"\r\r" not in data
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    assert msg["TLS-Report-Domain"] == "example.net"
    assert msg["TLS-Report-Submitter"] == "mta.example.test"
    assert msg["Subject"] == ("Report Domain: example.net Submitter: mta.example.test "
                              "Report-ID: <rid-1>")
    parts = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert len(parts) == 1
    assert parts[0].get_filename() == ("mta.example.test!example.net!2026-12-01!2026-12-02"
                                       ".json.gz")
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert json.loads(gzip.decompress(payload)) == report


async def test_send_reports_to_rua_and_forget(store: SQLiteStore) -> None:
    resolver = StaticResolver()
    resolver.txt_records["_smtp._tls.example.net"] = [
        "v=TLSRPTv1; rua=mailto:tls@example.net,https://reports.example.net/tls"]
    sent: list[tuple[bytes, str, str]] = []

    async def send(data: bytes, sender: str, to: str) -> None:
        sent.append((data, sender, to))

    done = await send_reports(store, resolver, "2026-12-01", send, reporter="mta.example.test",
                              sender="reports@mta.example.test", organization="Example")
    assert done == [("example.net", "tls@example.net")]
    assert sent[0][1:] == ("reports@mta.example.test", "tls@example.net")
    # quiet.example publishes no _smtp._tls: nothing sent, and its rows are gone too
    assert await store.tls_results("2026-12-01") == []


async def test_server_sends_past_days_once(store: SQLiteStore, tmp_path: Path) -> None:
    resolver = StaticResolver()
    resolver.txt_records["_smtp._tls.example.net"] = ["v=TLSRPTv1; rua=mailto:tls@example.net"]

    class Directory:
        async def resolve(self, address: str) -> None:
            return None  # not ours: remote

    class Signer:
        async def sign(self, data: bytes, domain: str) -> bytes:
            return b"DKIM-Signature: d=" + domain.encode() + b"\r\n" + data

    await store.add_domain("example.test")
    ctx = SimpleNamespace(config=from_dict({
        "hostname": "mta.example.test", "data_dir": str(tmp_path / "d"),
        "transport_security": {"report_from": "reports@example.test"}}),
        resolver=resolver, directory=Directory(), signer=Signer())
    woke: list[int] = []
    await store.record_tls_result("2026-12-02", "example.net", "sts", STS, "mx.example.net",
                                  "success")
    # "today" is 2026-12-02: only the 1st is reported
    clock = 1_796_169_600.0 + 3600  # 2026-12-02T01:00Z
    n = await send_due_tls_reports(store, cast(Any, ctx), lambda: woke.append(1),
                                   clock=lambda: clock)
    assert n == 1 and woke
    queued = await store.list_queue()
    assert [i.recipient.address for i in queued] == ["tls@example.net"]
    assert queued[0].envelope.sender == "reports@example.test"
    data = await store.read_blob(queued[0].blob_id)
    assert data.startswith(b"DKIM-Signature: d=example.test\r\n")
    assert [r.day for r in await store.tls_results()] == ["2026-12-02"]
    assert await send_due_tls_reports(store, cast(Any, ctx), lambda: None,
                                      clock=lambda: clock) == 0


# -- received reports ------------------------------------------------------------------------


def google_style() -> bytes:
    report = {
        "organization-name": "Google Inc.",
        "date-range": {"start-datetime": "2026-11-30T00:00:00Z",
                       "end-datetime": "2026-11-30T23:59:59Z"},
        "contact-info": "smtp-tls-reporting@google.com",
        "report-id": "2026-11-30T00:00:00Z_example.org",
        "policies": [{
            "policy": {"policy-type": "sts", "policy-string": list(STS),
                       "policy-domain": "example.org", "mx-host": ["mail.example.org"]},
            "summary": {"total-successful-session-count": 120,
                        "total-failure-session-count": 3},
            "failure-details": [{"result-type": "certificate-expired",
                                 "sending-mta-ip": "209.85.0.1",
                                 "receiving-ip": "192.0.2.10",
                                 "receiving-mx-hostname": "mail.example.org",
                                 "failed-session-count": 3}],
        }],
    }
    jsonschema.validate(report, SCHEMA)
    msg = email.message.EmailMessage()
    msg["From"] = "noreply-smtp-tls-reporting@google.com"
    msg["Subject"] = "Report Domain: example.org Submitter: google.com Report-ID: <x>"
    msg.set_content("This is an aggregate TLS report from google.com")
    msg.add_attachment(gzip.compress(json.dumps(report).encode()), maintype="application",
                       subtype="tlsrpt+gzip",
                       filename="google.com!example.org!1732924800!1733011199!001.json.gz")
    return msg.as_bytes()


def microsoft_style() -> bytes:
    report = {
        "organization-name": "Microsoft Corporation",
        "date-range": {"start-datetime": "2026-11-30T00:00:00Z",
                       "end-datetime": "2026-11-30T23:59:59Z"},
        "contact-info": "tlsrpt-noreply@microsoft.com",
        "report-id": "133777777777777777+example.org",
        "policies": [{"policy": {"policy-type": "no-policy-found",
                                 "policy-domain": "example.org"},
                      "summary": {"total-successful-session-count": 42,
                                  "total-failure-session-count": 0}}],
    }
    jsonschema.validate(report, SCHEMA)
    return gzip.compress(json.dumps(report).encode())


async def test_reading_received_reports(
    store: SQLiteStore, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    g = tmp_path / "google.eml"
    g.write_bytes(google_style())
    m = tmp_path / "microsoft.json.gz"
    m.write_bytes(microsoft_style())
    assert await cmd_report_tls(argparse.Namespace(files=[str(g), str(m)]), store) == 0
    out = capsys.readouterr().out
    assert "Google Inc." in out and "example.org [sts]: 120 ok, 3 failed" in out
    assert "certificate-expired: 3 at mail.example.org 192.0.2.10" in out
    assert "Microsoft Corporation" in out and "example.org [no-policy-found]: 42 ok" in out
    assert summarize_tlsrpt(parse_tlsrpt(microsoft_style()))[0].startswith("Microsoft")
    # the same reports arriving by mail at our rua mailbox
    from pochta.storage.interfaces import Envelope, LocalTarget

    await store.add_domain("example.org")
    acc = await store.add_account("tlsrpt@example.org", "hash", None)
    await store.accept(google_style(), Envelope(sender="noreply@google.com"),
                       [LocalTarget(acc.id)], [])
    args = argparse.Namespace(files=[], mailbox="tlsrpt@example.org", folder="INBOX",
                              mailbox_scan=True)
    assert await cmd_report_tls(args, store, None) == 0
    out = capsys.readouterr().out
    assert "Google Inc." in out and "1 TLS-RPT report(s) in tlsrpt@example.org" in out
    # and our own overview
    assert await cmd_report_tls(argparse.Namespace(files=[]), store) == 0
    assert "example.net sts mx.example.net certificate-host-mismatch 2" in capsys.readouterr().out


async def test_https_rua_gets_a_post(store: SQLiteStore, tmp_path: Path) -> None:
    import asyncio

    from pochta.transport_security.tlsrpt import https_post
    from tests.transport.pki import CA

    ca = CA(tmp_path / "ca")
    got: list[tuple[bytes, bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        got.append((head, await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0,
                                        ssl=ca.context("localhost"))
    port = server.sockets[0].getsockname()[1]
    resolver = StaticResolver()
    resolver.txt_records["_smtp._tls.example.net"] = [
        "v=TLSRPTv1; rua=https://localhost/tlsrpt/upload"]

    async def post(url: str, body: bytes) -> None:
        await https_post(url, body, cafile=str(ca.cafile), timeout=5, port=port)

    async def no_mail(data: bytes, sender: str, to: str) -> None:
        raise AssertionError("no mailto: rua")

    try:
        done = await send_reports(store, resolver, "2026-12-01", no_mail,
                                  reporter="mta.example.test", sender="r@mta.example.test",
                                  organization="Example", post=post)
        # an untrusted certificate (system store only): the POST fails
        import ssl

        with pytest.raises(ssl.SSLCertVerificationError):
            await https_post("https://localhost/x", b"{}", timeout=5, port=port)
    finally:
        server.close()
        await server.wait_closed()
    assert done == [("example.net", "https://localhost/tlsrpt/upload")]
    head, body = got[0]
    assert head.startswith(b"POST /tlsrpt/upload HTTP/1.1\r\n")
    assert b"content-type: application/tlsrpt+gzip" in head.lower()
    report = json.loads(gzip.decompress(body))
    jsonschema.validate(report, SCHEMA)
    assert report["policies"][0]["policy"]["policy-domain"] == "example.net"
