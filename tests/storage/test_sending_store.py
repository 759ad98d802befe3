"""The sending layer's storage contract (interfaces_sending.py), on every backend of the
conformance suite: API keys, idempotency keys, sent messages and events, suppressions,
statistics, webhooks."""

from __future__ import annotations

import pytest

from pochta.storage.interfaces import MailStore, NotFound
from pochta.storage.interfaces_sending import (
    ALL_STREAMS,
    ApiKey,
    EventKind,
    EventQuery,
    NewEvent,
    SentMessage,
    Suppression,
    WebhookAttempt,
)
from tests.storage.test_conformance import factory, store  # noqa: F401


def sent(mid: str, rcpt: str, domain: str = "a.test", stream: str = "transactional",
         tags: tuple[str, ...] = (), created: float = 1000.0) -> SentMessage:
    return SentMessage(mid, domain, stream, rcpt, f"news@{domain}", "hi", tags, "{}", created)


async def test_api_keys(store: MailStore) -> None:  # noqa: F811
    key = ApiKey("k1", "a.test", frozenset({"send", "events"}), b"\x01" * 32, 5.0, "app")
    await store.add_api_key(key)
    await store.add_api_key(ApiKey("k2", "b.test", frozenset({"send"}), b"\x02" * 32, 6.0))
    assert await store.get_api_key("k1") == key
    assert await store.get_api_key("nope") is None
    assert [k.key_id for k in await store.list_api_keys()] == ["k1", "k2"]
    assert [k.key_id for k in await store.list_api_keys("b.test")] == ["k2"]
    await store.remove_api_key("k1")
    assert await store.get_api_key("k1") is None
    with pytest.raises(NotFound):
        await store.remove_api_key("k1")


async def test_idempotency_keys(store: MailStore) -> None:  # noqa: F811
    assert await store.reserve_idempotency_key("a.test", "x", 10.0) is None
    assert await store.reserve_idempotency_key("a.test", "x", 11.0) == ""  # in progress
    assert await store.reserve_idempotency_key("b.test", "x", 11.0) is None  # per domain
    await store.finish_idempotency_key("a.test", "x", '{"ok": 1}')
    assert await store.reserve_idempotency_key("a.test", "x", 12.0) == '{"ok": 1}'
    await store.release_idempotency_key("b.test", "x")
    assert await store.reserve_idempotency_key("b.test", "x", 13.0) is None
    assert await store.purge_idempotency_keys(12.5) == 1  # a.test/x from 10.0
    assert await store.reserve_idempotency_key("a.test", "x", 14.0) is None


async def test_events_are_recorded_for_known_messages_and_queried(
    store: MailStore,  # noqa: F811
) -> None:
    await store.record_sent(
        [sent("M1", "u1@r.test", tags=("welcome",)), sent("M2", "u2@r.test", stream="bulk"),
         sent("M3", "u3@r.test", domain="b.test")],
        [NewEvent("M1", EventKind.ACCEPTED, 1000.0), NewEvent("M2", EventKind.ACCEPTED, 1000.0),
         NewEvent("M3", EventKind.ACCEPTED, 1000.0)])
    n = await store.record_events([
        NewEvent("M1", EventKind.DELIVERED, 1001.0, '{"reply": "250 ok"}'),
        NewEvent("M2", EventKind.DEFERRED, 1002.0),
        NewEvent("UNKNOWN", EventKind.DELIVERED, 1003.0),  # not sent through the API
    ])
    assert n == 2
    everything = await store.query_events(EventQuery("a.test"))
    assert [(e.message_id, e.kind) for e in everything] == [
        ("M1", EventKind.ACCEPTED), ("M2", EventKind.ACCEPTED), ("M1", EventKind.DELIVERED),
        ("M2", EventKind.DEFERRED)]
    ids = [e.id for e in everything]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert everything[2].detail == '{"reply": "250 ok"}'
    assert everything[2].recipient == "u1@r.test" and everything[2].tags == ("welcome",)
    assert everything[1].stream == "bulk"
    # filters: message, recipient, tag, kind, time range, paging
    assert len(await store.query_events(EventQuery("a.test", message_id="M1"))) == 2
    assert len(await store.query_events(EventQuery("a.test", recipient="u2@r.test"))) == 2
    assert {e.message_id for e in await store.query_events(
        EventQuery("a.test", tag="welcome"))} == {"M1"}
    assert [e.kind for e in await store.query_events(
        EventQuery("a.test", kinds=(EventKind.DEFERRED,)))] == [EventKind.DEFERRED]
    assert len(await store.query_events(EventQuery("a.test", since=1001.0, until=1002.0))) == 1
    page1 = await store.query_events(EventQuery("a.test", limit=3))
    page2 = await store.query_events(EventQuery("a.test", after_id=page1[-1].id, limit=3))
    assert [e.id for e in page1 + page2] == ids
    # domains do not see each other's events
    assert [e.message_id for e in await store.query_events(EventQuery("b.test"))] == ["M3"]
    assert await store.last_event_id() >= max(ids)
    got = await store.get_sent("M2")
    assert got is not None and got.stream == "bulk" and got.recipient == "u2@r.test"
    await store.forget_sent(["M3"])
    assert await store.get_sent("M3") is None
    assert await store.query_events(EventQuery("b.test")) == []


