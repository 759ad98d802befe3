"""DMARC alignment and policy, Authentication-Results, and the inbound verdict."""

from __future__ import annotations

import pytest

from pochta.dns import MX, StaticResolver
from pochta.policy import authresults, dkim, dmarc, inbound
from pochta.policy.dkim import DKIMResult
from pochta.policy.settings import DMARCSettings, SPFSettings
from pochta.policy.spf import SPFResult


def spf_pass(domain: str) -> SPFResult:
    return SPFResult("pass", domain, "mailfrom", f"bounce@{domain}")


def dkim_pass(domain: str) -> DKIMResult:
    return DKIMResult("pass", domain, "s1", "rsa-sha256", f"@{domain}", "abcdefgh")


def policy(**records: str) -> StaticResolver:
    return StaticResolver(txt_records={f"_dmarc.{k}": [v] for k, v in records.items()})


def test_organizational_domain() -> None:
    assert dmarc.organizational_domain("mail.example.com") == "example.com"
    assert dmarc.organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert dmarc.organizational_domain("Example.COM.") == "example.com"
    assert dmarc.organizational_domain("co.uk") == "co.uk"
    assert dmarc.organizational_domain("user.github.io") == "user.github.io"  # private section


def test_alignment_modes() -> None:
    assert dmarc.aligned("mail.example.com", "example.com", "r")
    assert not dmarc.aligned("mail.example.com", "example.com", "s")
    assert dmarc.aligned("EXAMPLE.com", "example.com", "s")
    assert not dmarc.aligned("example.net", "example.com", "r")
    assert not dmarc.aligned("a.github.io", "b.github.io", "r")
    assert not dmarc.aligned("", "example.com", "r")


def test_parse_record() -> None:
    r = dmarc.parse_record("v=DMARC1; p=reject; sp=none; adkim=s; aspf=s; pct=20; "
                           "rua=mailto:a@example.com,mailto:b@example.com")
    assert r == dmarc.DMARCRecord("reject", "none", "s", "s", 20,
                                  ("mailto:a@example.com", "mailto:b@example.com"))
    assert dmarc.parse_record("v=spf1 -all") is None
    assert dmarc.parse_record("v=DMARC1; p=bogus") is None
    assert dmarc.parse_record("v=DMARC1; p=bogus; rua=mailto:x@example.com") is not None
    bad = dmarc.parse_record("v=DMARC1; p=quarantine; pct=abc; adkim=x")
    assert bad is not None and (bad.pct, bad.adkim, bad.sp) == (100, "r", "quarantine")


async def test_pass_by_relaxed_dkim_and_spf() -> None:
    r = policy(**{"example.com": "v=DMARC1; p=reject"})
    res = await dmarc.evaluate("example.com", None, [dkim_pass("mail.example.com")], r)
    assert (res.result, res.dkim_aligned, res.disposition) == ("pass", True, "none")
    res = await dmarc.evaluate("example.com", spf_pass("bounces.example.com"), [], r)
    assert (res.result, res.spf_aligned) == ("pass", True)


async def test_strict_alignment_fails_subdomain() -> None:
    r = policy(**{"example.com": "v=DMARC1; p=reject; adkim=s; aspf=s"})
    res = await dmarc.evaluate(
        "example.com", spf_pass("bounces.example.com"), [dkim_pass("mail.example.com")], r
    )
    assert (res.result, res.disposition, res.policy) == ("fail", "reject", "reject")
    res = await dmarc.evaluate("example.com", None, [dkim_pass("example.com")], r)
    assert res.result == "pass"


async def test_unaligned_or_failing_signatures_do_not_count() -> None:
    r = policy(**{"example.com": "v=DMARC1; p=quarantine"})
    failing = DKIMResult("fail", "example.com", "s1", "rsa-sha256")
    res = await dmarc.evaluate(
        "example.com", spf_pass("evil.example"), [dkim_pass("evil.example"), failing], r
    )
    assert (res.result, res.disposition) == ("fail", "quarantine")
    softfail = SPFResult("softfail", "example.com")
    res = await dmarc.evaluate("example.com", softfail, [], r)
    assert res.result == "fail"


async def test_subdomain_policy_from_org_domain() -> None:
    r = policy(**{"example.com": "v=DMARC1; p=reject; sp=quarantine"})
    res = await dmarc.evaluate("news.example.com", None, [], r)
    assert (res.policy_domain, res.policy, res.disposition) == (
        "example.com", "quarantine", "quarantine")
    # the subdomain's own record overrides the organisational one
    r.txt_records["_dmarc.news.example.com"] = ["v=DMARC1; p=none"]
    res = await dmarc.evaluate("news.example.com", None, [], r)
    assert (res.policy_domain, res.policy, res.disposition) == (
        "news.example.com", "none", "none")
    # sp absent: p applies to subdomains
    r = policy(**{"example.com": "v=DMARC1; p=reject"})
    res = await dmarc.evaluate("a.b.example.com", None, [], r)
    assert res.disposition == "reject"


