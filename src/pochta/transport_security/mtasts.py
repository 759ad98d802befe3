"""MTA-STS (RFC 8461) for outbound mail: the TXT record, the HTTPS policy, the cache.

* ``parse_txt`` / ``parse_policy`` / ``mx_matches`` are pure (RFC 8461 §3.1, §3.2, §4.1);
* ``HTTPSPolicyFetcher`` fetches ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt`` with the
  certificate checked against the system trust store or a configured CA (§3.3: no
  redirects, 200 only, ``text/plain``, a size limit and a timeout);
* ``MTASTS`` keeps the policies in the store (``TransportSecurityStore``) and decides
  which one applies (§5.1): a cached policy is used until ``max_age`` runs out; the TXT id
  is checked (at most every ``txt_interval`` seconds per domain) and a changed id fetches
  the policy again; a policy past half its ``max_age`` is fetched again (§5.1 "refresh
  before expiry"); a failed fetch keeps the cached policy while it is valid.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pochta.dns import Resolver, TemporaryDNSError
from pochta.mail.addresses import domain_key
from pochta.mail.tls import client_context
from pochta.queue.routing import mx_matches as mx_matches  # the queue applies the patterns
from pochta.storage.interfaces_transport import CachedSTSPolicy, TransportSecurityStore

log = logging.getLogger("pochta.mtasts")

MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 §3.3: "a maximum size of 64 KB" is suggested
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: at most one year
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")


class PolicyError(Exception):
    """The policy could not be fetched or is not valid; ``result`` is the RFC 8460 §4.3
    result-type for TLS-RPT (sts-policy-fetch-error, sts-policy-invalid,
    sts-webpki-invalid)."""

    def __init__(self, message: str, result: str = "sts-policy-fetch-error") -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class STSPolicy:
    mode: str
    mx: tuple[str, ...]
    max_age: int


def parse_txt(records: list[str]) -> str | None:
    """The policy id of ``_mta-sts.DOMAIN``'s TXT records, or None when there is no single
    valid ``v=STSv1`` record (RFC 8461 §3.1: several records mean no policy)."""
    sts = [r for r in records if r.strip().startswith("v=STSv1")]
    if len(sts) != 1:
        return None
    fields: dict[str, str] = {}
    for part in sts[0].split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    pid = fields.get("id", "")
    return pid if _ID.match(pid) else None


def parse_policy(text: str) -> STSPolicy:
    """RFC 8461 §3.2. Raises ``PolicyError`` (sts-policy-invalid)."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError(f"policy line without a colon: {line[:60]!r}",
                              "sts-policy-invalid")
        key, value = key.strip(), value.strip()
        if key == "mx":
            mx.append(value.lower().rstrip("."))
        else:
            fields.setdefault(key, value)  # unknown keys are ignored (§3.2)
    if fields.get("version") != "STSv1":
        raise PolicyError("policy has no 'version: STSv1'", "sts-policy-invalid")
    mode = fields.get("mode", "")
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"policy mode {mode!r} is not enforce, testing or none",
                          "sts-policy-invalid")
    age = fields.get("max_age", "")
    if not age.isdigit() or len(age) > 10:
        raise PolicyError(f"policy max_age {age!r} is not a number", "sts-policy-invalid")
    if mode != "none" and not mx:
        raise PolicyError("policy lists no mx", "sts-policy-invalid")
    return STSPolicy(mode, tuple(mx), min(int(age), MAX_AGE_LIMIT))


class PolicyFetcher(Protocol):
    async def fetch(self, domain: str) -> str:
        """The policy file's text; raises ``PolicyError``."""


