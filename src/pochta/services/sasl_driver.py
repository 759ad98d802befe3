"""Runs a sans-IO SASL mechanism against the Authenticator; shared by SMTP, IMAP, POP3.

The authentication policy (services/auth_policy.py ``AuthPolicy``) creates a ``SASLDriver``
for ``AUTH``/``AUTHENTICATE`` and feeds it the decoded client data; its ``Rejected``
outcomes become errors of the hierarchy (``AuthFailed``, ``AuthLockedOut``...) that carry
each protocol's reply. ``sasl_offer`` computes the mechanisms for a TLS state once the
policy has decided that credentials may flow, and ``SASLDriver.create`` refuses any
mechanism that was not offered.

SCRAM-SHA-256-PLUS is offered only when ``[auth] scram_plus`` is on (default off) and the
TLS connection can supply a channel binding. Reason: clients pick the strongest mechanism
on offer, and not all of them can do -PLUS on every connection. Debian 12's mutt (gsasl
2.x) picks -PLUS over TLS 1.3, cannot hand gsasl the tls-exporter data (RFC 9266) and
then fails ("SASL authentication failed") without trying another mechanism, so it could
not send at all. Plain SCRAM-SHA-256 still never reveals the password; -PLUS adds
protection against a TLS man-in-the-middle that holds a certificate the client trusts.

When -PLUS is not offered, SCRAM-SHA-256 is built without binding data: a client that
could bind sends the gs2 flag "y" ("I could, but you don't offer it"), and RFC 5802 §6
lets the server fail that only if it did advertise -PLUS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..addresses import same_account
from ..config import AuthConfig
from ..proto.sasl.base import (
    Challenge,
    ChannelBinding,
    CheckPassword,
    Failure,
    Mechanism,
    NeedScramCredentials,
    Step,
    Success,
)
from ..proto.sasl.registry import mechanisms_for, new_mechanism
from ..storage.interfaces import Account
from .auth import Authenticator


@dataclass(frozen=True, slots=True)
class Authenticated:
    account: Account
    server_final: bytes | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    malformed: bool = False
    locked: bool = False


Outcome = Challenge | Authenticated | Rejected


class TLSChannel(Protocol):
    """What the offer needs from a connection (server/listener.py ``Connection``)."""

    @property
    def tls_active(self) -> bool: ...

    def channel_bindings(self) -> tuple[ChannelBinding, ...]: ...


@dataclass(frozen=True, slots=True)
class SASLOffer:
    """The mechanisms one connection offers now, and the binding data behind -PLUS
    (None when -PLUS is not offered)."""

    mechanisms: tuple[str, ...]
    bindings: tuple[ChannelBinding, ...] | None = None


def sasl_offer(config: AuthConfig, conn: TLSChannel, *, allow_plaintext: bool) -> SASLOffer:
    """The one place that decides what SMTP AUTH, IMAP AUTHENTICATE and POP3 AUTH offer.

    ``allow_plaintext``: PLAIN/LOGIN may be offered without TLS (a listener configured
    without TLS). The channel binding is not even computed when -PLUS is off."""
    bindings: tuple[ChannelBinding, ...] | None = None
    if config.scram_plus and conn.tls_active:
        bindings = conn.channel_bindings() or None
    names = mechanisms_for(conn.tls_active, bindings is not None,
                           allow_plaintext=allow_plaintext)
    return SASLOffer(names, bindings)


class SASLDriver:
    def __init__(
        self,
        mechanism: Mechanism,
        authenticator: Authenticator,
        client_ip: str,
    ) -> None:
        self.mechanism = mechanism
        self.authenticator = authenticator
        self.client_ip = client_ip
        self._scram_user: str | None = None

    @classmethod
    def create(
        cls,
        name: str,
        offer: SASLOffer,
        authenticator: Authenticator,
        client_ip: str,
        final_as_challenge: bool = False,
    ) -> SASLDriver | None:
        """A driver for ``name`` if ``offer`` includes it (case-insensitive), else None."""
        if name.upper() not in offer.mechanisms:
            return None
        mech = new_mechanism(
            name, channel_binding=offer.bindings, final_as_challenge=final_as_challenge
        )
        return None if mech is None else cls(mech, authenticator, client_ip)

    async def start(self, initial_response: bytes | None) -> Outcome:
        if not await self.authenticator.allowed(self.client_ip):
            return Rejected("locked out", locked=True)
        return await self._advance(self.mechanism.start(initial_response))

    async def respond(self, data: bytes) -> Outcome:
        return await self._advance(self.mechanism.respond(data))

    async def _advance(self, step: Step) -> Outcome:
        if isinstance(step, (NeedScramCredentials, CheckPassword)) and step.authzid and (
            not same_account(step.authzid, step.username)
        ):
            # Acting as another user is not supported (RFC 4616 §2, RFC 5802 §5.1 "a=").
            await self.authenticator.register_failure(self.client_ip, step.username, "authzid")
            return Rejected("authorization identity differs from authentication identity")
        if isinstance(step, NeedScramCredentials):
            if not await self.authenticator.allowed(self.client_ip, step.username):
                return Rejected("locked out", locked=True)
            # one guess in flight, like a password check (parallel exchanges)
            if not await self.authenticator.begin_scram(step.username, self.client_ip):
                return Rejected("locked out", locked=True)
            self._scram_user = step.username
            keys = await self.authenticator.scram_credentials(step.username)
            step = self.mechanism.provide(keys)
        if isinstance(step, Challenge):
            return step
        if isinstance(step, CheckPassword):
            if not await self.authenticator.allowed(self.client_ip, step.username):
                return Rejected("locked out", locked=True)
            account = await self.authenticator.check_password(
                step.username, step.password, self.client_ip
            )
            return Authenticated(account) if account else Rejected("invalid credentials")
        if isinstance(step, Success):
            account = await self.authenticator.finish_scram(step.username, self.client_ip, True)
            if account is None:
                return Rejected("invalid credentials")
            return Authenticated(account, step.server_final)
        assert isinstance(step, Failure)
        if self._scram_user is not None:
            await self.authenticator.finish_scram(self._scram_user, self.client_ip, False)
        else:
            await self.authenticator.register_failure(self.client_ip, None, step.reason)
        return Rejected(step.reason, malformed=step.malformed)
