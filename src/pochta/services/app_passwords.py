"""App passwords (issue 19): per-device passwords of a mail account for IMAP, SMTP
submission, POP3 and ManageSieve, made and revoked by the user (``/account``) or the
admin (``pochta user app-password``).

The server makes the secret: 16 characters from a 32-letter alphabet (80 random bits),
shown once as ``abcd-efgh-jkmn-pqrs``. Because it is random and long, the store keeps its
SHA-256 only (no argon2: nothing to guess from a dictionary, and a login costs one indexed
lookup instead of one argon2 run per app password). The authentication service
(services/auth.py) accepts it in the password check of every mail protocol (PLAIN,
LOGIN, USER/PASS), never for the web login, and never caches it, so a revoked app password
stops working at the next login. SCRAM cannot use it (there are no SCRAM keys for it).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import time
from typing import Any

from ..storage.interfaces import Account, StoreError

ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no i, l, o, 0, 1: read off a screen
GROUPS, GROUP_LEN = 4, 4
MAX_NAME = 64
_SHAPE = re.compile(r"^[a-z0-9]{4}([- ]?[a-z0-9]{4}){3}$")
TOUCH_EVERY = 60.0  # seconds between last-used updates of one app password


def new_secret() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(GROUPS * GROUP_LEN))
    return "-".join(raw[i:i + GROUP_LEN] for i in range(0, len(raw), GROUP_LEN))


def looks_like(password: str) -> bool:
    return len(password) <= 19 and _SHAPE.match(password.lower()) is not None


def secret_hash(password: str) -> bytes:
    """SHA-256 of the secret without its separators, lower-case (typed either way)."""
    return hashlib.sha256(password.lower().replace("-", "").replace(" ", "").encode()).digest()


def check_name(name: str) -> str:
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise ValueError(f"name the device (1 to {MAX_NAME} printable characters)")
    return name


async def create(store: Any, account: Account, name: str) -> str:
    """A new app password of ``account`` named ``name``; the secret (to show once).
    Raises ``ValueError`` for a bad name, ``AlreadyExists`` for a name in use."""
    secret = new_secret()
    await store.add_app_password(account.id, check_name(name), secret_hash(secret), time.time())
    return secret


async def verify(store: Any, account: Account, password: str) -> bool:
    """Whether ``password`` is one of the account's app passwords (and note its use)."""
    if not looks_like(password):
        return False
    found = await store.find_app_password(account.id, secret_hash(password))
    if found is None:
        return False
    now = time.time()
    if found.last_used is None or now - found.last_used > TOUCH_EVERY:
        # the login stands if this fails: the last-used time is a convenience
        with contextlib.suppress(StoreError):
            await store.touch_app_password(found.id, now)
    return True
