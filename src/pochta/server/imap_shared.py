"""Mailboxes as the client names them: the user's own (the personal namespace ``""``),
other users' mailboxes shared with them by ACL grants (RFC 4314), in the "Other Users"
namespace (RFC 2342): ``Other Users/<owner address>/<owner's mailbox name>``, and public
folders, owned by no person (the holder ``#public``, storage/public.py), in the shared
namespace: ``Public/<name>``.

``resolve`` is the one place a name becomes a mailbox and the rights the session has
on it; a mailbox of another account that grants nothing to this user does not exist
for it (the same NO [NONEXISTENT] as a name that names nothing), so nobody sees another
user's mail, or learns that a mailbox exists, without a grant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..proto.imap.acl import OWNER_RIGHTS, identifiers_of, rights_for
from ..storage.interfaces import MailboxInfo
from ..storage.interfaces_imap import AclGrant
from ..storage.public import PUBLIC_OWNER, is_public_owner
from .imap_session import ImapSession

OTHER_USERS = "Other Users"
PUBLIC = "Public"  # RFC 2342's shared namespace: public folders


@dataclass(frozen=True, slots=True)
class Mailbox:
    info: MailboxInfo  # ``name`` as the client names it
    owner_id: int
    owner_name: str  # the name in the owner's hierarchy
    rights: str
    own: bool


def is_shared_name(name: str) -> bool:
    """A name in another namespace than the user's own: not theirs to own."""
    return any(name == top or name.startswith(top + "/") for top in (OTHER_USERS, PUBLIC))


def shared_name(owner: str, name: str) -> str:
    if is_public_owner(owner):
        return f"{PUBLIC}/{name}"
    return f"{OTHER_USERS}/{owner}/{name}"


def split_shared(name: str) -> tuple[str, str] | None:
    """(owner address, owner's mailbox name) of ``Other Users/owner/name`` or
    ``Public/name`` (owner ``#public``)."""
    if name.startswith(PUBLIC + "/") and len(name) > len(PUBLIC) + 1:
        return PUBLIC_OWNER, name[len(PUBLIC) + 1 :]
    if not name.startswith(OTHER_USERS + "/"):
        return None
    owner, _, box = name[len(OTHER_USERS) + 1 :].partition("/")
    if not owner or not box or is_public_owner(owner):
        return None  # public folders have one name only
    return owner.lower(), ("INBOX" if box.upper() == "INBOX" else box)


async def acl_groups(s: ImapSession) -> list[str]:
    """The aliases that list this user: its ACL groups (proto/imap/acl.py), read once
    per session (a change to an alias counts from the user's next login)."""
    assert s.account is not None
    if s.acl_groups is None:
        s.acl_groups = await s.store.aliases_naming(s.account.address)
    return s.acl_groups


async def resolve(s: ImapSession, name: str) -> Mailbox | None:
    """The mailbox ``name`` names for this session, with its rights; None when there is
    none it may know of."""
    assert s.account is not None
    split = split_shared(name)
    if split is None:
        if is_shared_name(name):
            return None
        info = await s.store.get_mailbox(s.account_id, name)
        return None if info is None else Mailbox(info, s.account_id, info.name, OWNER_RIGHTS, True)
    owner_address, box = split
    owner = await s.store.get_account(owner_address)
    if owner is None or owner.id == s.account_id:
        return None
    info = await s.store.get_mailbox(owner.id, box)
    if info is None:
        return None
    rights = rights_for(await s.store.get_acl(info.id), s.account.address,
                        await acl_groups(s))
    if not rights or not set(rights) & set("lr"):
        return None  # invisible without a grant (RFC 4314 §6: no existence leak)
    shown = dataclasses.replace(info, name=shared_name(owner.address, info.name))
    return Mailbox(shown, owner.id, info.name, rights, False)


async def visible_shared(s: ImapSession) -> list[tuple[AclGrant, str, str]]:
    """Other users' mailboxes this session may list ('l'): (grant, client name, rights),
    the rights combined over the user's address, groups, ``authenticated`` and
    ``anyone``."""
    assert s.account is not None
    groups = await acl_groups(s)
    grants = await s.store.acl_grants(identifiers_of(s.account.address, groups))
    by_box: dict[int, list[AclGrant]] = {}
    for g in grants:
        if g.owner_id != s.account_id:
            by_box.setdefault(g.mailbox_id, []).append(g)
    owners: dict[int, str] = {}
    out: list[tuple[AclGrant, str, str]] = []
    for group in by_box.values():
        rights = rights_for({g.identifier: g.rights for g in group}, s.account.address,
                            groups)
        if "l" not in rights:
            continue
        g = group[0]
        if g.owner_id not in owners:
            acct = await s.store.get_account_by_id(g.owner_id)
            if acct is None:
                continue
            owners[g.owner_id] = acct.address
        out.append((g, shared_name(owners[g.owner_id], g.mailbox), rights))
    return out
