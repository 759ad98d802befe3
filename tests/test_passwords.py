"""Password hashing and SCRAM key derivation."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from argon2 import PasswordHasher

from pochta import passwords
from pochta.config import from_dict
from pochta.proto.sasl import SASLprepError

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def test_production_defaults_are_strong() -> None:
    hasher = passwords.DEFAULT_HASHER
    assert hasher.memory_cost >= 65536 and hasher.time_cost >= 3
    assert hasher.type.name == "ID"
    # [auth]'s defaults are these parameters
    assert passwords.password_hasher(from_dict({"hostname": "mx.example.org"})) is hasher
    cheap = passwords.password_hasher(from_dict({"hostname": "mx.example.org", "auth": {
        "argon2_time_cost": 1, "argon2_memory_kib": 8, "argon2_parallelism": 1}}))
    assert (cheap.time_cost, cheap.memory_cost, cheap.parallelism) == (1, 8, 1)


def test_hash_is_argon2id_and_verifies() -> None:
    h = passwords.hash_password("s3cret", hasher=CHEAP)
    assert h.startswith("$argon2id$")
    assert passwords.verify_password(h, "s3cret")
    assert not passwords.verify_password(h, "s3cret ")
    assert not passwords.verify_password(h, "")


def test_hashes_are_salted() -> None:
    assert passwords.hash_password("x", hasher=CHEAP) != passwords.hash_password("x", hasher=CHEAP)


@pytest.mark.parametrize("bad_hash", ["", "plain", "$argon2id$v=19$garbage", "$1$abc$def"])
def test_verify_never_raises_on_bad_hash(bad_hash: str) -> None:
    assert passwords.verify_password(bad_hash, "x") is False


def test_password_is_saslprepped_before_hashing() -> None:
    h = passwords.hash_password("I\u00adX", hasher=CHEAP)
    assert passwords.verify_password(h, "IX")


def test_password_saslprep_refuses_still_hashes() -> None:
    h = passwords.hash_password("bell\u0007", hasher=CHEAP)
    assert passwords.verify_password(h, "bell\u0007")
    assert not passwords.verify_password(h, "bell")


def test_explicit_hasher_parameter() -> None:
    other = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    h = passwords.hash_password("pw", hasher=other)
    assert "m=16,t=2" in h
    assert passwords.verify_password(h, "pw", hasher=other)
    assert passwords.needs_rehash(h, hasher=CHEAP)  # made with other parameters
    assert not passwords.needs_rehash(passwords.hash_password("pw", hasher=CHEAP),
                                      hasher=CHEAP)


def test_dummy_hash_has_the_hashers_cost_and_matches_nothing_obvious() -> None:
    d = passwords.dummy_hash(hasher=CHEAP)
    assert d.startswith("$argon2id$") and "m=8,t=1" in d
    assert d != passwords.dummy_hash(hasher=CHEAP)  # a random password: callers keep theirs
    assert not passwords.verify_password(d, "")
    assert not passwords.verify_password(d, "password")


def test_derive_scram_rfc7677_keys() -> None:
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    creds = passwords.derive_scram("pencil", 4096, salt)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    assert creds.salt == salt and creds.iterations == 4096
    assert creds.stored_key == hashlib.sha256(client_key).digest()
    assert creds.server_key == hmac.new(salted, b"Server Key", "sha256").digest()


def test_derive_scram_random_salt() -> None:
    a, b = passwords.derive_scram("pw"), passwords.derive_scram("pw")
    assert len(a.salt) == 16 and a.salt != b.salt and a.stored_key != b.stored_key
    assert a.iterations == 4096


def test_derive_scram_refuses_prohibited_password() -> None:
    with pytest.raises(SASLprepError):
        passwords.derive_scram("bell\u0007")
    with pytest.raises(ValueError):
        passwords.derive_scram("pw", iterations=0)
