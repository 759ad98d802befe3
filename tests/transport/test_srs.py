"""SRS: forwarded mail leaves with a rewritten envelope sender (so SPF passes at the next
hop), and bounces to SRS addresses are checked and sent back to the original sender;
unit tests of the scheme, then through a running server, its queue and a recording
next hop."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest

from pochta.dns import StaticResolver
from pochta.policy import arc, dkim
from pochta.transport_security.srs import SRS, load_secret
from tests.conftest import Instance, start_instance
from tests.queue.conftest import FakeClock
from tests.queue.sink import Sink


def test_srs0_round_trip_tamper_and_age() -> None:
    clock = FakeClock(1_796_083_200.0)
    srs = SRS(b"secret", "fwd.example", clock=clock)
    out = srs.forward("Dave@Sender.test")
    assert out.startswith("SRS0=") and out.endswith("@fwd.example")
    assert "=Sender.test=Dave@" in out
    assert srs.reverse(out) == "Dave@Sender.test"
    assert srs.reverse(out.upper().replace("@FWD.EXAMPLE", "@fwd.example")) is not None
    assert srs.forward("") == ""  # bounces are never rewritten
    forged = out.replace("SRS0=", "SRS0=x", 1)
    assert srs.reverse(forged) is None
    assert srs.reverse(out.replace("=Dave@", "=eve@")) is None
    assert SRS(b"other", "fwd.example", clock=clock).reverse(out) is None
    assert srs.reverse("dave@fwd.example") is None
    clock.advance(20 * 86400)
    assert srs.reverse(out) == "Dave@Sender.test"
    clock.advance(2 * 86400)
    assert srs.reverse(out) is None  # older than 21 days


def test_srs1_for_a_second_forwarder() -> None:
    clock = FakeClock(1_796_083_200.0)
    first = SRS(b"one", "a.example", clock=clock)
    second = SRS(b"two", "b.example", clock=clock)
    hop1 = first.forward("dave@sender.test")
    hop2 = second.forward(hop1)
    assert hop2.startswith("SRS1=") and "=a.example==" in hop2 and hop2.endswith("@b.example")
    # a third forwarder keeps pointing at the first one
    third = SRS(b"three", "c.example", clock=clock)
    hop3 = third.forward(hop2)
    assert hop3.startswith("SRS1=") and "=a.example==" in hop3
    assert third.reverse(hop3) == hop1
    assert second.reverse(hop2) == hop1
    assert first.reverse(hop1) == "dave@sender.test"


def test_secret_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "d" / "srs-secret"
    secret = load_secret(path)
    assert len(secret) == 64 and load_secret(path) == secret
    assert path.stat().st_mode & 0o077 == 0


async def _wait(cond: object, tries: int = 200) -> None:
    for _ in range(tries):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)


async def test_forwarding_and_bounce_through_the_server(instance: Instance) -> None:
    """SRS and ARC sealing on forwarded mail, SRS bounces back."""
    sink = Sink()
    port = await sink.start()
    keys = dkim.ensure_domain_keys(instance.config().data_path, "example.test")
    server = await start_instance(
        instance, run_queue=True,
        transport_security={"srs": True, "srs_domain": "example.test", "arc_seal": True},
        routes=[{"domain": d, "host": "127.0.0.1", "port": port, "tls": "none"}
                for d in ("remote.test", "sender.test")])
    try:
        await server.store.add_alias("fwd@example.test", ["carol@remote.test"])
        mta = server.port("mta")

        def send(sender: str, rcpt: str, body: bytes) -> None:
            with smtplib.SMTP("127.0.0.1", mta, timeout=10) as c:
                c.sendmail(sender, [rcpt], body)

        await asyncio.to_thread(send, "dave@sender.test", "fwd@example.test",
                               b"From: dave@sender.test\r\nSubject: fwd\r\n\r\nhi\r\n")
        await _wait(lambda: sink.messages)
        [forwarded] = sink.messages
        assert forwarded.rcpts == ["carol@remote.test"]
        assert forwarded.sender.startswith("SRS0=") and forwarded.sender.endswith(
            "=sender.test=dave@example.test")
        # sealed by us, over our own Authentication-Results
        assert forwarded.data.startswith(b"ARC-Seal: i=1;")
        assert b"ARC-Authentication-Results: i=1; mail.example.test" in forwarded.data
        keys_dns = StaticResolver(txt_records={k.dns_name: [dkim.dns_txt_record(k)]
                                               for k in keys})
        sealed = await arc.verify(forwarded.data, keys_dns)
        assert (sealed.cv, sealed.sealer) == ("pass", "example.test")
        # the next hop bounces it: the bounce reaches dave
        await asyncio.to_thread(send, "", forwarded.sender,
                               b"From: MAILER-DAEMON@remote.test\r\nSubject: bounce\r\n\r\nx\r\n")
        await _wait(lambda: len(sink.messages) > 1)
        bounce = sink.messages[1]
        assert bounce.sender == "" and bounce.rcpts == ["dave@sender.test"]
        # a forged SRS address is an unknown user
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await asyncio.to_thread(send, "", "SRS0=AAAA=AA=sender.test=dave@example.test",
                                   b"Subject: x\r\n\r\nx\r\n")
        # our own users' mail keeps its sender
        def submit() -> None:
            with smtplib.SMTP_SSL("127.0.0.1", server.port("submission", "implicit"),
                                  timeout=10, context=server.client_ssl()) as c:
                c.login("alice@example.test", "alice-pass")
                c.sendmail("alice@example.test", ["carol@remote.test"],
                           b"From: alice@example.test\r\nSubject: own\r\n\r\nx\r\n")

        await asyncio.to_thread(submit)
        await _wait(lambda: len(sink.messages) > 2)
        assert sink.messages[2].sender == "alice@example.test"
        assert not sink.messages[2].data.startswith(b"ARC-Seal")
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()
        await sink.close()
