"""Routing decisions and the retry schedule, without sockets."""

from __future__ import annotations

import random
import re

import pytest

from pochta.config import ConfigError, from_dict
from pochta.dns import MX, StaticResolver
from pochta.queue.routing import RouteFailure, Router
from pochta.queue.schedule import next_retry
from pochta.queue.settings import QueueConfig, Route, TLSPolicy, check


async def test_equal_preference_is_shuffled_lower_preference_first() -> None:
    resolver = StaticResolver(mx_records={"example.net": [
        MX(20, "c.example.net"), MX(10, "a.example.net"), MX(10, "b.example.net")]})
    seen = set()
    for seed in range(20):
        router = Router(resolver, QueueConfig(), rng=random.Random(seed))
        dest = await router.destination("example.net")
        hosts = [h.host for h in dest.hops]
        assert hosts[2] == "c.example.net"
        seen.add(tuple(hosts[:2]))
    assert seen == {("a.example.net", "b.example.net"), ("b.example.net", "a.example.net")}


async def test_static_route_precedence() -> None:
    routes = [Route("*", "smarthost.example", 587, tls="starttls"),
              Route(".example.org", "sub.example", 25),
              Route("mail.example.org", "exact.example", 2525)]
    router = Router(StaticResolver(), QueueConfig(), routes)
    assert (await router.destination("mail.example.org")).hops[0].host == "exact.example"
    assert (await router.destination("x.example.org")).hops[0].host == "sub.example"
    dest = await router.destination("other.example")
    assert dest.hops[0].host == "smarthost.example" and dest.hops[0].port == 587
    assert dest.tls.mode == "starttls"


async def test_mx_pointing_at_ourselves_is_a_loop() -> None:
    resolver = StaticResolver(mx_records={"example.net": [MX(10, "mta.example.test")]})
    router = Router(resolver, QueueConfig(), local_hostname="mta.example.test")
    with pytest.raises(RouteFailure) as exc:
        await router.destination("example.net")
    assert exc.value.reply.enhanced == "5.4.6"


async def test_tls_policy_table() -> None:
    cfg = QueueConfig(tls_policies=[TLSPolicy("secure.example", "verify"),
                                    TLSPolicy(".corp.example", "encrypt")])
    resolver = StaticResolver(mx_records={"secure.example": [MX(1, "mx.secure.example")]})
    router = Router(resolver, cfg)
    d = await router.destination("secure.example")
    assert d.tls.mode == "starttls" and d.tls.verify
    d = await router.destination("a.corp.example")
    assert d.tls.mode == "starttls" and not d.tls.verify
    assert (await router.destination("else.example")).tls.mode == "opportunistic"


async def test_address_literal_domain() -> None:
    router = Router(StaticResolver(), QueueConfig(smtp_port=2525))
    d = await router.destination("[127.0.0.1]")
    assert d.hops[0].host == "127.0.0.1" and d.hops[0].port == 2525
    with pytest.raises(RouteFailure):
        await router.destination("[not-an-ip]")


def test_schedule_backoff_caps_and_expiry() -> None:
    cfg = QueueConfig(first_retry=300, backoff=2, max_retry_interval=3600, max_age=86400)
    t0 = 1000.0
    now, scheduled, gaps = t0, t0, []
    while True:
        d = next_retry(cfg, t0, scheduled, now)
        if d.give_up:
            break
        gaps.append(d.next_attempt - now)
        now = scheduled = d.next_attempt
    assert gaps[:5] == [300, 300, 600, 1200, 2400]
    assert max(gaps) == 3600
    assert now == pytest.approx(t0 + 86400)


def test_config_checks() -> None:
    assert check(QueueConfig(), [Route("*", "relay.example", 587, tls="starttls",
                                       username="u", password_file="pw")]) == []
    problems = check(QueueConfig(), [Route("*", "relay.example", tls="sometimes")])
    assert any(re.match(r"routes\[0\]\.tls", p) for p in problems), problems
    problems = check(QueueConfig(), [Route("*", "r.example", tls="none", username="u",
                                           password_file="p")])
    assert any("AUTH needs TLS" in p for p in problems), problems
    problems = check(QueueConfig(tls_policies=[TLSPolicy("x.example", "maybe")]), [])
    assert any(p.startswith("queue.tls_policies") for p in problems), problems
    # through the loader, as ConfigError naming the key
    with pytest.raises(ConfigError, match=r"routes\[0\]\.tls"):
        from_dict({"hostname": "mx.example.org",
                   "routes": [{"domain": "*", "host": "relay.example", "tls": "sometimes"}]})
