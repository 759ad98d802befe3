"""DMARC aggregate reports (RFC 7489 §7.2): recording inbound results, the daily XML
report checked against the appendix C schema, the §7.1 external-destination check, and
reading received reports in the shapes Google (zip) and Microsoft (gzip, namespaced)
send, from files and from the rua mailbox."""

from __future__ import annotations

import argparse
import gzip
import io
import zipfile
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace

import pytest
import xmlschema

from pochta.dns import StaticResolver
from pochta.policy.dkim import DKIMResult
from pochta.policy.dmarc import DMARCResult, parse_record
from pochta.policy.dmarc_reports import (
    build_aggregate,
    parse_aggregate,
    record_verdict,
    send_reports,
    summarize,
    unpack,
)
from pochta.policy.spf import SPFResult
from pochta.storage.interfaces import Envelope, LocalTarget
from pochta.storage.sqlite import SQLiteStore
from pochta.transport_security.cli import cmd_report_dmarc
from tests.conftest import Server

# RFC 7489 appendix C, without its targetNamespace (reports in the wild carry none)
XSD = """<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" elementFormDefault="qualified">
  <xs:complexType name="DateRangeType"><xs:all>
    <xs:element name="begin" type="xs:integer"/><xs:element name="end" type="xs:integer"/>
  </xs:all></xs:complexType>
  <xs:complexType name="ReportMetadataType"><xs:sequence>
    <xs:element name="org_name" type="xs:string"/>
    <xs:element name="email" type="xs:string"/>
    <xs:element name="extra_contact_info" type="xs:string" minOccurs="0"/>
    <xs:element name="report_id" type="xs:string"/>
    <xs:element name="date_range" type="DateRangeType"/>
    <xs:element name="error" type="xs:string" minOccurs="0" maxOccurs="unbounded"/>
  </xs:sequence></xs:complexType>
  <xs:simpleType name="AlignmentType"><xs:restriction base="xs:string">
    <xs:enumeration value="r"/><xs:enumeration value="s"/>
  </xs:restriction></xs:simpleType>
  <xs:simpleType name="DispositionType"><xs:restriction base="xs:string">
    <xs:enumeration value="none"/><xs:enumeration value="quarantine"/>
    <xs:enumeration value="reject"/>
  </xs:restriction></xs:simpleType>
  <xs:complexType name="PolicyPublishedType"><xs:all>
    <xs:element name="domain" type="xs:string"/>
    <xs:element name="adkim" type="AlignmentType" minOccurs="0"/>
    <xs:element name="aspf" type="AlignmentType" minOccurs="0"/>
    <xs:element name="p" type="DispositionType"/>
    <xs:element name="sp" type="DispositionType"/>
    <xs:element name="pct" type="xs:integer"/>
    <xs:element name="fo" type="xs:string"/>
  </xs:all></xs:complexType>
  <xs:simpleType name="DMARCResultType"><xs:restriction base="xs:string">
    <xs:enumeration value="pass"/><xs:enumeration value="fail"/>
  </xs:restriction></xs:simpleType>
  <xs:simpleType name="PolicyOverrideType"><xs:restriction base="xs:string">
    <xs:enumeration value="forwarded"/><xs:enumeration value="sampled_out"/>
    <xs:enumeration value="trusted_forwarder"/><xs:enumeration value="mailing_list"/>
    <xs:enumeration value="local_policy"/><xs:enumeration value="other"/>
  </xs:restriction></xs:simpleType>
  <xs:complexType name="PolicyOverrideReason"><xs:all>
    <xs:element name="type" type="PolicyOverrideType"/>
    <xs:element name="comment" type="xs:string" minOccurs="0"/>
  </xs:all></xs:complexType>
  <xs:complexType name="PolicyEvaluatedType"><xs:sequence>
    <xs:element name="disposition" type="DispositionType"/>
    <xs:element name="dkim" type="DMARCResultType"/>
    <xs:element name="spf" type="DMARCResultType"/>
    <xs:element name="reason" type="PolicyOverrideReason" minOccurs="0"
                maxOccurs="unbounded"/>
  </xs:sequence></xs:complexType>
  <xs:simpleType name="IPAddress"><xs:restriction base="xs:string">
    <xs:pattern value="IPV4|IPV6"/>
  </xs:restriction></xs:simpleType>
  <xs:complexType name="RowType"><xs:all>
    <xs:element name="source_ip" type="IPAddress"/>
    <xs:element name="count" type="xs:integer"/>
    <xs:element name="policy_evaluated" type="PolicyEvaluatedType"/>
  </xs:all></xs:complexType>
  <xs:complexType name="IdentifierType"><xs:all>
    <xs:element name="envelope_to" type="xs:string" minOccurs="0"/>
    <xs:element name="envelope_from" type="xs:string" minOccurs="1"/>
    <xs:element name="header_from" type="xs:string" minOccurs="1"/>
  </xs:all></xs:complexType>
  <xs:simpleType name="DKIMResultType"><xs:restriction base="xs:string">
    <xs:enumeration value="none"/><xs:enumeration value="pass"/>
    <xs:enumeration value="fail"/><xs:enumeration value="policy"/>
    <xs:enumeration value="neutral"/><xs:enumeration value="temperror"/>
    <xs:enumeration value="permerror"/>
  </xs:restriction></xs:simpleType>
  <xs:complexType name="DKIMAuthResultType"><xs:all>
    <xs:element name="domain" type="xs:string"/>
    <xs:element name="selector" type="xs:string" minOccurs="0"/>
    <xs:element name="result" type="DKIMResultType"/>
    <xs:element name="human_result" type="xs:string" minOccurs="0"/>
  </xs:all></xs:complexType>
  <xs:simpleType name="SPFDomainScope"><xs:restriction base="xs:string">
    <xs:enumeration value="helo"/><xs:enumeration value="mfrom"/>
  </xs:restriction></xs:simpleType>
  <xs:simpleType name="SPFResultType"><xs:restriction base="xs:string">
    <xs:enumeration value="none"/><xs:enumeration value="neutral"/>
    <xs:enumeration value="pass"/><xs:enumeration value="fail"/>
    <xs:enumeration value="softfail"/><xs:enumeration value="temperror"/>
    <xs:enumeration value="permerror"/>
  </xs:restriction></xs:simpleType>
  <xs:complexType name="SPFAuthResultType"><xs:all>
    <xs:element name="domain" type="xs:string"/>
    <xs:element name="scope" type="SPFDomainScope"/>
    <xs:element name="result" type="SPFResultType"/>
  </xs:all></xs:complexType>
  <xs:complexType name="AuthResultType"><xs:sequence>
    <xs:element name="dkim" type="DKIMAuthResultType" minOccurs="0" maxOccurs="unbounded"/>
    <xs:element name="spf" type="SPFAuthResultType" minOccurs="1" maxOccurs="unbounded"/>
  </xs:sequence></xs:complexType>
  <xs:complexType name="RecordType"><xs:sequence>
    <xs:element name="row" type="RowType"/>
    <xs:element name="identifiers" type="IdentifierType"/>
    <xs:element name="auth_results" type="AuthResultType"/>
  </xs:sequence></xs:complexType>
  <xs:element name="feedback"><xs:complexType><xs:sequence>
    <xs:element name="version" type="xs:decimal"/>
    <xs:element name="report_metadata" type="ReportMetadataType"/>
    <xs:element name="policy_published" type="PolicyPublishedType"/>
    <xs:element name="record" type="RecordType" maxOccurs="unbounded"/>
  </xs:sequence></xs:complexType></xs:element>
</xs:schema>
"""

