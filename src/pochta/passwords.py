"""Password hashing: argon2id for password checks, SCRAM-SHA-256 keys for SCRAM.

Passwords are prepared with SASLprep (RFC 4013) before hashing when that succeeds, so
PLAIN/LOGIN and SCRAM agree on what a password is ("I\\u00adX" and "IX" are the same
password in both). A password SASLprep refuses is hashed as given for argon2id; SCRAM
keys cannot be derived for it (``derive_scram`` raises), and SCRAM then fails for that
account while PLAIN still works.
"""

from __future__ import annotations

import os

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError

from pochta.config import Config
from pochta.proto.sasl import scram
from pochta.proto.sasl.saslprep import SASLprepError, saslprep
from pochta.storage.interfaces import ScramCredentials

# Production parameters: argon2id, 64 MiB, 3 passes, 4 lanes (the argon2-cffi default
# profile, RFC 9106 §4 "second recommended option" is 64 MiB / 3 passes).
DEFAULT_HASHER = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4)

SCRAM_ITERATIONS = 4096  # RFC 7677 §4 minimum; clients do this work on every login
SCRAM_SALT_BYTES = 16


def password_hasher(config: Config) -> PasswordHasher:
    """The argon2id hasher of ``[auth]`` (``argon2_*``): the server's authenticator owns
    it, and the command line builds it from the same settings. The module keeps no
    hasher: every caller says which one it uses (None: DEFAULT_HASHER)."""
    auth = config.auth
    params = (auth.argon2_time_cost, auth.argon2_memory_kib, auth.argon2_parallelism)
    if params == (DEFAULT_HASHER.time_cost, DEFAULT_HASHER.memory_cost,
                  DEFAULT_HASHER.parallelism):
        return DEFAULT_HASHER
    return PasswordHasher(time_cost=auth.argon2_time_cost, memory_cost=auth.argon2_memory_kib,
                          parallelism=auth.argon2_parallelism)


def _prepare(password: str) -> str:
    try:
        return saslprep(password)
    except SASLprepError:
        return password


def hash_password(password: str, *, hasher: PasswordHasher | None = None) -> str:
    """An argon2id PHC string for ``password``."""
    return (hasher or DEFAULT_HASHER).hash(_prepare(password))


def verify_password(
    password_hash: str, password: str, *, hasher: PasswordHasher | None = None
) -> bool:
    """True if ``password`` matches. Never raises: a mismatch or an unreadable hash is
    False. The comparison happens inside argon2 (constant time)."""
    try:
        return (hasher or DEFAULT_HASHER).verify(password_hash, _prepare(password))
    except (Argon2Error, InvalidHashError, ValueError, TypeError):
        return False


def needs_rehash(password_hash: str, *, hasher: PasswordHasher | None = None) -> bool:
    """True if the hash was made with other parameters than the hasher's."""
    try:
        return (hasher or DEFAULT_HASHER).check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


def dummy_hash(*, hasher: PasswordHasher | None = None) -> str:
    """A hash of a random password made with the hasher's parameters: verifying against
    it costs the same as a real check, so an unknown account takes as long as a known
    one with a wrong password. Callers keep theirs (it takes as long as a hash)."""
    return (hasher or DEFAULT_HASHER).hash(os.urandom(24).hex())


def derive_scram(
    password: str, iterations: int = SCRAM_ITERATIONS, salt: bytes | None = None
) -> ScramCredentials:
    """SCRAM-SHA-256 stored keys (RFC 5802 §3, RFC 7677):
    SaltedPassword = Hi(SASLprep(password), salt, i); ClientKey = HMAC(SP, "Client Key");
    StoredKey = H(ClientKey); ServerKey = HMAC(SP, "Server Key").
    Raises SASLprepError if the password contains prohibited characters (§2.2 says the
    password is a stored string: unassigned code points are refused too)."""
    if iterations < 1:
        raise ValueError("iterations must be positive")
    prepared = saslprep(password, allow_unassigned=False)
    if salt is None:
        salt = os.urandom(SCRAM_SALT_BYTES)
    salted = scram.salted_password(prepared, salt, iterations)
    client = scram.client_key(salted)
    return ScramCredentials(
        salt=salt,
        iterations=iterations,
        stored_key=scram.stored_key(client),
        server_key=scram.server_key(salted),
    )
