"""Apps that only speak SMTP: an API key as the AUTH password on submission sends as the
key's domain, through the sending layer (suppression, VERP, events)."""

from __future__ import annotations

import asyncio
import smtplib

import pytest

from pochta.storage.interfaces_sending import ALL_STREAMS, EventKind, Suppression
from tests.sending.helpers import SendingServer


def submit(api: SendingServer, password: str, sender: str, rcpts: list[str],
           from_header: str | None = None, extra: bytes = b""
           ) -> dict[str, tuple[int, bytes | str]]:
    port = api.server.port("submission", "implicit")
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10,
                          context=api.server.client_ssl()) as c:
        c.login("api", password)
        msg = (f"From: {from_header or sender}\r\nTo: {', '.join(rcpts)}\r\n"
               "Subject: via smtp\r\n").encode() + extra + b"\r\nbody\r\n"
        try:
            return dict(c.sendmail(sender, rcpts, msg))
        except smtplib.SMTPDataError as exc:
            return {"DATA": (exc.smtp_code, exc.smtp_error)}


async def test_api_key_as_smtp_password(api: SendingServer) -> None:
    await api.store.add_suppressions([Suppression("example.test", ALL_STREAMS,
                                                  "gone@remote.test", "manual", 1.0)])
    refused = await asyncio.to_thread(
        submit, api, api.key, "app@example.test", ["a@remote.test", "gone@remote.test"],
        extra=b"X-Pochta-Tag: receipts\r\n")
    assert refused == {}
    await api.wait_events(EventKind.DELIVERED, 1)
    [m] = api.sink.messages
    assert m.rcpts == ["a@remote.test"] and m.sender.startswith("bounces+")
    assert b"with ESMTPA" in m.data
    accepted = await api.events(kinds=(EventKind.ACCEPTED,))
    assert [(e.recipient, e.tags) for e in accepted] == [("a@remote.test", ("receipts",))]
    [sup] = await api.events(kinds=(EventKind.SUPPRESSED,))
    assert sup.recipient == "gone@remote.test"


async def test_api_key_sends_only_as_its_domain(api: SendingServer) -> None:
    other = await api.add_key("other.test", "send")
    refused = await asyncio.to_thread(submit, api, other, "app@other.test", ["a@remote.test"],
                                      from_header="boss@example.test")
    assert refused["DATA"][0] == 553
    events_only = await api.add_key("example.test", "events")
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await asyncio.to_thread(submit, api, events_only, "app@example.test", ["a@remote.test"])
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await asyncio.to_thread(submit, api, api.key[:-1] + "x", "app@example.test",
                                ["a@remote.test"])
    assert await api.store.list_queue() == []
