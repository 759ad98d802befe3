"""Authentication service shared by SMTP submission, IMAP and POP3.

``Authenticator`` checks passwords (PLAIN, LOGIN, USER/PASS, IMAP LOGIN), hands out SCRAM
keys, and runs the brute-force limiter. Protocol drivers call, in order::

    if not await auth.allowed(client_ip, username):   # before verifying anything
        ...  # SMTP "454 4.7.0 Too many failed authentications, try later", IMAP "NO
             # [UNAVAILABLE]", POP3 "-ERR [IN-USE]"/"[AUTH]"
    account = await auth.check_password(username, password, client_ip)   # or, for SCRAM:
    keys = await auth.scram_credentials(username); ...; await auth.finish_scram(...)

Nothing a client sees tells whether an account exists: unknown accounts cost one argon2
verification against a dummy hash, and SCRAM gets deterministic fake keys (RFC 5802 §9)
so the exchange fails at the proof like a wrong password.

Brute-force limiter (``FailureLimiter``). Failures are counted under three keys:

* the client IP (IPv6 by /64, since one host usually owns a whole /64),
* the (account, IP) pair,
* the account alone.

After ``failures_before_delay`` failures on any key, each further failure reply waits
``failure_delay`` seconds (an ``await`` in that session only; other clients are not
slowed). At ``failures_before_lockout`` the IP, or the (account, IP) pair, is refused for
``lockout_seconds``. The account alone is never locked: that would let anyone lock the
real user out from everywhere; it is only slowed. A success clears the pair and account
counters and takes that pair's failures (the user's own typos) off the IP's count, but
not the IP's other failures, so an attacker cannot launder its IP by logging in to an
account of its own between guesses at others. Counters forget failures after ``window`` seconds of
quiet; the table holds at most ``max_entries`` keys (least recently failed dropped first)
and keys are keyed BLAKE2 digests, so memory per entry is fixed.

Checks in flight count. Every password check that runs argon2 first reserves a place
under the IP and (account, IP) keys; a check is admitted only while failures plus checks
in flight stay below ``failures_before_lockout``, and further ones wait for a place (a
NAT full of legitimate clients is queued, not refused). A failure converts the
reservation into a counted failure, a success gives it back. Without this, 20 parallel
connections all passed the lockout test before the first verdict and got 20+ guesses in
where the policy allows 10.

Constant work: a cache hit (see below) is only possible for an enabled account and its
right password. An unknown account, a disabled one and a wrong password each cost one
argon2 verification and the same delay, so timing does not tell them apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from argon2 import PasswordHasher

from pochta import passwords
from pochta.config import AuthConfig
from pochta.logsetup import current_role
from pochta.mail.addresses import normalize_login
from pochta.metrics import METRICS
from pochta.services.app_passwords import verify as app_password_ok
from pochta.storage.interfaces import Account, MailStore, ScramCredentials, StoreError

VERIFIED_CACHE_MAX = 10_000

log = logging.getLogger("pochta.auth")

# Seconds a SCRAM exchange may hold its place in flight before it counts as failed.
SCRAM_RESERVATION = 60.0
MAX_ADDRESS_LENGTH = 320  # RFC 3696 errata: 64 + 1 + 255


def normalize_address(address: str) -> str:
    """The login name as the store keys accounts: the program's one address
    normalisation (pochta.mail.addresses), never raising for names that are not addresses."""
    return normalize_login(address)


def _ip_key(client_ip: str) -> str:
    try:
        ip = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip), 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Counter:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class FailureLimiter:
    """Counts failed logins; see the module docstring for the policy."""

    def __init__(
        self,
        config: AuthConfig,
        clock: Callable[[], float] = time.monotonic,
        *,
        window: float = 3600.0,
        max_entries: int = 100_000,
        secret: bytes | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        # A lockout must outlive its entry's expiry, so the window is at least that long.
        self._window = max(window, config.lockout_seconds)
        self._max_entries = max_entries
        # BLAKE2b keys are at most 64 bytes; any secret is fine after hashing.
        self._secret = hashlib.sha256(secret or secrets.token_bytes(32)).digest()
        self._table: OrderedDict[bytes, _Counter] = OrderedDict()
        self._in_flight: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._table)

    def _key(self, kind: str, *parts: str) -> bytes:
        material = "\0".join((kind, *parts)).encode("utf-8", "surrogatepass")
        return hashlib.blake2b(material, key=self._secret, digest_size=16).digest()

    def _keys(
        self, client_ip: str, address: str | None
    ) -> tuple[bytes, bytes | None, bytes | None]:
        ip = _ip_key(client_ip)
        if address is None:
            return self._key("ip", ip), None, None
        return self._key("ip", ip), self._key("pair", address, ip), self._key("acct", address)

    def _get(self, key: bytes, now: float) -> _Counter | None:
        counter = self._table.get(key)
        if counter is None:
            return None
        if counter.locked_until and counter.locked_until <= now:
            # A served lockout starts the count afresh.
            del self._table[key]
            return None
        if now - counter.last > self._window and counter.locked_until <= now:
            del self._table[key]
            return None
        return counter

    def locked(self, client_ip: str, address: str | None = None) -> bool:
        now = self._clock()
        ip_key, pair_key, _ = self._keys(client_ip, address)
        for key in (ip_key, pair_key):
            if key is None:
                continue
            counter = self._get(key, now)
            if counter is not None and counter.locked_until > now:
                return True
        return False

    def reserve(self, client_ip: str, address: str | None) -> bool:
        """Count one check in flight; False (nothing counted) while the failures so far
        plus the checks in flight would reach the lockout on the IP or the pair."""
        now = self._clock()
        ip_key, pair_key, _ = self._keys(client_ip, address)
        keys = [k for k in (ip_key, pair_key) if k is not None]
        for key in keys:
            counter = self._get(key, now)
            failures = counter.failures if counter is not None else 0
            if failures + self._in_flight.get(key, 0) >= self._config.failures_before_lockout:
                return False
        for key in keys:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        return True

    def release(self, client_ip: str, address: str | None) -> None:
        """The check reserved with ``reserve`` is over (record its failure first)."""
        ip_key, pair_key, _ = self._keys(client_ip, address)
        for key in (ip_key, pair_key):
            if key is None:
                continue
            left = self._in_flight.get(key, 1) - 1
            if left > 0:
                self._in_flight[key] = left
            else:
                self._in_flight.pop(key, None)

    def record_failure(self, client_ip: str, address: str | None) -> int:
        """Count one failure; returns the highest count among the keys it touched (the
        caller delays the reply when it exceeds ``failures_before_delay``)."""
        now = self._clock()
        self._expire(now)
        ip_key, pair_key, acct_key = self._keys(client_ip, address)
        highest = 0
        for key, lockable in ((ip_key, True), (pair_key, True), (acct_key, False)):
            if key is None:
                continue
            counter = self._get(key, now)
            if counter is None:
                counter = _Counter()
                self._table[key] = counter
            counter.failures += 1
            counter.last = now
            self._table.move_to_end(key)
            if (
                lockable
                and counter.failures >= self._config.failures_before_lockout
                and counter.locked_until <= now
            ):
                counter.locked_until = now + self._config.lockout_seconds
            highest = max(highest, counter.failures)
        while len(self._table) > self._max_entries:
            self._table.popitem(last=False)
        return highest

    def record_success(self, client_ip: str, address: str) -> None:
        """Forget this account's failures, and forgive the IP the failures it made on
        this account (a user's own typos); failures on other accounts still count."""
        now = self._clock()
        ip_key, pair_key, acct_key = self._keys(client_ip, address)
        pair = self._get(pair_key, now) if pair_key is not None else None
        ip = self._get(ip_key, now)
        if pair is not None and ip is not None:
            ip.failures = max(0, ip.failures - pair.failures)
        for key in (pair_key, acct_key):
            if key is not None:
                self._table.pop(key, None)

    def _expire(self, now: float, budget: int = 64) -> None:
        # The table is ordered by last failure, so stale entries sit at the front.
        for _ in range(budget):
            if not self._table:
                return
            key, counter = next(iter(self._table.items()))
            if now - counter.last <= self._window or counter.locked_until > now:
                return
            del self._table[key]


class Authenticator:
    """Password checks, SCRAM keys and the brute-force limiter for every protocol."""

    def __init__(
        self,
        store: MailStore,
        config: AuthConfig,
        clock: Callable[[], float] = time.monotonic,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        hasher: PasswordHasher | None = None,
        secret: bytes | None = None,
        limiter: FailureLimiter | None = None,
        shared: bool = False,
    ) -> None:
        """``secret`` derives the fake SCRAM keys of unknown users; pass a persistent one
        (e.g. from the data directory) so they stay the same across restarts. ``hasher``
        (argon2id, ``[auth] argon2_*``) defaults to ``passwords.DEFAULT_HASHER``."""
        self._store = store
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self.hasher = hasher or passwords.DEFAULT_HASHER  # new hashes, the dummy hash
        self._secret = secret or secrets.token_bytes(32)
        self._dummy: str | None = None
        self.limiter = limiter or FailureLimiter(config, clock)
        # Several processes serve this store: failures are also counted there, so a
        # guesser spreading over workers or nodes meets the same lockout.
        self._shared = shared
        self._verified: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._verifying: dict[tuple[bytes, str], asyncio.Future[bool]] = {}
        self._place_freed: asyncio.Event | None = None
        # SCRAM exchanges holding a place in flight, per (client IP, account)
        self._scram_pending: dict[tuple[str, str], dict[object, asyncio.TimerHandle]] = {}

    async def allowed(self, client_ip: str, address: str | None = None) -> bool:
        """False while the client IP, or this account from this IP, is locked out."""
        key = normalize_address(address) if address is not None else None
        if self.limiter.locked(client_ip, key):
            return False
        return not await self._shared_locked(client_ip, key)

    def _shared_keys(self, client_ip: str, addr: str | None) -> list[str]:
        """Store keys for the IP and the (account, IP) pair: keyed hashes (the server
        secret is the same in every worker), so the store holds no addresses or IPs."""
        ip = _ip_key(client_ip)
        parts = [("ip", ip)] + ([("pair", f"{addr}\0{ip}")] if addr is not None else [])
        return [
            "authfail:" + hashlib.blake2b(f"{kind}\0{value}".encode("utf-8", "surrogatepass"),
                                          key=self._secret[:64], digest_size=16).hexdigest()
            for kind, value in parts
        ]

    async def _shared_locked(self, client_ip: str, addr: str | None) -> bool:
        """Failures counted by every process in the last lockout period."""
        if not self._shared:
            return False
        limit = self._config.failures_before_lockout
        try:
            for key in self._shared_keys(client_ip, addr):
                if await self._store.counter_value(key, self._config.lockout_seconds) >= limit:
                    return True
        except StoreError as exc:
            log.warning("shared failure counters unavailable: %s", exc)
        return False

    async def check_password(self, address: str, password: str, client_ip: str,
                             app_passwords: bool = True) -> Account | None:
        """The account if ``password`` is right and the account is enabled, else None
        (after the brute-force delay, if due). Unknown accounts cost the same argon2 work.
        Returns None without checking while locked out (callers ask ``allowed`` first to
        give the proper temporary-failure reply). ``app_passwords``: an app password of the
        account is accepted too (mail protocols; not the web login)."""
        addr = normalize_address(address)
        if self.limiter.locked(client_ip, addr) or await self._shared_locked(client_ip, addr):
            log.warning("authentication refused (locked out) user=%r ip=%s via=%s", addr,
                        client_ip, current_role() or "-")
            return None
        account = await self._lookup(addr)
        password_hash = account.password_hash if account is not None else await self._dummy_hash()
        cache_key = self._cache_key(addr, password)
        enabled = account is not None and not account.disabled
        # app passwords (services/app_passwords.py): one indexed lookup, never cached, so
        # a revoked one fails at once; a wrong one goes on to the argon2 check and counts
        if enabled and app_passwords and account is not None and await app_password_ok(
                self._store, account, password):
            self._succeeded(client_ip, addr)
            return account
        if enabled and self._cached_ok(cache_key, password_hash):
            assert account is not None
            self._succeeded(client_ip, addr)
            return account
        # Every other path costs one argon2 run, counted in flight against the lockout.
        if not await self._reserve(client_ip, addr):
            log.warning("authentication refused (locked out) user=%r ip=%s", addr, client_ip)
            return None
        try:
            ok = await self._verify_once(cache_key, password_hash, password)
        except BaseException:
            self._release(client_ip, addr)
            raise
        if enabled and ok:
            assert account is not None
            self._remember(cache_key, password_hash)
            self._release(client_ip, addr)
            self._succeeded(client_ip, addr)
            return account
        if account is None:
            reason = "unknown user"
        elif not ok:
            reason = "wrong password"
        else:
            reason = "account disabled"
        await self._failed(client_ip, addr, reason, reserved=True)
        return None

    async def scram_credentials(self, address: str) -> ScramCredentials:
        """The account's SCRAM keys, or, for an unknown or disabled account or one
        without SCRAM keys, fake keys derived from the server secret and the name: the
        same every time for that name, so the salt reveals nothing (RFC 5802 §9)."""
        addr = normalize_address(address)
        account = await self._lookup(addr)
        if account is not None and account.scram is not None and not account.disabled:
            return account.scram
        return self._fake_scram(addr)

    async def begin_scram(self, address: str, client_ip: str) -> bool:
        """A SCRAM exchange is one guess: reserve its place in flight, as a password check
        does, so parallel exchanges cannot outrun the lockout. ``finish_scram`` gives the
        place back; a client that vanishes mid-exchange loses it after
        SCRAM_RESERVATION seconds, counted as a failure. False while locked out."""
        addr = normalize_address(address)
        if not await self._reserve(client_ip, addr):
            return False
        token = object()
        handle = asyncio.get_running_loop().call_later(
            SCRAM_RESERVATION, self._scram_abandoned, client_ip, addr, token)
        self._scram_pending.setdefault((client_ip, addr), {})[token] = handle
        return True

    def _end_scram(self, client_ip: str, addr: str) -> bool:
        """Take back one reservation of this client and account; False if none."""
        pending = self._scram_pending.get((client_ip, addr))
        if not pending:
            return False
        token = next(iter(pending))
        pending.pop(token).cancel()
        if not pending:
            del self._scram_pending[(client_ip, addr)]
        return True

    def _scram_abandoned(self, client_ip: str, addr: str, token: object) -> None:
        pending = self._scram_pending.get((client_ip, addr), {})
        if pending.pop(token, None) is None:
            return
        if not pending:
            self._scram_pending.pop((client_ip, addr), None)
        self.limiter.record_failure(client_ip, addr)
        self._release(client_ip, addr)
        log.warning("SCRAM exchange abandoned user=%r ip=%s", addr, client_ip)

    async def finish_scram(self, address: str, client_ip: str, verified: bool) -> Account | None:
        """Conclude a SCRAM exchange: ``verified`` is whether the mechanism returned
        ``Success``. Counts the outcome in the limiter; returns the account on success."""
        addr = normalize_address(address)
        reserved = self._end_scram(client_ip, addr)
        if verified and not self.limiter.locked(client_ip, addr):
            account = await self._lookup(addr)
            if account is not None and not account.disabled and account.scram is not None:
                if reserved:
                    self._release(client_ip, addr)
                self._succeeded(client_ip, addr)
                return account
            await self._failed(client_ip, addr, "account gone or disabled", reserved=reserved)
            return None
        await self._failed(client_ip, addr, "SCRAM proof failed", reserved=reserved)
        return None

    async def register_failure(self, client_ip: str, address: str | None, reason: str) -> None:
        """Count a failure the driver saw itself (malformed exchange, mechanism
        ``Failure``), with the same delay as a wrong password."""
        await self._failed(client_ip, normalize_address(address) if address else None, reason)

    # internals

    # A cache of recent successful verifications, as Dovecot's auth_cache: mail clients
    # log in again and again with the same password, and argon2id costs hundreds of ms of
    # CPU each time. Keys are an HMAC of (account, password) under the per-server secret;
    # an entry counts only while the account's hash is unchanged (a new password drops
    # it) and for ``[auth] cache_seconds``. Failures are never cached.

    async def _verify_once(self, key: bytes, password_hash: str, password: str) -> bool:
        """argon2id verification; concurrent checks of the same (account, password) share
        one run (a mail client opening five connections at once costs one, not five)."""
        pending = self._verifying.get((key, password_hash))
        if pending is not None:
            return await asyncio.shield(pending)
        task = asyncio.ensure_future(asyncio.to_thread(
            passwords.verify_password, password_hash, password, hasher=self.hasher))
        self._verifying[(key, password_hash)] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._verifying.pop((key, password_hash), None)
            else:
                task.add_done_callback(lambda _: self._verifying.pop((key, password_hash), None))

    def _cache_key(self, addr: str, password: str) -> bytes:
        return hmac.new(self._secret, f"{addr}\0{password}".encode("utf-8", "surrogatepass"),
                        "sha256").digest()

    def _cached_ok(self, key: bytes, password_hash: str) -> bool:
        entry = self._verified.get(key)
        if entry is None:
            return False
        stored_hash, when = entry
        if stored_hash != password_hash or self._clock() - when > self._config.cache_seconds:
            del self._verified[key]
            return False
        return True

    def _remember(self, key: bytes, password_hash: str) -> None:
        if self._config.cache_seconds <= 0:
            return
        self._verified[key] = (password_hash, self._clock())
        self._verified.move_to_end(key)
        while len(self._verified) > VERIFIED_CACHE_MAX:
            self._verified.popitem(last=False)

    async def _lookup(self, addr: str) -> Account | None:
        if not addr or len(addr) > MAX_ADDRESS_LENGTH:
            return None
        return await self._store.get_account(addr)

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await asyncio.to_thread(self.hasher.hash, secrets.token_hex(24))
        return self._dummy

    def _fake_scram(self, addr: str) -> ScramCredentials:
        def derive(label: bytes) -> bytes:
            return hmac.new(self._secret, label + b"\0" + addr.encode(), "sha256").digest()

        return ScramCredentials(
            salt=derive(b"scram-salt")[: passwords.SCRAM_SALT_BYTES],
            iterations=passwords.SCRAM_ITERATIONS,
            stored_key=derive(b"scram-stored-key"),
            server_key=derive(b"scram-server-key"),
        )

    def _succeeded(self, client_ip: str, addr: str) -> None:
        self.limiter.record_success(client_ip, addr)
        # via= the listener role (imap, pop3, submission) from the connection's log context
        log.info("authenticated user=%r ip=%s via=%s", addr, client_ip, current_role() or "-")

    async def _reserve(self, client_ip: str, addr: str, patience: float = 30.0) -> bool:
        """A place for one check in flight (see the module docstring); False if locked
        out, or after ``patience`` seconds without a place."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + patience
        while not self.limiter.locked(client_ip, addr):
            if self.limiter.reserve(client_ip, addr):
                return True
            if self._place_freed is None:
                self._place_freed = asyncio.Event()
            try:
                await asyncio.wait_for(self._place_freed.wait(), give_up - loop.time())
            except TimeoutError:
                return False
        return False

    def _release(self, client_ip: str, addr: str) -> None:
        self.limiter.release(client_ip, addr)
        event, self._place_freed = self._place_freed, None
        if event is not None:
            event.set()

    async def _failed(self, client_ip: str, addr: str | None, reason: str,
                      *, reserved: bool = False) -> None:
        METRICS.inc("pochta_auth_failures_total", role=current_role() or "-")
        count = self.limiter.record_failure(client_ip, addr)
        if self._shared:
            try:
                for key in self._shared_keys(client_ip, addr):
                    count = max(count, await self._store.add_to_counter(
                        key, 1, self._config.lockout_seconds))
            except StoreError as exc:
                log.warning("shared failure counters unavailable: %s", exc)
        if reserved and addr is not None:
            self._release(client_ip, addr)  # after the failure is counted: waiters see it
        log.warning(
            "authentication failed user=%r ip=%s via=%s reason=%s failures=%d",
            addr, client_ip, current_role() or "-", reason, count,
        )
        if count > self._config.failures_before_delay and self._config.failure_delay > 0:
            await self._sleep(self._config.failure_delay)
