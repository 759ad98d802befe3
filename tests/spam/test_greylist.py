"""Greylisting: the store's state with an injected clock, and 451 4.7.1 over a socket."""

from __future__ import annotations

from pathlib import Path

from pochta.spam.greylist import Greylist, client_network
from pochta.spam.settings import GreylistConfig
from pochta.storage.sqlite import SQLiteStore
from tests.conftest import Instance
from tests.spam.helpers import last_message, send, server_with

MSG = b"From: a@elsewhere.test\r\nSubject: hi\r\n\r\nhello\r\n"


def test_client_networks() -> None:
    cfg = GreylistConfig()
    assert client_network("192.0.2.77", cfg) == "192.0.2.0/24"
    assert client_network("2001:db8:1:2:3::9", cfg) == "2001:db8:1:2::/64"
    assert client_network("::ffff:192.0.2.1", cfg) == "192.0.2.0/24"


async def test_delay_window_and_auto_allowlist(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path)
    now = [1000.0]
    cfg = GreylistConfig(enabled=True, delay=300, retry_window=3600, auto_allowlist=2)
    grey = Greylist(cfg, store, clock=lambda: now[0])
    try:
        reply = await grey.check("192.0.2.1", "a@x.test", "bob@example.test")
        assert reply is not None and reply.code == 451 and reply.enhanced == "4.7.1"
        assert "try again in 301 seconds" in reply.text
        now[0] += 100  # too early
        reply = await grey.check("192.0.2.1", "a@x.test", "bob@example.test")
        assert reply is not None and "201 seconds" in reply.text
        now[0] += 250  # after the delay, from another host of the same /24
        assert await grey.check("192.0.2.200", "a@x.test", "bob@example.test") is None
        assert await grey.check("192.0.2.1", "a@x.test", "bob@example.test") is None
        # a retry outside the window starts over
        assert await grey.check("192.0.2.1", "b@x.test", "bob@example.test") is not None
        now[0] += 4000
        assert await grey.check("192.0.2.1", "b@x.test", "bob@example.test") is not None
        now[0] += 400
        assert await grey.check("192.0.2.1", "b@x.test", "bob@example.test") is None
        # two passed triplets: the /24 is allowlisted for new triplets
        assert await grey.check("192.0.2.9", "new@y.test", "alice@example.test") is None
        assert await grey.check("198.51.100.1", "new@y.test", "alice@example.test") is not None
    finally:
        await store.close()


async def test_smtp_greylisting_and_exemptions(instance: Instance) -> None:
    grey = {"enabled": True, "delay": 0.5, "retry_window": 60.0, "exempt_spf_pass": True}
    async with server_with(instance, greylist=grey) as server:
        port = server.port("mta")
        code, text = await send(port, MSG)
        assert (code, text[:5]) == (451, "4.7.1") and "try again" in text
        import asyncio

        await asyncio.sleep(0.6)
        assert (await send(port, MSG))[0] == 250
        # SPF pass exempts (the test's resolver publishes the sender's SPF)
        server.resolver.txt_records["spf.test"] = ["v=spf1 ip4:127.0.0.1 -all"]
        assert (await send(port, MSG, sender="x@spf.test"))[0] == 250
    # trusted networks are exempt
    async with server_with(instance, greylist=grey, trusted_networks=["127.0.0.0/8"]
                           ) as server:
        assert (await send(server.port("mta"), MSG, sender="new@z.test"))[0] == 250
        data, _ = await last_message(server)
        assert b"Subject: hi" in data
