"""The recipient directory with SRS: RCPT TO an SRS address of ours (a bounce to mail we
forwarded) resolves to the address it wraps; the SRS domain counts as one of ours."""

from __future__ import annotations

from pochta.mail.addresses import domain_key
from pochta.services.directory import Directory, Resolution
from pochta.storage.interfaces import MailStore
from pochta.transport_security.srs import SRS


class SRSDirectory(Directory):
    """``forwarding``: the queue rewrites every forwarded message (``srs`` is what it
    looks for); False: only the senders of Sieve redirects are rewritten (by Sieve), and
    this directory only takes their bounces back."""

    def __init__(self, store: MailStore, srs: SRS, forwarding: bool = True) -> None:
        super().__init__(store)
        self.srs: SRS | None = srs if forwarding else None
        self.reverser = srs

    async def is_local_domain(self, domain: str) -> bool:
        if domain_key(domain) == self.reverser.domain:
            return True
        return await super().is_local_domain(domain)

    async def resolve(self, address: str) -> Resolution | None:
        original = self.reverser.reverse(address)
        if original is not None:
            return Resolution(remote=[original])
        return await super().resolve(address)
