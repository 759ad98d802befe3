"""Configuration sections ``[screening]``, ``[greylist]``, ``[spam]`` and ``[abuse]``.

Frozen dataclasses with a ``doc`` per field, embedded in ``pochta.config.Config`` like the
policy sections. Postfix parameter names are given where the idea comes from Postfix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class ScreeningConfig:
    dnsbl_sites: list[str] = field(
        default_factory=list,
        metadata=_doc(
            'DNS blocklists, postscreen_dnsbl_sites syntax: "zone", "zone*weight" or '
            '"zone=127.0.0.[2..11]*weight" (which answers count); none by default'),
    )
    dnswl_sites: list[str] = field(
        default_factory=list,
        metadata=_doc(
            "DNS allowlists, same syntax: a hit skips the later tests (blocklists, pregreet, "
            "HELO, rDNS, greylisting)"),
    )
    dnsbl_threshold: float = field(
        default=1.0,
        metadata=_doc("summed blocklist weight at which the client is refused with 554 5.7.1 "
                      "(postscreen_dnsbl_threshold)"),
    )
    dnsbl_action: str = field(
        default="reject",
        metadata=_doc("reject (554 5.7.1 and close) or score (note it in the headers only)"),
    )
    dnsbl_cache_ttl: float = field(
        default=3600.0,
        metadata=_doc("longest time a blocklist answer is cached (the record's TTL when "
                      "shorter; negative answers likewise)"),
    )
    pregreet_wait: float = field(
        default=0.0,
        metadata=_doc("seconds to wait before the banner; a client that talks first is "
                      "refused with 554 5.5.1 (postscreen_greet_wait; 0: off)"),
    )
    pregreet_ttl: float = field(
        default=86400.0,
        metadata=_doc("a client that waited is not tested again for this long "
                      "(postscreen_greet_ttl)"),
    )
    helo_checks: bool = field(
        default=True,
        metadata=_doc("score a HELO name that is not a valid host name or address literal, "
                      "or that names this server or one of its addresses"),
    )
    helo_resolve: bool = field(
        default=False,
        metadata=_doc("also score a HELO name that has no A/AAAA record (a DNS lookup)"),
    )
    fcrdns: bool = field(
        default=False,
        metadata=_doc("check forward-confirmed reverse DNS of the client (iprev, RFC 8601 "
                      "2.7.3) and score a failure (two DNS lookups per new client)"),
    )
    fcrdns_weight: float = field(default=1.0, metadata=_doc("score of an FCrDNS failure"))
    helo_weight: float = field(default=1.0, metadata=_doc("score of each failed HELO check"))
    reject_score: float = field(
        default=0.0,
        metadata=_doc("total screening score (blocklists, HELO, rDNS) refused at MAIL FROM "
                      "with 550 5.7.1 (0: never; the score is only shown in X-Spam-Screening)"),
    )
    connection_rate_limit: int = field(
        default=0,
        metadata=_doc("connections per client IP per rate_window on the mta role, over all "
                      "processes and nodes (smtpd_client_connection_rate_limit; 0: no limit)"),
    )
    message_rate_limit: int = field(
        default=0,
        metadata=_doc("messages (MAIL FROM) per client IP per rate_window on the mta role "
                      "(smtpd_client_message_rate_limit; 0: no limit)"),
    )
    rate_window: float = field(
        default=60.0, metadata=_doc("seconds of the rate limits (anvil_rate_time_unit)")
    )


@dataclass(frozen=True)
class GreylistConfig:
    enabled: bool = field(
        default=False,
        metadata=_doc("greylist unknown (client network, sender, recipient) triplets with "
                      "451 4.7.1 (like postgrey)"),
    )
    delay: float = field(default=300.0, metadata=_doc("seconds before a retry is accepted"))
    retry_window: float = field(
        default=172800.0,
        metadata=_doc("seconds after the first attempt during which a retry passes; later, "
                      "the triplet starts over"),
    )
    max_age: float = field(
        default=3024000.0,
        metadata=_doc("seconds a passed triplet and an allowlisted client are remembered "
                      "(35 days)"),
    )
    auto_allowlist: int = field(
        default=5,
        metadata=_doc("a client network that passed this many triplets is no longer "
                      "greylisted (0: never)"),
    )
    ipv4_prefix: int = field(default=24, metadata=_doc("client network size for IPv4"))
    ipv6_prefix: int = field(default=64, metadata=_doc("client network size for IPv6"))
    exempt_spf_pass: bool = field(
        default=False,
        metadata=_doc("do not greylist when the sender's SPF passes (one SPF check at RCPT)"),
    )


@dataclass(frozen=True)
class SpamConfig:
    bayes: bool = field(
        default=True,
        metadata=_doc("the learning filter: each account's own statistics, learnt from what "
                      "the user moves into and out of Junk; acts only after bayes_min_trained"),
    )
    bayes_min_trained: int = field(
        default=20,
        metadata=_doc("messages of each class (spam and ham) learnt before the filter acts"),
    )
    bayes_junk_threshold: float = field(
        default=0.95, metadata=_doc("spam probability at which mail is filed to Junk ($Junk)")
    )
    bayes_reject_threshold: float = field(
        default=0.0,
        metadata=_doc("spam probability refused at DATA with 550 5.7.1 when every local "
                      "recipient's filter reaches it (0: never)"),
    )
    junk_mailbox: str = field(default="Junk", metadata=_doc("where spam is filed"))
    rspamd: str = field(
        default="",
        metadata=_doc('rspamd\'s normal worker, e.g. "http://127.0.0.1:11333" (HTTP /checkv2); '
                      "empty: not used"),
    )
    rspamd_controller: str = field(
        default="",
        metadata=_doc('rspamd\'s controller for learnspam/learnham, e.g. '
                      '"http://127.0.0.1:11334"; empty: Junk moves do not train rspamd'),
    )
    rspamd_password: str = field(
        default="", metadata=_doc("controller password (the Password: header), if any")
    )
    rspamd_timeout: float = field(default=15.0, metadata=_doc("seconds to wait for rspamd"))
    rspamd_failure: str = field(
        default="accept",
        metadata=_doc("when rspamd does not answer: accept (log and count) or tempfail (451)"),
    )
    clamd: str = field(
        default="",
        metadata=_doc('clamd\'s socket, e.g. "/run/clamav/clamd.ctl" or "tcp://127.0.0.1:3310"; '
                      "infected mail is refused at DATA (554 5.7.1); empty: not used"),
    )
    clamd_timeout: float = field(default=30.0, metadata=_doc("seconds to wait for clamd"))
    clamd_failure: str = field(
        default="tempfail",
        metadata=_doc("when clamd does not answer: tempfail (451 4.7.1) or accept (log)"),
    )
    rhsbl_sites: list[str] = field(
        default_factory=list,
        metadata=_doc('DNS lists of domains asked about the sender\'s domains (envelope and '
                      'From), DNS list syntax: e.g. "dbl.spamhaus.org=127.0.1.[2..99]"; check '
                      "each list's terms of use (empty: none)"),
    )
    uribl_sites: list[str] = field(
        default_factory=list,
        metadata=_doc('DNS lists of domains asked about the links in the text, e.g. '
                      '"multi.surbl.org" (empty: none)'),
    )
    domain_list_threshold: float = field(
        default=1.0,
        metadata=_doc("sum of the weights of the domain lists that list the message at "
                      "which domain_list_action applies"),
    )
    domain_list_action: str = field(
        default="junk",
        metadata=_doc("junk (file to Junk with $Junk) or reject (550 5.7.1 at DATA)"),
    )


@dataclass(frozen=True)
class AbuseConfig:
    enabled: bool = field(
        default=True,
        metadata=_doc("hold an account whose outbound volume or bounces look compromised "
                      "(counts shared by every process and node)"),
    )
    window: float = field(default=3600.0, metadata=_doc("seconds over which volume is counted"))
    max_messages: int = field(
        default=1000, metadata=_doc("messages submitted per window before a hold")
    )
    max_recipients: int = field(
        default=2000, metadata=_doc("recipients submitted per window before a hold")
    )
    max_bounces: int = field(
        default=50,
        metadata=_doc("bounced recipients per window before a hold (with max_bounce_ratio)"),
    )
    max_bounce_ratio: float = field(
        default=0.3,
        metadata=_doc("bounced recipients / submitted recipients in the window at or over "
                      "which max_bounces holds the account"),
    )
    hold_queue: bool = field(
        default=True,
        metadata=_doc("also hold the account's mail already queued (released with it)"),
    )
    notify: str = field(
        default="",
        metadata=_doc("who is told of a hold; empty: postmaster@ the account's domain"),
    )


_SITE = re.compile(r"^([A-Za-z0-9.-]+)(?:=([0-9.\[\];]+))?(?:\*(-?[0-9.]+))?$")


def check_site(site: str) -> str | None:
    if not _SITE.match(site):
        return 'expected "zone", "zone*weight" or "zone=127.0.0.[2..11]*weight"'
    return None


def validate(screen: ScreeningConfig, grey: GreylistConfig, spam: SpamConfig,
             abuse: AbuseConfig) -> list[str]:
    problems: list[str] = []
    for key, sites in (("screening.dnsbl_sites", screen.dnsbl_sites),
                       ("screening.dnswl_sites", screen.dnswl_sites),
                       ("spam.rhsbl_sites", spam.rhsbl_sites),
                       ("spam.uribl_sites", spam.uribl_sites)):
        for i, site in enumerate(sites):
            why = check_site(site)
            if why:
                problems.append(f"{key}[{i}]: {site!r}: {why}")
    if screen.dnsbl_action not in ("reject", "score"):
        problems.append("screening.dnsbl_action: reject or score")
    for name in ("pregreet_wait", "dnsbl_cache_ttl", "rate_window"):
        if getattr(screen, name) < 0:
            problems.append(f"screening.{name}: must be >= 0")
    if not 8 <= grey.ipv4_prefix <= 32:
        problems.append("greylist.ipv4_prefix: from 8 to 32")
    if not 16 <= grey.ipv6_prefix <= 128:
        problems.append("greylist.ipv6_prefix: from 16 to 128")
    if grey.delay < 0 or grey.retry_window <= grey.delay:
        problems.append("greylist.retry_window: must be longer than greylist.delay")
    if not 0 < spam.bayes_junk_threshold <= 1:
        problems.append("spam.bayes_junk_threshold: between 0 and 1")
    if not 0 <= spam.bayes_reject_threshold <= 1:
        problems.append("spam.bayes_reject_threshold: between 0 and 1 (0: off)")
    if spam.domain_list_action not in ("junk", "reject"):
        problems.append("spam.domain_list_action: junk or reject")
    if spam.domain_list_threshold <= 0:
        problems.append("spam.domain_list_threshold: must be > 0")
    if spam.clamd_failure not in ("accept", "tempfail"):
        problems.append("spam.clamd_failure: accept or tempfail")
    if spam.rspamd_failure not in ("accept", "tempfail"):
        problems.append("spam.rspamd_failure: accept or tempfail")
    for key in ("rspamd", "rspamd_controller"):
        url = getattr(spam, key)
        if url and (urlsplit(url).scheme != "http" or not urlsplit(url).hostname):
            problems.append(f"spam.{key}: expected http://host:port")
    if abuse.window <= 0:
        problems.append("abuse.window: must be positive")
    return problems
