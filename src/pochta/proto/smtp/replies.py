"""SMTP replies: the ``Reply`` value and a catalogue of named replies.

Every 2xx/4xx/5xx reply carries an enhanced status code (RFC 2034, RFC 3463) whose class
digit equals the first digit of the basic code. Three kinds of replies carry none, as
RFC 2034 section 3 and RFC 4954 allow: the 220 greeting, the replies to HELO/EHLO, and
the 3xx intermediate replies (354 for DATA, 334 AUTH challenges).

A reply text may hold several lines separated by ``"\\n"``; ``to_bytes`` formats them as a
multi-line reply (RFC 5321 section 4.2.1: ``250-first``, ..., ``250 last``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")


@dataclass(frozen=True)
class Reply:
    """One SMTP reply. ``close`` tells the session to close after sending it (221, 421)."""

    code: int
    enhanced: str
    text: str
    close: bool = False

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code out of range: {self.code}")
        klass = self.code // 100
        if self.enhanced:
            m = _ENHANCED.fullmatch(self.enhanced)
            if m is None:
                raise ValueError(f"malformed enhanced status code: {self.enhanced!r}")
            if int(m.group(1)) != klass:
                raise ValueError(
                    f"enhanced code {self.enhanced} does not match reply code {self.code}"
                )
        elif klass != 3 and self.code not in (220, 250):
            # Only the greeting, HELO/EHLO replies and 3xx may go without one.
            raise ValueError(f"reply {self.code} needs an enhanced status code")
        if any((ord(c) < 32 and c != "\n") or ord(c) == 127 for c in self.text):
            raise ValueError("reply text contains control characters")

    @property
    def is_success(self) -> bool:
        return self.code < 400

    def lines(self) -> list[str]:
        return self.text.split("\n")

    def to_bytes(self) -> bytes:
        lines = self.lines()
        prefix = f"{self.enhanced} " if self.enhanced else ""
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            # An empty AUTH challenge is sent as "334 " (RFC 4954 section 4).
            out.append(f"{self.code}{sep}{prefix}{line}\r\n")
        # Text may be UTF-8 (RFC 6531 section 3.7.4.2 allows it after SMTPUTF8).
        return "".join(out).encode("utf-8")


def greeting(hostname: str, banner: str) -> Reply:
    """The 220 greeting (RFC 5321 section 4.2: the server's name comes first)."""
    return Reply(220, "", f"{hostname} {banner}".strip())


def helo(hostname: str) -> Reply:
    return Reply(250, "", hostname)


def ehlo(hostname: str, keywords: list[str]) -> Reply:
    return Reply(250, "", "\n".join([hostname, *keywords]))


def queued(queue_id: str) -> Reply:
    """What the shell answers after storing a message."""
    return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")


def auth_challenge(b64: str) -> Reply:
    return Reply(334, "", b64)


def chunk_received(octets: int) -> Reply:
    return Reply(250, "2.0.0", f"Ok: {octets} octets received")


# --- replies that name an address or a limit (the shell's policy decisions) -------------
def sender_not_owned(address: str, user: str) -> Reply:
    """RFC 6409 §6.1: the submission server may refuse a sender the user does not own."""
    return Reply(553, "5.7.1",
                 f"<{address}>: Sender address rejected: not owned by user {user}")


def from_not_owned(address: str, user: str) -> Reply:
    return Reply(553, "5.7.1", f"From: header address <{address}> not owned by user {user}")


def message_rate_limited(limit: int) -> Reply:
    return Reply(451, "4.7.1", f"Rate limit: more than {limit} messages per hour, try later")


def recipient_rate_limited(limit: int) -> Reply:
    return Reply(452, "4.7.1", f"Rate limit: more than {limit} recipients per hour")


def user_unknown(address: str) -> Reply:
    return Reply(550, "5.1.1", f"<{address}>: Recipient address rejected: User unknown")


def mailbox_full_at_rcpt(address: str) -> Reply:
    """RFC 3463 4.2.2, temporary at RCPT: the owner may make room before the retry."""
    return Reply(452, "4.2.2", f"<{address}>: Mailbox full, try again later")


def posting_denied(address: str) -> Reply:
    """A public folder's address whose ``p`` right (RFC 4314 §2.1) this sender lacks."""
    return Reply(550, "5.7.1", f"<{address}>: Recipient address rejected: not allowed to post")


def relay_denied(address: str) -> Reply:
    return Reply(554, "5.7.1", f"<{address}>: Relay access denied")


def sieve_rejected(reason: str) -> Reply:
    """RFC 5429 §2.1.1: a Sieve ``reject`` refused in the protocol, with the script's
    reason made fit for a reply line (one line, ASCII, at most 400 characters)."""
    text = " ".join(reason.split())[:400] or "Message rejected"
    return Reply(550, "5.7.1", "".join(c if " " <= c <= "~" else "?" for c in text))


def decided_elsewhere(code: int, enhanced: str, text: str) -> Reply:
    """A reply another layer decided as plain values (the sending API's SMTP keys, the
    inbound DMARC policy): checked here like every other reply."""
    return Reply(code, enhanced, text)


def closing(hostname: str, why: str) -> Reply:
    """421 4.4.2 when the session times out or the client is too slow (RFC 5321 §4.5.3.2)."""
    return Reply(421, "4.4.2", f"{hostname} Error: {why}", close=True)


def shutting_down(hostname: str) -> Reply:
    return Reply(421, "4.3.2", f"{hostname} Service shutting down", close=True)


# --- 2xx ---------------------------------------------------------------------------------
OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Ok")
QUEUED = Reply(250, "2.0.0", "Ok: queued")
BYE = Reply(221, "2.0.0", "Bye", close=True)
HELP = Reply(
    214,
    "2.0.0",
    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
)


def help_reply(extra: Sequence[str]) -> Reply:
    """214 listing the base commands plus ``extra`` (STARTTLS, AUTH) where they work."""
    base = "EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP"
    return Reply(214, "2.0.0", "Commands: " + " ".join([base, *extra]))


# RFC 5321 section 3.5.3: 252 when the server will not verify; we never enumerate users.
CANNOT_VRFY = Reply(
    252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery"
)
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_SUCCEEDED = Reply(235, "2.7.0", "Authentication successful")
# RFC 4468 §6: a BURL without LAST, its URL resolved
BURL_MORE = Reply(250, "2.5.0", "Waiting for additional BURL or BDAT commands")

# --- 3xx ---------------------------------------------------------------------------------
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")

# --- 4xx ---------------------------------------------------------------------------------
SERVICE_UNAVAILABLE = Reply(
    421, "4.3.2", "Service not available, closing transmission channel", close=True
)
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing", close=True)
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing", close=True)
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
STORAGE_FAILURE = Reply(451, "4.3.0", "Temporary storage failure, try again")
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
AUTH_TEMPORARY_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure")
AUTH_LOCKED_OUT = Reply(454, "4.7.0", "Too many failed authentications, try again later")
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available due to temporary reason")
RATE_LIMITED = Reply(450, "4.7.1", "Rate limit exceeded, try again later")

# --- 5xx: syntax and sequence ---------------------------------------------------------
UNKNOWN_COMMAND = Reply(500, "5.5.1", "Command unrecognized")
SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error")
# What exactly is wrong with a line, for the human at a terminal (openssl s_client, nc).
SYNTAX_NOT_UTF8 = Reply(500, "5.5.2", "Syntax error: the command line is not UTF-8")
SYNTAX_EMPTY = Reply(500, "5.5.2", "Syntax error: empty command line")
SYNTAX_CR_CR_LF = Reply(
    500, "5.5.2",
    "Syntax error: line ends in CR CR LF (openssl s_client -crlf adds the CR)",
)
SYNTAX_CONTROL = Reply(500, "5.5.2", "Syntax error: control character (CR, NUL, ...) in the "
                       "command line")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
# RFC 4954 section 4.
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")
BAD_ARGUMENTS = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
NO_ARGUMENTS_ALLOWED = Reply(501, "5.5.4", "Syntax error, no parameters allowed")
EHLO_SYNTAX = Reply(501, "5.5.4", "Syntax: EHLO hostname")
HELO_SYNTAX = Reply(501, "5.5.4", "Syntax: HELO hostname")
MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
VRFY_SYNTAX = Reply(501, "5.5.4", "Syntax: VRFY address")
BDAT_SYNTAX = Reply(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]")
BURL_SYNTAX = Reply(501, "5.5.4", "Syntax: BURL imap-url [LAST]")
AUTH_SYNTAX = Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
BAD_PARAMETER = Reply(501, "5.5.4", "Invalid parameter value")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
RECIPIENT_NEEDS_DOMAIN = Reply(501, "5.1.3", "Recipient address must include a domain")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
EXPN_NOT_AVAILABLE = Reply(502, "5.5.1", "EXPN not available")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
SEND_HELO_FIRST = Reply(503, "5.5.1", "Send HELO/EHLO first")
SEND_EHLO_FIRST = Reply(503, "5.5.1", "Send EHLO first")
SENDER_ALREADY_GIVEN = Reply(503, "5.5.1", "Sender already specified")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command")
BINARYMIME_NEEDS_BDAT = Reply(503, "5.5.1", "BODY=BINARYMIME requires BDAT")
DATA_DURING_BDAT = Reply(503, "5.5.1", "DATA not allowed during a BDAT transfer")
COMMAND_DURING_BDAT = Reply(503, "5.5.1", "Command not allowed during a BDAT transfer")
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "TLS already active")
TRANSACTION_IN_PROGRESS = Reply(503, "5.5.1", "Mail transaction in progress")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Unsupported MAIL/RCPT parameter")
INVALID_BASE64 = Reply(501, "5.5.2", "Invalid base64 data")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_MALFORMED = Reply(501, "5.5.2", "Malformed authentication data")

