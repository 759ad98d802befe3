"""Outbound queue settings: ``[queue]``, ``[[routes]]`` (static routes / smarthost) and
``[[queue.tls_policies]]``.

These are plain frozen dataclasses in the style of ``pochta.config``; ``check()`` holds the
validation beyond types and returns every problem, each naming its key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pochta.mail.addresses import domain_key

ROUTE_TLS = ("none", "opportunistic", "starttls", "implicit")
POLICY_LEVELS = ("none", "may", "encrypt", "verify")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class Route:
    """A static route (like a Postfix transport map entry): mail for ``domain`` goes to
    ``host:port`` instead of the domain's MX hosts. ``domain = "*"`` is a smarthost."""

    domain: str = field(
        metadata=_doc(
            '"example.com" (that domain), ".example.com" (its subdomains) or "*" (everything)'
        )
    )
    host: str = field(metadata=_doc("host name or IP address (IPv6 in brackets or bare)"))
    port: int = field(default=25, metadata=_doc("TCP port (587 submission, 465 implicit TLS)"))
    tls: str = field(
        default="opportunistic",
        metadata=_doc(
            "none (never), opportunistic (STARTTLS when offered, unverified), starttls "
            "(STARTTLS required) or implicit (TLS from the first byte, port 465)"
        ),
    )
    verify: bool = field(
        default=False, metadata=_doc("require a valid certificate for host (with tls)")
    )
    username: str = field(default="", metadata=_doc("AUTH user name; empty: no AUTH"))
    password_file: str = field(
        default="", metadata=_doc("file holding the AUTH password (relative to the config)")
    )

    def matches(self, domain: str) -> bool:
        d = domain_key(domain)
        pat = domain_key(self.domain)
        if pat == "*":
            return True
        if pat.startswith("."):
            return d.endswith(pat)
        return d == pat


@dataclass(frozen=True)
class TLSPolicy:
    """Per-destination TLS policy for MX delivery (Postfix smtp_tls_policy_maps levels)."""

    domain: str = field(metadata=_doc('recipient domain, ".domain" for subdomains, or "*"'))
    level: str = field(
        default="may",
        metadata=_doc(
            "none (plaintext), may (opportunistic), encrypt (TLS required, any "
            "certificate) or verify (TLS with a certificate valid for the MX host name)"
        ),
    )

    def matches(self, domain: str) -> bool:
        return Route(self.domain, "-").matches(domain)


@dataclass(frozen=True)
class QueueConfig:
    first_retry: float = field(
        default=300.0, metadata=_doc("seconds before the first retry of a deferred message")
    )
    backoff: float = field(
        default=2.0, metadata=_doc("each retry interval is this many times the previous one")
    )
    max_retry_interval: float = field(
        default=14_400.0, metadata=_doc("longest interval between two attempts (seconds)")
    )
    max_age: float = field(
        default=432_000.0,
        metadata=_doc("give up and bounce after this many seconds in the queue (5 days)"),
    )
    delay_warning: float = field(
        default=0.0,
        metadata=_doc(
            "send a delay DSN once a message has waited this long (seconds); 0: never"
        ),
    )
    concurrency: int = field(default=20, metadata=_doc("outbound connections in total"))
    per_destination: int = field(
        default=4, metadata=_doc("simultaneous connections to one destination")
    )
    per_destination_rate: float = field(
        default=0.0,
        metadata=_doc("messages per minute to one destination; 0: unlimited"),
    )
    messages_per_connection: int = field(
        default=100, metadata=_doc("messages sent over one connection before reconnecting")
    )
    connect_timeout: float = field(default=30.0, metadata=_doc("seconds to connect"))
    command_timeout: float = field(
        default=300.0, metadata=_doc("seconds to wait for a reply (RFC 5321 4.5.3.2)")
    )
    data_timeout: float = field(
        default=600.0,
        metadata=_doc("seconds to wait for the reply after the message (RFC 5321: 10 minutes)"),
    )
    smtp_port: int = field(default=25, metadata=_doc("port for MX delivery (tests change it)"))
    poll_interval: float = field(
        default=30.0,
        metadata=_doc("seconds between queue scans when nothing wakes the worker"),
    )
    lease: float = field(
        default=300.0,
        metadata=_doc(
            "seconds a worker holds the queue items it took (renewed while it works on "
            "them); a node that died loses its items to the others after this long"
        ),
    )
    bounce_size_limit: int = field(
        default=50_000,
        metadata=_doc(
            "return the whole message in a bounce only up to this size (unless RET=FULL); "
            "larger ones get their headers only"
        ),
    )
    tls_policies: list[TLSPolicy] = field(
        default_factory=list, metadata=_doc("[[queue.tls_policies]]")
    )
    # Shaping (queue/shaping.py): a 421 or a 4xx that asks us to slow down
    throttle_retry: float = field(
        default=60.0,
        metadata=_doc("seconds before a recipient refused with a throttling reply (421, "
                      "'rate limit', 'too many') is tried again (at most: the retry "
                      "schedule's interval if shorter)"),
    )
    throttle_first_delay: float = field(
        default=0.05,
        metadata=_doc("pause between two messages to a destination after its first "
                      "throttling reply (doubled by each further one)"),
    )
    throttle_max_delay: float = field(
        default=30.0, metadata=_doc("longest pause between two messages to a throttling "
                                    "destination"),
    )
    throttle_recover: int = field(
        default=20,
        metadata=_doc("deliveries in a row to a slowed destination before one step back "
                      "to full speed (pause halved, one connection more); a second of "
                      "deliveries without a throttling reply also takes a step"),
    )


