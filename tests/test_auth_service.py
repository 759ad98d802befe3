"""The Authenticator service and its brute-force limiter, on the real SQLite store."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest
from argon2 import PasswordHasher

from pochta.config import AuthConfig
from pochta.passwords import derive_scram, hash_password
from pochta.proto.sasl import Challenge, NeedScramCredentials, Success, new_mechanism
from pochta.services.auth import Authenticator, FailureLimiter, normalize_address
from pochta.storage.sqlite import SQLiteStore


class CountingHasher(PasswordHasher):
    """A cheap hasher that counts verifications (the expensive step)."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verifications = 0
        self.delay = 0.0  # seconds a verification takes (argon2id takes ~0.1-1 s)

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verifications += 1
        if self.delay:
            time.sleep(self.delay)
        return super().verify(hash, password)


class FakeClock:
    def __init__(self) -> None:
        self.now = 10_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


CONFIG = AuthConfig(
    failures_before_delay=3, failures_before_lockout=10, lockout_seconds=300.0, failure_delay=1.0
)
ALICE = "alice@example.org"
BOB = "bob@example.org"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "data")
    hasher = CountingHasher()
    await s.add_domain("example.org")
    await s.add_account(ALICE, hash_password("alice-pw", hasher=hasher), derive_scram("alice-pw"))
    await s.add_account(BOB, hash_password("bob-pw", hasher=hasher), None)
    yield s
    await s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def auth(store: SQLiteStore, clock: FakeClock, hasher: CountingHasher) -> Authenticator:
    return Authenticator(store, CONFIG, clock, sleep=clock.sleep, hasher=hasher, secret=b"k" * 32)


# --- password checks --------------------------------------------------------------------


async def test_right_password(auth: Authenticator) -> None:
    account = await auth.check_password(ALICE, "alice-pw", "192.0.2.1")
    assert account is not None and account.address == ALICE


async def test_address_is_case_insensitive(auth: Authenticator) -> None:
    assert await auth.check_password("Alice@EXAMPLE.org", "alice-pw", "192.0.2.1") is not None


async def test_wrong_password_and_unknown_user(auth: Authenticator) -> None:
    assert await auth.check_password(ALICE, "nope", "192.0.2.1") is None
    assert await auth.check_password("nobody@example.org", "alice-pw", "192.0.2.1") is None


async def test_disabled_account_fails_with_right_password(
    auth: Authenticator, store: SQLiteStore
) -> None:
    await store.update_account(ALICE, disabled=True)
    assert await auth.check_password(ALICE, "alice-pw", "192.0.2.1") is None
    creds = await auth.scram_credentials(ALICE)
    alice = await store.get_account(ALICE)
    assert alice is not None and alice.scram is not None
    assert creds != alice.scram


async def test_unknown_and_known_users_cost_the_same_work(
    auth: Authenticator, hasher: CountingHasher
) -> None:
    await auth.check_password(ALICE, "wrong", "192.0.2.1")
    known = hasher.verifications
    await auth.check_password("ghost@example.org", "wrong", "192.0.2.2")
    assert hasher.verifications - known == known == 1
    # an absurdly long name is not looked up but still costs one verification
    await auth.check_password("x" * 5000, "wrong", "192.0.2.3")
    assert hasher.verifications == 3


