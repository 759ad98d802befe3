"""The spam-defence part of the storage contract: greylisting triplets, the per-account
learning filter's token counts, and held accounts (compromised-account defence).

Every backend implements it (``SpamStore`` is one of ``MailStore``'s bases); the
conformance tests in ``tests/storage/test_spam_store.py`` hold each backend to it. State
lives in the store so that it survives restarts and is shared by every process and node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class GreyEntry:
    """One greylisting triplet (client network, sender, recipient)."""

    first_seen: float
    last_seen: float
    passed: bool  # the client came back after the delay and was accepted


@dataclass(frozen=True, slots=True)
class AccountHold:
    """An account whose outbound mail is held (submissions refused, queue held)."""

    address: str
    reason: str
    since: float


@dataclass(frozen=True, slots=True)
class SenderRule:
    """One entry of an account's own allow or block list (spam/senderlists.py):
    ``pattern`` is an address or ``@domain`` (that domain and its subdomains)."""

    pattern: str
    action: str  # "allow" or "block"


class SpamStore(Protocol):
    # --- greylisting (like postgrey) ---------------------------------------------------
    async def greylist_touch(self, triplet: str, now: float, stale_before: float) -> GreyEntry:
        """The triplet's entry, created (``first_seen = now``) when absent or when it was
        last seen before ``stale_before`` and never passed (the sender gave up; start
        over); ``last_seen`` becomes ``now``. Atomic: two nodes seeing one triplet at once
        get one ``first_seen``."""

    async def greylist_pass(self, triplet: str, client: str, now: float) -> int:
        """Mark the triplet passed. The first time a triplet passes, the client network
        gets one more pass; returns the client's passes."""

    async def greylist_client_passes(self, client: str, not_before: float) -> int:
        """The client's passes, or 0 when its last pass was before ``not_before``."""

    async def greylist_purge(self, before: float) -> int:
        """Forget triplets last seen before ``before``; returns how many."""

    # --- the learning filter (per account) ---------------------------------------------
    async def bayes_totals(self, account_id: int) -> tuple[int, int]:
        """(spam, ham) messages the account's filter has learnt."""

    async def bayes_tokens(
        self, account_id: int, tokens: Sequence[str]
    ) -> dict[str, tuple[int, int]]:
        """(spam, ham) counts of the given tokens; unknown tokens are left out."""

    async def bayes_train(
        self, account_id: int, message_key: str, tokens: Sequence[str], spam: bool
    ) -> bool:
        """Learn one message (``message_key``: a digest of its bytes; ``tokens``: its
        distinct tokens) as spam or ham. Learnt before as the other class: unlearnt from it
        first. Learnt before as the same class: nothing changes and False is returned."""

    async def bayes_forget(self, account_id: int) -> None:
        """Drop everything the account's filter learnt."""

    # what training from mailbox moves needs (spam/training.py)
    async def mailbox_owner(self, mailbox_id: int) -> tuple[int, str | None] | None:
        """(account id, special use such as ``\\Junk`` or None) of a mailbox."""

    async def message_blobs(self, mailbox_id: int, uids: Sequence[int]) -> dict[int, int]:
        """uid -> blob id of those of ``uids`` that are in the mailbox."""

    # --- held accounts ------------------------------------------------------------------
    async def hold_account(self, address: str, reason: str, now: float) -> bool:
        """Hold the account's outbound mail; False when it was already held."""

    async def account_hold(self, address: str) -> AccountHold | None: ...

    async def release_account(self, address: str) -> bool:
        """Lift the hold; False when the account was not held."""

    async def list_holds(self) -> list[AccountHold]: ...

    # --- per-account allow and block lists of senders ---------------------------------
    async def sender_rules(self, account_ids: Sequence[int]) -> dict[int, list[SenderRule]]:
        """The lists of these accounts, by pattern; accounts without one are left out."""
    async def set_sender_rule(self, account_id: int, pattern: str, action: str | None
                              ) -> bool:
        """Allow or block ``pattern`` (``action``), or take it off the list (None: False
        when it was not there). A pattern is on one list at a time."""
