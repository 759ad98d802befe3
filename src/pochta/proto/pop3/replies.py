"""POP3 ``-ERR`` responses the driver answers with: the ``ErrReply`` value and a
catalogue of named ones (what the session core itself says stays in ``session``).

RFC 2449 §8 puts an extended response code in brackets right after ``-ERR``; RFC 3206
defines ``[SYS/TEMP]`` (a temporary system problem, trying again may work),
``[SYS/PERM]`` and ``[AUTH]`` (the credentials are at fault), and RFC 2449 §8.1.1
``[IN-USE]`` (the maildrop is locked by another session).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ErrReply:
    """One ``-ERR`` line: its text and optional response code (``AUTH``, ``SYS/TEMP``...)."""

    text: str
    code: str | None = None

    def __post_init__(self) -> None:
        if any(ord(c) < 32 or ord(c) == 127 for c in self.text):
            raise ValueError("POP3 reply text contains control characters")

    def to_bytes(self) -> bytes:
        prefix = f"[{self.code}] " if self.code else ""
        return b"-ERR " + (prefix + self.text).encode("utf-8") + b"\r\n"


AUTH_FAILED = ErrReply("Authentication failed", "AUTH")
UNSUPPORTED_MECHANISM = ErrReply("Unsupported authentication mechanism", "AUTH")
# the brute-force limiter's refusal names no account and is the same whether it exists
LOCKED_OUT = ErrReply("Too many failed logins, try again later", "SYS/TEMP")
IN_USE = ErrReply("Maildrop is locked by another POP3 session", "IN-USE")
MAILDROP_UNAVAILABLE = ErrReply("Maildrop unavailable, try again later", "SYS/TEMP")
MESSAGE_UNAVAILABLE = ErrReply("Message is no longer available", "SYS/TEMP")
# RFC 1939 assumes an exclusive lock and says nothing of IMAP expunging meanwhile:
# permanent, so no code
DELETED_ELSEWHERE = ErrReply("Message was deleted by another session")
NOT_REMOVED = ErrReply("Some deleted messages not removed", "SYS/TEMP")
INSUFFICIENT_STORAGE = ErrReply("Insufficient system storage", "SYS/TEMP")
STORAGE_FAILURE = ErrReply("Temporary storage failure, try again later", "SYS/TEMP")
TEMPORARY_FAILURE = ErrReply("Local error in processing, try again later", "SYS/TEMP")
