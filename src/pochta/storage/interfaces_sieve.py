"""The Sieve part of the storage contract: each account's scripts (one of them active) and
the memory of the vacation and duplicate extensions (RFC 5230 §4.2, RFC 7352).

Script names are compared exactly (ManageSieve, RFC 5804 §1.6: names are UTF-8 strings,
case-sensitive). A backend implements ``SieveStore`` beside the rest of ``MailStore``;
tests/storage/test_sieve_store.py holds every backend to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import ScriptActive as ScriptActive  # re-exported: part of the contract


@dataclass(frozen=True, slots=True)
class SieveScriptInfo:
    name: str
    active: bool
    size: int  # bytes of the UTF-8 source


class SieveStore(Protocol):
    async def put_sieve_script(self, account_id: int, name: str, source: str) -> None:
        """Create or replace a script (an active one stays active)."""

    async def get_sieve_script(self, account_id: int, name: str) -> str | None: ...

    async def list_sieve_scripts(self, account_id: int) -> list[SieveScriptInfo]:
        """Every script of the account, by name."""

    async def delete_sieve_script(self, account_id: int, name: str) -> None:
        """Raises ``NotFound``, or ``ScriptActive`` for the active script."""

    async def rename_sieve_script(self, account_id: int, old: str, new: str) -> None:
        """Raises ``NotFound`` (no ``old``) or ``AlreadyExists`` (``new`` is taken); the
        active script stays active under its new name."""

    async def set_active_sieve_script(self, account_id: int, name: str | None) -> None:
        """Make ``name`` the one active script; None deactivates all. Raises ``NotFound``."""

    async def get_active_sieve_script(self, account_id: int) -> tuple[str, str] | None:
        """(name, source) of the active script, or None."""

    async def remember_once(self, key: str, ttl: float, now: float | None = None) -> bool:
        """Record ``key`` for ``ttl`` seconds; True if it was not already recorded (and
        unexpired), False otherwise. Atomic across processes: of two concurrent callers
        exactly one gets True (a vacation reply is sent once)."""

    async def is_remembered(self, key: str, now: float | None = None) -> bool:
        """Whether ``key`` is recorded and unexpired (the duplicate test)."""
