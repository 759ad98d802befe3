"""DNS records to publish, and the dkim/dns CLI commands."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest

from pochta.config import Config, from_dict
from pochta.dns import StaticResolver
from pochta.policy import cli, dkim, records


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return from_dict({"hostname": "mail.example.org", "data_dir": str(tmp_path / "data")})


def run(config: Config, *argv: str, domains: list[str] | None = None) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="pochta")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    code = args.func(args, config, domains=domains, out=out)
    assert isinstance(code, int)
    return code, out.getvalue()


def test_records_for_and_zone_file(tmp_path: Path) -> None:
    keys = dkim.ensure_domain_keys(tmp_path, "example.org")
    recs = records.records_for("example.org", "mail.example.org", keys)
    by = {(r.name, r.type): r.value for r in recs}
    assert by[("example.org", "MX")] == "10 mail.example.org."
    assert by[("example.org", "TXT")] == "v=spf1 mx -all"
    assert by[("_dmarc.example.org", "TXT")] == (
        "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org")
    assert by[("_smtp._tls.example.org", "TXT")].startswith("v=TLSRPTv1; rua=mailto:")
    assert by[("_mta-sts.example.org", "TXT")].startswith("v=STSv1; id=")
    assert by[("_submissions._tcp.example.org", "SRV")] == "0 1 465 mail.example.org."
    assert by[("_imaps._tcp.example.org", "SRV")] == "0 1 993 mail.example.org."
    for k in keys:
        assert by[(k.dns_name, "TXT")] == dkim.dns_txt_record(k)

    # the zone lines parse as a zone, and split TXT strings join back to the record
    text = "$ORIGIN example.org.\n@ 3600 IN SOA ns. host. 1 2 3 4 5\n@ 3600 IN NS ns.\n"
    text += records.zone_lines(recs)
    zone = dns.zone.from_text(text, origin="example.org.", relativize=False)
    rsa = keys[0]
    rdataset = zone.find_rdataset(rsa.dns_name + ".", dns.rdatatype.TXT)
    (rdata,) = list(rdataset)
    strings = rdata.strings
    assert len(strings) > 1 and all(len(s) <= 255 for s in strings)
    assert b"".join(strings).decode() == dkim.dns_txt_record(rsa)
    # what we publish is what verification reads back
    parsed = json.loads(records.to_json(recs))
    assert {"name", "type", "value", "ttl", "note"} <= set(parsed[0])
    assert len(parsed) == len(recs)


async def test_published_records_verify_our_signatures(tmp_path: Path) -> None:
    keys = dkim.ensure_domain_keys(tmp_path, "example.org")
    recs = records.records_for("example.org", "mail.example.org", keys)
    resolver = StaticResolver(txt_records={})
    for r in recs:
        if r.type == "TXT":
            resolver.txt_records.setdefault(r.name, []).append(r.value)
    msg = b"From: a@example.org\r\nSubject: x\r\n\r\nhello\r\n"
    signed = await dkim.sign(msg, keys) + msg
    assert [r.result for r in await dkim.verify(signed, resolver)] == ["pass", "pass"]


def test_cli_generate_list_rotate_activate(config: Config) -> None:
    code, out = run(config, "dkim", "generate", "Example.org", "--bits", "1024")
    assert code == 0 and out.count("created ") == 2 and "v=DKIM1; k=ed25519" in out
    code, out = run(config, "dkim", "list")
    lines = [line.split("\t") for line in out.splitlines()]
    assert sorted(x[2] for x in lines) == ["ed25519", "rsa"]
    assert {x[3] for x in lines} == {"active"}
    old = {x[2]: x[1] for x in lines}

    code, out = run(config, "dkim", "rotate", "example.org", "--algorithm", "rsa",
                    "--bits", "1024")
    assert code == 0 and "pochta dkim activate example.org" in out
    new_sel = out.split("pochta dkim activate example.org ")[1].split()[0]
    assert new_sel != old["rsa"]
    code, out = run(config, "dkim", "list", "example.org")
    states = {line.split("\t")[1]: line.split("\t")[3] for line in out.splitlines()}
    assert states == {old["rsa"]: "active", old["ed25519"]: "active", new_sel: "inactive"}

    code, out = run(config, "dkim", "activate", "example.org", new_sel)
    assert code == 0
    assert [k.selector for k in dkim.signing_keys(config.data_path, "example.org")] == [
        new_sel, old["ed25519"]]
    code, _ = run(config, "dkim", "activate", "example.org", "missing")
    assert code == 1
    code, _ = run(config, "dkim", "generate", "example.org", "--selector", new_sel,
                  "--algorithm", "rsa")
    assert code == 1  # selector taken


def test_cli_dkim_list_names_domains_without_keys(config: Config) -> None:
    code, out = run(config, "dkim", "list", domains=["example.net"])
    assert code == 0 and "example.net\t-\t-\tno keys" in out
    code, out = run(config, "dkim", "list")
    assert out == "no DKIM keys\n"


def test_cli_dns_records(config: Config) -> None:
    code, _ = run(config, "dns", "records")
    assert code == 1  # no domains at all
    run(config, "dkim", "generate", "example.org", "--algorithm", "ed25519")
    code, out = run(config, "dns", "records")
    assert code == 0
    assert "example.org.\t3600\tIN\tMX\t10 mail.example.org." in out
    assert '"v=spf1 mx -all"' in out and "_domainkey.example.org." in out
    code, out = run(config, "dns", "records", "example.net", "--json")
    data = json.loads(out)
    assert {r["name"] for r in data} >= {"example.net", "_dmarc.example.net"}
    assert not any("_domainkey" in r["name"] for r in data)  # example.net has no keys
    code, out = run(config, "dns", "records", domains=["a.example", "b.example"])
    assert "a.example.\t3600\tIN\tMX" in out and "b.example.\t3600\tIN\tMX" in out


def test_services_follow_listeners() -> None:
    cfg = from_dict({
        "hostname": "mail.example.org",
        "listeners": [
            {"role": "submission", "port": 587, "tls": "starttls"},
            {"role": "imap", "port": 993, "tls": "implicit"},
            {"role": "mta", "port": 25},
        ],
    })
    services = records.services_from_listeners(cfg.listeners)
    assert services == {"submission": 587, "imaps": 993}
    recs = records.records_for("example.org", "mail.example.org", [], services=services)
    srv = {r.name: r.value for r in recs if r.type == "SRV"}
    assert srv["_pop3._tcp.example.org"] == "0 0 0 ."
    assert "_submissions._tcp.example.org" not in srv
