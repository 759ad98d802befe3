"""IMAP's side of Sieve in IMAP (RFC 6785, services/imapsieve.py): after APPEND, COPY/MOVE
and STORE, the messages go to the target mailbox's script, if it has one."""

from __future__ import annotations

from collections.abc import Sequence

from ..storage.interfaces import MailboxInfo
from .imap_session import ImapSession


async def after(s: ImapSession, cause: str, mailbox: MailboxInfo, uids: Sequence[int],
                changed: Sequence[str] = ()) -> None:
    from ..services.imapsieve import run
    from ..services.sieve import SieveService

    service = s.ctx.extras.get("sieve")
    if not isinstance(service, SieveService) or s.account is None or not uids:
        return
    await run(service, s.account.id, s.account.address, mailbox, uids, cause, changed)
