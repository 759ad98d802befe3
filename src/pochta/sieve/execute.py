"""What carrying out a Sieve result can refuse, in words a user understands: the
store's half of RFC 5228 §4.1 (fileinto) and RFC 5490 §3.2 (``:create``). Delivery logs
these and keeps the message in INBOX instead, as Pigeonhole fails the execution and
falls back to the implicit keep."""

from __future__ import annotations

from ..proto.imap.parser import valid_mailbox_name


def store_refusal(mailbox: str, exists: bool, may_create: bool) -> str | None:
    """Why the message cannot be stored into ``mailbox`` (None: it can). ``exists``:
    the account has it; ``may_create``: ``fileinto :create`` or autocreate is on."""
    if mailbox.upper() == "INBOX":
        return None
    if not valid_mailbox_name(mailbox):
        return (f"failed to store into mailbox {mailbox!r}: invalid mailbox name (empty "
                "level, control character or wildcard); kept in INBOX")
    if not exists and not may_create:
        return (f"failed to store into mailbox {mailbox!r}: it does not exist (fileinto "
                ":create makes it); kept in INBOX")
    return None
