"""Keys, scopes and bad requests: each refusal is a JSON error with a stable code, and
nothing is queued."""

from __future__ import annotations

import pytest

from tests.sending.helpers import SendingServer

GOOD = {"from": "alice@example.test", "to": "u@remote.test", "subject": "s", "text": "t"}


async def nothing_queued(api: SendingServer) -> None:
    assert await api.store.list_queue() == []
    assert await api.events() == []


async def test_keys_and_scopes(api: SendingServer) -> None:
    r = await api.call("POST", "/v1/messages", GOOD, key=None)
    assert r.status == 401 and r.json()["error"]["code"] == "unauthorized"
    r = await api.call("POST", "/v1/messages", GOOD, key=api.key[:-2] + "xx")
    assert r.status == 401
    events_only = await api.add_key("example.test", "events")
    r = await api.call("POST", "/v1/messages", GOOD, key=events_only)
    assert r.status == 403 and r.json()["error"]["code"] == "forbidden_scope"
    other = await api.add_key("other.test", "send,events,suppressions")
    r = await api.call("POST", "/v1/messages", GOOD, key=other)  # From: example.test
    assert r.status == 403 and r.json()["error"]["code"] == "domain_mismatch"
    await nothing_queued(api)
    # a key of domain A cannot read domain B's messages, events or suppressions
    sent = await api.call("POST", "/v1/messages", GOOD)
    mid = sent.json()["recipients"][0]["id"]
    r = await api.call("GET", f"/v1/messages/{mid}", key=other)
    assert r.status == 404 and r.json()["error"]["code"] == "message_not_found"
    r = await api.call("GET", "/v1/events", key=other)
    assert r.status == 200 and r.json()["events"] == []
    await api.call("POST", "/v1/suppressions", {"suppressions": [{"address": "x@r.test"}]})
    r = await api.call("GET", "/v1/suppressions", key=other)
    assert r.json()["suppressions"] == []
    # HTTP Basic with the key as password works too
    import base64

    basic = base64.b64encode(f"api:{api.key}".encode()).decode()
    r = await api.call("GET", "/v1/events", key=None, headers={"Authorization": f"Basic {basic}"})
    assert r.status == 200


@pytest.mark.parametrize(("body", "status", "code"), [
    ({**GOOD, "colour": "red"}, 400, "unknown_field"),
    ({**GOOD, "to": "not an address"}, 400, "invalid_address"),
    ({**GOOD, "to": "a@@b"}, 400, "invalid_address"),
    ({**GOOD, "to": []}, 400, "no_recipients"),
    ({**GOOD, "stream": "nope"}, 400, "invalid_stream"),
    ({**GOOD, "text": None, "html": None}, 400, "missing_field"),
    ({**GOOD, "text": 5}, 400, "invalid_message"),
    ({k: v for k, v in GOOD.items() if k != "from"}, 400, "missing_field"),
    ({**GOOD, "headers": {"Bcc": "x@y.test"}}, 400, "invalid_header"),
    ({**GOOD, "headers": {"X-A": "a\r\nBcc: evil@x.test"}}, 400, "invalid_header"),
    ({**GOOD, "attachments": [{"filename": "a", "content": "!!"}]}, 400, "invalid_attachment"),
    ({**GOOD, "tags": ["a"] * 11}, 400, "invalid_tags"),
    ([1, 2], 400, "invalid_message"),
])
async def test_bad_messages(api: SendingServer, body: object, status: int, code: str) -> None:
    r = await api.call("POST", "/v1/messages", body)
    assert r.status == status, r.body
    err = r.json()["error"]
    assert err["code"] == code and err["message"]
    await nothing_queued(api)


async def test_bad_json_media_type_and_size(api: SendingServer) -> None:
    r = await api.call("POST", "/v1/messages", raw=b"{not json",
                       headers={"Content-Type": "application/json"})
    assert r.status == 400 and r.json()["error"]["code"] == "invalid_json"
    r = await api.call("POST", "/v1/messages", raw=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    huge = {**GOOD, "text": "x" * (21 * 1024 * 1024)}
    # over TLS too: pausing uvloop's TLS transport (not the TCP one under it) used to wedge
    # this refused upload about once in 12 under load (server/listener.py, Connection._flow)
    for tls in (True, False):
        r = await api.call("POST", "/v1/messages", huge, tls=tls)
        assert r.status == 413 and r.json()["error"]["code"] == "body_too_large"
    r = await api.call("POST", "/v1/messages/batch", {"messages": [GOOD] * 1001})
    assert r.status == 400 and r.json()["error"]["code"] == "batch_too_large"
    r = await api.call("POST", "/v1/messages/batch", {"messages": [GOOD, {**GOOD, "x": 1}]})
    assert r.status == 400 and "messages[1]" in r.json()["error"]["message"]
    await nothing_queued(api)
