"""Steps a mechanism yields and the base class every mechanism implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Authentication identities and passwords longer than this are refused outright. RFC 4616
# §2 requires accepting at least 255 octets; this leaves room for long UTF-8 names while
# keeping a hostile client from making us hash megabytes.
MAX_FIELD_OCTETS = 1024


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``data`` to the client as a server challenge (SMTP 334, IMAP/POP3 "+")."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CheckPassword:
    """PLAIN/LOGIN finished parsing: the driver verifies ``password`` for ``username``
    (``Authenticator.check_password``) and answers success or failure itself. The
    mechanism is finished after this step. ``authzid``: the authorization identity the
    client asked for ("" if none); the driver refuses it unless it names the same
    account (one address normalisation, pochta.mail.addresses, decides that)."""

    username: str
    password: str
    authzid: str = ""


@dataclass(frozen=True, slots=True)
class NeedScramCredentials:
    """SCRAM needs the account's stored keys: the driver looks them up
    (``Authenticator.scram_credentials``) and calls ``mechanism.provide(keys)``.
    ``authzid`` as for ``CheckPassword``."""

    username: str
    authzid: str = ""


@dataclass(frozen=True, slots=True)
class Success:
    """The client proved its identity as ``username``.

    ``server_final`` is additional data with success (RFC 4422 §3.6), e.g. SCRAM's
    ``v=`` server signature; the driver sends it in its success reply where the protocol
    allows that. A mechanism built with ``final_as_challenge=True`` never returns data
    here: it sends the data as a last ``Challenge`` and expects an empty response first.
    """

    username: str
    server_final: bytes | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """The exchange failed. ``reason`` is for the log only (it never contains a secret);
    the client gets the protocol's generic failure text. ``malformed`` marks a syntax
    error in the client's data (SMTP may answer 501 rather than 535)."""

    reason: str
    malformed: bool = False


Step = Challenge | CheckPassword | NeedScramCredentials | Success | Failure


class ScramKeys(Protocol):
    """What SCRAM needs from the store (``pochta.storage.interfaces.ScramCredentials``
    matches this structurally; the proto layer does not import storage)."""

    @property
    def salt(self) -> bytes: ...
    @property
    def iterations(self) -> int: ...
    @property
    def stored_key(self) -> bytes: ...
    @property
    def server_key(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ChannelBinding:
    """The TLS channel binding the driver can offer on this connection (RFC 5056):
    ``type`` is the name a client puts in its GS2 header (``tls-exporter``,
    ``tls-unique``), ``data`` the bytes for that type on this connection."""

    type: str
    data: bytes


# One binding, or every binding type the connection supports (the client picks one by
# name in its GS2 header; e.g. TLS 1.2 may offer both tls-exporter and tls-unique).
Bindings = ChannelBinding | tuple[ChannelBinding, ...]


def binding_table(bindings: Bindings | None) -> dict[str, bytes]:
    if bindings is None:
        return {}
    if isinstance(bindings, ChannelBinding):
        bindings = (bindings,)
    return {b.type: b.data for b in bindings}


class Mechanism:
    """A server-side SASL mechanism: a state machine with no I/O.

    ``start`` is called once with the initial response (``None`` when the client sent
    none, ``b""`` for an empty one); ``respond`` with each decoded client response after
    a ``Challenge``; ``provide`` after ``NeedScramCredentials``. Calls in the wrong state
    give ``Failure``; no method raises on client input.
    """

    name: str = ""

    def __init__(self) -> None:
        self._done = False

    @property
    def done(self) -> bool:
        """True once the mechanism returned a terminal step."""
        return self._done

    def start(self, initial_response: bytes | None) -> Step:
        raise NotImplementedError

    def respond(self, data: bytes) -> Step:
        raise NotImplementedError

    def provide(self, keys: ScramKeys) -> Step:
        return self._fail("credentials provided to a mechanism that did not ask")

    def _fail(self, reason: str, *, malformed: bool = False) -> Failure:
        self._done = True
        return Failure(reason, malformed)

    def _finish(self, step: CheckPassword | Success) -> CheckPassword | Success:
        self._done = True
        return step


def decode_utf8(data: bytes) -> str | None:
    """Strict UTF-8 or None."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
