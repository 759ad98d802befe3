"""The one authentication policy (services/auth_policy.py): which mechanisms each listener
offers before and after TLS, when credentials may flow, and the exchange's refusals as
errors of the hierarchy."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pochta.config import AuthConfig
from pochta.errors import AuthFailed, AuthLockedOut, AuthMalformed, MechanismNotOffered
from pochta.passwords import derive_scram, hash_password
from pochta.proto.sasl.base import ChannelBinding
from pochta.services.auth import Authenticator
from pochta.services.auth_policy import AuthPolicy
from pochta.services.sasl_driver import Authenticated
from pochta.storage.sqlite import SQLiteStore

SCRAM, PLUS, PLAIN, LOGIN = "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "PLAIN", "LOGIN"


class _Conn:
    def __init__(self, tls: bool) -> None:
        self.tls_active = tls

    def channel_bindings(self) -> tuple[ChannelBinding, ...]:
        return (ChannelBinding("tls-exporter", b"x" * 32),)


@pytest.fixture
async def authenticator(tmp_path: Path) -> AsyncIterator[Authenticator]:
    store = await SQLiteStore.open(tmp_path / "data")
    await store.add_domain("example.org")
    await store.add_account("alice@example.org", hash_password("alice-pw"),
                            derive_scram("alice-pw"))
    yield Authenticator(store, AuthConfig(failures_before_delay=100,
                                          failures_before_lockout=2))
    await store.close()


def _policy(role: str, listener_tls: str, tls: bool, auth: object = None,
            config: AuthConfig | None = None) -> AuthPolicy:
    return AuthPolicy(config or AuthConfig(), auth, role, listener_tls,  # type: ignore[arg-type]
                      _Conn(tls), "192.0.2.1")


# (role, listener tls, TLS active) -> (mechanisms offered, credentials may flow now)
TABLE = [
    ("mta", "starttls", False, (), False),
    ("mta", "starttls", True, (), False),
    ("submission", "starttls", False, (SCRAM,), False),  # the core shows AUTH under TLS only
    ("submission", "starttls", True, (SCRAM, PLAIN, LOGIN), True),
    ("submission", "implicit", True, (SCRAM, PLAIN, LOGIN), True),
    ("submission", "none", False, (SCRAM,), False),  # 538 5.7.11: never in clear text
    ("imap", "starttls", False, (), False),  # LOGINDISABLED
    ("imap", "starttls", True, (SCRAM, PLAIN, LOGIN), True),
    ("imap", "implicit", True, (SCRAM, PLAIN, LOGIN), True),
    ("imap", "none", False, (SCRAM, PLAIN, LOGIN), True),  # behind a TLS proxy
    ("pop3", "starttls", False, (), False),
    ("pop3", "starttls", True, (SCRAM, PLAIN, LOGIN), True),
    ("pop3", "none", False, (SCRAM, PLAIN, LOGIN), True),
    ("managesieve", "starttls", False, (), False),
    ("managesieve", "starttls", True, (SCRAM, PLAIN, LOGIN), True),
    ("managesieve", "none", False, (SCRAM, PLAIN, LOGIN), True),
]


@pytest.mark.parametrize(("role", "listener_tls", "tls", "offered", "may"), TABLE)
def test_mechanisms_per_listener_and_tls_state(
    role: str, listener_tls: str, tls: bool, offered: tuple[str, ...], may: bool
) -> None:
    policy = _policy(role, listener_tls, tls)
    assert policy.offer().mechanisms == offered
    assert policy.may_authenticate is may
    assert policy.tls_first is (role != "mta" and not may)


def test_plus_only_under_tls_and_when_configured() -> None:
    on = AuthConfig(scram_plus=True)
    for role in ("submission", "imap", "pop3", "managesieve"):
        assert _policy(role, "implicit", True, config=on).offer().mechanisms[0] == PLUS
        assert PLUS not in _policy(role, "implicit", True).offer().mechanisms
    assert PLUS not in _policy("imap", "none", False, config=on).offer().mechanisms


def test_begin_refuses_what_is_not_offered() -> None:
    with pytest.raises(MechanismNotOffered):
        _policy("imap", "starttls", False).begin(SCRAM, final_as_challenge=True)
    with pytest.raises(MechanismNotOffered):
        _policy("submission", "none", False).begin(SCRAM, final_as_challenge=True)
    with pytest.raises(MechanismNotOffered):
        _policy("imap", "implicit", True).begin("CRAM-MD5", final_as_challenge=True)
    with pytest.raises(MechanismNotOffered):
        _policy("mta", "starttls", True).begin(PLAIN, final_as_challenge=True)
    assert _policy("imap", "implicit", True).begin("plain", final_as_challenge=True)


async def test_exchange_outcomes_are_errors_of_the_hierarchy(
    authenticator: Authenticator,
) -> None:
    policy = _policy("imap", "implicit", True, authenticator)
    ok = await policy.begin(PLAIN, final_as_challenge=True).start(
        b"\0alice@example.org\0alice-pw")
    assert isinstance(ok, Authenticated) and ok.account.address == "alice@example.org"
    with pytest.raises(AuthMalformed):
        await policy.begin(PLAIN, final_as_challenge=True).start(b"no separators")
    with pytest.raises(AuthFailed) as failed:
        await policy.begin(PLAIN, final_as_challenge=True).start(
            b"\0alice@example.org\0wrong")
    assert failed.value.smtp_reply().code == 535
    assert failed.value.imap_error().code == "AUTHENTICATIONFAILED"
    assert failed.value.pop3_reply().to_bytes() == b"-ERR [AUTH] Authentication failed\r\n"
    # two failures reached the lockout: the next attempt is refused before any check
    with pytest.raises(AuthLockedOut) as locked:
        await policy.login("alice@example.org", "alice-pw")
    assert locked.value.smtp_reply().to_bytes().startswith(b"454 4.7.0 ")
    assert locked.value.imap_error().code == "UNAVAILABLE"
    assert locked.value.pop3_reply().code == "SYS/TEMP"


async def test_login_checks_the_password(authenticator: Authenticator) -> None:
    policy = _policy("pop3", "none", False, authenticator)
    account = await policy.login("alice@example.org", "alice-pw")
    assert account.address == "alice@example.org"
    with pytest.raises(AuthFailed):
        await policy.login("alice@example.org", base64.b64encode(b"nope").decode())
