"""Batches with per-recipient variables, idempotency keys, suppressions enforced at send
time, bounces becoming suppressions, events paged and filtered, statistics, CSV."""

from __future__ import annotations

import asyncio
import email
import email.policy

from pochta.storage.interfaces_sending import EventKind
from tests.queue.sink import Sink
from tests.sending.helpers import SendingServer

TEMPLATE = {"from": "alice@example.test", "subject": "Hi {{name}}",
            "text": "Dear {{name}}, your code is {{code}}.",
            "html": "<p>Dear {{name}}</p>", "tags": ["newsletter"], "stream": "bulk"}


def body_of(data: bytes) -> str:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    parts = [p.get_content() for p in msg.walk() if p.get_content_maintype() == "text"]
    return "\n".join(str(p) for p in parts)


async def test_template_batch_substitutes_per_recipient(api: SendingServer) -> None:
    recipients = [{"to": f"user{n}@remote.test", "variables": {"name": f"N<{n}>", "code": n}}
                  for n in range(20)]
    r = await api.call("POST", "/v1/messages/batch",
                       {"template": TEMPLATE, "recipients": recipients})
    assert r.status == 202, r.body
    msgs = r.json()["messages"]
    assert [m["recipients"][0]["to"] for m in msgs] == [x["to"] for x in recipients]
    await api.wait_events(EventKind.DELIVERED, 20)
    assert len(api.sink.messages) == 20
    by_rcpt = {m.rcpts[0]: m.data for m in api.sink.messages}
    for n in range(20):
        data = by_rcpt[f"user{n}@remote.test"]
        text = body_of(data)
        assert f"Dear N<{n}>, your code is {n}." in text
        assert f"<p>Dear N&lt;{n}&gt;</p>" in text  # escaped in HTML
        assert f"Subject: Hi N<{n}>".encode() in data
        assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in data
        assert b"Precedence: bulk" in data and b"Feedback-ID: newsletter:bulk:" in data


async def test_messages_batch_and_idempotency(api: SendingServer) -> None:
    batch = {"messages": [
        {"from": "alice@example.test", "to": "a@remote.test", "subject": "one", "text": "1"},
        {"from": "alice@example.test", "to": ["b@remote.test", "c@remote.test"],
         "subject": "two {{x}}", "text": "2", "variables": {"x": "X"}},
    ]}
    headers = {"Idempotency-Key": "order-42"}
    first = await api.call("POST", "/v1/messages/batch", batch, headers=headers)
    assert first.status == 202
    again = await api.call("POST", "/v1/messages/batch", batch, headers=headers)
    assert again.status == 202 and again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    other = await api.call("POST", "/v1/messages/batch", {"messages": batch["messages"][:1]},
                           headers=headers)
    assert other.status == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    await api.wait_events(EventKind.DELIVERED, 3)
    await asyncio.sleep(0.2)
    assert sorted(api.sink.recipients()) == ["a@remote.test", "b@remote.test", "c@remote.test"]
    assert len(await api.events(kinds=(EventKind.ACCEPTED,))) == 3
    # concurrent retries of one key: exactly one sends, the other is told to wait or replays
    single = {"from": "alice@example.test", "to": "d@remote.test", "subject": "s", "text": "t"}
    replies = await asyncio.gather(*(
        api.call("POST", "/v1/messages", single, headers={"Idempotency-Key": "k2"})
        for _ in range(4)))
    assert {r.status for r in replies} <= {202, 409}
    await api.wait_events(EventKind.DELIVERED, 4)
    await asyncio.sleep(0.3)
    assert api.sink.recipients().count("d@remote.test") == 1


