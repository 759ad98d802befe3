"""Pochta's errors, each carrying the reply every protocol gives for it.

A service or the store raises a ``PochtaError``; the command boundary of each driver
(``server/smtp.py``, ``server/pop3.py``, ``server/imap.py`` ``dispatch``,
``server/managesieve.py``) turns it into that protocol's reply with ``smtp_reply``,
``imap_error``, ``pop3_reply`` or ``managesieve_reply``. Any other exception is a bug: the
boundary logs its traceback and answers with the temporary failure of the base class
(SMTP ``451 4.3.0``, IMAP ``NO [SERVERBUG]``, POP3 ``-ERR [SYS/TEMP]``, ManageSieve
``NO (TRYLATER)``); the ``*_for`` functions below make that choice in one place.

The replies come from the protocol catalogues (``proto/smtp/replies.py``,
``proto/pop3/replies.py``, ``proto/imap/errors.py``): this module imports them, never
the reverse, so the sans-IO cores stay free of the layers above them. Texts are safe to
show a client; the exception's own message (``str(exc)``) is for the log only.
"""

from __future__ import annotations

from typing import ClassVar

from .proto.imap.errors import ImapError
from .proto.pop3 import replies as pop3_replies
from .proto.pop3.replies import ErrReply
from .proto.smtp import replies as smtp_replies
from .proto.smtp.replies import Reply


class PochtaError(Exception):
    """Something a command could not do. The class says how each protocol answers;
    subclasses override the class attributes, or the methods when the reply names a
    value (an address, a limit). The base is a temporary failure with no known cause."""

    smtp: ClassVar[Reply] = smtp_replies.LOCAL_ERROR
    imap_code: ClassVar[str | None] = "SERVERBUG"  # RFC 5530 §3
    imap_text: ClassVar[str] = "Internal error"
    pop3: ClassVar[ErrReply] = pop3_replies.TEMPORARY_FAILURE  # RFC 3206 §4
    sieve_code: ClassVar[str | None] = "TRYLATER"  # RFC 5804 §1.3
    sieve_text: ClassVar[str] = "Local error in processing, try again later"

    def smtp_reply(self) -> Reply:
        return self.smtp

    def imap_error(self) -> ImapError:
        return ImapError(self.imap_text, self.imap_code)

    def pop3_reply(self) -> ErrReply:
        return self.pop3

    def managesieve_reply(self) -> tuple[str | None, str]:
        """(response code, text) of the ``NO``."""
        return self.sieve_code, self.sieve_text


# --- the store (storage/interfaces.py re-exports these) ---------------------------------


class StoreError(PochtaError):
    """A store operation failed for a reason the caller can report."""

    smtp = smtp_replies.STORAGE_FAILURE
    imap_text = "Operation failed"
    pop3 = pop3_replies.STORAGE_FAILURE
    sieve_text = "Temporary storage failure, try again"


class NotFound(StoreError):
    imap_code = "NONEXISTENT"
    imap_text = "No such mailbox or message"
    sieve_code = "NONEXISTENT"
    sieve_text = "There is no script by that name"


class AlreadyExists(StoreError):
    imap_code = "ALREADYEXISTS"
    imap_text = "Already exists"
    sieve_code = "ALREADYEXISTS"
    sieve_text = "A script with that name already exists"


class QuotaExceeded(StoreError):
    smtp = smtp_replies.MAILBOX_FULL
    imap_code = "OVERQUOTA"
    imap_text = "Over quota"
    sieve_code = "QUOTA"
    sieve_text = "Over quota"


class StorageFull(StoreError):
    """The disk (or the database) has no room: a temporary failure. Protocols answer
    ``452 4.3.1 Insufficient system storage`` (RFC 3463), IMAP ``NO [LIMIT]`` (RFC 5530
    §3: a limit, not a bug), POP3 ``-ERR [SYS/TEMP]``; nothing of the failed write is
    visible afterwards."""

    smtp = smtp_replies.INSUFFICIENT_STORAGE
    imap_code = "LIMIT"
    imap_text = "Insufficient system storage"
    pop3 = pop3_replies.INSUFFICIENT_STORAGE
    sieve_text = "Insufficient system storage"


class StorageCorrupt(StoreError):
    """Stored bytes do not match the index (length or checksum): never returned to a
    client; ``pochta store verify`` lists every such blob."""


