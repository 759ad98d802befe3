"""REQUIRETLS (RFC 8689): offered only over TLS, kept with the message, honoured by the
queue (validated TLS to a peer that offers it, or a 5.7.30 bounce); TLS-Required: No
lets a message past a recipient domain's MTA-STS policy."""

from __future__ import annotations

import asyncio
import smtplib
import ssl

import pytest

from pochta.proto.smtp import replies
from pochta.proto.smtp.address import AddressError, parse_mail_from
from pochta.queue.requiretls import requested, tls_required_no
from pochta.services.delivery import TraceInfo, received_header
from pochta.storage.interfaces import Envelope, QueueState, RemoteRecipient
from tests.conftest import Server
from tests.e2e.test_mta import inbox
from tests.queue.sink import Sink
from tests.transport.pki import StripTLSProxy
from tests.transport.test_mtasts import World, world  # noqa: F401

BODY = b"From: alice@example.test\r\nTo: bob@example.net\r\nSubject: secret\r\n\r\nHi.\r\n"


def test_mail_parameter() -> None:
    m = parse_mail_from("<a@b.test> REQUIRETLS", max_message_size=100,
                        requiretls_enabled=True)
    assert m.requiretls
    assert not parse_mail_from("<a@b.test>", max_message_size=100,
                               requiretls_enabled=True).requiretls
    with pytest.raises(AddressError) as exc:
        parse_mail_from("<a@b.test> REQUIRETLS", max_message_size=100)
    assert exc.value.reply is replies.UNKNOWN_PARAMETER
    with pytest.raises(AddressError):
        parse_mail_from("<a@b.test> REQUIRETLS=yes", max_message_size=100,
                        requiretls_enabled=True)


def marked(requiretls: bool, extra: bytes = b"") -> bytes:
    trace = TraceInfo("client.test", "192.0.2.1", True, None, requiretls=requiretls)
    return received_header("mta.example.test", trace, "Q1", ["bob@example.net"], 0) + \
        extra + BODY


def test_flag_is_read_from_our_received_field_only() -> None:
    assert requested(marked(True), "mta.example.test")
    assert not requested(marked(False), "mta.example.test")
    # a forged mark further down (someone else's Received:) does not count
    forged = marked(False) .replace(b"Subject:", b"Received: from x\r\n\t(REQUIRETLS)\r\n"
                                    b"\tby mta.example.test (Pochta) with ESMTP id Z;"
                                    b" date\r\nSubject:")
    assert not requested(forged, "mta.example.test")
    assert tls_required_no(marked(False, b"TLS-Required: No\r\n"))
    assert not tls_required_no(marked(False, b"X-TLS-Required: No\r\n"))


async def test_server_offers_it_over_tls_and_keeps_it(running_server: Server) -> None:
    port = running_server.port("mta")

    def session() -> tuple[bool, bool, int]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
            c.ehlo("client.test")
            before = c.has_extn("requiretls")
            plain_code = c.mail("alice@elsewhere.test", ["REQUIRETLS"])[0]
            c.rset()
            ctx = ssl.create_default_context(cafile=str(running_server.cert))
            ctx.check_hostname = False
            c.starttls(context=ctx)
            c.ehlo("client.test")
            after = c.has_extn("requiretls")
            c.sendmail("alice@elsewhere.test", ["bob@example.test"], BODY,
                       mail_options=["REQUIRETLS"])
            return before, after, plain_code

    before, after, plain_code = await asyncio.to_thread(session)
    assert (before, after, plain_code) == (False, True, 555)
    [copy] = await inbox(running_server, "bob@example.test")
    assert b"(REQUIRETLS)" in copy.split(b"\r\n\r\n")[0]


async def _queue(w: World, data: bytes) -> None:
    await w.store.accept(data, Envelope(sender="alice@example.test"), [],
                         [RemoteRecipient("bob@example.net")])


async def test_requiretls_over_mta_sts_to_a_peer_that_offers_it(world: World) -> None:  # noqa: F811
    peer = Sink(tls_context=world.sink.tls_context,
                extensions=(*world.sink.extensions, "REQUIRETLS"))
    await peer.start()
    try:
        await _queue(world, marked(True))
        await world.worker(peer.port).run_once()
        assert (await world.item())[0] is QueueState.DELIVERED
        assert peer.messages[0].mail_line.endswith(" REQUIRETLS") and peer.messages[0].tls
    finally:
        await peer.close()


async def test_requiretls_bounces_without_support_or_validation(world: World) -> None:  # noqa: F811
    # the MX validates (MTA-STS enforce) but does not offer REQUIRETLS
    await _queue(world, marked(True))
    await world.worker().run_once()
    state, reply = await world.item()
    assert state is QueueState.FAILED and "5.7.30" in reply and "does not support" in reply
    assert world.sink.messages == []
    # a domain without MTA-STS or DANE: TLS cannot be validated
    world.resolver.mx_records["plain.example"] = [world.resolver.mx_records["example.net"][0]]
    peer = Sink(tls_context=world.sink.tls_context,
                extensions=(*world.sink.extensions, "REQUIRETLS"))
    await peer.start()
    try:
        await world.store.accept(marked(True), Envelope(sender="alice@example.test"), [],
                                 [RemoteRecipient("carol@plain.example")])
        await world.worker(peer.port).run_once()
        state, reply = await world.item("carol@plain.example")
        assert state is QueueState.FAILED and "5.7.30" in reply and "not validated" in reply
        assert peer.messages == []
        assert world.bounces and b"5.7.30" in world.bounces[-1]
    finally:
        await peer.close()


async def test_tls_required_no_passes_an_mta_sts_policy(world: World) -> None:  # noqa: F811
    from pochta.queue.requiretls import message_policy
    from pochta.queue.routing import ConfigTLSPolicy, Router

    proxy = StripTLSProxy(world.sink.port)
    await proxy.start()
    try:
        await _queue(world, marked(False, b"TLS-Required: No\r\n"))
        await _queue(world, marked(False))  # the same domain without the header
        worker = world.worker(proxy.port)
        worker.message_policy = message_policy(
            world.store, Router(world.resolver, worker.config, [],
                                tls_policy=ConfigTLSPolicy([])), "mta.example.test")
        await worker.run_once()
        items = {i.blob_id: i for i in await world.store.list_queue()}
        states = sorted(i.state.value for i in items.values())
        assert states == ["deferred", "delivered"]  # only the TLS-Required: No one left
        assert len(world.sink.messages) == 1
        assert b"TLS-Required: No" in world.sink.messages[0].data
        assert not world.sink.messages[0].tls
    finally:
        await proxy.close()
