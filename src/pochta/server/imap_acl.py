"""ACL (RFC 4314): SETACL, DELETEACL, GETACL, LISTRIGHTS and MYRIGHTS. The grants are
the store's (``get_acl``/``set_acl``); what a grant lets a user do is enforced where the
mailbox is named (``imap_shared.resolve`` and the handlers that use its rights)."""

from __future__ import annotations

from ..proto.imap.acl import (
    OPTIONAL_GROUPS,
    OWNER_RIGHTS,
    AclError,
    identifier,
    modify,
    positive,
)
from ..proto.imap.errors import BadCommand, ImapError, Nonexistent, NoPerm
from ..proto.imap.parser import Reader
from ..proto.imap.response import astring
from ..storage.public import is_public_owner
from .imap_session import ImapSession
from .imap_shared import Mailbox, resolve


async def _administered(s: ImapSession, name: str) -> Mailbox:
    """The mailbox, if this user may administer it ('a', RFC 4314 §4)."""
    box = await resolve(s, name)
    if box is None:
        raise Nonexistent("No such mailbox")
    if "a" not in box.rights:
        raise NoPerm("Permission denied")
    return box


async def _owner_address(s: ImapSession, box: Mailbox) -> str:
    if box.own:
        assert s.account is not None
        return s.account.address.lower()
    owner = await s.store.get_account_by_id(box.owner_id)
    return owner.address.lower() if owner is not None else ""


def _identifier(value: str) -> str:
    try:
        return identifier(value)
    except AclError as exc:
        raise BadCommand(str(exc)) from None


async def cmd_setacl(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    name = r.mailbox()
    r.sp()
    who = _identifier(r.astring())
    r.sp()
    mod = r.astring()
    r.end()
    box = await _administered(s, name)
    if positive(who) == await _owner_address(s, box):
        raise ImapError("The owner's rights are implicit and cannot be changed")
    current = (await s.store.get_acl(box.info.id)).get(who, "")
    try:
        rights = modify(current, mod)
    except AclError as exc:
        raise BadCommand(str(exc)) from None
    await s.store.set_acl(box.info.id, who, rights or None)
    s.ok(tag, "SETACL completed")


async def cmd_deleteacl(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    name = r.mailbox()
    r.sp()
    who = _identifier(r.astring())
    r.end()
    box = await _administered(s, name)
    await s.store.set_acl(box.info.id, who, None)
    s.ok(tag, "DELETEACL completed")


async def cmd_getacl(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    name = r.mailbox()
    r.end()
    box = await _administered(s, name)
    owner = await _owner_address(s, box)
    # a public folder's holder is nobody: no owner with implicit rights to show
    pairs = [] if is_public_owner(owner) else [(owner, OWNER_RIGHTS)]
    pairs += sorted((await s.store.get_acl(box.info.id)).items())
    s.send(b"* ACL " + s.mailbox_name(box.info.name) + b"".join(
        b" " + astring(who) + b" " + astring(rights) for who, rights in pairs) + b"\r\n")
    s.ok(tag, "GETACL completed")


async def cmd_listrights(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    name = r.mailbox()
    r.sp()
    who = _identifier(r.astring())
    r.end()
    box = await _administered(s, name)
    # the owner always has all of them, none optional; others need none and may get each
    owner = who == await _owner_address(s, box)
    groups = [OWNER_RIGHTS] if owner else ['""', *OPTIONAL_GROUPS]
    s.send(b"* LISTRIGHTS " + s.mailbox_name(box.info.name) + b" " + astring(who) + b" "
           + " ".join(groups).encode() + b"\r\n")
    s.ok(tag, "LISTRIGHTS completed")


async def cmd_myrights(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    name = r.mailbox()
    r.end()
    box = await resolve(s, name)
    if box is None:
        raise Nonexistent("No such mailbox")
    s.send(b"* MYRIGHTS " + s.mailbox_name(box.info.name) + b" " + astring(box.rights)
           + b"\r\n")
    s.ok(tag, "MYRIGHTS completed")
