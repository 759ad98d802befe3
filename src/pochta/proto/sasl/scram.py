"""SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677), server side.

Exchange::

    C: n,,n=user,r=<client nonce>                   -> NeedScramCredentials("user")
    driver: provide(keys)                           -> Challenge(r=<c+s nonce>,s=<salt>,i=4096)
    C: c=biws,r=<c+s nonce>,p=<proof>               -> Success("user", b"v=<server signature>")

Channel binding (RFC 5802 §6, RFC 5056): the driver passes the ``ChannelBinding`` (type
and data) it can offer on this TLS connection, or None. The registry advertises the
-PLUS mechanism exactly when a binding is available, so a client that sends the "y" flag
("I support binding but think you don't") on such a connection is being downgraded and
is refused (RFC 5802 §6).

The same helper functions derive stored credentials (``pochta.passwords.derive_scram``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

from pochta.proto.sasl.base import (
    MAX_FIELD_OCTETS,
    Bindings,
    Challenge,
    Failure,
    Mechanism,
    NeedScramCredentials,
    ScramKeys,
    Step,
    Success,
    binding_table,
    decode_utf8,
)
from pochta.proto.sasl.saslprep import SASLprepError, saslprep

HASH = "sha256"
KEY_LENGTH = hashlib.new(HASH).digest_size
MIN_ITERATIONS = 4096  # RFC 7677 §4: at least 4096
MAX_ITERATIONS = 10_000_000  # refuse absurd stored counts rather than burn CPU

# RFC 5802 §7: cb-name = 1*(ALPHA / DIGIT / "." / "-"); printable = %x21-2B / %x2D-7E.
_CB_NAME = re.compile(r"[A-Za-z0-9.-]+")
_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_MAX_NONCE = 256


# --- primitives (RFC 5802 §2.2, §3) ------------------------------------------------------


def hmac_digest(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, HASH).digest()


def salted_password(prepared_password: str, salt: bytes, iterations: int) -> bytes:
    """Hi(Normalize(password), salt, i) — PBKDF2 with HMAC as PRF."""
    return hashlib.pbkdf2_hmac(HASH, prepared_password.encode("utf-8"), salt, iterations)


def client_key(salted: bytes) -> bytes:
    return hmac_digest(salted, b"Client Key")


def server_key(salted: bytes) -> bytes:
    return hmac_digest(salted, b"Server Key")


def stored_key(client: bytes) -> bytes:
    return hashlib.new(HASH, client).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def decode_saslname(value: str) -> str | None:
    """RFC 5802 §5.1: "=2C" is ",", "=3D" is "="; any other "=" is invalid."""
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "=":
            code = value[i + 1 : i + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                return None
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def encode_saslname(value: str) -> str:
    return value.replace("=", "=3D").replace(",", "=2C")


# --- the mechanism ---------------------------------------------------------------------


class Scram(Mechanism):
    """SCRAM-SHA-256 (``plus=False``) or SCRAM-SHA-256-PLUS (``plus=True``)."""

    def __init__(
        self,
        *,
        plus: bool = False,
        channel_binding: Bindings | None = None,
        final_as_challenge: bool = False,
        server_nonce: str | None = None,
    ) -> None:
        super().__init__()
        self._bindings = binding_table(channel_binding)
        if plus and not self._bindings:
            raise ValueError("SCRAM-SHA-256-PLUS needs channel binding data")
        self.name = "SCRAM-SHA-256-PLUS" if plus else "SCRAM-SHA-256"
        self._plus = plus
        self._cb_data = b""
        self._final_as_challenge = final_as_challenge
        # The server's nonce part: 24 random bytes in base64 (printable, never ",").
        self._server_nonce = server_nonce or _b64(secrets.token_bytes(24))
        self._state = "new"
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._client_nonce = ""
        self._nonce = ""
        self._username = ""
        self._keys: ScramKeys | None = None

    # state machine

    def start(self, initial_response: bytes | None) -> Step:
        if self._state != "new":
            return self._fail("SCRAM started twice")
        if initial_response is None or initial_response == b"":
            # SCRAM is client-first: an empty challenge asks for client-first-message.
            self._state = "client_first"
            return Challenge(b"")
        return self._client_first(initial_response)

    def respond(self, data: bytes) -> Step:
        if self.done:
            return self._fail("SCRAM response after the end")
        if self._state == "client_first":
            return self._client_first(data)
        if self._state == "client_final":
            return self._client_final(data)
        if self._state == "final_ack":
            # RFC 4422 §3.6: the response to additional data sent as a challenge is empty.
            if data:
                return self._fail("non-empty response to the server-final challenge")
            self._done = True
            return Success(self._username, None)
        return self._fail(f"SCRAM response in state {self._state}")

    def provide(self, keys: ScramKeys) -> Step:
        if self._state != "need_keys" or self.done:
            return self._fail("SCRAM credentials provided out of sequence")
        if (
            not keys.salt
            or not 1 <= keys.iterations <= MAX_ITERATIONS
            or len(keys.stored_key) != KEY_LENGTH
            or len(keys.server_key) != KEY_LENGTH
        ):
            return self._fail("stored SCRAM credentials are unusable")
        self._keys = keys
        self._nonce = self._client_nonce + self._server_nonce
        self._server_first = f"r={self._nonce},s={_b64(keys.salt)},i={keys.iterations}"
        self._state = "client_final"
        return Challenge(self._server_first.encode("ascii"))

    # client-first-message (RFC 5802 §7)

    def _client_first(self, data: bytes) -> Step:
        if len(data) > 3 * MAX_FIELD_OCTETS:
            return self._fail("client-first-message too long", malformed=True)
        text = decode_utf8(data)
        if text is None or "\0" in text:
            return self._fail("client-first-message is not valid UTF-8", malformed=True)
        parts = text.split(",", 2)
        if len(parts) != 3:
            return self._fail("client-first-message lacks a GS2 header", malformed=True)
        flag, authz, bare = parts
        problem = self._check_binding_flag(flag)
        if problem is not None:
            return problem
        authzid = ""
        if authz:
            if not authz.startswith("a="):
                return self._fail("bad authzid in GS2 header", malformed=True)
            decoded = decode_saslname(authz[2:])
            if not decoded:
                return self._fail("bad authzid in GS2 header", malformed=True)
            authzid = decoded
        attrs = bare.split(",")
        if attrs[0].startswith("m="):
            # §5.1: a mandatory extension we do not support must fail the exchange.
            return self._fail("unsupported mandatory SCRAM extension")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            return self._fail("client-first-message needs n= and r=", malformed=True)
        raw_name = decode_saslname(attrs[0][2:])
        if not raw_name:
            return self._fail("bad user name encoding", malformed=True)
        try:
            username = saslprep(raw_name)
        except SASLprepError as exc:
            return self._fail(f"user name: {exc}", malformed=True)
        if not username:
            return self._fail("empty user name", malformed=True)
        nonce = attrs[1][2:]
        if len(nonce) > _MAX_NONCE or not _NONCE.fullmatch(nonce):
            return self._fail("bad client nonce", malformed=True)
        self._gs2_header = f"{flag},{authz},"
        self._client_first_bare = bare
        self._client_nonce = nonce
        self._username = username
        self._state = "need_keys"
        return NeedScramCredentials(username, authzid)

    def _check_binding_flag(self, flag: str) -> Failure | None:
        if flag == "n":
            if self._plus:
                return self._fail("SCRAM-PLUS chosen without channel binding")
            return None
        if flag == "y":
            if self._plus:
                return self._fail("SCRAM-PLUS chosen without channel binding")
            if self._bindings:
                # §6: we advertised -PLUS; the client thinks we did not: a downgrade.
                return self._fail("channel binding downgrade detected (y flag)")
            return None
        if flag.startswith("p="):
            name = flag[2:]
            if not _CB_NAME.fullmatch(name):
                return self._fail("bad channel binding name", malformed=True)
            if not self._plus:
                return self._fail("channel binding requested with a non-PLUS mechanism")
            if name not in self._bindings:
                return self._fail(f"unsupported channel binding type {name!r}")
            self._cb_data = self._bindings[name]
            return None
        return self._fail("bad GS2 channel binding flag", malformed=True)

    # client-final-message (RFC 5802 §7)

    def _client_final(self, data: bytes) -> Step:
        self._done = True
        if len(data) > 3 * MAX_FIELD_OCTETS:
            return Failure("client-final-message too long", malformed=True)
        text = decode_utf8(data)
        if text is None:
            return Failure("client-final-message is not valid UTF-8", malformed=True)
        attrs = text.split(",")
        if (
            len(attrs) < 3
            or not attrs[0].startswith("c=")
            or not attrs[1].startswith("r=")
            or not attrs[-1].startswith("p=")
        ):
            return Failure("client-final-message needs c=, r= and p=", malformed=True)
        cbind = _b64decode(attrs[0][2:])
        proof = _b64decode(attrs[-1][2:])
        if cbind is None or proof is None:
            return Failure("bad base64 in client-final-message", malformed=True)
        expected_cbind = self._gs2_header.encode("utf-8")
        if self._plus:
            expected_cbind += self._cb_data
        if not hmac.compare_digest(cbind, expected_cbind):
            return Failure("channel binding mismatch")
        if attrs[1][2:] != self._nonce:
            return Failure("nonce mismatch")
        if len(proof) != KEY_LENGTH:
            return Failure("client proof has the wrong length", malformed=True)
        keys = self._keys
        assert keys is not None
        without_proof = ",".join(attrs[:-1])
        auth_message = ",".join(
            (self._client_first_bare, self._server_first, without_proof)
        ).encode("utf-8")
        signature = hmac_digest(keys.stored_key, auth_message)
        candidate = _xor(proof, signature)
        if not hmac.compare_digest(stored_key(candidate), keys.stored_key):
            return Failure("invalid client proof")
        server_final = b"v=" + _b64(hmac_digest(keys.server_key, auth_message)).encode()
        if self._final_as_challenge:
            self._done = False
            self._state = "final_ack"
            return Challenge(server_final)
        return Success(self._username, server_final)
