"""API keys as SMTP AUTH credentials on the submission ports, for applications that can
only speak SMTP: ``AUTH PLAIN`` (or LOGIN) with any user name and the API key as the
password. Such a session sends as the key's domain only, and its messages take the
sending layer's path: suppression, per-recipient return paths (VERP), the bulk stream's
headers when ``X-Pochta-Stream: bulk`` says so, DKIM, and the same events as the API.

Two hooks, both installed by ``install``: the authenticator's password check first tries
the password as an API key (SCRAM cannot: no SCRAM keys exist for an API key), and the
SMTP driver hands an API-key session's message to ``submit`` instead of delivering it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..mail.addresses import AddressError, normalize_address, split_address
from ..mail.headers import header_values, split_header
from ..services.submission import from_addresses
from ..storage.interfaces import Account, StoreError
from ..storage.interfaces_sending import ApiKey
from .compose import Outgoing
from .rawtrack import html_rebuilder
from .service import SendingService
from .tokens import split_api_key

if TYPE_CHECKING:
    from ..context import AppContext

log = logging.getLogger("pochta.sending")

API_ACCOUNT_ID = -1  # never a stored account's id


class SMTPKeys:
    def __init__(self, service: SendingService) -> None:
        self.service = service
        self._by_address: dict[str, ApiKey] = {}

    def account_for(self, key: ApiKey) -> Account:
        address = f"{key.key_id}@{key.domain}"
        self._by_address[address] = key
        # may_send_as_anyone: the driver's ownership checks are replaced by submit's
        # domain check (a key owns its domain, not one address)
        return Account(API_ACCOUNT_ID, address, "", may_send_as_anyone=True)

    def key_of(self, account: Account | None) -> ApiKey | None:
        if account is None or account.id != API_ACCOUNT_ID:
            return None
        return self._by_address.get(account.address)

    async def submit(self, account: Account, data: bytes, sender: str,
                     recipients: Sequence[str], client_ip: str) -> tuple[int, str, str]:
        """Send an API-key session's message; the SMTP reply (code, enhanced, text)."""
        key = self.key_of(account)
        assert key is not None
        headers, _ = split_header(data)
        froms = from_addresses(headers)
        try:
            senders = [normalize_address(a) for a in froms]
            envelope_domain = split_address(normalize_address(sender))[1] if sender else ""
        except AddressError:
            return 553, "5.7.1", "Bad From: or MAIL FROM address"
        if len(senders) != 1 or split_address(senders[0])[1] != key.domain:
            return 553, "5.7.1", f"From: must be one address of {key.domain} (API key)"
        if envelope_domain != key.domain:
            return 553, "5.7.1", f"MAIL FROM must be an address of {key.domain} (API key)"
        settings = self.service.settings
        streams = settings.streams_of(key.domain)
        stream = (header_values(headers, "X-Pochta-Stream") or [streams[0]])[0]
        if stream not in streams:
            return 554, "5.6.0", f"X-Pochta-Stream: one of {', '.join(streams)}"
        tags = tuple(t for t in header_values(headers, "X-Pochta-Tag") if t)[:10]
        subject = (header_values(headers, "Subject") or [""])[0]
        out = Outgoing(senders[0], key.domain, list(dict.fromkeys(recipients)), data,
                       subject, stream, tags, rebuild=html_rebuilder(data))  # rawtrack.py
        try:
            [results] = await self.service.send(key, key.domain, [out], client_ip,
                                                authenticated_as=f"smtp:{key.key_id}")
        except StoreError as exc:
            log.error("store failure: %s", exc)
            return 451, "4.3.0", "Temporary storage failure, try again"
        if any(r.status == "failed" for r in results):
            return 451, "4.3.0", "Temporary storage failure, try again"
        ids = ",".join(r.id for r in results)
        return 250, "2.0.0", f"Ok: queued as {ids}"


def install(ctx: AppContext, service: SendingService) -> SMTPKeys:
    """API keys as SMTP AUTH passwords: wraps the authenticator's password check."""
    keys = SMTPKeys(service)
    authenticator = ctx.authenticator
    original = authenticator.check_password

    async def check_password(address: str, password: str, client_ip: str,
                             app_passwords: bool = True) -> Account | None:
        # app_passwords=False: the web login, where API keys do not log in either
        if app_passwords and split_api_key(password) is not None:
            key = await keys.service.authenticate(password)
            if key is not None and "send" in key.scopes:
                log.info("auth ok with API key %s for %s ip=%s", key.key_id, key.domain,
                         client_ip)
                return keys.account_for(key)
        return await original(address, password, client_ip, app_passwords)

    setattr(authenticator, "check_password", check_password)  # noqa: B010
    return keys
