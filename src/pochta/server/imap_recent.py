"""Which new messages some session of this process has already claimed ``\\Recent`` for
(RFC 3501 §2.3.2: a message is recent in exactly one session, the first to see it).

A claim is a write (the store's ``claim_recent``: the mailbox's first unclaimed UID moves
to its UIDNEXT), and with many sessions in one mailbox every session that sees a new
message used to make one; imaptest's 10 clients made ~0.6 writes per command that way.
The first unclaimed UID only ever grows, in every process and both backends, so a lower
bound of it kept here stays true whatever other processes do: a session whose new
messages all lie below the bound would get none of them from a claim, and skips it.

Keyed by (mailbox id, UIDVALIDITY): SQLite may give a deleted mailbox's id to a new one,
never its UIDVALIDITY (RFC 9051 §2.3.1.1).
"""

from __future__ import annotations

from ..storage.interfaces import MailboxInfo

# mailboxes remembered per process before the table starts over (a bound of 0 is always
# true, so forgetting only costs claims)
MAX_MAILBOXES = 4096


class RecentClaims:
    """Per process: for each mailbox, a UID below which every message has been claimed."""

    def __init__(self) -> None:
        self._floor: dict[tuple[int, int], int] = {}

    def claim(self, info: MailboxInfo, newest: int) -> int | None:
        """Before a session claims the messages up to ``newest``: None when some session
        of this process already claims them (the caller then skips its claim), else the
        bound to hand back to ``failed`` if the claim does not go through. The bound
        moves now, not when the claim returns: sessions that sync while the claim is on
        its way to the writer would otherwise all claim too."""
        key = (info.id, info.uidvalidity)
        floor = self._floor.get(key, 0)
        if newest < floor:
            return None
        if key not in self._floor and len(self._floor) >= MAX_MAILBOXES:
            self._floor.clear()
        self._floor[key] = newest + 1
        return floor

    def failed(self, info: MailboxInfo, newest: int, floor: int) -> None:
        """The claim for messages up to ``newest`` failed (a full disk): the bound goes
        back unless a later claim has moved it on."""
        key = (info.id, info.uidvalidity)
        if self._floor.get(key) == newest + 1:
            self._floor[key] = floor
