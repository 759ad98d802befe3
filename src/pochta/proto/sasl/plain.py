"""PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login-00): clear-text passwords.

Both end with ``CheckPassword``; the driver verifies the password and decides. Drivers
offer them only on TLS-protected connections (see ``registry.mechanisms_for``).
"""

from __future__ import annotations

from pochta.proto.sasl.base import (
    MAX_FIELD_OCTETS,
    Challenge,
    CheckPassword,
    Failure,
    Mechanism,
    Step,
    decode_utf8,
)
from pochta.proto.sasl.saslprep import SASLprepError, saslprep


def _field(data: bytes, what: str, *, empty_ok: bool = False) -> str | Failure:
    """A decoded UTF-8 field without NUL (RFC 4616 §2: SAFE = UTF8 minus NUL)."""
    if not data and not empty_ok:
        return Failure(f"empty {what}", malformed=True)
    if len(data) > MAX_FIELD_OCTETS:
        return Failure(f"{what} too long", malformed=True)
    if b"\0" in data:
        return Failure(f"NUL in {what}", malformed=True)
    text = decode_utf8(data)
    if text is None:
        return Failure(f"{what} is not UTF-8", malformed=True)
    return text


def _prepare_username(name: str) -> str | Failure:
    try:
        prepared = saslprep(name)
    except SASLprepError as exc:
        return Failure(f"user name: {exc}", malformed=True)
    if not prepared:
        return Failure("empty user name", malformed=True)
    return prepared


class Plain(Mechanism):
    """RFC 4616: message = [authzid] NUL authcid NUL passwd."""

    name = "PLAIN"

    def __init__(self) -> None:
        super().__init__()
        self._started = False

    def start(self, initial_response: bytes | None) -> Step:
        if self._started:
            return self._fail("PLAIN started twice")
        self._started = True
        if initial_response is None:
            # RFC 4616 §2: the server sends an empty challenge when there was no
            # initial response.
            return Challenge(b"")
        return self._message(initial_response)

    def respond(self, data: bytes) -> Step:
        if not self._started or self.done:
            return self._fail("PLAIN response out of sequence")
        return self._message(data)

    def _message(self, data: bytes) -> Step:
        self._done = True
        parts = data.split(b"\0")
        if len(parts) != 3:
            return Failure("PLAIN message needs exactly two NUL separators", malformed=True)
        authzid = _field(parts[0], "authorization identity", empty_ok=True)
        if isinstance(authzid, Failure):
            return authzid
        authcid = _field(parts[1], "authentication identity")
        if isinstance(authcid, Failure):
            return authcid
        password = _field(parts[2], "password")
        if isinstance(password, Failure):
            return password
        username = _prepare_username(authcid)
        if isinstance(username, Failure):
            return username
        # Acting as another user is not supported: the driver checks that the authzid
        # is absent or names the same account.
        return CheckPassword(username, password, authzid)


class Login(Mechanism):
    """LOGIN: challenges "Username:" and "Password:"; the user name may come as the
    initial response (as Outlook and many others send it)."""

    name = "LOGIN"

    def __init__(self) -> None:
        super().__init__()
        self._state = "new"
        self._username = ""

    def start(self, initial_response: bytes | None) -> Step:
        if self._state != "new":
            return self._fail("LOGIN started twice")
        if initial_response is None:
            self._state = "username"
            return Challenge(b"Username:")
        return self._take_username(initial_response)

    def respond(self, data: bytes) -> Step:
        if self.done:
            return self._fail("LOGIN response after the end")
        if self._state == "username":
            return self._take_username(data)
        if self._state == "password":
            self._done = True
            password = _field(data, "password")
            if isinstance(password, Failure):
                return password
            return CheckPassword(self._username, password)
        return self._fail("LOGIN response out of sequence")

    def _take_username(self, data: bytes) -> Step:
        name = _field(data, "user name")
        if isinstance(name, Failure):
            self._done = True
            return name
        prepared = _prepare_username(name)
        if isinstance(prepared, Failure):
            self._done = True
            return prepared
        self._username = prepared
        self._state = "password"
        return Challenge(b"Password:")
