"""The one authentication policy: which SASL mechanisms a connection offers, whether
credentials may cross it yet, and the exchange itself, for SMTP submission, IMAP, POP3
and ManageSieve. The drivers only frame what this decides in their protocol.

The rules, by listener role and TLS state:

========================  ==================  ===============================
listener                  before TLS          under TLS
========================  ==================  ===============================
mta                       no AUTH             no AUTH (RFC 5321: relay only by network)
submission, tls=starttls  no AUTH (530)       SCRAM, PLAIN, LOGIN
submission, tls=none      no AUTH (538)       (no TLS on this listener)
imap/pop3/managesieve,    no AUTH, no LOGIN   SCRAM, PLAIN, LOGIN
tls=starttls              (LOGINDISABLED)
imap/pop3/managesieve,    SCRAM, PLAIN,       (no TLS on this listener)
tls=none                  LOGIN, USER/PASS
any, tls=implicit         (never)             SCRAM, PLAIN, LOGIN
========================  ==================  ===============================

A listener the operator configured without TLS sits behind a TLS proxy or serves local
tests, so IMAP, POP3 and ManageSieve accept passwords on it as they come (``pochta
config-check`` warns). Submission never does: a mail client that submits in clear text is
misconfigured, and ``538 5.7.11`` says so (RFC 4954 §4, RFC 8314 §3). SCRAM-SHA-256-PLUS
joins under TLS when ``[auth] scram_plus`` is on (``sasl_driver.sasl_offer``).

Failures are raised as the error hierarchy's authentication errors (``AuthFailed``,
``AuthMalformed``, ``AuthLockedOut``, ``MechanismNotOffered``, pochta/errors.py), which
carry each protocol's reply.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import AuthConfig
from ..errors import AuthFailed, AuthLockedOut, AuthMalformed, MechanismNotOffered
from ..proto.sasl.base import Challenge
from ..storage.interfaces import Account
from .auth import Authenticator
from .sasl_driver import (
    Authenticated,
    Outcome,
    Rejected,
    SASLDriver,
    SASLOffer,
    TLSChannel,
    sasl_offer,
)

# roles whose listeners without TLS take credentials in clear text (see the table)
_PLAINTEXT_ROLES = frozenset({"imap", "pop3", "managesieve"})
_AUTH_ROLES = _PLAINTEXT_ROLES | {"submission"}


def settle(outcome: Outcome) -> Challenge | Authenticated:
    """A step of the exchange, with a refusal raised as the error that carries its reply."""
    if isinstance(outcome, Rejected):
        if outcome.locked:
            raise AuthLockedOut(outcome.reason)
        if outcome.malformed:
            raise AuthMalformed(outcome.reason)
        raise AuthFailed(outcome.reason)
    return outcome


class SASLExchange:
    """One running SASL exchange: ``start``, then ``respond`` to every ``Challenge``
    until ``Authenticated`` (or an ``AuthError`` is raised)."""

    def __init__(self, driver: SASLDriver) -> None:
        self.driver = driver

    async def start(self, initial_response: bytes | None) -> Challenge | Authenticated:
        return settle(await self.driver.start(initial_response))

    async def respond(self, data: bytes) -> Challenge | Authenticated:
        return settle(await self.driver.respond(data))


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """The policy for one connection: its listener's ``role`` and ``tls`` mode and the
    connection's TLS state (read at each call: it changes with STARTTLS)."""

    config: AuthConfig
    authenticator: Authenticator
    role: str
    listener_tls: str
    conn: TLSChannel
    client_ip: str

    @property
    def offers_auth(self) -> bool:
        """Whether this listener authenticates at all (never on an MTA port)."""
        return self.role in _AUTH_ROLES

    @property
    def plaintext_allowed(self) -> bool:
        """Credentials may be sent on this listener without TLS (the table above)."""
        return self.listener_tls == "none" and self.role in _PLAINTEXT_ROLES

    @property
    def may_authenticate(self) -> bool:
        """Credentials may be sent now: under TLS, or where clear text is allowed."""
        return self.offers_auth and (self.conn.tls_active or self.plaintext_allowed)

    @property
    def tls_first(self) -> bool:
        """Nothing authenticates until STARTTLS/STLS (IMAP's LOGINDISABLED)."""
        return self.offers_auth and not self.may_authenticate

    def offer(self) -> SASLOffer:
        """The mechanisms to advertise now and to accept in AUTH/AUTHENTICATE.

        Submission advertises its mechanisms only under TLS (the SMTP core shows AUTH
        in EHLO under TLS alone, and refuses it before with 530/538), so its offer is
        the one TLS would get; elsewhere nothing is offered until credentials may flow."""
        if not self.offers_auth:
            return SASLOffer(())
        if self.role != "submission" and not self.may_authenticate:
            return SASLOffer(())
        return sasl_offer(self.config, self.conn, allow_plaintext=self.plaintext_allowed)

    def begin(self, mechanism: str, *, final_as_challenge: bool) -> SASLExchange:
        """A SASL exchange for ``mechanism``; ``MechanismNotOffered`` unless on offer.
        ``final_as_challenge``: the protocol's success reply cannot carry SCRAM's
        server-final message, so it goes in a last challenge (SMTP, POP3, IMAP)."""
        if not self.may_authenticate:
            raise MechanismNotOffered(f"{mechanism} before TLS")
        driver = SASLDriver.create(mechanism, self.offer(), self.authenticator,
                                   self.client_ip, final_as_challenge=final_as_challenge)
        if driver is None:
            raise MechanismNotOffered(mechanism)
        return SASLExchange(driver)

    async def login(self, username: str, password: str) -> Account:
        """A plain user name and password (IMAP LOGIN, POP3 USER/PASS)."""
        auth = self.authenticator
        if not await auth.allowed(self.client_ip, username):
            raise AuthLockedOut("locked out")
        account = await auth.check_password(username, password, self.client_ip)
        if account is None:
            raise AuthFailed("invalid credentials")
        return account
