"""Recipient resolution: which accounts (and remote addresses) an address delivers to.

Order, as Postfix's virtual alias maps users expect: an exact alias, an account, the
same two for the address without its ``+tag`` (subaddressing), then the domain's
catch-all alias ``@domain``. Aliases expand recursively (depth-limited, cycle-safe);
a target in a domain we do not host is a remote recipient, and a target ``#public/name``
is a public folder (storage/public.py: a team's shared folder with an address).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..mail.addresses import (
    AddressError,
    base_address,
    domain_key,
    normalize_address,
    split_address,
)
from ..storage.interfaces import Account, MailboxInfo, MailStore
from ..storage.public import FOLDER_TARGET, AmbiguousFolder, is_folder_target, public_folder

MAX_ALIAS_DEPTH = 10
log = logging.getLogger("pochta.directory")


@dataclass
class Resolution:
    local: list[int] = field(default_factory=list)  # account ids, no duplicates
    remote: list[str] = field(default_factory=list)
    system: bool = False  # read by the server itself (bounces to the sending layer's VERP)
    # the accounts as read while resolving (their quota, without another store round trip)
    accounts: dict[int, Account] = field(default_factory=dict)
    # public folders an alias delivers into (who may post there: the MTA checks their
    # ``p`` right, RFC 4314 §2.1)
    folders: list[MailboxInfo] = field(default_factory=list)
    folder_names: list[str] = field(default_factory=list)  # (while expanding)

    def add_local(self, account_id: int) -> None:
        if account_id not in self.local:
            self.local.append(account_id)

    def add_remote(self, address: str) -> None:
        if address not in self.remote:
            self.remote.append(address)


# Which domains are ours changes rarely (`pochta domain add`), and every RCPT asks: the
# answer is kept this many seconds, saving a store round trip per recipient (PostgreSQL).
DOMAIN_CACHE_SECONDS = 5.0


class Directory:
    def __init__(self, store: MailStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._domains: dict[str, tuple[float, bool]] = {}
        # The sending layer's return paths (issue 18): (address, found elsewhere) -> the
        # server reads mail to it itself; DeliveryService.system_sink gets it.
        self.system_recipient: Callable[[str, bool], bool] | None = None

    async def is_local_domain(self, domain: str) -> bool:
        domain = domain_key(domain)
        now = self.clock()
        cached = self._domains.get(domain)
        if cached is not None and now - cached[0] < DOMAIN_CACHE_SECONDS:
            return cached[1]
        local = await self.store.has_domain(domain)
        if len(self._domains) > 10_000:
            self._domains.clear()
        self._domains[domain] = (now, local)
        return local

    async def resolve(self, address: str) -> Resolution | None:
        """Where mail for ``address`` (in a local domain) goes; None if nobody is there."""
        try:
            address = normalize_address(address)
        except AddressError:
            return None
        hook = self.system_recipient
        if hook is not None and hook(address, False):
            return Resolution(system=True)
        result = Resolution()
        found = await self._expand(address, result, depth=0, seen=set())
        if not found and hook is not None and hook(address, True):
            return Resolution(system=True)
        if found and result.folder_names:
            await self._folders(result)
            found = bool(result.local or result.remote or result.folders)
        return result if found else None

    async def _folders(self, result: Resolution) -> None:
        """The public folders the expansion named (a deleted one is skipped)."""
        for name in result.folder_names:
            try:
                box = await public_folder(self.store, name)
            except AmbiguousFolder:
                log.warning("alias target %s%s names several public folders", FOLDER_TARGET,
                            name)
                continue
            if box is not None and all(b.id != box.id for b in result.folders):
                result.folders.append(box)

    async def _expand(self, address: str, result: Resolution, depth: int, seen: set[str]) -> bool:
        if depth and is_folder_target(address):  # (an alias target only, never an RCPT)
            name = address[len(FOLDER_TARGET):]
            if name not in result.folder_names:
                result.folder_names.append(name)
            return True
        try:  # alias targets too: the one normalisation (pochta.mail.addresses)
            address = normalize_address(address)
        except AddressError:
            return bool(result.local or result.remote)
        if address in seen or depth > MAX_ALIAS_DEPTH:
            return bool(result.local or result.remote)
        seen.add(address)
        _, domain = split_address(address)
        if not await self.is_local_domain(domain):
            result.add_remote(address)
            return True
        candidates = [address]
        base = base_address(address)
        if base != address:
            candidates.append(base)
        catch_all = "@" + domain
        # one store round trip for the address, its base and the catch-all; the order
        # below is the rule (an exact alias, an account, then the same for the base)
        found = await self.store.find_addresses([*candidates, catch_all])
        for candidate in candidates:
            alias = found.aliases.get(candidate)
            if alias is not None:
                for target in alias.targets:
                    await self._expand(target, result, depth + 1, seen)
                return True
            account = found.accounts.get(candidate)
            if account is not None and not account.disabled:
                result.add_local(account.id)
                result.accounts[account.id] = account
                return True
        alias = found.aliases.get(catch_all)
        if alias is not None:
            for target in alias.targets:
                await self._expand(target, result, depth + 1, seen)
            return True
        return False

    async def addresses_of(self, account_id: int) -> set[str]:
        """Every address that delivers to the account alone: its own and aliases naming it
        (submission sender ownership, RFC 6409 §8)."""
        account = await self.store.get_account_by_id(account_id)
        if account is None:
            return set()
        owned = {account.address}
        for alias in await self.store.list_aliases():
            if alias.source.startswith("@"):
                continue
            if account.address in alias.targets:
                owned.add(alias.source)
        return owned
