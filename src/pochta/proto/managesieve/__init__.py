"""ManageSieve server session core (RFC 5804): see ``session``."""

from __future__ import annotations

from .session import (
    NEED_DATA,
    Authenticate,
    AuthResponse,
    Capabilities,
    CheckScript,
    Closed,
    DeleteScript,
    Event,
    GetScript,
    HaveSpace,
    ListScripts,
    ManageSieveSession,
    ProtocolUsageError,
    PutScript,
    RenameScript,
    SetActive,
    StartTLS,
    State,
    Unauthenticate,
    quote,
)

__all__ = [
    "NEED_DATA", "AuthResponse", "Authenticate", "Capabilities", "CheckScript", "Closed",
    "DeleteScript", "Event", "GetScript", "HaveSpace", "ListScripts", "ManageSieveSession",
    "ProtocolUsageError", "PutScript", "RenameScript", "SetActive", "StartTLS", "State",
    "Unauthenticate", "quote",
]
