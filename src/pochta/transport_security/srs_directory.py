"""The recipient directory with SRS: RCPT TO an SRS address of ours (a bounce to mail we
forwarded) resolves to the address it wraps; the SRS domain counts as one of ours."""

from __future__ import annotations

from pochta.mail.addresses import domain_key
from pochta.services.directory import Directory, Resolution
from pochta.storage.interfaces import MailStore
from pochta.transport_security.srs import SRS


class SRSDirectory(Directory):
    def __init__(self, store: MailStore, srs: SRS) -> None:
        super().__init__(store)
        self.srs = srs

    async def is_local_domain(self, domain: str) -> bool:
        if domain_key(domain) == self.srs.domain:
            return True
        return await super().is_local_domain(domain)

    async def resolve(self, address: str) -> Resolution | None:
        original = self.srs.reverse(address)
        if original is not None:
            return Resolution(remote=[original])
        return await super().resolve(address)