def check(queue: QueueConfig, routes: list[Route]) -> list[str]:
    """Validation beyond types: every problem as ``key: problem`` (``pochta.config``
    collects them with the other sections')."""
    problems: list[str] = []

    def ok(cond: bool, key: str, problem: str) -> None:
        if not cond:
            problems.append(f"{key}: {problem}")

    ok(queue.first_retry > 0, "queue.first_retry", "must be positive")
    ok(queue.backoff >= 1, "queue.backoff", "must be at least 1")
    ok(queue.max_retry_interval >= queue.first_retry, "queue.max_retry_interval",
       "must be at least first_retry")
    ok(queue.max_age > 0, "queue.max_age", "must be positive")
    ok(queue.delay_warning >= 0, "queue.delay_warning", "must be 0 or positive")
    for name in ("concurrency", "per_destination", "messages_per_connection"):
        ok(getattr(queue, name) > 0, f"queue.{name}", "must be positive")
    for name in ("connect_timeout", "command_timeout", "data_timeout", "poll_interval"):
        ok(getattr(queue, name) > 0, f"queue.{name}", "must be positive")
    ok(queue.throttle_retry > 0, "queue.throttle_retry", "must be positive")
    ok(0 < queue.throttle_first_delay <= queue.throttle_max_delay,
       "queue.throttle_first_delay", "must be positive and at most throttle_max_delay")
    ok(queue.throttle_recover > 0, "queue.throttle_recover", "must be positive")
    ok(queue.per_destination_rate >= 0, "queue.per_destination_rate", "must be 0 or positive")
    ok(1 <= queue.smtp_port <= 65535, "queue.smtp_port", "must be from 1 to 65535")
    for i, pol in enumerate(queue.tls_policies):
        ok(pol.level in POLICY_LEVELS, f"queue.tls_policies[{i}].level",
           f"must be one of {', '.join(POLICY_LEVELS)}")
        ok(bool(pol.domain), f"queue.tls_policies[{i}].domain", "must not be empty")
    for i, r in enumerate(routes):
        key = f"routes[{i}]"
        ok(bool(r.domain), f"{key}.domain", "must not be empty")
        ok(bool(r.host), f"{key}.host", "must not be empty")
        ok(1 <= r.port <= 65535, f"{key}.port", "must be from 1 to 65535")
        ok(r.tls in ROUTE_TLS, f"{key}.tls", f"must be one of {', '.join(ROUTE_TLS)}")
        ok(not (r.verify and r.tls == "none"), f"{key}.verify", "needs tls other than none")
        ok(bool(r.username) == bool(r.password_file), f"{key}.password_file",
           "username and password_file go together")
        ok(not (r.username and r.tls == "none"), f"{key}.tls",
           "AUTH needs TLS (no passwords in the clear)")
    return problems
