"""Which mechanisms to advertise on a connection, and building one by name."""

from __future__ import annotations

from pochta.proto.sasl.base import Bindings, Mechanism, binding_table
from pochta.proto.sasl.plain import Login, Plain
from pochta.proto.sasl.scram import Scram

SCRAM_PLUS = "SCRAM-SHA-256-PLUS"
SCRAM = "SCRAM-SHA-256"
PLAIN = "PLAIN"
LOGIN = "LOGIN"


def mechanisms_for(
    tls_active: bool, channel_binding_available: bool, *, allow_plaintext: bool = False
) -> tuple[str, ...]:
    """Mechanism names to advertise, strongest first.

    PLAIN and LOGIN send the password itself, so they are offered only under TLS (RFC
    4954 §4, RFC 9051 §11.1 "LOGINDISABLED"-style policy) unless ``allow_plaintext``.
    SCRAM never reveals the password and is always offered. -PLUS only when the driver
    can supply channel binding data for this connection: the non-PLUS mechanism relies
    on that to detect downgrades (RFC 5802 §6).
    """
    names: list[str] = []
    if tls_active and channel_binding_available:
        names.append(SCRAM_PLUS)
    names.append(SCRAM)
    if tls_active or allow_plaintext:
        names.extend((PLAIN, LOGIN))
    return tuple(names)


def new_mechanism(
    name: str,
    *,
    channel_binding: Bindings | None = None,
    final_as_challenge: bool = False,
) -> Mechanism | None:
    """A fresh mechanism for ``name`` (case-insensitive), or None if unknown or not
    possible (-PLUS without binding data). ``channel_binding`` (one ``ChannelBinding`` or
    a tuple, one per type the connection supports) must be what this
    connection can offer (the same fact that decided ``mechanisms_for``), also for the
    non-PLUS SCRAM: it is how a "y" client is caught downgrading. ``final_as_challenge``
    makes SCRAM send its server-final data as a last challenge (RFC 4422 §3.6) for
    protocols whose success reply cannot carry data."""
    upper = name.upper()
    if upper == PLAIN:
        return Plain()
    if upper == LOGIN:
        return Login()
    if upper == SCRAM:
        return Scram(channel_binding=channel_binding, final_as_challenge=final_as_challenge)
    if upper == SCRAM_PLUS and binding_table(channel_binding):
        return Scram(
            plus=True, channel_binding=channel_binding, final_as_challenge=final_as_challenge
        )
    return None
