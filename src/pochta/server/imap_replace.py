"""REPLACE and UID REPLACE (RFC 8508): a draft saved again replaces its previous version
in one step. The new message is APPENDed (the same checks, CATENATE included: §4.2) and
the old one expunged from the selected mailbox in one store transaction
(``replace_message``), whose quota check counts only the net growth (§3.4); either both
happen or neither. The client sees ``* OK [APPENDUID ...]`` first, then EXISTS and
EXPUNGE (or VANISHED) from the usual sync (§4.3), never a FETCH for a \\Deleted flag."""

from __future__ import annotations

from ..proto.imap.errors import ExpungeIssued, ImapError, NoPerm, ReadOnly, TryCreate
from ..proto.imap.parser import Reader
from ..storage.interfaces import NotFound
from . import imap_sieve
from .imap_mailbox import parse_upload, prepare_uploads, remember_appended, upload_target
from .imap_session import ImapSession


async def cmd_replace(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    sel = s.selected
    assert sel is not None  # REPLACE is valid in the selected state only (§3.5)
    number = r.number(nonzero=True)
    r.sp()
    name = r.mailbox()
    r.sp()
    up = parse_upload(r)
    r.end()
    if uid:
        old = number if sel.seq_of(number) else 0
    else:
        old = sel.uids[number - 1] if number <= sel.count else 0
    if not old:
        raise ImapError("No such message to replace")  # §3.2: NO, can't remove it
    if sel.readonly:
        raise ReadOnly("Mailbox is read-only: nothing can be replaced in it")
    # RFC 8508 §4.1: what STORE \Deleted and EXPUNGE need here, APPEND's i there
    if not {"t", "e"} <= set(s.rights):
        raise NoPerm("Permission denied")
    box = await prepare_uploads(s, name, [up])
    target = upload_target(box, up)
    try:
        result = await s.store.replace_message(sel.info.id, old, up.data, target)
    except NotFound:
        if sel.seq_of(old) and old not in await _uids_now(s):
            raise ExpungeIssued("The message to replace was expunged meanwhile") from None
        raise TryCreate from None
    new_uid = remember_appended(s, box, up, target, result)
    s.added(box.info.id, [new_uid])
    await imap_sieve.after(s, "APPEND", box.info, [new_uid])  # §4.4: as APPEND does
    # §4.3: APPENDUID before the EXPUNGE, in an untagged OK
    s.send(b"* OK [APPENDUID %d %d] Replacement message ready\r\n"
           % (box.info.uidvalidity, new_uid))
    await s.sync(allow_expunge=True)
    s.ok(tag, "REPLACE completed")


async def _uids_now(s: ImapSession) -> set[int]:
    sel = s.selected
    assert sel is not None
    return {m.uid for m in await s.store.list_messages(sel.info.id)}