_V4 = "((1?[0-9]?[0-9]|2[0-4][0-9]|25[0-5]).){3}(1?[0-9]?[0-9]|2[0-4][0-9]|25[0-5])"
_V6 = "([A-Fa-f0-9]{1,4}:){7}[A-Fa-f0-9]{1,4}|[A-Fa-f0-9:]+"  # RFC 7489 lists full forms
SCHEMA = xmlschema.XMLSchema(XSD.replace("IPV4", _V4).replace("IPV6", _V6))
RECORD = "v=DMARC1; p=reject; rua=mailto:dmarc@sender.example"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "data")
    yield s
    await s.close()


def verdict(result: str, action: str, spf_ok: bool, dkim_ok: bool,
            record: str = RECORD) -> SimpleNamespace:
    rec = parse_record(record)
    return SimpleNamespace(
        action=action,
        spf=SPFResult("pass" if spf_ok else "fail", "bounce.sender.example"),
        dkim=[DKIMResult("pass" if dkim_ok else "fail", "sender.example")],
        dmarc=DMARCResult(result, "sender.example", policy="reject", record=rec,
                          spf_aligned=spf_ok, dkim_aligned=dkim_ok),
    )


async def test_record_build_and_schema(store: SQLiteStore) -> None:
    clock = 1_796_083_200.0  # 2026-12-01
    for _ in range(3):
        await record_verdict(store, verdict("pass", "accept", False, True), "192.0.2.7",
                             clock=lambda: clock)
    await record_verdict(store, verdict("fail", "reject", False, False), "203.0.113.9",
                         clock=lambda: clock)
    # no rua: nothing recorded; reports off: nothing recorded
    await record_verdict(store, verdict("fail", "reject", False, False,
                                        "v=DMARC1; p=reject"), "203.0.113.9",
                         clock=lambda: clock)
    off = SimpleNamespace(transport_security=SimpleNamespace(dmarc_reports=False))
    await record_verdict(store, verdict("pass", "accept", True, True), "192.0.2.7", off,
                         clock=lambda: clock)
    rows = await store.dmarc_results("2026-12-01")
    assert [(r.source_ip, r.disposition, r.dkim, r.spf, r.count) for r in rows] == [
        ("192.0.2.7", "none", "pass", "fail", 3), ("203.0.113.9", "reject", "fail", "fail", 1)]
    rec = parse_record(RECORD)
    assert rec is not None
    xml = build_aggregate(rows, "sender.example", rec, "2026-12-01", "Pochta at mx.test",
                          "reports@mx.test", "r-1")
    SCHEMA.validate(xml.decode())
    rep = parse_aggregate(xml)
    assert rep.domain == "sender.example" and rep.policy == "reject"
    assert rep.begin == 1_796_083_200 and rep.end == 1_796_083_200 + 86399
    assert sum(r["count"] for r in rep.records) == 4
    assert b"<envelope_from>bounce.sender.example</envelope_from>" in xml


