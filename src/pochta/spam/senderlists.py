"""Each account's own allow and block lists of senders: mail from a blocked sender goes
to the account's Junk (``$Junk``) whatever the filters say; mail from an allowed sender
stays out of Junk when the filters would have put it there.

A pattern is an address (``news@shop.example``) or ``@domain`` (the domain and its
subdomains). It is matched against the From addresses (what the user sees) and, for
blocking, the envelope sender too. The most specific matching pattern decides (an
address over a domain, a longer domain over a shorter); at equal specificity, block.

An allowed From counts only when it is proven (``from_authenticated``): DMARC passes for
its domain, or, without a DMARC record, SPF or DKIM passes in its domain. A spammer may
write any From, and an allow list that trusted it would be the way around every filter
(SpamAssassin's ``whitelist_auth``, not ``whitelist_from``). Allow lists keep mail out
of Junk; they do not undo a refusal at SMTP time (a virus, a DNS list, rspamd's reject),
which comes before any recipient's list is read.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Sequence

from ..policy.dmarc import aligned as dmarc_aligned
from ..policy.inbound import InboundVerdict
from ..storage.interfaces import MailStore
from ..storage.interfaces_spam import SenderRule

ALLOW, BLOCK = "allow", "block"
ACTIONS = (ALLOW, BLOCK)
MAX_PATTERN = 320
# a local part of atext (RFC 5322 §3.2.3, UTF-8 letters too: RFC 6531) and a host name
_PATTERN = re.compile(r"[\w!#$%&'*+/=?^`{|}~.-]*@[\w-]+(?:\.[\w-]+)*\Z")
CACHE_SECONDS = 30.0  # a list changed in another process counts within this
CACHE_ENTRIES = 10_000


class BadPattern(ValueError):
    """Not an address or @domain."""


def normalize_pattern(value: str) -> str:
    """``Bob@Example.COM`` -> ``bob@example.com``; ``example.com`` -> ``@example.com``."""
    pattern = value.strip().lower()
    if pattern and "@" not in pattern:
        pattern = "@" + pattern
    pattern = pattern.rstrip(".")
    if len(pattern) > MAX_PATTERN or not _PATTERN.match(pattern):
        raise BadPattern(f"{value!r} is not an address or @domain")
    return pattern


def _specificity(pattern: str, address: str) -> int:
    """How closely ``pattern`` names ``address``: 0 for not at all, else higher for
    closer (an address beats every domain, a subdomain beats its parent)."""
    address = address.lower()
    if not pattern.startswith("@"):
        return 10_000 if address == pattern else 0
    domain, wanted = address.rpartition("@")[2], pattern[1:]
    if domain == wanted or domain.endswith("." + wanted):
        return 1 + wanted.count(".")
    return 0


def decide(rules: Sequence[SenderRule], from_addresses: Sequence[str], sender: str,
           from_proven: bool) -> str | None:
    """``block``, ``allow`` or None (the filters decide) for one account's ``rules``."""
    best: tuple[int, int, str] | None = None  # (specificity, block first, action)
    for rule in rules:
        candidates = list(from_addresses) + ([sender] if sender else [])
        if rule.action == ALLOW:
            if not from_proven:
                continue
            candidates = list(from_addresses)  # the envelope sender is nobody's name
        score = max((_specificity(rule.pattern, a) for a in candidates), default=0)
        if not score:
            continue
        key = (score, 1 if rule.action == BLOCK else 0, rule.action)
        if best is None or key > best:
            best = key
    return None if best is None else best[2]


def from_addresses(head: bytes) -> list[str]:
    """The addresses of the From field(s) of a header block, lower case."""
    values: list[str] = []
    for line in re.findall(rb"(?im)^from:((?:[^\r\n]*)(?:\r?\n[ \t][^\r\n]*)*)", head):
        values.append(line.decode("utf-8", "replace").replace("\r\n", " ").replace("\n", " "))
    return [addr.lower() for _, addr in email.utils.getaddresses(values) if "@" in addr]


def from_authenticated(verdict: InboundVerdict | None, from_domain: str) -> bool:
    """Whether the From domain is proven: DMARC passed for it (RFC 7489 §4.2), or, where
    the domain publishes no DMARC record or DMARC is not checked, a passing DKIM
    signature or SPF check in the same organisational branch (relaxed alignment, §3.1)."""
    if verdict is None or not from_domain:
        return False
    dmarc = verdict.dmarc
    if dmarc is not None and dmarc.result != "none":
        return dmarc.result == "pass" and dmarc.from_domain == from_domain

    def aligned(domain: str) -> bool:
        return bool(domain) and dmarc_aligned(domain.lower(), from_domain, "r")

    if any(d.result == "pass" and aligned(d.domain) for d in verdict.dkim):
        return True
    return verdict.spf is not None and verdict.spf.result == "pass" and aligned(
        verdict.spf.domain)

class SenderLists:
    """The lists of the accounts a message is for, read from the store at most every
    ``CACHE_SECONDS`` per account (one query per message would cost every delivery)."""

    def __init__(self, store: MailStore, ttl: float = CACHE_SECONDS) -> None:
        self.store = store
        self.ttl = ttl
        self._cache: dict[int, tuple[float, list[SenderRule]]] = {}

    async def rules(self, account_ids: Sequence[int]) -> dict[int, list[SenderRule]]:
        now = time.monotonic()
        out: dict[int, list[SenderRule]] = {}
        missing = []
        for account_id in dict.fromkeys(account_ids):
            hit = self._cache.get(account_id)
            if hit is not None and hit[0] > now:
                if hit[1]:
                    out[account_id] = hit[1]
            else:
                missing.append(account_id)
        if missing:
            found = await self.store.sender_rules(missing)
            if len(self._cache) > CACHE_ENTRIES:
                self._cache.clear()
            for account_id in missing:
                rules = found.get(account_id, [])
                self._cache[account_id] = (now + self.ttl, rules)
                if rules:
                    out[account_id] = rules
        return out

    async def set(self, account_id: int, pattern: str, action: str | None) -> bool:
        """Change a list (``normalize_pattern`` first); this process sees it at once."""
        if action is not None and action not in ACTIONS:
            raise ValueError(f"action must be allow or block, not {action!r}")
        changed = await self.store.set_sender_rule(account_id, pattern, action)
        self._cache.pop(account_id, None)
        return changed
