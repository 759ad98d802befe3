"""POP3 session core (RFC 1939, 2449, 2595, 5034, 6856): see ``session``."""

from __future__ import annotations

from pochta.proto.pop3.session import (
    NEED_DATA,
    ApopLogin,
    AuthAborted,
    AuthResponse,
    AuthStart,
    Closed,
    DropMessage,
    Event,
    PasswordLogin,
    Pop3Session,
    ProtocolUsageError,
    Retrieve,
    StartTLS,
    State,
    Update,
    top_of,
)

__all__ = [
    "NEED_DATA",
    "ApopLogin",
    "AuthAborted",
    "AuthResponse",
    "AuthStart",
    "Closed",
    "DropMessage",
    "Event",
    "PasswordLogin",
    "Pop3Session",
    "ProtocolUsageError",
    "Retrieve",
    "StartTLS",
    "State",
    "Update",
    "top_of",
]
