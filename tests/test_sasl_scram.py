"""SCRAM-SHA-256(-PLUS): RFC 7677 test vector, independent clients, channel binding."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ssl
from pathlib import Path

import pytest
import scramp  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from pochta.passwords import derive_scram
from pochta.proto.sasl import (
    Challenge,
    ChannelBinding,
    Failure,
    NeedScramCredentials,
    Success,
    new_mechanism,
)
from pochta.proto.sasl.scram import Scram, decode_saslname, encode_saslname
from pochta.storage.interfaces import ScramCredentials
from pochta.tlsbinding import channel_bindings

# RFC 7677 §3
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"


def rfc_credentials() -> ScramCredentials:
    return derive_scram("pencil", 4096, RFC_SALT)


def test_rfc7677_vector_exactly() -> None:
    mech = Scram(server_nonce=RFC_SERVER_NONCE)
    step = mech.start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert step == NeedScramCredentials("user")
    step = mech.provide(rfc_credentials())
    assert step == Challenge(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    step = mech.respond(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert step == Success("user", b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    assert mech.done


def test_rfc7677_wrong_proof_fails() -> None:
    mech = Scram(server_nonce=RFC_SERVER_NONCE)
    mech.start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    mech.provide(rfc_credentials())
    proof = bytearray(base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
    proof[0] ^= 1
    step = mech.respond(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p="
        + base64.b64encode(bytes(proof))
    )
    assert isinstance(step, Failure)
    assert not step.malformed


# --- an independent client written from RFC 5802 §3 ------------------------------------


class TinyClient:
    def __init__(
        self,
        user: str,
        password: str,
        gs2_header: str = "n,,",
        cb_data: bytes = b"",
        nonce: str = "fyko+d2lbbFgONRv9qkxdawL",
    ) -> None:
        self.user, self.password, self.gs2, self.cb_data = user, password, gs2_header, cb_data
        self.nonce = nonce
        self.bare = f"n={encode_saslname(user)},r={nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return (self.gs2 + self.bare).encode()

    def final(self, server_first: bytes, *, cbind: bytes | None = None) -> bytes:
        attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
        salt = base64.b64decode(attrs["s"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, int(attrs["i"]))
        ckey = hmac.new(salted, b"Client Key", "sha256").digest()
        skey = hmac.new(salted, b"Server Key", "sha256").digest()
        stored = hashlib.sha256(ckey).digest()
        cb = cbind if cbind is not None else self.gs2.encode() + self.cb_data
        without = f"c={base64.b64encode(cb).decode()},r={attrs['r']}"
        auth = f"{self.bare},{server_first.decode()},{without}".encode()
        sig = hmac.new(stored, auth, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(ckey, sig, strict=True))
        self.server_signature = hmac.new(skey, auth, "sha256").digest()
        return f"{without},p={base64.b64encode(proof).decode()}".encode()


def run(mech: Scram, client: TinyClient, creds: ScramCredentials) -> object:
    step = mech.start(client.first())
    if isinstance(step, Failure):
        return step
    assert isinstance(step, NeedScramCredentials)
    step = mech.provide(creds)
    assert isinstance(step, Challenge)
    return mech.respond(client.final(step.data))


def test_tiny_client_success_and_server_signature() -> None:
    creds = derive_scram("correct horse", 4096)
    client = TinyClient("alice@example.org", "correct horse")
    step = run(Scram(), client, creds)
    assert isinstance(step, Success)
    assert step.username == "alice@example.org"
    assert step.server_final == b"v=" + base64.b64encode(client.server_signature)


def test_tiny_client_wrong_password() -> None:
    step = run(Scram(), TinyClient("alice", "wrong"), derive_scram("right"))
    assert isinstance(step, Failure) and step.reason == "invalid client proof"


def test_username_with_comma_and_equals_is_escaped() -> None:
    creds = derive_scram("pw")
    step = run(Scram(), TinyClient("a,b=c@example.org", "pw"), creds)
    assert isinstance(step, Success)
    assert step.username == "a,b=c@example.org"


def test_saslname_codec() -> None:
    assert decode_saslname("a=2Cb=3Dc") == "a,b=c"
    assert decode_saslname("a=2") is None
    assert decode_saslname("a=41") is None
    assert encode_saslname("x=,y") == "x=3D=2Cy"


def test_password_is_saslprepped() -> None:
    # RFC 4013 §3: SOFT HYPHEN maps to nothing; the client prepares "I\u00adX" to "IX".
    creds = derive_scram("I\u00adX")
    assert isinstance(run(Scram(), TinyClient("u", "IX"), creds), Success)


# --- scramp as a second independent client ----------------------------------------------


def test_scramp_client() -> None:
    creds = derive_scram("pencil")
    client = scramp.ScramClient(["SCRAM-SHA-256"], "user", "pencil")
    mech = Scram()
    assert mech.start(client.get_client_first().encode()) == NeedScramCredentials("user")
    step = mech.provide(creds)
    assert isinstance(step, Challenge)
    client.set_server_first(step.data.decode())
    step = mech.respond(client.get_client_final().encode())
    assert isinstance(step, Success)
    assert step.server_final is not None
    client.set_server_final(step.server_final.decode())  # raises if the signature is wrong


def test_scramp_plus_with_tls_unique_bytes() -> None:
    binding = ChannelBinding("tls-unique", b"\x01" * 12)
    creds = derive_scram("pencil")
    client = scramp.ScramClient(
        ["SCRAM-SHA-256-PLUS"], "user", "pencil", channel_binding=("tls-unique", binding.data)
    )
    mech = new_mechanism("SCRAM-SHA-256-PLUS", channel_binding=binding)
    assert isinstance(mech, Scram)
    assert isinstance(mech.start(client.get_client_first().encode()), NeedScramCredentials)
    step = mech.provide(creds)
    assert isinstance(step, Challenge)
    client.set_server_first(step.data.decode())
    step = mech.respond(client.get_client_final().encode())
    assert isinstance(step, Success)


# --- channel binding rules (RFC 5802 §6) ------------------------------------------------

EXPORTER = ChannelBinding("tls-exporter", bytes(range(32)))


def test_plus_with_tls_exporter_binding() -> None:
    client = TinyClient("u", "pw", "p=tls-exporter,,", EXPORTER.data)
    step = run(Scram(plus=True, channel_binding=EXPORTER), client, derive_scram("pw"))
    assert isinstance(step, Success)


def test_plus_binding_data_mismatch_fails() -> None:
    client = TinyClient("u", "pw", "p=tls-exporter,,", b"\xff" * 32)
    step = run(Scram(plus=True, channel_binding=EXPORTER), client, derive_scram("pw"))
    assert isinstance(step, Failure) and step.reason == "channel binding mismatch"


def test_c_attribute_must_repeat_gs2_header() -> None:
    client = TinyClient("u", "pw")
    step = run_with_cbind(client, b"y,,")
    assert isinstance(step, Failure) and step.reason == "channel binding mismatch"


def run_with_cbind(client: TinyClient, cbind: bytes) -> object:
    mech = Scram()
    mech.start(client.first())
    step = mech.provide(derive_scram("pw"))
    assert isinstance(step, Challenge)
    return mech.respond(client.final(step.data, cbind=cbind))


def test_plus_with_other_binding_type_fails() -> None:
    client = TinyClient("u", "pw", "p=tls-unique,,", EXPORTER.data)
    step = Scram(plus=True, channel_binding=EXPORTER).start(client.first())
    assert isinstance(step, Failure) and "unsupported channel binding" in step.reason


@pytest.mark.parametrize("gs2", ["n,,", "y,,"])
def test_plus_without_binding_flag_fails(gs2: str) -> None:
    step = Scram(plus=True, channel_binding=EXPORTER).start(TinyClient("u", "p", gs2).first())
    assert isinstance(step, Failure)


def test_y_flag_when_plus_was_advertised_is_a_downgrade() -> None:
    step = Scram(channel_binding=EXPORTER).start(TinyClient("u", "p", "y,,").first())
    assert isinstance(step, Failure) and "downgrade" in step.reason


def test_y_flag_without_plus_on_offer_is_fine() -> None:
    step = run(Scram(), TinyClient("u", "pw", "y,,"), derive_scram("pw"))
    assert isinstance(step, Success)


def test_scramp_y_flag_downgrade_detected() -> None:
    # scramp with binding data but only the non-PLUS mechanism sends "y".
    client = scramp.ScramClient(
        ["SCRAM-SHA-256"], "user", "pencil", channel_binding=("tls-unique", b"x" * 12)
    )
    first = client.get_client_first()
    assert first.startswith("y,,")
    mech = new_mechanism("SCRAM-SHA-256", channel_binding=ChannelBinding("tls-unique", b"x"))
    assert mech is not None
    assert isinstance(mech.start(first.encode()), Failure)


def test_p_flag_on_non_plus_mechanism_fails() -> None:
    step = Scram().start(TinyClient("u", "p", "p=tls-exporter,,").first())
    assert isinstance(step, Failure)


def test_plus_requires_binding_data() -> None:
    with pytest.raises(ValueError):
        Scram(plus=True)
    assert new_mechanism("SCRAM-SHA-256-PLUS") is None


# --- other protocol checks --------------------------------------------------------------


def test_nonce_mismatch_fails() -> None:
    client = TinyClient("u", "pw")
    mech = Scram()
    mech.start(client.first())
    step = mech.provide(derive_scram("pw"))
    assert isinstance(step, Challenge)
    tampered = step.data.replace(b"r=fyko", b"r=fykX")
    assert isinstance(mech.respond(client.final(tampered)), Failure)


def test_server_nonce_is_fresh_and_extends_client_nonce() -> None:
    nonces = set()
    for _ in range(3):
        mech = Scram()
        mech.start(b"n,,n=u,r=abc")
        step = mech.provide(derive_scram("pw"))
        assert isinstance(step, Challenge)
        r = step.data.split(b",")[0]
        assert r.startswith(b"r=abc") and len(r) > len(b"r=abc") + 20
        nonces.add(r)
    assert len(nonces) == 3


def test_iteration_count_from_credentials() -> None:
    creds = derive_scram("pw", iterations=5000)
    mech = Scram()
    mech.start(b"n,,n=u,r=abc")
    step = mech.provide(creds)
    assert isinstance(step, Challenge) and step.data.endswith(b",i=5000")
    assert isinstance(run(Scram(), TinyClient("u", "pw"), creds), Success)


def test_final_as_challenge() -> None:
    client = TinyClient("u", "pw")
    mech = Scram(final_as_challenge=True)
    step = run(mech, client, derive_scram("pw"))
    assert step == Challenge(b"v=" + base64.b64encode(client.server_signature))
    assert not mech.done
    assert mech.respond(b"") == Success("u", None)
    assert mech.done


def test_final_as_challenge_non_empty_answer_fails() -> None:
    mech = Scram(final_as_challenge=True)
    run(mech, TinyClient("u", "pw"), derive_scram("pw"))
    assert isinstance(mech.respond(b"x"), Failure)


def test_no_initial_response_gets_empty_challenge() -> None:
    mech = Scram()
    assert mech.start(None) == Challenge(b"")
    assert mech.respond(b"n,,n=u,r=abc") == NeedScramCredentials("u")


def test_authzid_is_handed_to_the_driver() -> None:
    ok = run(Scram(), TinyClient("u", "pw", "n,a=u,"), derive_scram("pw"))
    assert isinstance(ok, Success)
    # the driver (services/sasl_driver.py) refuses an authzid naming another account
    assert Scram().start(b"n,a=admin,n=u,r=abc") == NeedScramCredentials("u", "admin")


@pytest.mark.parametrize(
    "first",
    [
        b"",  # handled as "no data" by start(): covered elsewhere
        b"n,,",
        b"x,,n=u,r=abc",
        b"n,,r=abc,n=u",
        b"n,,n=,r=abc",
        b"n,,n=u,r=",
        b"n,,n=u=41,r=abc",
        b"n,,n=u,r=a,bc",  # a comma ends the nonce; "bc" is then an unknown attribute: fine
        b"n,,m=ext,n=u,r=abc",
        b"n,,n=\xff,r=abc",
        b"n,,n=u\x00,r=abc",
        b"n,,n=u,r=ab\x7fc",
        b"p=bad name,,n=u,r=abc",
        b"n,b=x,n=u,r=abc",
        b"n,,n=\x07,r=abc",  # SASLprep: control character
    ],
)
def test_malformed_client_first(first: bytes) -> None:
    mech = Scram()
    step = mech.start(first)
    if first in (b"", b"n,,n=u,r=a,bc"):
        assert not isinstance(step, Failure)
        return
    assert isinstance(step, Failure)
    assert mech.done


@pytest.mark.parametrize(
    "final",
    [
        b"",
        b"c=biws",
        b"c=biws,r=abcSERVER",
        b"r=abcSERVER,c=biws,p=AAAA",
        b"c=!!!,r=abcSERVER,p=" + base64.b64encode(b"\0" * 32),
        b"c=biws,r=abcSERVER,p=" + base64.b64encode(b"\0" * 31),
        b"c=biws,r=abcSERVER,p=notbase64!",
        b"c=biws,r=abcSERVER,p=" + base64.b64encode(b"\0" * 32),  # wrong proof
        b"\xff\xfe",
    ],
)
def test_malformed_client_final(final: bytes) -> None:
    mech = Scram(server_nonce="SERVER")
    mech.start(b"n,,n=u,r=abc")
    mech.provide(derive_scram("pw"))
    assert isinstance(mech.respond(final), Failure)
    assert mech.done
    assert isinstance(mech.respond(b"again"), Failure)


def test_out_of_sequence_calls_fail_without_raising() -> None:
    assert isinstance(Scram().respond(b"x"), Failure)
    assert isinstance(Scram().provide(derive_scram("pw")), Failure)
    mech = Scram()
    mech.start(b"n,,n=u,r=abc")
    assert isinstance(mech.respond(b"c=biws"), Failure)  # keys not provided yet
    mech2 = Scram()
    mech2.start(None)
    assert isinstance(mech2.start(None), Failure)


def test_unusable_stored_credentials_fail() -> None:
    mech = Scram()
    mech.start(b"n,,n=u,r=abc")
    bad = ScramCredentials(salt=b"", iterations=4096, stored_key=b"x" * 32, server_key=b"y" * 32)
    assert isinstance(mech.provide(bad), Failure)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_garbage_never_raises(first: bytes, final: bytes) -> None:
    mech = Scram(channel_binding=EXPORTER)
    step = mech.start(first)
    if isinstance(step, NeedScramCredentials):
        step = mech.provide(derive_scram("pw", iterations=1))
    if isinstance(step, Challenge):
        step = mech.respond(final)
    assert isinstance(step, Challenge | Failure | NeedScramCredentials)


# --- channel binding over a real TLS 1.2 connection (stdlib ssl, in memory) ---------------


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _handshake(tmp: Path, version: ssl.TLSVersion) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    cert, key = _self_signed(tmp)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server_ctx.maximum_version = version
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="mail.example.test")
    done = {"c": False, "s": False}
    for _ in range(20):
        for side, obj in (("c", client), ("s", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    return server, client


def test_tls_unique_from_stdlib_ssl_end_to_end(tmp_path: Path) -> None:
    server, client_tls = _handshake(tmp_path, ssl.TLSVersion.TLSv1_2)
    assert server.version() == "TLSv1.2"
    data = server.get_channel_binding("tls-unique")
    assert data is not None and data == client_tls.get_channel_binding("tls-unique")
    binding = ChannelBinding("tls-unique", data)
    client = scramp.ScramClient(
        ["SCRAM-SHA-256-PLUS"], "user", "pencil", channel_binding=("tls-unique", client_tls)
    )
    mech = new_mechanism("SCRAM-SHA-256-PLUS", channel_binding=binding)
    assert mech is not None
    assert isinstance(mech.start(client.get_client_first().encode()), NeedScramCredentials)
    step = mech.provide(derive_scram("pencil"))
    assert isinstance(step, Challenge)
    client.set_server_first(step.data.decode())
    assert isinstance(mech.respond(client.get_client_final().encode()), Success)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_tls_exporter_binding_end_to_end(tmp_path: Path, version: ssl.TLSVersion) -> None:
    server, client_tls = _handshake(tmp_path, version)
    offered = channel_bindings(server)
    types = [b.type for b in offered]
    assert types[0] == "tls-exporter"
    # tls-unique is undefined for TLS 1.3 (RFC 8446 §C.5) and must not be offered there.
    assert ("tls-unique" in types) == (version == ssl.TLSVersion.TLSv1_2)
    client_side = {b.type: b.data for b in channel_bindings(client_tls)}
    exporter = offered[0].data
    assert len(exporter) == 32 and client_side["tls-exporter"] == exporter

    mech = new_mechanism("SCRAM-SHA-256-PLUS", channel_binding=offered)
    assert isinstance(mech, Scram)
    client = TinyClient("u", "pw", "p=tls-exporter,,", client_side["tls-exporter"])
    assert isinstance(run(mech, client, derive_scram("pw")), Success)

    # A man in the middle terminates TLS itself: its exporter differs, so the proof
    # computed over the client's binding data fails against the server's.
    other_server, _ = _handshake(tmp_path, version)
    relay = new_mechanism("SCRAM-SHA-256-PLUS", channel_binding=channel_bindings(other_server))
    assert isinstance(relay, Scram)
    client = TinyClient("u", "pw", "p=tls-exporter,,", client_side["tls-exporter"])
    step = run(relay, client, derive_scram("pw"))
    assert isinstance(step, Failure) and step.reason == "channel binding mismatch"


def test_channel_bindings_without_tls() -> None:
    assert channel_bindings(None) == ()
