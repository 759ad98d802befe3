"""Runs a sans-IO SASL mechanism against the Authenticator; shared by SMTP, IMAP, POP3.

A protocol front-end creates a ``SASLDriver`` for ``AUTH``/``AUTHENTICATE``, feeds it the
decoded client data, and maps the outcome to its own replies:
``Challenge`` -> 334 / "+ ", ``Authenticated`` -> success, ``Rejected`` -> failure
(``locked`` tells it to answer with the temporary lockout reply instead).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..proto.sasl.base import (
    Bindings,
    Challenge,
    CheckPassword,
    Failure,
    Mechanism,
    NeedScramCredentials,
    Step,
    Success,
)
from ..proto.sasl.registry import new_mechanism
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
        authenticator: Authenticator,
        client_ip: str,
        channel_binding: Bindings | None = None,
        final_as_challenge: bool = False,
    ) -> SASLDriver | None:
        mech = new_mechanism(
            name, channel_binding=channel_binding, final_as_challenge=final_as_challenge
        )
        return None if mech is None else cls(mech, authenticator, client_ip)

    async def start(self, initial_response: bytes | None) -> Outcome:
        if not await self.authenticator.allowed(self.client_ip):
            return Rejected("locked out", locked=True)
        return await self._advance(self.mechanism.start(initial_response))

    async def respond(self, data: bytes) -> Outcome:
        return await self._advance(self.mechanism.respond(data))

    async def _advance(self, step: Step) -> Outcome:
        if isinstance(step, NeedScramCredentials):
            self._scram_user = step.username
            if not await self.authenticator.allowed(self.client_ip, step.username):
                return Rejected("locked out", locked=True)
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