async def test_send_with_external_destination_check(store: SQLiteStore) -> None:
    for dom in ("sender.example", "other.example"):
        await store.record_dmarc_result("2026-12-01", dom, "192.0.2.7", "none", "pass",
                                        "pass", "reject", envelope_from=dom,
                                        spf_auth=f"{dom}:pass", dkim_auth=f"{dom}:pass")
    r = StaticResolver()
    r.txt_records["_dmarc.sender.example"] = [
        "v=DMARC1; p=reject; rua=mailto:dmarc@sender.example,mailto:agg@vendor.test!10m"]
    r.txt_records["_dmarc.other.example"] = ["v=DMARC1; p=none; rua=mailto:x@vendor.test"]
    # vendor.test agreed to take sender.example's reports, not other.example's (§7.1)
    r.txt_records["sender.example._report._dmarc.vendor.test"] = ["v=DMARC1"]
    sent: list[tuple[bytes, str, str]] = []

    async def send(data: bytes, sender: str, to: str) -> None:
        sent.append((data, sender, to))

    done = await send_reports(store, r, "2026-12-01", send, reporter="mx.test",
                              sender="reports@mx.test", organization="Pochta")
    assert done == [("sender.example", "dmarc@sender.example"),
                    ("sender.example", "agg@vendor.test")]
    import email
    import email.policy

    msg = email.message_from_bytes(sent[0][0], policy=email.policy.default)
    assert str(msg["Subject"]).startswith("Report Domain: sender.example Submitter: mx.test")
    (att,) = [p for p in msg.walk() if p.get_content_type() == "application/gzip"]
    assert str(att.get_filename()).startswith("mx.test!sender.example!")
    payload = att.get_payload(decode=True)
    assert isinstance(payload, bytes)
    SCHEMA.validate(gzip.decompress(payload).decode())
    assert await store.dmarc_results() == []


GOOGLE = b"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>google.com</org_name>
    <email>noreply-dmarc-support@google.com</email>
    <extra_contact_info>https://support.google.com/a/answer/2466580</extra_contact_info>
    <report_id>1234567890123456789</report_id>
    <date_range><begin>1796083200</begin><end>1796169599</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>example.org</domain><adkim>r</adkim><aspf>r</aspf><p>quarantine</p>
    <sp>quarantine</sp><pct>100</pct><fo>0</fo>
  </policy_published>
  <record>
    <row><source_ip>192.0.2.25</source_ip><count>40</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf>
      </policy_evaluated></row>
    <identifiers><header_from>example.org</header_from></identifiers>
    <auth_results><dkim><domain>example.org</domain><result>pass</result>
      <selector>s1</selector></dkim>
      <spf><domain>example.org</domain><result>pass</result></spf></auth_results>
  </record>
  <record>
    <row><source_ip>203.0.113.66</source_ip><count>7</count>
      <policy_evaluated><disposition>quarantine</disposition><dkim>fail</dkim>
      <spf>fail</spf></policy_evaluated></row>
    <identifiers><header_from>example.org</header_from></identifiers>
    <auth_results><spf><domain>spammer.test</domain><result>fail</result></spf>
    </auth_results>
  </record>
