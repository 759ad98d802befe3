"""Connection screening over real sockets: DNS lists answered by the test's resolver,
pregreet with a raw socket, HELO checks, FCrDNS, per-IP rate limits kept in the store."""

from __future__ import annotations

import asyncio

from pochta.dns import StaticResolver
from pochta.spam.dnsbl import DNSListCache, parse_site, query_name
from pochta.spam.screening import helo_findings
from tests.conftest import Instance
from tests.e2e.smtpclient import RawClient
from tests.spam.helpers import last_message, send, server_with

MSG = b"From: a@elsewhere.test\r\nSubject: hi\r\n\r\nhello\r\n"


def test_query_names_and_site_syntax() -> None:
    assert query_name("192.0.2.99", "zen.example") == "99.2.0.192.zen.example"
    assert query_name("2001:db8::1", "bl.example").startswith("1.0.0.0.0.0.0.0.0.0.0.0")
    site = parse_site("zen.example=127.0.0.[2..11]*3")
    assert site.weight == 3 and site.matches("127.0.0.4") and not site.matches("127.0.0.12")
    assert not parse_site("any.example").matches("10.0.0.2")  # RFC 5782: 127/8 only
    assert parse_site("wl.example=127.0.[0..255].[1;3]*-2").matches("127.0.9.3")
    assert helo_findings("mail.example.test", "mail.example.test", []) == ["our-name"]
    assert helo_findings("[127.0.0.1]", "mx.test", ["127.0.0.1"]) == ["our-address"]
    assert helo_findings("not_a_host", "mx.test", []) == ["bad-syntax"]
    assert helo_findings("client.elsewhere.test", "mx.test", []) == []


async def test_cache_keeps_answers_and_counts_lookups() -> None:
    resolver = StaticResolver(a_records={"x.bl.test": ["127.0.0.2"]})
    now = [0.0]
    cache = DNSListCache(resolver, 60.0, clock=lambda: now[0])
    for _ in range(5):
        assert await cache.a("x.bl.test") == ["127.0.0.2"]
        assert await cache.a("y.bl.test") == []  # negative answers cached too
    assert cache.lookups == 2
    now[0] = 61.0
    await cache.a("x.bl.test")
    assert cache.lookups == 3


async def test_blocklist_refuses_and_allowlist_wins(instance: Instance) -> None:
    screening = {"dnsbl_sites": ["bl.test=127.0.0.[2..11]*2", "weak.test*0.5"],
                 "dnswl_sites": ["wl.test"], "dnsbl_threshold": 2.0}
    async with server_with(instance, screening=screening) as server:
        server.resolver.a_records["1.0.0.127.bl.test"] = ["127.0.0.2"]
        c = await RawClient.connect(server.port("mta"))
        code, text = await c.reply()
        assert code == 554 and "5.7.1" in text and "bl.test" in text
        assert await c.closed()
        # one lookup per zone, then the cache answers
        for _ in range(3):
            c = await RawClient.connect(server.port("mta"))
            assert (await c.reply())[0] == 554
            await c.close()
        assert server.resolver.queries.count(("A", "1.0.0.127.bl.test")) == 1
        # an allowlist hit skips the blocklists
        server.resolver.a_records["1.0.0.127.wl.test"] = ["127.0.0.2"]
        server.ctx.spam.screener.cache._cache.clear()
        code, _ = await send(server.port("mta"), MSG)
        assert code == 250
        data, _ = await last_message(server)
        assert b"X-Spam-Screening: score=0; dnswl=wl.test" in data


async def test_below_threshold_is_scored_in_headers(instance: Instance) -> None:
    async with server_with(instance, screening={"dnsbl_sites": ["weak.test*0.5"]}) as server:
        server.resolver.a_records["1.0.0.127.weak.test"] = ["127.0.0.3"]
        assert (await send(server.port("mta"), MSG))[0] == 250
        data, _ = await last_message(server)
        assert b"X-Spam-Screening: score=0.5; dnsbl=weak.test(0.5)" in data


