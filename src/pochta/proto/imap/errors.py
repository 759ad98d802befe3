"""IMAP command failures as exceptions that carry their response (RFC 9051 §7.1, RFC 5530).

A handler raises one of these; the session core turns it into the tagged ``NO``/``BAD``
with its response code (``ImapServerSession.fail``), the one place where failures become
bytes. Pochta's own errors (the store's, the services') carry the ``ImapError`` they
become (pochta/errors.py ``imap_error``), applied at the driver's command boundary
(``server/imap.py`` ``dispatch``).
"""

from __future__ import annotations


class ImapError(Exception):
    """A tagged failure: ``status`` (NO or BAD), an optional response code and a text
    that is safe to show to the client."""

    status = "NO"
    code: str | None = None
    text = "Command failed"

    def __init__(self, text: str | None = None, code: str | None = None) -> None:
        if text is not None:
            self.text = text
        if code is not None:
            self.code = code
        super().__init__(self.text)


class BadCommand(ImapError):
    """BAD: the command is not valid here (syntax, state, an argument out of range)."""

    status = "BAD"
    text = "Invalid command"


class TryCreate(ImapError):
    """APPEND/COPY/MOVE to a mailbox that does not exist (RFC 9051 §7.1)."""

    code = "TRYCREATE"
    text = "No such mailbox"


class Nonexistent(ImapError):
    code = "NONEXISTENT"
    text = "No such mailbox"


class AlreadyExists(ImapError):
    code = "ALREADYEXISTS"
    text = "Mailbox already exists"


class OverQuota(ImapError):
    code = "OVERQUOTA"
    text = "Over quota"


class Limit(ImapError):
    """A server limit, or the disk is full (RFC 5530 §3: temporary, not a bug)."""

    code = "LIMIT"
    text = "Insufficient system storage"


class TooBig(ImapError):
    code = "TOOBIG"
    text = "Message too large"


class ReadOnly(ImapError):
    code = "READ-ONLY"
    text = "Mailbox is read-only"


class Cannot(ImapError):
    code = "CANNOT"
    text = "Operation not possible"


class NoPerm(ImapError):
    code = "NOPERM"
    text = "Permission denied"


class Unavailable(ImapError):
    code = "UNAVAILABLE"
    text = "Try again later"


class AuthenticationFailed(ImapError):
    code = "AUTHENTICATIONFAILED"
    text = "Authentication failed"  # the same text for unknown users and bad passwords


class PrivacyRequired(ImapError):
    code = "PRIVACYREQUIRED"
    text = "Use STARTTLS first"


class ExpungeIssued(ImapError):
    code = "EXPUNGEISSUED"
    text = "Some messages were expunged meanwhile"


class UnknownCte(ImapError):
    code = "UNKNOWN-CTE"
    text = "Unknown Content-Transfer-Encoding"


class BadCharset(ImapError):
    code = "BADCHARSET (UTF-8 US-ASCII)"
    text = "Unsupported charset"


class ServerBug(ImapError):
    code = "SERVERBUG"
    text = "Internal error"


__all__ = [
    "AlreadyExists", "AuthenticationFailed", "BadCharset", "BadCommand", "Cannot",
    "ExpungeIssued", "ImapError", "Limit", "NoPerm", "Nonexistent", "OverQuota",
    "PrivacyRequired", "ReadOnly", "ServerBug", "TooBig", "TryCreate", "Unavailable",
    "UnknownCte",
]
