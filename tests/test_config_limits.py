"""The connection-limit settings: defaults that fit real networks, checks, the reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from pochta.cli import main
from pochta.config import ConfigError, from_dict, reference
from pochta.server.app import connection_limiter, connection_policy
from pochta.server.listener import ConnectionLimiter, RoleLimits, client_key

BASE = {"hostname": "mail.example.test"}


def test_defaults_fit_an_office_behind_one_nat_address() -> None:
    cfg = from_dict(dict(BASE))
    lim = cfg.limits
    # Postfix allows 50 SMTP connections per client; ten IMAP clients open ~10 each
    assert lim.mta_max_connections_per_ip == 50
    assert lim.imap_max_connections_per_ip == 100
    assert lim.max_connections_per_ip >= 70  # ten connections on each of seven ports
    # no single role can fill the total on its own
    assert all(getattr(lim, f"{role}_max_connections") < lim.max_connections
               for role in ("mta", "submission", "imap", "pop3"))
    assert cfg.smtp.soft_error_limit == 10 and cfg.smtp.hard_error_limit == 20
    assert connection_policy(cfg, "mta").max_session_time == 3600.0
    assert connection_policy(cfg, "imap").max_session_time == 0.0


@pytest.mark.parametrize(("section", "key", "value"), [
    ("limits", "imap_max_connections_per_ip", 0),
    ("limits", "mta_max_connections", -1),
    ("limits", "tls_handshake_timeout", 0),
    ("limits", "min_data_rate", -5),
    ("limits", "smtp_max_session_time", -1.0),
    ("smtp", "hard_error_limit", 0),
])
def test_bad_values_name_the_key(section: str, key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        from_dict({**BASE, section: {key: value}})


def test_limiter_pools_per_role_under_the_totals() -> None:
    limiter = ConnectionLimiter(6, 4, {"imap": RoleLimits(3, 2), "mta": RoleLimits(10, 10)})
    assert limiter.acquire("192.0.2.1", "imap") is None
    assert limiter.acquire("192.0.2.1", "imap") is None
    assert limiter.acquire("192.0.2.1", "imap") == "too many connections from your address"
    assert limiter.acquire("192.0.2.2", "imap") is None
    assert limiter.acquire("192.0.2.3", "imap") == "too many connections"
    assert limiter.acquire("192.0.2.1", "mta") is None
    assert limiter.acquire("192.0.2.1", "mta") is None
    # the address has 4 connections over two roles: the per-address total
    assert limiter.acquire("192.0.2.1", "mta") == "too many connections from your address"
    assert limiter.acquire("192.0.2.9", "mta") is None
    assert limiter.acquire("192.0.2.8", "mta") == "too many connections"  # total 6
    limiter.release("192.0.2.1", "imap")
    assert limiter.acquire("192.0.2.8", "mta") is None
    for ip, role in [("192.0.2.1", "imap"), ("192.0.2.2", "imap"), ("192.0.2.1", "mta"),
                     ("192.0.2.1", "mta"), ("192.0.2.9", "mta"), ("192.0.2.8", "mta")]:
        limiter.release(ip, role)
    assert limiter.total == 0 and not limiter.per_ip and not limiter.per_role_ip


def test_ipv6_clients_are_counted_per_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    limiter = connection_limiter(from_dict({**BASE, "limits": {"imap_max_connections_per_ip": 2}}))
    assert limiter.acquire("2001:db8::1", "imap") is None
    assert limiter.acquire("2001:db8::2", "imap") is None
    assert limiter.acquire("2001:db8::3", "imap") is not None


def test_docs_config_md_is_generated_from_the_schema() -> None:
    path = Path(__file__).parents[1] / "docs" / "config.md"
    assert path.read_text(encoding="utf-8").rstrip("\n") == reference().rstrip("\n"), (
        "docs/config.md is stale: run `pochta config-reference > docs/config.md`")


def test_every_problem_is_reported_at_once() -> None:
    """The loader names every bad key in one go, types first, then the checks beyond
    types of every section (the core's and the features')."""
    with pytest.raises(ConfigError) as info:
        from_dict({"hostname": "mx.example.org", "nope": 1,
                   "listeners": [{"role": "mta", "port": "abc"}],
                   "limits": {"max_connections": "x"}})
    assert info.value.problems == [
        "nope: unknown setting",
        "listeners[0].port: expected an integer, got 'abc'",
        "limits.max_connections: expected an integer, got 'x'",
    ]
    with pytest.raises(ConfigError) as info:
        from_dict({"hostname": "localhost",
                   "listeners": [{"role": "smtp", "port": 25}],
                   "limits": {"max_connections": 0},
                   "queue": {"backoff": 0.5},
                   "storage": {"backend": "postgresql",
                               "dsn": "postgresql://u:secret@db/pochta"}})
    keys = [p.partition(":")[0] for p in info.value.problems]
    for key in ("hostname", "listeners[0].role", "limits.max_connections", "storage.dsn",
                "queue.backoff"):
        assert key in keys, info.value.problems
    assert "secret" not in str(info.value)


def test_config_check_prints_every_problem(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pochta.toml"
    path.write_text('hostname = "localhost"\n[queue]\nbackoff = 0.5\nmax_age = 0\n')
    assert main(["--config", str(path), "config-check"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "pochta: config error: hostname: must be a full domain name" in err
    assert "pochta: config error: queue.backoff: must be at least 1" in err
    assert "pochta: config error: queue.max_age: must be positive" in err
