"""Events the SMTP server core hands to its shell (h11 style).

Events that need a decision leave the session paused until the shell answers:

=============== ==========================================================================
MailFrom        ``accept()`` (default ``250 2.1.0 Ok``) or ``reject(reply)``
RcptTo          ``accept()`` (default ``250 2.1.5 Ok``) or ``reject(reply)``
MessageReady    ``accept(replies.queued(id))`` or ``reject(reply)``; the transaction ends
StartTLS        ``tls_started()`` after the handshake (``220`` is already queued)
AuthStart       ``auth_challenge(bytes)``, ``auth_succeeded(identity)`` or ``auth_failed(r)``
AuthResponse    the same three, when ``data`` is not None
BurlFetch       ``burl_resolved(data)`` or ``reject(reply)`` (the transaction fails)
=============== ==========================================================================

``AuthResponse(data=None)`` needs no decision: the client cancelled with ``*`` or sent
invalid base64, the core has already answered (``501 5.0.0`` / ``501 5.5.2``) and the
exchange is over; the shell only drops its SASL state.
``ConnectionClosed`` is final: flush ``data_to_send()`` and close the socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MailFrom:
    """``MAIL FROM``. ``address`` is ``""`` for the null reverse-path ``<>``."""

    address: str
    params: dict[str, str | None] = field(default_factory=dict)
    size: int | None = None  # SIZE= (RFC 1870)
    body: str | None = None  # "7BIT", "8BITMIME" or "BINARYMIME" (RFC 6152, RFC 3030)
    smtputf8: bool = False  # RFC 6531
    ret: str | None = None  # "FULL" or "HDRS" (RFC 3461)
    envid: str | None = None  # ENVID= (RFC 3461), xtext-decoded
    requiretls: bool = False  # REQUIRETLS (RFC 8689)


@dataclass(frozen=True)
class RcptTo:
    """``RCPT TO``. ``notify`` is "NEVER" or a comma list of SUCCESS/FAILURE/DELAY."""

    address: str
    params: dict[str, str | None] = field(default_factory=dict)
    notify: str | None = None  # RFC 3461
    orcpt: str | None = None  # "addr-type;address", xtext-decoded (RFC 3461)


@dataclass(frozen=True)
class MessageReady:
    """A complete message (after DATA's final dot or ``BDAT ... LAST``).

    ``data`` is the message as received, dot-unstuffed, lines ending in CRLF (for DATA).
    """

    data: bytes
    mail_from: MailFrom
    recipients: tuple[RcptTo, ...]
    body_8bit: bool  # declared BODY=8BITMIME or BINARYMIME
    smtputf8: bool
    chunked: bool = False  # arrived with BDAT (RFC 3030)
    # True: ``data`` is only the tail; the rest came before in MessageContent events
    spooled: bool = False

    @property
    def sender(self) -> str:
        return self.mail_from.address


@dataclass(frozen=True)
class MessageContent:
    """Part of a big message's content, in order (see ``spool_threshold``); needs no
    decision. ``first`` starts a new message."""

    data: bytes
    first: bool


@dataclass(frozen=True)
class MessageDiscarded:
    """The message whose content went out in MessageContent events was refused (too big,
    bad line endings, RSET, ...): the shell throws its spool away. Needs no decision."""


@dataclass(frozen=True)
class BurlFetch:
    """``BURL url [LAST]`` (RFC 4468) in a transaction with recipients: the shell fetches
    what the URL names. ``last`` ends the message, as ``BDAT ... LAST`` does."""

    url: str
    last: bool


@dataclass(frozen=True)
class StartTLS:
    """The client asked for STARTTLS; ``220 2.0.0 Ready to start TLS`` is queued."""


@dataclass(frozen=True)
class AuthStart:
    """``AUTH mechanism [initial-response]``; the response is base64-decoded.

    ``initial_response`` is None when absent and ``b""`` for ``=`` (RFC 4954 section 4).
    """

    mechanism: str  # upper case
    initial_response: bytes | None


@dataclass(frozen=True)
class AuthResponse:
    """A client line in an AUTH exchange, decoded; None: exchange aborted (see module doc)."""

    data: bytes | None


@dataclass(frozen=True)
class ConnectionClosed:
    """The session is over (QUIT, 421, EOF, or a closing reply from the shell)."""


@dataclass(frozen=True)
class NeedData:
    """Sentinel type: feed more bytes with ``receive_data``."""


@dataclass(frozen=True)
class Paused:
    """Sentinel type: the session waits for the shell's decision on the last event."""


NEED_DATA = NeedData()
PAUSED = Paused()

Event = (
    MailFrom
    | RcptTo
    | MessageContent
    | MessageDiscarded
    | MessageReady
    | BurlFetch
    | StartTLS
    | AuthStart
    | AuthResponse
    | ConnectionClosed
    | NeedData
    | Paused
)
