"""The web layer's part of the storage contract (issue 19): web admin accounts and the
sessions of the web admin and self-service pages.

* An *admin* is a web-only account (``pochta admin add NAME``), not a mail account: its
  name is not an address and it cannot log in to IMAP or SMTP. Its password is an argon2id
  hash (pochta/passwords.py), like a mail account's.
* A *session* is kept in the store, so that every worker process (``--workers``) and a
  restart see it. The store keeps the SHA-256 of the cookie's secret, never the secret: a
  leaked database gives no session away. ``principal`` says who it belongs to:
  ``admin:NAME`` or ``user:ADDRESS``; ``csrf`` is the session's anti-CSRF token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class AdminAccount:
    name: str
    password_hash: str
    created: float


@dataclass(frozen=True, slots=True)
class WebSession:
    id_hash: bytes  # SHA-256 of the cookie value
    principal: str  # "admin:NAME" or "user:ADDRESS"
    csrf: str
    created: float
    expires: float


class WebStore(Protocol):
    async def add_admin(self, name: str, password_hash: str, created: float) -> None:
        """Raises ``AlreadyExists``."""

    async def get_admin(self, name: str) -> AdminAccount | None: ...
    async def list_admins(self) -> list[AdminAccount]: ...

    async def set_admin_password(self, name: str, password_hash: str) -> None:
        """Raises ``NotFound``; the admin's sessions are ended."""

    async def remove_admin(self, name: str) -> None:
        """Raises ``NotFound``; the admin's sessions are ended."""

    async def create_web_session(self, session: WebSession) -> None: ...

    async def get_web_session(self, id_hash: bytes, now: float) -> WebSession | None:
        """The session if it exists and has not expired at ``now``."""

    async def delete_web_session(self, id_hash: bytes) -> None: ...

    async def delete_web_sessions_of(self, principal: str) -> int:
        """End every session of ``principal`` (password change, removal); how many."""

    async def purge_web_sessions(self, now: float) -> int:
        """Forget sessions expired at ``now``; how many."""
