"""SASL mechanisms (RFC 4422) as pure server-side state machines, shared by SMTP AUTH
(RFC 4954), IMAP AUTHENTICATE (RFC 9051) and POP3 AUTH (RFC 5034).

No I/O happens here. The protocol driver base64-decodes what the client sent (bad
base64 and the "*" cancel line are the protocol layer's business), feeds the bytes in,
and acts on the ``Step`` that comes back::

    offer = sasl_offer(auth_config, conn, ...)   # pochta.services.sasl_driver
    mech = new_mechanism(name, channel_binding=offer.bindings, final_as_challenge=True)
    step = mech.start(initial_response)          # None: no initial response; b"": "="
    while True:
        match step:
            case Challenge(data):                # send "334 "/"+ " + base64(data)
                step = mech.respond(decoded_client_line)
            case NeedScramCredentials(user):     # async store lookup, then resume
                step = mech.provide(await auth.scram_credentials(user))
            case CheckPassword(user, password, authzid):  # PLAIN / LOGIN end here
                account = await auth.check_password(user, password, client_ip)
                ...                              # success or failure reply
                break
            case Success(user, server_final):    # SCRAM: call auth.finish_scram(...)
                ...
                break
            case Failure(reason, malformed):     # generic failure reply; log reason
                ...
                break

Design choices:

* Credential lookup is asynchronous and lives in ``pochta.services.auth``. PLAIN and
  LOGIN therefore end with ``CheckPassword`` and let the service verify the password
  (argon2id, brute-force limiter); SCRAM pauses with ``NeedScramCredentials`` and resumes
  when the driver calls ``provide()`` with the stored keys (or the service's fake keys
  for unknown users, so the exchange fails at the proof — RFC 5802 §9).
* SCRAM's server-final message (``v=...``) is "additional data with success" (RFC 4422
  §3.6). Every SASL profile may carry it as one more challenge to which the client
  answers with an empty response, so the interoperable choice for SMTP (334), IMAP ("+")
  and POP3 ("+") is ``final_as_challenge=True`` (what Dovecot does); with
  ``final_as_challenge=False`` the data arrives in ``Success.server_final`` for drivers
  that put it in the success reply.
* The authorization identity (PLAIN's authzid, SCRAM's ``a=``) is handed to the driver
  in ``CheckPassword``/``NeedScramCredentials``; the driver refuses it unless it names the
  same account, by the program's one address normalisation (``pochta.mail.addresses``).
* Failures carry a log-only ``reason``; clients only ever see the protocol's generic
  failure text, so nothing reveals whether an account exists.
* Channel binding: the driver computes the bindings its TLS connection supports and
  passes them (one ``ChannelBinding(type, data)`` or a tuple, one per type); the
  mechanism is generic over the type and the client picks one by name. The shell-side
  helper is ``pochta.tlsbinding.channel_bindings(ssl_object)``: ``tls-exporter``
  (RFC 9266) on TLS 1.3 and on TLS 1.2 with the extended master secret, plus
  ``tls-unique`` (RFC 5929) on TLS 1.2 only. Python's ``ssl`` module does not expose
  RFC 5705 keying-material export (CPython issue #82133), so the helper reaches OpenSSL
  through ctypes, guarded; where that is not possible only TLS 1.2's ``tls-unique``
  remains, and on TLS 1.3 -PLUS is then not advertised. Advertise -PLUS exactly when
  bindings are passed, and pass the same bindings to the non-PLUS SCRAM too (RFC 5802
  §6 "y" downgrade check). Whether -PLUS is offered at all is
  ``pochta.services.sasl_driver.sasl_offer``'s decision (``[auth] scram_plus``).
"""

from __future__ import annotations

from pochta.proto.sasl.base import (
    Bindings,
    Challenge,
    ChannelBinding,
    CheckPassword,
    Failure,
    Mechanism,
    NeedScramCredentials,
    ScramKeys,
    Step,
    Success,
)
from pochta.proto.sasl.registry import (
    LOGIN,
    PLAIN,
    SCRAM,
    SCRAM_PLUS,
    mechanisms_for,
    new_mechanism,
)
from pochta.proto.sasl.saslprep import SASLprepError, saslprep

__all__ = [
    "LOGIN",
    "PLAIN",
    "SCRAM",
    "SCRAM_PLUS",
    "Bindings",
    "Challenge",
    "ChannelBinding",
    "CheckPassword",
    "Failure",
    "Mechanism",
    "NeedScramCredentials",
    "SASLprepError",
    "ScramKeys",
    "Step",
    "Success",
    "mechanisms_for",
    "new_mechanism",
    "saslprep",
]
