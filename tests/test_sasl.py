"""PLAIN, LOGIN, SASLprep and the mechanism registry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pochta.proto.sasl import (
    Challenge,
    ChannelBinding,
    CheckPassword,
    Failure,
    SASLprepError,
    mechanisms_for,
    new_mechanism,
    saslprep,
)
from pochta.proto.sasl.plain import Login, Plain

# --- PLAIN (RFC 4616) -------------------------------------------------------------------


def test_plain_initial_response() -> None:
    mech = Plain()
    assert mech.start(b"\0tim\0tanstaaftanstaaf") == CheckPassword("tim", "tanstaaftanstaaf")
    assert mech.done


def test_plain_without_initial_response_sends_empty_challenge() -> None:
    mech = Plain()
    assert mech.start(None) == Challenge(b"")
    assert not mech.done
    assert mech.respond(b"\0tim\0secret") == CheckPassword("tim", "secret")


def test_plain_hands_the_authzid_to_the_driver() -> None:
    # the driver (services/sasl_driver.py) compares it with the one address normalisation
    step = Plain().start(b"Tim@Example.org\0tim@example.org\0pw")
    assert step == CheckPassword("tim@example.org", "pw", "Tim@Example.org")
    assert Plain().start(b"Ursel\0Kurt\0xipj3plmq") == CheckPassword("Kurt", "xipj3plmq", "Ursel")


def test_plain_utf8_identity_and_password() -> None:
    step = Plain().start("\0jos\u00e9@ex\u00e4mple.org\0p\u00e4ss".encode())
    assert step == CheckPassword("jos\u00e9@ex\u00e4mple.org", "p\u00e4ss")


def test_plain_username_saslprep_mapping() -> None:
    # U+00AD SOFT HYPHEN is mapped to nothing (RFC 4013 §2.1).
    step = Plain().start("\0ti\u00adm\0pw".encode())
    assert step == CheckPassword("tim", "pw")


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"tim",
        b"\0tim",
        b"\0tim\0pw\0extra",
        b"\0\0pw",  # empty authcid
        b"\0tim\0",  # empty password
        b"\0t\xffim\0pw",  # invalid UTF-8 authcid
        b"\0tim\0p\xc3",  # truncated UTF-8 password
        b"\xff\0tim\0pw",  # invalid UTF-8 authzid
        b"\0" + b"a" * 2000 + b"\0pw",  # absurdly long
        b"\0tim\x07\0pw",  # prohibited control character in the user name
    ],
)
def test_plain_malformed(payload: bytes) -> None:
    mech = Plain()
    step = mech.start(payload)
    assert isinstance(step, Failure)
    assert step.malformed
    assert mech.done


def test_plain_accepts_255_octet_fields() -> None:
    # RFC 4616 §2: servers MUST accept up to 255 octets in each field.
    user, pw = "u" * 255, "p" * 255
    assert Plain().start(f"{user}\0{user}\0{pw}".encode()) == CheckPassword(user, pw, user)


def test_plain_out_of_sequence() -> None:
    assert isinstance(Plain().respond(b"\0a\0b"), Failure)
    mech = Plain()
    mech.start(b"\0a\0b")
    assert isinstance(mech.respond(b"\0a\0b"), Failure)
    mech2 = Plain()
    mech2.start(None)
    assert isinstance(mech2.start(None), Failure)


def test_plain_empty_initial_response_is_a_malformed_message() -> None:
    # "AUTH PLAIN =" is an empty initial response, not an absent one.
    assert isinstance(Plain().start(b""), Failure)


@given(st.binary(max_size=300))
def test_plain_garbage_never_raises(data: bytes) -> None:
    step = Plain().start(data)
    assert isinstance(step, CheckPassword | Failure)
    if isinstance(step, CheckPassword):
        assert step.username and step.password and "\0" not in step.password


# --- LOGIN ------------------------------------------------------------------------------


def test_login_two_challenges() -> None:
    mech = Login()
    assert mech.start(None) == Challenge(b"Username:")
    assert mech.respond(b"tim@example.org") == Challenge(b"Password:")
    assert not mech.done
    assert mech.respond(b"secret") == CheckPassword("tim@example.org", "secret")
    assert mech.done
    assert isinstance(mech.respond(b"more"), Failure)


def test_login_username_as_initial_response() -> None:
    mech = Login()
    assert mech.start(b"tim") == Challenge(b"Password:")
    assert mech.respond(b"pw") == CheckPassword("tim", "pw")


@pytest.mark.parametrize("username", [b"", b"t\0im", b"\xc3(", b"a" * 5000])
def test_login_bad_username(username: bytes) -> None:
    mech = Login()
    mech.start(None)
    step = mech.respond(username)
    assert isinstance(step, Failure) and step.malformed
    assert mech.done


@pytest.mark.parametrize("password", [b"", b"p\0w", b"\xff"])
def test_login_bad_password(password: bytes) -> None:
    mech = Login()
    mech.start(b"tim")
    assert isinstance(mech.respond(password), Failure)


def test_login_provide_is_refused() -> None:
    from pochta.passwords import derive_scram

    mech = Login()
    mech.start(None)
    assert isinstance(mech.provide(derive_scram("x", iterations=1)), Failure)


# --- SASLprep (RFC 4013 §3 examples) ----------------------------------------------------


@pytest.mark.parametrize(
    ("given_", "expected"),
    [
        ("I\u00adX", "IX"),  # SOFT HYPHEN mapped to nothing
        ("user", "user"),
        ("USER", "USER"),  # case preserved
        ("\u00aa", "a"),  # NFKC
        ("\u2168", "IX"),  # NFKC
        ("a\u00a0b", "a b"),  # non-ASCII space mapped to SPACE
        ("\u0627\u0628", "\u0627\u0628"),  # all right-to-left: fine
        ("", ""),
    ],
)
def test_saslprep_examples(given_: str, expected: str) -> None:
    assert saslprep(given_) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "\u0007",  # control character
        "\u0627\u0031",  # RandALCat string not ending with RandALCat
        "a\u0627",  # mixes LCat and RandALCat
        "\ue000",  # private use
        "a\u200eb",  # change display properties (LRM)
        "\ufffe",  # non-character
    ],
)
def test_saslprep_prohibited(bad: str) -> None:
    with pytest.raises(SASLprepError):
        saslprep(bad)


def test_saslprep_unassigned_only_in_queries() -> None:
    unassigned = "\u0221"  # unassigned in Unicode 3.2 (stringprep's table A.1)
    assert saslprep(unassigned) == unassigned
    with pytest.raises(SASLprepError):
        saslprep(unassigned, allow_unassigned=False)


# --- registry ---------------------------------------------------------------------------


def test_mechanisms_without_tls_offer_scram_only() -> None:
    assert mechanisms_for(False, False) == ("SCRAM-SHA-256",)
    assert mechanisms_for(False, True) == ("SCRAM-SHA-256",)
    assert mechanisms_for(False, False, allow_plaintext=True) == (
        "SCRAM-SHA-256",
        "PLAIN",
        "LOGIN",
    )


def test_mechanisms_with_tls() -> None:
    assert mechanisms_for(True, False) == ("SCRAM-SHA-256", "PLAIN", "LOGIN")
    assert mechanisms_for(True, True) == ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN")


def test_new_mechanism_by_name() -> None:
    cb = ChannelBinding("tls-exporter", b"x" * 32)
    for name in mechanisms_for(True, True):
        mech = new_mechanism(name.lower(), channel_binding=cb)
        assert mech is not None and mech.name == name
    assert new_mechanism("CRAM-MD5") is None
    assert new_mechanism("SCRAM-SHA-256-PLUS") is None