class HTTPSPolicyFetcher:
    """GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt, by hand (HTTP/1.0, so no
    chunked encoding), resolving the host through Pochta's resolver so tests control it.
    ``port`` and ``cafile`` exist for tests and private PKIs."""

    def __init__(
        self, resolver: Resolver, *, cafile: str | None = None, port: int = 443,
        timeout: float = 60.0,
    ) -> None:
        self.resolver = resolver
        self.port = port
        self.timeout = timeout
        self.context = client_context(cafile=cafile)

    async def fetch(self, domain: str) -> str:
        host = f"mta-sts.{domain}"
        try:
            addresses = await self.resolver.a(host) + await self.resolver.aaaa(host)
        except TemporaryDNSError as exc:
            raise PolicyError(f"{host}: address lookup failed: {exc}") from exc
        if not addresses:
            raise PolicyError(f"{host} has no address")
        last: PolicyError = PolicyError(f"{host}: no address worked")
        for address in addresses:
            try:
                return await asyncio.wait_for(self._get(host, address), self.timeout)
            except TimeoutError:
                last = PolicyError(f"{host} [{address}]: timed out")
            except ssl.SSLCertVerificationError as exc:
                raise PolicyError(f"{host}: certificate not valid: {exc.verify_message}",
                                  "sts-webpki-invalid") from exc
            except (OSError, ssl.SSLError) as exc:
                last = PolicyError(f"{host} [{address}]: {exc}")
        raise last

    async def _get(self, host: str, address: str) -> str:
        reader, writer = await asyncio.open_connection(
            address, self.port, ssl=self.context, server_hostname=host)
        try:
            writer.write(
                f"GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: {host}\r\n"
                "User-Agent: Pochta\r\nConnection: close\r\n\r\n".encode("ascii"))
            await writer.drain()
            raw = await reader.read(MAX_POLICY_BYTES + 16384)
            while True:
                more = await reader.read(65536)
                if not more:
                    break
                raw += more
                if len(raw) > MAX_POLICY_BYTES + 16384:
                    raise PolicyError(f"{host}: policy larger than {MAX_POLICY_BYTES} bytes",
                                      "sts-policy-invalid")
        finally:
            writer.close()
        head, sep, body = raw.partition(b"\r\n\r\n")
        if not sep:
            raise PolicyError(f"{host}: malformed HTTP response")
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "200":
            # RFC 8461 §3.3: redirects are not followed; only 200 is a policy
            raise PolicyError(f"{host}: HTTP status {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "text/plain":
            raise PolicyError(f"{host}: Content-Type {ctype!r} is not text/plain",
                              "sts-policy-invalid")
        if len(body) > MAX_POLICY_BYTES:
            raise PolicyError(f"{host}: policy larger than {MAX_POLICY_BYTES} bytes",
                              "sts-policy-invalid")
        return body.decode("utf-8", "replace")


# (policy domain, policy type, policy lines, mx host, RFC 8460 result-type)
FailureSink = Callable[[str, str, tuple[str, ...], str, str], None]


class MTASTS:
    """Which MTA-STS policy applies to a recipient domain now."""

    def __init__(
        self, store: TransportSecurityStore, resolver: Resolver, fetcher: PolicyFetcher,
        *, clock: Callable[[], float] = time.time, txt_interval: float = 300.0,
        on_failure: FailureSink | None = None,
    ) -> None:
        self.store = store
        self.resolver = resolver
        self.fetcher = fetcher
        self.clock = clock
        self.txt_interval = txt_interval
        self.on_failure = on_failure
        self._txt_checked: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def policy(self, domain: str) -> CachedSTSPolicy | None:
        """The policy to apply to mail for ``domain`` (None: no MTA-STS)."""
        domain = domain_key(domain)
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:
            return await self._policy(domain)

    async def _policy(self, domain: str) -> CachedSTSPolicy | None:
        now = self.clock()
        cached = await self.store.get_sts_policy(domain)
        valid = cached if cached is not None and now < cached.expires else None
        fresh = valid is not None and now < valid.fetched + valid.max_age / 2
        if fresh and now < self._txt_checked.get(domain, 0) + self.txt_interval:
            return valid  # the warm path: no DNS, no HTTPS
        try:
            pid = parse_txt(await self.resolver.txt(f"_mta-sts.{domain}"))
        except TemporaryDNSError as exc:
            log.info("mta-sts %s: TXT lookup failed (%s); cached policy: %s", domain, exc,
                     "yes" if valid else "no")
            return valid
        self._txt_checked[domain] = now
        if pid is None:
            # §5.1: no (valid) record: a cached policy still applies until it expires
            return valid
        if valid is not None and valid.policy_id == pid and fresh:
            return valid
        try:
            text = await self.fetcher.fetch(domain)
            parsed = parse_policy(text)
        except PolicyError as exc:
            log.warning("mta-sts %s: policy id=%s not usable: %s (%s)", domain, pid, exc,
                        "keeping the cached policy" if valid else "no policy applies")
            if self.on_failure is not None:
                self.on_failure(domain, "sts", (), "", exc.result)
            return valid
        policy = CachedSTSPolicy(domain, pid, parsed.mode, parsed.mx, parsed.max_age, now,
                                 text)
        await self.store.put_sts_policy(policy)
        log.info("mta-sts %s: policy id=%s mode=%s mx=%s max_age=%d", domain, pid,
                 parsed.mode, ",".join(parsed.mx), parsed.max_age)
        return policy


def policy_lines(policy: CachedSTSPolicy) -> tuple[str, ...]:
    """RFC 8460 §4.4 policy-string: the policy's lines."""
    if policy.text:
        return tuple(line.strip() for line in policy.text.splitlines() if line.strip())
    return ("version: STSv1", f"mode: {policy.mode}", *(f"mx: {m}" for m in policy.mx),
            f"max_age: {policy.max_age}")