# --- 5xx: policy --------------------------------------------------------------------------
MUST_STARTTLS = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
ENCRYPTION_REQUIRED = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
USER_UNKNOWN = Reply(550, "5.1.1", "Recipient address rejected: User unknown")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not owned by the authenticated user")
MAILBOX_FULL = Reply(552, "5.2.2", "Mailbox full")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
NON_ASCII_ADDRESS = Reply(553, "5.6.7", "Non-ASCII addresses require SMTPUTF8")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
# RFC 5321 section 2.3.8 forbids bare CR and LF; accepting them enables SMTP smuggling.
BARE_LINE_ENDING = Reply(554, "5.6.11", "Message contains bare CR or LF characters")
DATA_LINE_TOO_LONG = Reply(554, "5.6.0", "Message contains a line that is too long")
TRANSACTION_FAILED = Reply(554, "5.0.0", "Transaction failed")
# RFC 4468 §3.4 and §6 (X.6.6 is RFC 4468's own code)
BURL_UNAUTHORIZED = Reply(554, "5.7.0", "IMAP URL authorization failed")
BURL_UNRESOLVED = Reply(554, "5.6.6", "IMAP URL resolution failed")


def catalogue() -> dict[str, Reply]:
    """Every named reply of this module (used by tests and documentation)."""
    return {name: value for name, value in globals().items() if isinstance(value, Reply)}