async def test_pct_sampling() -> None:
    r = policy(**{"example.com": "v=DMARC1; p=reject; pct=25"})
    res = await dmarc.evaluate("example.com", None, [], r, rand=lambda: 0.1)
    assert (res.disposition, res.sampled_out) == ("reject", False)
    res = await dmarc.evaluate("example.com", None, [], r, rand=lambda: 0.5)
    assert (res.disposition, res.sampled_out) == ("quarantine", True)
    r = policy(**{"example.com": "v=DMARC1; p=quarantine; pct=0"})
    res = await dmarc.evaluate("example.com", None, [], r, rand=lambda: 0.0)
    assert res.disposition == "none"


async def test_no_policy_multiple_policies_and_dns_errors() -> None:
    res = await dmarc.evaluate("example.com", None, [], StaticResolver())
    assert (res.result, res.disposition) == ("none", "none")
    r = StaticResolver(txt_records={"_dmarc.example.com": ["v=DMARC1; p=reject",
                                                           "v=DMARC1; p=none"]})
    assert (await dmarc.evaluate("example.com", None, [], r)).result == "none"
    r = StaticResolver(fail={"_dmarc.example.com"})
    assert (await dmarc.evaluate("example.com", None, [], r)).result == "temperror"
    assert (await dmarc.evaluate("localhost", None, [], r)).result == "permerror"


# --- Authentication-Results -----------------------------------------------------------


def test_build_header() -> None:
    res = dmarc.DMARCResult("fail", "example.com", "quarantine", policy="reject",
                            sampled_out=True)
    h = authresults.build(
        "mx.example.org",
        SPFResult("pass", "example.com", "mailfrom", "bounce@example.com",
                  reason="matched +mx"),
        [dkim_pass("example.com"), DKIMResult("fail", "other.example", "s", "ed25519-sha256",
                                              reason="body hash did not verify")],
        res,
    )
    assert h == (
        b"Authentication-Results: mx.example.org;\r\n"
        b"\tspf=pass (matched +mx) smtp.mailfrom=bounce@example.com;\r\n"
        b"\tdkim=pass header.d=example.com header.s=s1 header.a=rsa-sha256"
        b" header.b=abcdefgh;\r\n"
        b"\tdkim=fail (body hash did not verify) header.d=other.example header.s=s"
        b" header.a=ed25519-sha256;\r\n"
        b"\tdmarc=fail (p=reject dis=quarantine) header.from=example.com\r\n"
    )
    h = authresults.build("mx.example.org", SPFResult("none", "x.example", "helo"), [], None)
    assert b"spf=none" in h and b"smtp.helo=x.example" in h and b"dkim=none" in h
    # comments cannot break out
    h = authresults.build("mx", SPFResult("fail", "d.example", reason="a) b; c=d ("), [], None)
    assert b"(a\\) b; c=d \\()" in h


def test_strip_forged() -> None:
    msg = (
        b"Authentication-Results: MX.example.org; dkim=pass header.d=bank.example\r\n"
        b"Received: from x\r\n"
        b"Authentication-Results: (forged) mx.example.org 1;\r\n"
        b"\tspf=pass smtp.mailfrom=bank.example\r\n"
        b"Authentication-Results: mx.other.example; spf=fail\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.org; in the body stays\r\n"
    )
    out = authresults.strip_forged(msg, "mx.example.org")
    assert out == (
        b"Received: from x\r\n"
        b"Authentication-Results: mx.other.example; spf=fail\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.org; in the body stays\r\n"
    )
    assert authresults.strip_forged(b"", "mx.example.org") == b""
    assert authresults.strip_forged(b"garbage\x00\xff", "mx") == b"garbage\x00\xff"


# --- inbound ----------------------------------------------------------------------------

MSG = (
    b"From: Bank <service@bank.example>\r\n"
    b"To: user@example.org\r\n"
    b"Subject: Your account\r\n"
    b"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@bank.example>\r\n"
    b"\r\n"
    b"Please log in.\r\n"
)


@pytest.fixture(scope="module")
def bank_keys(tmp_path_factory: pytest.TempPathFactory) -> list[dkim.DKIMKey]:
    return dkim.ensure_domain_keys(tmp_path_factory.mktemp("d"), "bank.example", ["ed25519"])


def world(keys: list[dkim.DKIMKey], dmarc_record: str) -> StaticResolver:
    txt = {k.dns_name: [dkim.dns_txt_record(k)] for k in keys}
    txt["bank.example"] = ["v=spf1 ip4:192.0.2.0/24 -all"]
    txt["_dmarc.bank.example"] = [dmarc_record]
    return StaticResolver(txt_records=txt, mx_records={"bank.example": [MX(10, "mx.bank.example")]})