async def test_pregreet_is_refused_and_a_patient_client_is_remembered(
        instance: Instance) -> None:
    async with server_with(instance, screening={"pregreet_wait": 0.5}) as server:
        port = server.port("mta")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"EHLO bot.example\r\n")  # before the banner
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line.startswith(b"554 5.5.1")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        # a client that leaves during the wait is not counted as having waited
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await asyncio.sleep(0.1)
        assert not await server.ctx.spam.screener.greeted("127.0.0.1")
        # a client that waits gets the banner after the wait ...
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await send(port, MSG))[0] == 250
        assert loop.time() - started >= 0.5
        # ... and is not made to wait again (postscreen_greet_ttl, kept in the store)
        started = loop.time()
        c = await RawClient.connect(port)
        assert (await c.reply())[0] == 220
        assert loop.time() - started < 0.4
        await c.close()


async def test_helo_and_fcrdns_scores(instance: Instance) -> None:
    screening = {"fcrdns": True, "reject_score": 3.0}
    async with server_with(instance, screening=screening) as server:
        server.resolver.ptr_records["127.0.0.1"] = ["client.elsewhere.test"]
        server.resolver.a_records["client.elsewhere.test"] = ["127.0.0.1"]
        assert (await send(server.port("mta"), MSG))[0] == 250
        data, _ = await last_message(server)
        assert (b"Authentication-Results: mail.example.test; iprev=pass "
                b"policy.iprev=127.0.0.1 (client.elsewhere.test)") in data
        # no PTR: iprev fail (1) + HELO claiming to be us (1): scored, below 3
        server.resolver.ptr_records.clear()
        # (answers are cached for dnsbl_cache_ttl: a changed record is seen after it)
        server.ctx.spam.screener._iprev.clear()
        assert (await send(server.port("mta"), MSG, helo="mail.example.test"))[0] == 250
        data, _ = await last_message(server)
        assert b"X-Spam-Screening: score=2; fcrdns=fail; helo=our-name" in data
        assert b"iprev=fail" in data
        ptrs = server.resolver.queries.count(("PTR", "127.0.0.1"))
        assert (await send(server.port("mta"), MSG))[0] == 250
        # the client's rDNS came from the cache (SPF/DMARC asked their own)
        assert server.resolver.queries.count(("PTR", "127.0.0.1")) == ptrs
        # ... and a bad HELO on top reaches reject_score at MAIL FROM
        assert (await send(server.port("mta"), MSG, helo="[127.0.0.1]"))[0] == 250
        data, _ = await last_message(server)
        assert b"helo=our-address" in data  # the listener's own address as a literal


async def test_reject_score_refuses_at_mail(instance: Instance) -> None:
    screening = {"fcrdns": True, "fcrdns_weight": 2.0, "reject_score": 3.0}
    async with server_with(instance, screening=screening) as server:
        code, text = await send(server.port("mta"), MSG, helo="mail.example.test")
        assert code == 550 and "5.7.1" in text and "score 3" in text


async def test_per_ip_rate_limits_hold_across_two_servers(instance: Instance) -> None:
    """Two servers on one data directory (two processes or nodes): one count."""
    screening = {"connection_rate_limit": 3, "message_rate_limit": 2}
    async with server_with(instance, screening=screening) as one:
        other = instance.config(screening=screening)
        from pochta.server.app import build_context, start_server
        from pochta.storage.sqlite import SQLiteStore

        store2 = await SQLiteStore.open(other.data_path)
        ctx2 = await build_context(other, store=store2, resolver=StaticResolver())
        two = await start_server(ctx2, run_queue=False)
        try:
            assert (await send(one.port("mta"), MSG))[0] == 250
            assert (await send(two.port("mta"), MSG))[0] == 250
            code, text = await send(one.port("mta"), MSG)  # third connection, third message
            assert code == 450 and "too many messages" in text
            c = await RawClient.connect(two.port("mta"))
            code, text = await c.reply()
            assert code == 421 and "too many connections" in text
            await c.close()
        finally:
            await two.close(grace=1.0)
            await store2.close()
