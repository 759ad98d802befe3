"""ARC (RFC 8617): a forwarder seals the message it changed, the final hop verifies the
chain, and DMARC of the forwarded mail passes at the final hop only when the sealer is
trusted and saw DMARC pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from pochta.dns import StaticResolver
from pochta.policy import arc, dkim
from pochta.policy.inbound import check_inbound

ORIGINAL = (b"From: Dave <dave@sender.example>\r\nTo: list@fwd.test\r\n"
            b"Subject: hello\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
            b"Message-ID: <1@sender.example>\r\n\r\nHello, list.\r\n")


@pytest.fixture
def world(tmp_path: Path) -> tuple[StaticResolver, dkim.DKIMKey, dkim.DKIMKey]:
    r = StaticResolver()
    sender_key = dkim.generate_key(tmp_path, "sender.example", "s1", "rsa", 2048)
    fwd_key = dkim.generate_key(tmp_path, "fwd.test", "arc1", "rsa", 2048)
    r.txt_records[sender_key.dns_name] = [dkim.dns_txt_record(sender_key)]
    r.txt_records[fwd_key.dns_name] = [dkim.dns_txt_record(fwd_key)]
    r.txt_records["_dmarc.sender.example"] = ["v=DMARC1; p=reject"]
    r.txt_records["sender.example"] = ["v=spf1 ip4:192.0.2.1 -all"]
    return r, sender_key, fwd_key


async def forwarded(r: StaticResolver, sender_key: dkim.DKIMKey,
                    fwd_key: dkim.DKIMKey, seal: bool = True) -> bytes:
    """What the forwarder sends on: it checked the original (DMARC pass), added a list
    tag to the Subject (which breaks the author's DKIM signature) and sealed it."""
    signed = await dkim.sign(ORIGINAL, [sender_key]) + ORIGINAL
    at_forwarder = await check_inbound(signed, "192.0.2.1", "mail.sender.example",
                                       "dave@sender.example", r, "mx.fwd.test",
                                       arc_trusted=[])
    assert at_forwarder.dmarc is not None and at_forwarder.dmarc.result == "pass"
    assert b"arc=none" in at_forwarder.header_to_prepend
    changed = at_forwarder.message.replace(b"Subject: hello", b"Subject: [list] hello")
    return await arc.seal(changed, fwd_key, "mx.fwd.test") if seal else changed


async def test_seal_and_verify(world: tuple[StaticResolver, dkim.DKIMKey, dkim.DKIMKey]
                               ) -> None:
    r, sender_key, fwd_key = world
    sealed = await forwarded(r, sender_key, fwd_key)
    assert sealed.startswith(b"ARC-Seal: i=1;")
    assert b"ARC-Message-Signature: i=1;" in sealed
    assert b"ARC-Authentication-Results: i=1; mx.fwd.test" in sealed
    res = await arc.verify(sealed, r)
    assert (res.cv, res.sealer, res.instances) == ("pass", "fwd.test", 1)
    assert "dmarc=pass" in res.sealer_aar
    assert arc.trusted_override(res, ["fwd.test"])
    assert not arc.trusted_override(res, ["other.test"])
    # a change after sealing breaks the chain
    broken = await arc.verify(sealed.replace(b"Hello, list.", b"Hello, world."), r)
    assert broken.cv == "fail" and not arc.trusted_override(broken, ["fwd.test"])
    assert (await arc.verify(ORIGINAL, r)).cv == "none"


@pytest.mark.parametrize("trusted", [True, False])
async def test_dmarc_of_forwarded_mail_at_the_final_hop(
    world: tuple[StaticResolver, dkim.DKIMKey, dkim.DKIMKey], trusted: bool,
) -> None:
    r, sender_key, fwd_key = world
    sealed = await forwarded(r, sender_key, fwd_key)
    verdict = await check_inbound(sealed, "198.51.100.7", "mx.fwd.test",
                                  "SRS0=abcd=AA=sender.example=dave@fwd.test", r,
                                  "mx.final.test",
                                  arc_trusted=["fwd.test"] if trusted else ["x.test"])
    assert verdict.dmarc is not None and verdict.dmarc.result == "fail"  # DKIM broken
    assert b"arc=pass (i=1 d=fwd.test)" in verdict.header_to_prepend
    if trusted:
        assert verdict.action == "accept" and verdict.log["arc_override"] == "fwd.test"
    else:
        assert verdict.action == "reject"


async def test_unsealed_forward_is_rejected(
    world: tuple[StaticResolver, dkim.DKIMKey, dkim.DKIMKey],
) -> None:
    r, sender_key, fwd_key = world
    plain = await forwarded(r, sender_key, fwd_key, seal=False)
    verdict = await check_inbound(plain, "198.51.100.7", "mx.fwd.test", "x@fwd.test", r,
                                  "mx.final.test", arc_trusted=["fwd.test"])
    assert verdict.action == "reject" and b"arc=none" in verdict.header_to_prepend