</feedback>
"""

MICROSOFT = b"""<?xml version="1.0"?>
<feedback xmlns:xsd="http://www.w3.org/2001/XMLSchema"
          xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
          xmlns="http://dmarc.org/dmarc-xml/0.1">
  <version>1.0</version>
  <report_metadata>
    <org_name>Enterprise Outlook</org_name>
    <email>dmarcreport@microsoft.com</email>
    <report_id>f0e1d2c3b4a5</report_id>
    <date_range><begin>1796083200</begin><end>1796169600</end></date_range>
  </report_metadata>
  <policy_published><domain>example.org</domain><adkim>r</adkim><aspf>r</aspf>
    <p>quarantine</p><sp>quarantine</sp><pct>100</pct><fo>0</fo></policy_published>
  <record>
    <row><source_ip>2001:db8::25</source_ip><count>3</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>fail</spf>
      </policy_evaluated></row>
    <identifiers><envelope_to>contoso.com</envelope_to>
      <envelope_from>example.org</envelope_from><header_from>example.org</header_from>
    </identifiers>
    <auth_results><dkim><domain>example.org</domain><selector>s1</selector>
      <result>pass</result></dkim>
      <spf><domain>example.org</domain><scope>mfrom</scope><result>softfail</result></spf>
    </auth_results>
  </record>
</feedback>
"""


def google_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("google.com!example.org!1796083200!1796169599.xml", GOOGLE)
    return buf.getvalue()


def report_mail(attachment: bytes, subtype: str, filename: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "noreply-dmarc-support@google.com"
    msg["To"] = "postmaster@example.org"
    msg["Subject"] = "Report domain: example.org Submitter: google.com Report-ID: 1"
    msg.set_content("DMARC aggregate report")
    msg.add_attachment(attachment, maintype="application", subtype=subtype,
                       filename=filename)
    return msg.as_bytes()


def test_parse_google_and_microsoft() -> None:
    g = parse_aggregate(unpack(google_zip())[0])
    lines = summarize(g)
    assert lines[0].startswith("google.com: example.org (p=quarantine)")
    assert "47 message(s): 40 pass DMARC, 7 fail" in lines[1]
    assert any("warning: 203.0.113.66 sent 7 message(s)" in line for line in lines)
    m = parse_aggregate(unpack(gzip.compress(MICROSOFT))[0])
    assert m.org_name == "Enterprise Outlook" and m.records[0]["source_ip"] == "2001:db8::25"
    assert not any("warning" in line for line in summarize(m))
    with pytest.raises(ValueError):
        parse_aggregate(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><feedback/>')


async def test_report_dmarc_reads_files_and_the_rua_mailbox(
    store: SQLiteStore, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    f = tmp_path / "ms.xml.gz"
    f.write_bytes(gzip.compress(MICROSOFT))
    args = argparse.Namespace(files=[str(f)], mailbox="", folder="INBOX")
    assert await cmd_report_dmarc(args, store, None) == 0
    assert "Enterprise Outlook: example.org" in capsys.readouterr().out
    # the reports arrived by mail at postmaster@example.org
    await store.add_domain("example.org")
    acc = await store.add_account("postmaster@example.org", "hash", None)
    await store.accept(report_mail(google_zip(), "zip", "google.com!example.org.zip"),
                       Envelope(sender="noreply-dmarc-support@google.com"),
                       [LocalTarget(acc.id)], [])
    await store.accept(b"Subject: hello\r\n\r\nnot a report\r\n", Envelope(sender="a@b.c"),
                       [LocalTarget(acc.id)], [])
    config = SimpleNamespace(dmarc=SimpleNamespace(report_address=""))
    args = argparse.Namespace(files=[], mailbox="", folder="INBOX")
    assert await cmd_report_dmarc(args, store, config) == 0
    out = capsys.readouterr().out
    assert "google.com: example.org (p=quarantine)" in out
    assert "warning: 203.0.113.66" in out


async def test_inbound_mail_is_recorded_by_the_server(running_server: Server) -> None:
    import asyncio
    import smtplib

    r = running_server.resolver
    r.txt_records["sender.example"] = ["v=spf1 ip4:127.0.0.1 -all"]
    r.txt_records["_dmarc.sender.example"] = [RECORD]

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", running_server.port("mta"), timeout=10) as c:
            c.sendmail("dave@sender.example", ["bob@example.test"],
                       b"From: dave@sender.example\r\nSubject: hi\r\n\r\nhi\r\n")

    await asyncio.to_thread(send)
    for _ in range(100):
        rows = await running_server.store.dmarc_results()
        if rows:
            break
        await asyncio.sleep(0.05)
    [row] = rows
    assert (row.header_from, row.source_ip, row.spf, row.dkim, row.disposition) == (
        "sender.example", "127.0.0.1", "pass", "fail", "none")
    assert row.spf_auth == "sender.example:pass" and row.policy == "reject"
