"""IMAP's side of Sieve in IMAP (RFC 6785, services/imapsieve.py): after APPEND, COPY/MOVE
and STORE, the messages go to the target mailbox's script, if it has one."""

from __future__ import annotations

from collections.abc import Sequence

from ..services.imapsieve import run
from ..storage.interfaces import MailboxInfo
from .imap_session import ImapSession


async def after(s: ImapSession, cause: str, mailbox: MailboxInfo, uids: Sequence[int],
                changed: Sequence[str] = ()) -> None:
    service = s.ctx.delivery.sieve
    if service is None or s.account is None or not uids:
        return
    await run(service, s.account.id, s.account.address, mailbox, uids, cause, changed)