async def test_inbound_signed_message_passes(bank_keys: list[dkim.DKIMKey]) -> None:
    signed = await dkim.sign(MSG, bank_keys) + MSG
    forged_ar = b"Authentication-Results: mx.example.org; dmarc=pass\r\n"
    v = await inbound.check_inbound(
        forged_ar + signed, "198.51.100.7", "relay.example", "list@lists.example",
        world(bank_keys, "v=DMARC1; p=reject"), "mx.example.org",
    )
    assert v.action == "accept" and v.reject_reply is None and v.mailbox is None
    assert v.dmarc is not None and v.dmarc.result == "pass" and v.dmarc.dkim_aligned
    assert v.message.startswith(v.header_to_prepend)
    assert v.message.count(b"Authentication-Results:") == 1
    assert b"dkim=pass header.d=bank.example" in v.header_to_prepend
    assert b"dmarc=pass" in v.header_to_prepend
    assert v.log["dkim"] == "pass:bank.example"
    # our header and body survive: the rest of the message is the signed message
    assert v.message.endswith(signed)


async def test_inbound_spoof_rejected_or_quarantined(bank_keys: list[dkim.DKIMKey]) -> None:
    r = world(bank_keys, "v=DMARC1; p=reject")
    v = await inbound.check_inbound(MSG, "203.0.113.66", "evil.example", "x@evil.example", r,
                                    "mx.example.org")
    assert v.action == "reject"
    assert v.reject_reply is not None and v.reject_reply[:2] == (550, "5.7.1")
    assert "bank.example" in v.reject_reply[2]
    v = await inbound.check_inbound(
        MSG, "203.0.113.66", "evil.example", "x@evil.example", r, "mx.example.org",
        dmarc_settings=DMARCSettings(reject_action="quarantine"),
    )
    assert (v.action, v.mailbox, v.reject_reply) == ("quarantine", "Junk", None)
    r = world(bank_keys, "v=DMARC1; p=quarantine")
    v = await inbound.check_inbound(MSG, "203.0.113.66", "evil.example", "x@evil.example", r,
                                    "mx.example.org")
    assert (v.action, v.mailbox) == ("quarantine", "Junk")
    assert b"dmarc=fail (p=quarantine dis=quarantine) header.from=bank.example" in v.message


async def test_inbound_second_from_cannot_dodge_policy(bank_keys: list[dkim.DKIMKey]) -> None:
    r = world(bank_keys, "v=DMARC1; p=reject")
    r.txt_records["evil.example"] = ["v=spf1 +all"]
    msg = b"From: me@evil.example\r\n" + MSG
    v = await inbound.check_inbound(msg, "203.0.113.66", "evil.example", "x@evil.example", r,
                                    "mx.example.org")
    assert v.action == "reject"


async def test_inbound_spf_fail_action_and_none(bank_keys: list[dkim.DKIMKey]) -> None:
    r = world(bank_keys, "v=DMARC1; p=none")
    v = await inbound.check_inbound(MSG, "203.0.113.66", "evil.example", "x@bank.example", r,
                                    "mx.example.org")
    assert v.action == "accept" and v.spf is not None and v.spf.result == "fail"
    v = await inbound.check_inbound(
        MSG, "203.0.113.66", "evil.example", "x@bank.example", r, "mx.example.org",
        spf_settings=SPFSettings(fail_action="reject"),
    )
    assert v.action == "reject" and v.reject_reply is not None
    assert "SPF" in v.reject_reply[2]
    # SPF pass from an allowed IP, no DKIM: DMARC passes through SPF alignment
    v = await inbound.check_inbound(MSG, "192.0.2.5", "mx.bank.example", "x@bank.example", r,
                                    "mx.example.org")
    assert v.dmarc is not None and v.dmarc.spf_aligned and v.action == "accept"
    assert b"spf=pass" in v.header_to_prepend


async def test_inbound_garbage_does_not_raise() -> None:
    for msg in (b"", b"\x00\x01\x02", b"From: <>\r\n\r\n", b"From: a@b@c\r\n\r\nx"):
        v = await inbound.check_inbound(msg, "192.0.2.1", "h.example", "", StaticResolver(),
                                        "mx.example.org")
        assert v.action == "accept"
        assert v.message.startswith(b"Authentication-Results: mx.example.org;")


def test_from_domains() -> None:
    assert inbound.from_domains(b"From: A <a@X.example>, b@y.example\r\n\r\n") == [
        "x.example", "y.example"]
    assert inbound.from_domains(b"To: a@b\r\n\r\n") == []