async def test_suppressed_addresses_are_skipped_with_an_event(api: SendingServer) -> None:
    r = await api.call("POST", "/v1/suppressions", {"suppressions": [
        {"address": "gone@remote.test"}, {"address": "nobulk@remote.test", "stream": "bulk"}]})
    assert r.status == 200 and r.json() == {"added": 2}
    r = await api.call("POST", "/v1/messages", {
        "from": "alice@example.test", "stream": "bulk", "subject": "s", "text": "t",
        "to": ["gone@remote.test", "nobulk@remote.test", "fine@remote.test"]})
    statuses = {x["to"]: x["status"] for x in r.json()["recipients"]}
    assert statuses == {"gone@remote.test": "suppressed", "nobulk@remote.test": "suppressed",
                        "fine@remote.test": "queued"}
    # transactional mail still goes to the address only the bulk stream suppressed
    r = await api.call("POST", "/v1/messages", {
        "from": "alice@example.test", "subject": "s", "text": "t",
        "to": ["gone@remote.test", "nobulk@remote.test"]})
    assert [x["status"] for x in r.json()["recipients"]] == ["suppressed", "queued"]
    await api.wait_events(EventKind.DELIVERED, 2)
    await asyncio.sleep(0.2)
    assert sorted(api.sink.recipients()) == ["fine@remote.test", "nobulk@remote.test"]
    suppressed = await api.events(kinds=(EventKind.SUPPRESSED,))
    assert sorted(e.recipient for e in suppressed) == [
        "gone@remote.test", "gone@remote.test", "nobulk@remote.test"]
    # export, remove, import
    r = await api.call("GET", "/v1/suppressions/export")
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.body.decode().splitlines()
    assert lines[0] == "address,stream,reason,created,detail" and len(lines) == 3
    r = await api.call("DELETE", "/v1/suppressions/gone@remote.test")
    assert r.status == 200
    r = await api.call("DELETE", "/v1/suppressions/gone@remote.test")
    assert r.status == 404 and r.json()["error"]["code"] == "suppression_not_found"
    csv_body = "address,stream,reason\r\nX1@Remote.test,,import\r\nx2@remote.test,bulk,\r\n"
    r = await api.call("POST", "/v1/suppressions/import", raw=csv_body.encode(),
                       headers={"Content-Type": "text/csv"})
    assert r.json() == {"read": 2, "added": 2}
    r = await api.call("GET", "/v1/suppressions?limit=2")
    page = r.json()
    assert [s["address"] for s in page["suppressions"]] == ["nobulk@remote.test",
                                                           "x1@remote.test"]
    r = await api.call("GET", f"/v1/suppressions?limit=2&after={page['next']}")
    assert [s["address"] for s in r.json()["suppressions"]] == ["x2@remote.test"]


async def test_hard_bounce_suppresses_soft_does_not(instance: object) -> None:
    from tests.conftest import Instance
    from tests.sending.helpers import sending_server

    assert isinstance(instance, Instance)
    sink = Sink(rcpt_replies={"gone@remote.test": b"550 5.1.1 no such user\r\n",
                              "full@remote.test": b"552 5.2.2 mailbox full\r\n",
                              "later@remote.test": b"451 4.3.0 try later\r\n"})
    async for api in sending_server(instance, sink=sink):
        r = await api.call("POST", "/v1/messages", {
            "from": "alice@example.test", "subject": "s", "text": "t", "tags": ["t1"],
            "to": ["gone@remote.test", "full@remote.test", "later@remote.test",
                   "ok@remote.test"]})
        ids = {x["to"]: x["id"] for x in r.json()["recipients"]}
        bounced = await api.wait_events(EventKind.BOUNCED, 2)
        deferred = await api.wait_events(EventKind.DEFERRED, 1)
        kinds = {e.recipient: e for e in bounced}
        import json

        assert json.loads(kinds["gone@remote.test"].detail)["type"] == "hard"
        assert json.loads(kinds["gone@remote.test"].detail)["status"] == "5.1.1"
        assert json.loads(kinds["full@remote.test"].detail)["type"] == "soft"
        d = json.loads(deferred[0].detail)
        assert d["reply"].startswith("451") and d["next_attempt"] > 0
        # the suppression is written after the batch of events that reports the bounce
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            sup = await api.store.suppressed("example.test", "transactional",
                                             ["gone@remote.test", "full@remote.test"])
            if sup or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert sup == {"gone@remote.test"}
        msg = (await api.call("GET", f"/v1/messages/{ids['gone@remote.test']}")).json()
        assert msg["status"] == "bounced"
        # events by recipient, tag and kind, paged
        r = await api.call("GET", "/v1/events?recipient=gone@remote.test")
        assert [e["event"] for e in r.json()["events"]] == ["accepted", "bounced"]
        r = await api.call("GET", "/v1/events?tag=t1&event=accepted&limit=3")
        page = r.json()
        assert len(page["events"]) == 3 and page["next"] is not None
        r = await api.call("GET", f"/v1/events?tag=t1&event=accepted&after={page['next']}")
        assert len(r.json()["events"]) == 1
        r = await api.call("GET", "/v1/events?tag=other")
        assert r.json()["events"] == []
        # statistics
        r = await api.call("GET", "/v1/stats?period=day")
        delivery = r.json()["delivery_seconds"]
        assert delivery["count"] == 1 and 0 <= delivery["p50"] == delivery["p99"] < 10
        assert r.json()["delivery_seconds_by_stream"] == {"transactional": delivery}
        [row] = r.json()["stats"]
        assert row["stream"] == "transactional" and row["accepted"] == 4
        assert row["bounced"] == 2 and row["delivered"] == 1 and row["deferred"] >= 1