async def test_verification_runs_off_the_event_loop(
    store: SQLiteStore, clock: FakeClock
) -> None:
    loop_thread: list[Any] = []

    class ThreadRecordingHasher(CountingHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            loop_thread.append(threading.current_thread())
            return super().verify(hash, password)

    a = Authenticator(store, CONFIG, clock, sleep=clock.sleep, hasher=ThreadRecordingHasher())
    await a.check_password(ALICE, "alice-pw", "192.0.2.1")
    assert loop_thread and loop_thread[0] is not threading.current_thread()


async def test_failures_are_logged_without_the_password(
    auth: Authenticator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pochta.auth"):
        await auth.check_password(ALICE, "Sup3rSecretGuess", "192.0.2.1")
        await auth.check_password(ALICE, "alice-pw", "192.0.2.1")
    text = caplog.text
    assert "authentication failed" in text and ALICE in text and "192.0.2.1" in text
    assert "authenticated user" in text
    assert "Sup3rSecretGuess" not in text and "alice-pw" not in text


# --- delay and lockout ------------------------------------------------------------------


async def test_delay_after_failures_before_delay(auth: Authenticator, clock: FakeClock) -> None:
    for _ in range(3):
        await auth.check_password(ALICE, "bad", "192.0.2.1")
    assert clock.sleeps == []
    await auth.check_password(ALICE, "bad", "192.0.2.1")
    assert clock.sleeps == [1.0]
    # successes are never delayed
    assert await auth.check_password(ALICE, "alice-pw", "192.0.2.1") is not None
    assert clock.sleeps == [1.0]


async def test_lockout_and_expiry(auth: Authenticator, clock: FakeClock) -> None:
    ip = "198.51.100.7"
    for _ in range(10):
        assert await auth.allowed(ip, ALICE)
        await auth.check_password(ALICE, "bad", ip)
    assert not await auth.allowed(ip, ALICE)
    assert not await auth.allowed(ip)
    # even the right password is refused from there while locked
    assert await auth.check_password(ALICE, "alice-pw", ip) is None
    # the honest user elsewhere is not locked out
    assert await auth.allowed("203.0.113.5", ALICE)
    assert await auth.check_password(ALICE, "alice-pw", "203.0.113.5") is not None
    locked_at = clock.now - 1.0  # the tenth failure's reply was delayed by one second
    clock.now = locked_at + 299
    assert not await auth.allowed(ip, ALICE)
    clock.now = locked_at + 301
    assert await auth.allowed(ip, ALICE)
    assert await auth.check_password(ALICE, "alice-pw", ip) is not None


async def test_thousand_failures_from_one_ip_do_not_affect_another(
    auth: Authenticator, clock: FakeClock, hasher: CountingHasher
) -> None:
    attacker = "192.0.2.66"
    for i in range(1000):
        target = ALICE if i % 2 else f"user{i}@example.org"
        await auth.check_password(target, f"guess{i}", attacker)
    assert not await auth.allowed(attacker)
    # locked-out attempts cost no argon2 work
    assert hasher.verifications == 10
    sleeps_before = len(clock.sleeps)
    assert await auth.allowed("203.0.113.9", BOB)
    assert await auth.check_password(BOB, "bob-pw", "203.0.113.9") is not None
    # alice is only slowed globally, never locked: she logs in from her own IP
    assert await auth.allowed("203.0.113.10", ALICE)
    assert await auth.check_password(ALICE, "alice-pw", "203.0.113.10") is not None
    assert len(clock.sleeps) == sleeps_before
    assert len(auth.limiter) < 50


async def test_many_ips_against_one_account_slow_but_do_not_lock(
    auth: Authenticator, clock: FakeClock
) -> None:
    for i in range(30):
        await auth.check_password(ALICE, "bad", f"10.0.{i}.1")
    assert len(clock.sleeps) == 27  # the account counter passed 3 after the third
    assert await auth.allowed("203.0.113.1", ALICE)
    assert await auth.check_password(ALICE, "alice-pw", "203.0.113.1") is not None
    # the success cleared the account's global counter
    await auth.check_password(ALICE, "bad", "203.0.113.200")
    assert len(clock.sleeps) == 27


async def test_success_forgives_own_typos_but_not_spraying(
    auth: Authenticator, clock: FakeClock
) -> None:
    ip = "192.0.2.10"
    for _ in range(9):
        await auth.check_password(ALICE, "typo", ip)
    assert await auth.check_password(ALICE, "alice-pw", ip) is not None
    for _ in range(9):
        await auth.check_password(ALICE, "typo", ip)
    assert await auth.allowed(ip, ALICE)
    # an attacker with a valid account (bob) spraying others from one IP
    spray_ip = "192.0.2.11"
    for i in range(9):
        await auth.check_password(f"victim{i}@example.org", "guess", spray_ip)
    assert await auth.check_password(BOB, "bob-pw", spray_ip) is not None
    await auth.check_password("victim9@example.org", "guess", spray_ip)
    assert not await auth.allowed(spray_ip)


async def test_ipv6_counted_per_64(auth: Authenticator) -> None:
    for i in range(10):
        await auth.check_password(f"u{i}@example.org", "x", f"2001:db8:1:2::{i + 1:x}")
    assert not await auth.allowed("2001:db8:1:2:ffff::1")
    assert await auth.allowed("2001:db8:1:3::1")


async def test_ipv4_mapped_ipv6_is_the_ipv4_address(auth: Authenticator) -> None:
    for i in range(10):
        await auth.check_password(f"u{i}@example.org", "x", "::ffff:192.0.2.77")
    assert not await auth.allowed("192.0.2.77")


async def test_register_failure_counts(auth: Authenticator, clock: FakeClock) -> None:
    for _ in range(10):
        await auth.register_failure("192.0.2.5", None, "malformed SASL")
    assert not await auth.allowed("192.0.2.5")
    assert len(clock.sleeps) == 7


async def test_delay_does_not_block_other_clients(store: SQLiteStore) -> None:
    cfg = AuthConfig(failures_before_delay=0, failures_before_lockout=100, failure_delay=0.5)
    a = Authenticator(store, cfg, hasher=CountingHasher())
    start = time.monotonic()
    slow = asyncio.create_task(a.check_password(ALICE, "bad", "192.0.2.1"))
    fast = asyncio.create_task(a.check_password(BOB, "bob-pw", "192.0.2.2"))
    assert await fast is not None
    fast_done = time.monotonic() - start
    assert await slow is None
    slow_done = time.monotonic() - start
    assert fast_done < 0.4 <= slow_done


# --- limiter table hygiene -------------------------------------------------------------


def test_limiter_table_is_capped(clock: FakeClock) -> None:
    limiter = FailureLimiter(CONFIG, clock, max_entries=50)
    for i in range(1000):
        limiter.record_failure(f"10.{i // 256}.{i % 256}.1", f"user{i}@example.org")
    assert len(limiter) == 50


def test_limiter_entries_expire(clock: FakeClock) -> None:
    limiter = FailureLimiter(CONFIG, clock, window=600)
    for i in range(100):
        limiter.record_failure(f"10.0.0.{i}", None)
    assert len(limiter) == 100
    clock.now += 601
    # stale entries are swept a bounded number at a time, on each new failure
    limiter.record_failure("10.9.9.9", None)
    assert len(limiter) < 100
    limiter.record_failure("10.9.9.8", None)
    assert len(limiter) == 2


def test_limiter_failures_forgotten_after_window(clock: FakeClock) -> None:
    limiter = FailureLimiter(CONFIG, clock, window=600)
    for _ in range(9):
        limiter.record_failure("10.0.0.1", ALICE)
    clock.now += 601
    assert limiter.record_failure("10.0.0.1", ALICE) == 1
    assert not limiter.locked("10.0.0.1", ALICE)


# --- SCRAM through the service ----------------------------------------------------------


async def scram_login(auth: Authenticator, user: str, password: str, ip: str) -> object:
    """Drive a SCRAM exchange the way a protocol driver does, with a hand-made client."""
    import base64
    import hashlib
    import hmac

    mech = new_mechanism("SCRAM-SHA-256")
    assert mech is not None
    bare = f"n={user},r=clientnonce"
    step = mech.start(f"n,,{bare}".encode())
    assert isinstance(step, NeedScramCredentials)
    step = mech.provide(await auth.scram_credentials(step.username))
    assert isinstance(step, Challenge)
    attrs = dict(a.split("=", 1) for a in step.data.decode().split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    ckey = hmac.new(salted, b"Client Key", "sha256").digest()
    without = f"c=biws,r={attrs['r']}"
    auth_msg = f"{bare},{step.data.decode()},{without}".encode()
    sig = hmac.new(hashlib.sha256(ckey).digest(), auth_msg, "sha256").digest()
    proof = base64.b64encode(bytes(x ^ y for x, y in zip(ckey, sig, strict=True))).decode()
    step = mech.respond(f"{without},p={proof}".encode())
    return await auth.finish_scram(user, ip, isinstance(step, Success))


async def test_scram_login_known_user(auth: Authenticator) -> None:
    account = await scram_login(auth, ALICE, "alice-pw", "192.0.2.1")
    assert account is not None and getattr(account, "address", None) == ALICE


async def test_scram_wrong_password_counts_as_failure(
    auth: Authenticator, clock: FakeClock
) -> None:
    for _ in range(10):
        assert await scram_login(auth, ALICE, "wrong", "192.0.2.1") is None
    assert not await auth.allowed("192.0.2.1", ALICE)
    assert len(clock.sleeps) == 7


async def test_scram_unknown_user_fails_at_the_proof(auth: Authenticator) -> None:
    assert await scram_login(auth, "ghost@example.org", "anything", "192.0.2.1") is None
    # an account without SCRAM keys behaves like an unknown one
    assert await scram_login(auth, BOB, "bob-pw", "192.0.2.1") is None


async def test_fake_scram_credentials_are_deterministic(auth: Authenticator) -> None:
    a1 = await auth.scram_credentials("ghost@example.org")
    a2 = await auth.scram_credentials("GHOST@example.org")
    b = await auth.scram_credentials("other@example.org")
    assert a1 == a2
    assert a1.salt != b.salt and a1.stored_key != b.stored_key
    assert len(a1.salt) == 16 and a1.iterations == 4096 and len(a1.stored_key) == 32


def test_normalize_address() -> None:
    assert normalize_address("Tim@Example.ORG") == "tim@example.org"
    assert normalize_address("tim@b\u00fccher.example") == "tim@xn--bcher-kva.example"
    assert normalize_address("no-at-sign") == "no-at-sign"


# --- the cache of successful verifications ----------------------------------------------


async def test_repeated_right_password_skips_argon2_until_expiry(
    auth: Authenticator, hasher: CountingHasher, clock: FakeClock
) -> None:
    for _ in range(3):
        assert await auth.check_password(ALICE, "alice-pw", "192.0.2.1") is not None
    assert hasher.verifications == 1
    # a wrong password is never answered from the cache
    assert await auth.check_password(ALICE, "alice-pw ", "192.0.2.1") is None
    assert hasher.verifications == 2
    clock.now += CONFIG.cache_seconds + 1
    assert await auth.check_password(ALICE, "alice-pw", "192.0.2.1") is not None
    assert hasher.verifications == 3


async def test_password_change_invalidates_the_cache(
    auth: Authenticator, store: SQLiteStore, hasher: CountingHasher
) -> None:
    assert await auth.check_password(ALICE, "alice-pw", "192.0.2.1") is not None
    await store.set_password(ALICE, hash_password("new-pw", hasher=hasher), None)
    assert await auth.check_password(ALICE, "alice-pw", "192.0.2.1") is None
    assert await auth.check_password(ALICE, "new-pw", "192.0.2.1") is not None


async def test_cache_can_be_turned_off(store: SQLiteStore, clock: FakeClock) -> None:
    hasher = CountingHasher()
    config = AuthConfig(cache_seconds=0)
    auth = Authenticator(store, config, clock, sleep=clock.sleep, hasher=hasher)
    for _ in range(2):
        assert await auth.check_password(ALICE, "alice-pw", "192.0.2.1") is not None
    assert hasher.verifications == 2


async def test_concurrent_logins_share_one_verification(
    auth: Authenticator, hasher: CountingHasher
) -> None:
    # Checks that overlap share one run: with a cheap hasher and store reads on threads,
    # one could finish before the next begins, so the run takes as long as a real one.
    hasher.delay = 0.1
    results = await asyncio.gather(*[
        auth.check_password(ALICE, "alice-pw", f"192.0.2.{n}") for n in range(1, 6)])
    assert all(r is not None for r in results)
    assert hasher.verifications == 1
    wrong = await asyncio.gather(*[
        auth.check_password(ALICE, "nope", "192.0.2.9") for _ in range(3)])
    assert wrong == [None, None, None]
    assert hasher.verifications == 2