class ScriptActive(StoreError):
    """The active script cannot be deleted (RFC 5804 §2.10: NO (ACTIVE))."""

    sieve_code = "ACTIVE"
    sieve_text = "You may not delete the active script"


# --- authentication (services/auth_policy.py) ---------------------------------------------


class AuthError(PochtaError):
    """Authentication refused; every subclass is an answer to LOGIN/AUTH, not a bug."""


class AuthFailed(AuthError):
    """Wrong credentials. The same reply for unknown users and bad passwords."""

    smtp = smtp_replies.AUTH_INVALID
    imap_code = "AUTHENTICATIONFAILED"
    imap_text = "Authentication failed"
    pop3 = pop3_replies.AUTH_FAILED
    sieve_code = None
    sieve_text = "Authentication failed"


class AuthMalformed(AuthFailed):
    """The client's SASL data could not be parsed (RFC 4954 §4: 501 5.5.2)."""

    smtp = smtp_replies.AUTH_MALFORMED


class AuthLockedOut(AuthError):
    """The brute-force limiter refuses this address or account for now (temporary)."""

    smtp = smtp_replies.AUTH_LOCKED_OUT
    imap_code = "UNAVAILABLE"
    imap_text = "Too many failed logins, try again later"
    pop3 = pop3_replies.LOCKED_OUT
    sieve_text = "Too many failed logins, try again later"


class MechanismNotOffered(AuthError):
    """A SASL mechanism this connection does not offer (unknown, or not before TLS)."""

    smtp = smtp_replies.UNKNOWN_MECHANISM
    imap_code = "CANNOT"
    imap_text = "Unsupported authentication mechanism"
    pop3 = pop3_replies.UNSUPPORTED_MECHANISM
    sieve_code = None
    sieve_text = "Unsupported authentication mechanism"


class MaildropInUse(AuthError):
    """RFC 2449 §8.1.1: another POP3 session holds the maildrop."""

    pop3 = pop3_replies.IN_USE


# --- submission policy (services/submission.py) ----------------------------------------


class PolicyRefusal(PochtaError):
    """The submission policy refuses a command (RFC 6409); texts name the value."""


class SenderNotOwned(PolicyRefusal):
    def __init__(self, address: str, user: str) -> None:
        super().__init__(f"sender {address!r} not owned by {user}")
        self.address, self.user = address, user

    def smtp_reply(self) -> Reply:
        return smtp_replies.sender_not_owned(self.address, self.user)


class FromNotOwned(SenderNotOwned):
    """A From: header address the user does not own (RFC 6409 §8.1 lets us refuse)."""

    def smtp_reply(self) -> Reply:
        return smtp_replies.from_not_owned(self.address, self.user)


class MessageRateLimited(PolicyRefusal):
    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} messages per hour")
        self.limit = limit

    def smtp_reply(self) -> Reply:
        return smtp_replies.message_rate_limited(self.limit)


class RecipientRateLimited(MessageRateLimited):
    def smtp_reply(self) -> Reply:
        return smtp_replies.recipient_rate_limited(self.limit)


# --- delivery (services/sieve.py) ----------------------------------------------------------


class SieveRejected(PochtaError):
    """Every recipient's script rejected the message: answer DATA with 550 5.7.1."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def smtp_reply(self) -> Reply:
        return smtp_replies.sieve_rejected(self.reason)


class SieveLoadError(PochtaError):
    """A stored script could not be loaded (a temporary failure of delivery)."""


# --- the mapping at the command boundaries ------------------------------------------------

INTERNAL = PochtaError("internal error")


def as_pochta_error(exc: BaseException) -> PochtaError:
    """``exc`` itself if it is a Pochta error; otherwise (a bug) the temporary failure."""
    return exc if isinstance(exc, PochtaError) else INTERNAL


def smtp_reply_for(exc: BaseException) -> Reply:
    return as_pochta_error(exc).smtp_reply()


def imap_error_for(exc: BaseException) -> ImapError:
    return as_pochta_error(exc).imap_error()


def pop3_reply_for(exc: BaseException) -> ErrReply:
    return as_pochta_error(exc).pop3_reply()


def managesieve_reply_for(exc: BaseException) -> tuple[str | None, str]:
    return as_pochta_error(exc).managesieve_reply()
