"""The queue worker against real sockets on 127.0.0.1, a static DNS table and a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import ssl
from collections.abc import AsyncIterator
from email.message import EmailMessage, Message
from pathlib import Path

import pytest

from pochta.dns import MX, StaticResolver
from pochta.queue.settings import QueueConfig, Route, TLSPolicy
from pochta.queue.worker import QueueWorker
from pochta.storage.interfaces import (
    Envelope,
    MailStore,
    QueueItem,
    QueueState,
    RemoteRecipient,
)
from pochta.storage.sqlite import SQLiteStore
from pochta.tlsutil import server_context

from .conftest import FakeClock
from .sink import Sink

MSG = b"From: alice@example.test\r\nTo: bob@example.net\r\nSubject: hello\r\n\r\nHi Bob.\r\n"


class Bounces:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str, Envelope]] = []

    async def __call__(self, data: bytes, rcpt: str, env: Envelope) -> None:
        self.sent.append((data, rcpt, env))

    def parsed(self, i: int = 0) -> EmailMessage:
        msg = email.message_from_bytes(self.sent[i][0], policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    def part(self, n: int, i: int = 0) -> EmailMessage:
        return list(self.parsed(i).iter_parts())[n]  # type: ignore[return-value]

    def block(self, n: int = 1, i: int = 0) -> Message:
        """Field block n of the delivery-status part (0: per message, 1..: recipients)."""
        blocks = self.part(1, i).get_payload()
        assert isinstance(blocks, list)
        b = blocks[n]
        assert isinstance(b, Message)
        return b


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = Sink()
    await s.start()
    yield s
    await s.close()


def resolver_for(*domains: str) -> StaticResolver:
    r = StaticResolver()
    for d in domains:
        r.mx_records[d] = [MX(10, f"mx.{d}")]
        r.a_records[f"mx.{d}"] = ["127.0.0.1"]
    return r


def make_worker(
    store: MailStore, clock: FakeClock, resolver: StaticResolver, port: int,
    bounces: Bounces | None = None, routes: list[Route] | None = None, **cfg: object,
) -> QueueWorker:
    config = QueueConfig(smtp_port=port, connect_timeout=5, command_timeout=5,
                         data_timeout=5, **cfg)  # type: ignore[arg-type]
    return QueueWorker(store, "mta.example.test", resolver, config, routes or [],
                       clock=clock, bounce_sink=bounces)


async def enqueue(
    store: MailStore, *rcpts: str, sender: str = "alice@example.test", data: bytes = MSG,
    **env: object,
) -> str:
    envelope = Envelope(sender=sender, **env)  # type: ignore[arg-type]
    result = await store.accept(data, envelope, [], [RemoteRecipient(r) for r in rcpts])
    return result.message_id


async def states(store: MailStore) -> dict[str, QueueItem]:
    return {i.recipient.address: i for i in await store.list_queue()}


async def test_delivers_via_mx_in_one_transaction(
    store: MailStore, clock: FakeClock, sink: Sink
) -> None:
    await enqueue(store, "bob@example.net", "carol@example.net")
    worker = make_worker(store, clock, resolver_for("example.net"), sink.port)
    assert await worker.run_once() == 2
    assert len(sink.messages) == 1
    m = sink.messages[0]
    assert m.sender == "alice@example.test"
    assert sorted(m.rcpts) == ["bob@example.net", "carol@example.net"]
    assert m.data == MSG
    st = await states(store)
    assert {i.state for i in st.values()} == {QueueState.DELIVERED}
    assert "250 2.0.0 Ok: queued" in st["bob@example.net"].last_reply
    assert "mx.example.net [127.0.0.1]" in st["bob@example.net"].last_reply
    assert await worker.run_once() == 0  # nothing due any more


async def test_permanent_failure_bounces_with_rfc3464_dsn(
    store: MailStore, clock: FakeClock, sink: Sink
) -> None:
    sink.rcpt_replies["nobody@example.net"] = b"550 5.1.1 <nobody@example.net>: no such user\r\n"
    await enqueue(store, "bob@example.net", "nobody@example.net", envid="ENV+2B1")
    bounces = Bounces()
    worker = make_worker(store, clock, resolver_for("example.net"), sink.port, bounces)
    await worker.run_once()
    st = await states(store)
    assert st["bob@example.net"].state is QueueState.DELIVERED
    assert st["nobody@example.net"].state is QueueState.FAILED
    assert sink.recipients() == ["bob@example.net"]
    (_, rcpt, env), = bounces.sent
    assert rcpt == "alice@example.test" and env.sender == ""
    msg = bounces.parsed()
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Auto-Submitted"] == "auto-replied"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "message/rfc822"
    ]
    per_msg, per_rcpt = bounces.block(0), bounces.block(1)
    assert per_msg["Reporting-MTA"] == "dns; mta.example.test"
    assert per_msg["Original-Envelope-Id"] == "ENV+1"  # xtext decoded
    assert per_rcpt["Final-Recipient"] == "rfc822; nobody@example.net"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert "550 5.1.1" in per_rcpt["Diagnostic-Code"]
    assert per_rcpt["Remote-MTA"] == "dns; mx.example.net"
    original = parts[2].get_payload()
    assert isinstance(original, list) and isinstance(original[0], Message)
    assert original[0]["Subject"] == "hello"


async def test_transient_failure_retries_on_schedule_then_delivers(
    store: MailStore, clock: FakeClock, sink: Sink
) -> None:
    sink.rcpt_replies["bob@example.net"] = b"451 4.7.1 greylisted, try later\r\n"
    await enqueue(store, "bob@example.net")
    worker = make_worker(store, clock, resolver_for("example.net"), sink.port)
    start = clock.now
    await worker.run_once()
    item = (await states(store))["bob@example.net"]
    assert item.state is QueueState.DEFERRED
    assert "451 4.7.1 greylisted" in item.last_reply
    assert item.next_attempt == pytest.approx(start + 300)
    clock.advance(200)
    assert await worker.run_once() == 0  # not due yet
    clock.advance(100)
    del sink.rcpt_replies["bob@example.net"]
    assert await worker.run_once() == 1
    assert (await states(store))["bob@example.net"].state is QueueState.DELIVERED
    assert sink.recipients() == ["bob@example.net"]


async def test_gives_up_after_max_age_with_expiry_dsn(
    store: MailStore, clock: FakeClock, sink: Sink
) -> None:
    sink.rcpt_replies["bob@example.net"] = b"452 4.2.2 mailbox full\r\n"
    await enqueue(store, "bob@example.net")
    bounces = Bounces()
    worker = make_worker(store, clock, resolver_for("example.net"), sink.port, bounces,
                         max_age=3600.0)
    created = clock.now = (await states(store))["bob@example.net"].created
    attempts = []
    for _ in range(50):
        if await worker.run_once():
            attempts.append(clock.now - created)
        item = (await states(store))["bob@example.net"]
        if item.state is QueueState.FAILED:
            break
        clock.now = item.next_attempt
    assert item.state is QueueState.FAILED
    # exponential backoff: 0, 300, 600, 1200, 2400, then the last attempt at max_age
    assert attempts == [0, 300, 600, 1200, 2400, 3600]
    assert len(bounces.sent) == 1
    rcpt_block = bounces.block()
    assert rcpt_block["Status"] == "5.4.7"
    assert "452 4.2.2 mailbox full" in rcpt_block["Diagnostic-Code"]


async def test_delay_warning_sent_once(store: MailStore, clock: FakeClock, sink: Sink) -> None:
    sink.rcpt_replies["bob@example.net"] = b"450 4.2.0 busy\r\n"
    await enqueue(store, "bob@example.net")
    bounces = Bounces()
    worker = make_worker(store, clock, resolver_for("example.net"), sink.port, bounces,
                         delay_warning=1000.0)
    clock.now = (await states(store))["bob@example.net"].created
    for _ in range(6):
        await worker.run_once()
        clock.now = (await states(store))["bob@example.net"].next_attempt
    assert len(bounces.sent) == 1
    msg = bounces.parsed()
    assert "Delayed" in str(msg["Subject"])
    block = bounces.block()
    assert block["Action"] == "delayed"
    assert block["Will-Retry-Until"]
    # A delay report carries the headers only.
    assert bounces.part(2).get_content_type() == "text/rfc822-headers"


async def test_no_bounce_for_null_sender_or_notify_never(
    store: MailStore, clock: FakeClock, sink: Sink
) -> None:
    sink.rcpt_replies["nobody@example.net"] = b"550 5.1.1 no such user\r\n"
    await enqueue(store, "nobody@example.net", sender="")
    await store.accept(MSG, Envelope("alice@example.test"), [],
                       [RemoteRecipient("nobody@example.net", notify="NEVER")])
    bounces = Bounces()
    worker = make_worker(store, clock, resolver_for("example.net"), sink.port, bounces)
    await worker.run_once()
    assert {i.state for i in await store.list_queue()} == {QueueState.FAILED}
    assert bounces.sent == []


async def test_default_bounce_sink_queues_dsn_with_null_sender(
    store: MailStore, clock: FakeClock, sink: Sink
) -> None:
    sink.rcpt_replies["nobody@example.net"] = b"550 5.1.1 no such user\r\n"
    await enqueue(store, "nobody@example.net")
    config = QueueConfig(smtp_port=sink.port)
    worker = QueueWorker(store, "mta.example.test", resolver_for("example.net"), config,
                         clock=clock)
    await worker.run_once()
    bounce = [i for i in await store.list_queue() if i.envelope.sender == ""]
    assert len(bounce) == 1
    assert bounce[0].recipient.address == "alice@example.test"
    assert bounce[0].state is QueueState.PENDING


async def test_connection_refused_is_deferred(store: MailStore, clock: FakeClock) -> None:
    await enqueue(store, "bob@example.net")
    closed = Sink()
    port = await closed.start()
    await closed.close()  # nothing listens there any more
    worker = make_worker(store, clock, resolver_for("example.net"), port)
    await worker.run_once()
    item = (await states(store))["bob@example.net"]
    assert item.state is QueueState.DEFERRED
    assert "4.4.1" in item.last_reply and "connect to" in item.last_reply


async def test_null_mx_fails_at_once(store: MailStore, clock: FakeClock) -> None:
    resolver = StaticResolver(mx_records={"nomail.example": [MX(0, "")]},
                              a_records={"nomail.example": ["127.0.0.1"]})
    await enqueue(store, "x@nomail.example")
    bounces = Bounces()
    worker = make_worker(store, clock, resolver, 1, bounces)
    await worker.run_once()
    item = (await states(store))["x@nomail.example"]
    assert item.state is QueueState.FAILED
    assert "556 5.1.10" in item.last_reply
    assert ("A", "nomail.example") not in resolver.queries  # RFC 7505: no A fallback
    assert bounces.block()["Status"] == "5.1.10"


async def test_no_mx_falls_back_to_address(
    store: MailStore, clock: FakeClock, sink: Sink
) -> None:
    resolver = StaticResolver(a_records={"plain.example": ["127.0.0.1"]})
    await enqueue(store, "x@plain.example")
    worker = make_worker(store, clock, resolver, sink.port)
    await worker.run_once()
    assert sink.recipients() == ["x@plain.example"]


async def test_no_mx_and_no_address_bounces(store: MailStore, clock: FakeClock) -> None:
    await enqueue(store, "x@void.example")
    worker = make_worker(store, clock, StaticResolver(), 1, Bounces())
    await worker.run_once()
    item = (await states(store))["x@void.example"]
    assert item.state is QueueState.FAILED and "5.1.2" in item.last_reply


async def test_dns_servfail_defers(store: MailStore, clock: FakeClock) -> None:
    await enqueue(store, "x@broken.example")
    worker = make_worker(store, clock, StaticResolver(fail={"broken.example"}), 1)
    await worker.run_once()
    item = (await states(store))["x@broken.example"]
    assert item.state is QueueState.DEFERRED and "4.4.3" in item.last_reply


async def test_mx_preference_and_next_address_on_failure(
    store: MailStore, clock: FakeClock, sink: Sink
) -> None:
    resolver = StaticResolver(
        mx_records={"example.net": [MX(20, "backup.example.net"), MX(10, "primary.example.net")]},
        # The primary's first address refuses connections; its IPv6 address is unreachable
        # here too. The second IPv4 address works.
        a_records={"primary.example.net": ["127.0.0.2", "127.0.0.1"],
                   "backup.example.net": ["127.0.0.1"]},
    )
    await enqueue(store, "bob@example.net")
    worker = make_worker(store, clock, resolver, sink.port)
    await worker.run_once()
    assert sink.recipients() == ["bob@example.net"]
    item = (await states(store))["bob@example.net"]
    assert "primary.example.net [127.0.0.1]" in item.last_reply
    assert resolver.queries.index(("A", "primary.example.net")) >= 0
    assert ("A", "backup.example.net") not in resolver.queries


async def test_backup_mx_used_when_primary_down(
    store: MailStore, clock: FakeClock, sink: Sink
) -> None:
    resolver = StaticResolver(
        mx_records={"example.net": [MX(10, "primary.example.net"), MX(20, "backup.example.net")]},
        a_records={"primary.example.net": ["127.0.0.3"], "backup.example.net": ["127.0.0.1"]},
    )
    await enqueue(store, "bob@example.net")
    worker = make_worker(store, clock, resolver, sink.port)
    await worker.run_once()
    assert "backup.example.net" in (await states(store))["bob@example.net"].last_reply


async def test_connection_reused_for_several_messages(
    store: MailStore, clock: FakeClock, sink: Sink
) -> None:
    for n in range(3):
        await enqueue(store, f"u{n}@example.net", data=MSG + b"n=%d\r\n" % n)
    worker = make_worker(store, clock, resolver_for("example.net"), sink.port,
                         per_destination=1)
    await worker.run_once()
    assert len(sink.messages) == 3
    assert sink.connections == 1


async def test_static_route_overrides_mx(
    store: MailStore, clock: FakeClock, sink: Sink
) -> None:
    resolver = StaticResolver()  # no DNS at all: the route must be used
    await enqueue(store, "bob@elsewhere.example", "carol@example.org")
    routes = [Route("*", "127.0.0.1", sink.port, tls="none")]
    worker = make_worker(store, clock, resolver, 1, routes=routes)
    await worker.run_once()
    # One destination (the smarthost): both recipients in one transaction.
    assert len(sink.messages) == 1
    assert sorted(sink.messages[0].rcpts) == ["bob@elsewhere.example", "carol@example.org"]
    assert resolver.queries == []


def tls_sink(tls_pair: tuple[Path, Path], **kw: object) -> Sink:
    ctx = server_context(tls_pair[0], tls_pair[1])
    return Sink(tls_context=ctx, **kw)  # type: ignore[arg-type]


async def test_opportunistic_starttls_by_default(
    store: MailStore, clock: FakeClock, tls_pair: tuple[Path, Path]
) -> None:
    s = tls_sink(tls_pair)
    await s.start()
    try:
        await enqueue(store, "bob@example.net")
        worker = make_worker(store, clock, resolver_for("example.net"), s.port)
        await worker.run_once()
        assert s.messages and s.messages[0].tls  # self-signed cert did not block it
    finally:
        await s.close()


async def test_tls_policy_verify_defers_on_untrusted_certificate(
    store: MailStore, clock: FakeClock, tls_pair: tuple[Path, Path]
) -> None:
    s = tls_sink(tls_pair)
    await s.start()
    try:
        await enqueue(store, "bob@example.net")
        worker = make_worker(store, clock, resolver_for("example.net"), s.port,
                             tls_policies=[TLSPolicy("example.net", "verify")])
        await worker.run_once()
        item = (await states(store))["bob@example.net"]
        assert item.state is QueueState.DEFERRED and "4.7.5" in item.last_reply
        assert s.messages == []
    finally:
        await s.close()


async def test_required_tls_not_offered_defers(
    store: MailStore, clock: FakeClock, sink: Sink
) -> None:
    await enqueue(store, "bob@example.net")
    worker = make_worker(store, clock, StaticResolver(), 1,
                         routes=[Route("example.net", "127.0.0.1", sink.port, tls="starttls")])
    await worker.run_once()
    item = (await states(store))["bob@example.net"]
    assert item.state is QueueState.DEFERRED and "4.7.4" in item.last_reply
    assert sink.messages == []


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_smarthost_with_tls_and_auth(
    store: MailStore, clock: FakeClock, tls_pair: tuple[Path, Path], tmp_path: Path,
    mode: str,
) -> None:
    s = tls_sink(tls_pair, auth=("relayuser", "s3cret"), implicit_tls=(mode == "implicit"))
    await s.start()
    (tmp_path / "relay.pw").write_text("s3cret\n")
    cafile = str(tls_pair[0])
    try:
        await enqueue(store, "bob@example.net")
        route = Route("*", "127.0.0.1", s.port, tls=mode, verify=False,
                      username="relayuser", password_file="relay.pw")
        config = QueueConfig(connect_timeout=5, command_timeout=5)
        worker = QueueWorker(store, "mta.example.test", StaticResolver(), config, [route],
                             clock=clock, base_dir=tmp_path, cafile=cafile)
        await worker.run_once()
        assert s.messages and s.messages[0].tls and s.messages[0].auth == "relayuser"
    finally:
        await s.close()


async def test_smarthost_bad_password_defers(
    store: MailStore, clock: FakeClock, tls_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    s = tls_sink(tls_pair, auth=("relayuser", "s3cret"))
    await s.start()
    (tmp_path / "relay.pw").write_text("wrong\n")
    try:
        await enqueue(store, "bob@example.net")
        route = Route("*", "127.0.0.1", s.port, tls="starttls", username="relayuser",
                      password_file=str(tmp_path / "relay.pw"))
        worker = make_worker(store, clock, StaticResolver(), 1, routes=[route])
        await worker.run_once()
        item = (await states(store))["bob@example.net"]
        assert item.state is QueueState.DEFERRED and "535" in item.last_reply
    finally:
        await s.close()


async def test_8bit_downgraded_for_peer_without_8bitmime(
    store: MailStore, clock: FakeClock
) -> None:
    s = Sink(extensions=("PIPELINING",))
    await s.start()
    try:
        body = "From: a@example.test\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n"
        await enqueue(store, "bob@example.net", data=body.encode(), body_8bit=True)
        worker = make_worker(store, clock, resolver_for("example.net"), s.port)
        await worker.run_once()
        (m,) = s.messages
        assert "BODY=8BITMIME" not in m.mail_line
        assert b"Content-Transfer-Encoding: quoted-printable" in m.data
        assert b"Gr=C3=BC=C3=9Fe" in m.data
        parsed = email.message_from_bytes(m.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        assert parsed.get_content().strip() == "Grüße"
    finally:
        await s.close()


async def test_8bit_sent_as_is_with_8bitmime(
    store: MailStore, clock: FakeClock, sink: Sink
) -> None:
    body = "Subject: x\r\n\r\nGrüße\r\n".encode()
    await enqueue(store, "bob@example.net", data=body, body_8bit=True)
    await make_worker(store, clock, resolver_for("example.net"), sink.port).run_once()
    assert sink.messages[0].data == body
    assert "BODY=8BITMIME" in sink.messages[0].mail_line


async def test_utf8_address_to_peer_without_smtputf8_fails_with_clear_dsn(
    store: MailStore, clock: FakeClock, sink: Sink
) -> None:
    await enqueue(store, "jürgen@example.net", smtputf8=True)
    bounces = Bounces()
    await make_worker(store, clock, resolver_for("example.net"), sink.port, bounces).run_once()
    item = (await states(store))["jürgen@example.net"]
    assert item.state is QueueState.FAILED and "5.6.7" in item.last_reply
    assert sink.messages == []
    assert bounces.part(1).get_content_type() == "message/global-delivery-status"
    assert "SMTPUTF8" in bounces.part(0).get_content()


async def test_dsn_parameters_relayed_and_success_notification(
    store: MailStore, clock: FakeClock
) -> None:
    with_dsn = Sink(extensions=("PIPELINING", "8BITMIME", "DSN"))
    without = Sink()
    await with_dsn.start()
    await without.start()
    try:
        await store.accept(MSG, Envelope("alice@example.test", ret="HDRS", envid="E1"), [], [
            RemoteRecipient("a@dsn.example", notify="SUCCESS", orcpt="rfc822;a@dsn.example"),
            RemoteRecipient("b@plain.example", notify="SUCCESS,FAILURE"),
        ])
        routes = [Route("dsn.example", "127.0.0.1", with_dsn.port, tls="none"),
                  Route("plain.example", "127.0.0.1", without.port, tls="none")]
        bounces = Bounces()
        await make_worker(store, clock, StaticResolver(), 1, bounces, routes).run_once()
        assert with_dsn.messages[0].mail_line.endswith("RET=HDRS ENVID=E1")
        assert with_dsn.messages[0].rcpt_lines[0].endswith(
            "NOTIFY=SUCCESS ORCPT=rfc822;a@dsn.example")
        # The DSN-less hop cannot pass SUCCESS on: we report "relayed" (RFC 3461 §5.2.2).
        (_, rcpt, _), = bounces.sent
        assert rcpt == "alice@example.test"
        block = bounces.block()
        assert block["Action"] == "relayed"
        assert block["Final-Recipient"] == "rfc822; b@plain.example"
    finally:
        await with_dsn.close()
        await without.close()


async def test_restart_resumes_and_never_resends_delivered(
    tmp_path: Path, clock: FakeClock, sink: Sink
) -> None:
    slow = Sink(rcpt_replies={"b@two.example": b"421 4.3.2 shutting down\r\n"})
    await slow.start()
    store = await SQLiteStore.open(tmp_path / "d")
    try:
        await enqueue(store, "a@one.example", "b@two.example")
        routes = [Route("one.example", "127.0.0.1", sink.port, tls="none"),
                  Route("two.example", "127.0.0.1", slow.port, tls="none")]
        await make_worker(store, clock, StaticResolver(), 1, routes=routes).run_once()
    finally:
        await store.close()
    # "Restart": a new store and a new worker over the same data directory.
    del slow.rcpt_replies["b@two.example"]
    clock.advance(3600)
    store = await SQLiteStore.open(tmp_path / "d")
    try:
        st = await states(store)
        assert st["a@one.example"].state is QueueState.DELIVERED
        assert st["b@two.example"].state is QueueState.DEFERRED
        await make_worker(store, clock, StaticResolver(), 1, routes=routes).run_once()
        assert sink.recipients() == ["a@one.example"]  # exactly once
        assert slow.recipients() == ["b@two.example"]
        assert {i.state for i in await store.list_queue()} == {QueueState.DELIVERED}
    finally:
        await store.close()
        await slow.close()


async def test_lost_reply_after_data_is_deferred_not_failed(
    store: MailStore, clock: FakeClock
) -> None:
    s = Sink(drop_after_data=True)
    await s.start()
    try:
        await enqueue(store, "bob@example.net")
        await make_worker(store, clock, resolver_for("example.net"), s.port).run_once()
        item = (await states(store))["bob@example.net"]
        assert item.state is QueueState.DEFERRED and "421 4.4.2" in item.last_reply
    finally:
        await s.close()


async def test_run_loop_wakes_on_notify(store: MailStore, sink: Sink) -> None:
    import asyncio

    config = QueueConfig(smtp_port=sink.port, poll_interval=3600)
    worker = QueueWorker(store, "mta.example.test", resolver_for("example.net"), config)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.1)
        await enqueue(store, "bob@example.net")
        worker.notify()
        for _ in range(100):
            if sink.messages:
                break
            await asyncio.sleep(0.05)
        assert sink.recipients() == ["bob@example.net"]
    finally:
        await worker.stop()
        task.cancel()
        with __import__("contextlib").suppress(asyncio.CancelledError):
            await task


async def test_backlog_larger_than_one_pass_drains_without_polling(
    store: MailStore, sink: Sink
) -> None:
    """A pass takes 1,000 due items; the rest must follow as deliveries finish, not one
    batch per poll_interval (found by the outbound benchmark: 37 msg/s)."""
    config = QueueConfig(smtp_port=sink.port, poll_interval=3600.0, per_destination=4)
    await asyncio.gather(*[enqueue(store, f"u{n}@example.net") for n in range(1500)])
    worker = QueueWorker(store, "mta.example.test", resolver_for("example.net"), config)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(400):
            if len(sink.recipients()) >= 1500:
                break
            await asyncio.sleep(0.05)
        assert len(sink.recipients()) == 1500
    finally:
        await worker.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_ssl_module_has_tls_client() -> None:
    assert ssl.PROTOCOL_TLS_CLIENT