async def test_stats(store: MailStore) -> None:  # noqa: F811
    await store.record_sent(
        [sent("S1", "x@r.test", tags=("t",)), sent("S2", "y@r.test", stream="bulk")],
        [NewEvent("S1", EventKind.ACCEPTED, 3600.0), NewEvent("S2", EventKind.ACCEPTED, 3700.0),
         NewEvent("S1", EventKind.DELIVERED, 7300.0), NewEvent("S2", EventKind.BOUNCED, 7400.0)])
    rows = await store.event_stats("a.test", 0, 10**9, 3600)
    assert [(r.bucket, r.stream, r.kind, r.count) for r in rows] == [
        (3600.0, "bulk", EventKind.ACCEPTED, 1), (3600.0, "transactional", EventKind.ACCEPTED, 1),
        (7200.0, "bulk", EventKind.BOUNCED, 1), (7200.0, "transactional", EventKind.DELIVERED, 1)]
    assert await store.delivery_times("a.test", 0, 10**9) == [3700.0]
    assert await store.delivery_times("a.test", 0, 10**9, tag="t") == [3700.0]
    assert await store.delivery_times("a.test", 0, 7300.0) == []
    assert await store.delivery_times("a.test", 0, 10**9, stream="transactional") == [3700.0]
    assert await store.delivery_times("a.test", 0, 10**9, stream="bulk") == []
    daily = await store.event_stats("a.test", 0, 10**9, 86400, tag="t")
    assert [(r.kind, r.count) for r in daily] == [(EventKind.ACCEPTED, 1),
                                                 (EventKind.DELIVERED, 1)]


async def test_suppressions(store: MailStore) -> None:  # noqa: F811
    added = await store.add_suppressions([
        Suppression("a.test", ALL_STREAMS, "bounced@r.test", "bounce", 1.0, "550 5.1.1"),
        Suppression("a.test", "bulk", "unsub@r.test", "unsubscribe", 2.0),
        Suppression("b.test", ALL_STREAMS, "other@r.test", "manual", 3.0),
    ])
    assert added == 3
    assert await store.add_suppressions(
        [Suppression("a.test", "bulk", "unsub@r.test", "unsubscribe", 4.0)]) == 0
    candidates = ["bounced@r.test", "unsub@r.test", "fine@r.test", "other@r.test"]
    assert await store.suppressed("a.test", "bulk", candidates) == {
        "bounced@r.test", "unsub@r.test"}
    assert await store.suppressed("a.test", "transactional", candidates) == {"bounced@r.test"}
    listed = await store.list_suppressions("a.test")
    assert [(s.address, s.stream, s.reason) for s in listed] == [
        ("bounced@r.test", ALL_STREAMS, "bounce"), ("unsub@r.test", "bulk", "unsubscribe")]
    assert [s.address for s in await store.list_suppressions("a.test", after="bounced@r.test")
            ] == ["unsub@r.test"]
    assert await store.remove_suppression("a.test", "bulk", "unsub@r.test")
    assert not await store.remove_suppression("a.test", "bulk", "unsub@r.test")
    assert await store.suppressed("a.test", "bulk", candidates) == {"bounced@r.test"}
    many = [f"u{n}@r.test" for n in range(1200)]
    await store.add_suppressions([Suppression("a.test", ALL_STREAMS, a, "manual", 5.0)
                                  for a in many[::2]])
    assert len(await store.suppressed("a.test", "bulk", many)) == 600


async def test_webhooks(store: MailStore) -> None:  # noqa: F811
    hook = await store.add_webhook("a.test", "https://h.test/x", "s3cret", 1.0, 0)
    await store.add_webhook("b.test", "https://h.test/y", "s", 1.0, 7)
    assert [h.url for h in await store.list_webhooks("a.test")] == ["https://h.test/x"]
    assert len(await store.list_webhooks()) == 2
    await store.set_webhook_cursor(hook.id, 42)
    (again,) = await store.list_webhooks("a.test")
    assert again.cursor == 42 and again.secret == "s3cret"
    await store.log_webhook_attempt(WebhookAttempt(hook.id, 2.0, 1, 5, 500, "boom"))
    await store.log_webhook_attempt(WebhookAttempt(hook.id, 3.0, 1, 5, 200, ""))
    assert [a.status for a in await store.webhook_attempts(hook.id)] == [200, 500]
    assert not await store.remove_webhook("b.test", hook.id)  # not b's hook
    assert await store.remove_webhook("a.test", hook.id)
    assert await store.list_webhooks("a.test") == []
