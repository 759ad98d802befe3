"""Sending through the API end to end: queued (fsynced) through the one pipeline,
delivered to a recording SMTP peer, with per-recipient ids, VERP return paths and events."""

from __future__ import annotations

from pochta.storage.interfaces_sending import EventKind
from tests.sending.helpers import SendingServer


async def test_send_one_message_to_two_recipients(api: SendingServer) -> None:
    r = await api.call("POST", "/v1/messages", {
        "from": "News <alice@example.test>", "to": ["u1@remote.test", "U2@Remote.test"],
        "subject": "Hello", "text": "plain body", "html": "<p>html body</p>",
        "tags": ["welcome"], "metadata": {"user": 7}})
    assert r.status == 202, r.body
    recipients = r.json()["recipients"]
    assert [x["to"] for x in recipients] == ["u1@remote.test", "u2@remote.test"]
    assert all(x["status"] == "queued" for x in recipients)
    assert len({x["id"] for x in recipients}) == 2
    delivered = await api.wait_events(EventKind.DELIVERED, 2)
    assert len(delivered) == 2
    assert len(api.sink.messages) == 2
    for m in api.sink.messages:
        assert m.sender.startswith("bounces+") and m.sender.endswith("@example.test")
        assert b"Subject: Hello" in m.data and b"with HTTPA" in m.data
    ids = {x["id"] for x in recipients}
    assert {m.sender.split("+")[1].split(".")[0] for m in api.sink.messages} == ids
    one = recipients[0]["id"]
    got = await api.call("GET", f"/v1/messages/{one}")
    assert got.status == 200
    msg = got.json()
    assert msg["status"] == "delivered" and msg["tags"] == ["welcome"]
    assert [e["event"] for e in msg["events"]] == ["accepted", "delivered"]
    assert msg["events"][1]["detail"]["reply"].startswith("250")
