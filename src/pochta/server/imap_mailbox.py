"""IMAP mailbox commands: SELECT/EXAMINE (with CONDSTORE/QRESYNC), CREATE, DELETE, RENAME,
(UN)SUBSCRIBE, LIST (RFC 5258/6154/5819), LSUB, NAMESPACE, STATUS, APPEND (UIDPLUS),
QUOTA (RFC 9208), CLOSE, UNSELECT."""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass

from ..mail.attachments import KEYWORDS
from ..proto.imap import bodystructure as bs
from ..proto.imap import metadata as md
from ..proto.imap.acl import OWNER_RIGHTS, can_change_flag
from ..proto.imap.acl import read_only as acl_read_only
from ..proto.imap.errors import AlreadyExists as MailboxExists
from ..proto.imap.errors import (
    Cannot,
    ImapError,
    Limit,
    Nonexistent,
    NoPerm,
    TooBig,
    TryCreate,
)
from ..proto.imap.parser import ParseError, Reader, valid_mailbox_name
from ..proto.imap.response import astring, seq_set
from ..proto.imap.selected import Selected
from ..proto.imap.seqset import parse_seqset, parse_seqset_text
from ..proto.imap.session import State
from ..services.delivery import attachment_flag
from ..storage.interfaces import (
    AcceptResult,
    AlreadyExists,
    Envelope,
    LocalTarget,
    MailboxInfo,
    NotFound,
    SpecialUse,
    SpooledMessage,
    StorageFull,
    StoreError,
)
from . import imap_sieve
from .imap_catenate import CatPart, catenate
from .imap_session import ImapSession, SpoolFile
from .imap_shared import (
    OTHER_USERS,
    PUBLIC,
    Mailbox,
    is_shared_name,
    resolve,
    split_shared,
    visible_shared,
)

STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
                "HIGHESTMODSEQ", "MAILBOXID")


def mailbox_id(info: MailboxInfo) -> str:
    """OBJECTID's MAILBOXID (RFC 8474 §4): kept by RENAME (the row and its UIDVALIDITY
    stay), never given to another mailbox (UIDVALIDITY is never reused in an account)."""
    return f"M{info.id}-{info.uidvalidity}"


# --- SELECT / EXAMINE -----------------------------------------------------------------


async def _select(s: ImapSession, tag: str, r: Reader, readonly: bool) -> None:
    name = r.mailbox()
    qresync: tuple[int, int, str | None] | None = None
    if r.maybe_sp():
        r.expect("(")
        while not r.accept(")"):
            r.maybe_sp()
            param = r.atom().upper()
            if param == "CONDSTORE":
                s.condstore = True
            elif param == "QRESYNC":
                if not s.qresync:
                    raise ParseError("QRESYNC is not enabled")
                r.sp()
                r.expect("(")
                validity = r.number(nonzero=True)
                r.sp()
                modseq = r.number(nonzero=True)
                known: str | None = None
                if r.maybe_sp():
                    start = r.pos
                    parse_seqset(r)
                    known = r.line[start : r.pos]
                    if r.maybe_sp():  # seq-match-data: ignored, we compute exactly
                        r.expect("(")
                        parse_seqset(r)
                        r.sp()
                        parse_seqset(r)
                        r.expect(")")
                r.expect(")")
                qresync = (validity, modseq, known)
            else:
                raise ParseError(f"unknown SELECT parameter {param}")
    r.end()
    if s.selected is not None:
        s.unselect()
        s.send(b"* OK [CLOSED] Previous mailbox closed\r\n")  # RFC 7162 §3.2.11
    box = await resolve(s, name)
    if box is None:
        raise Nonexistent("No such mailbox")
    if "r" not in box.rights:  # RFC 4314 §4: SELECT and EXAMINE need r
        raise NoPerm("Permission denied")
    info = box.info
    readonly = readonly or acl_read_only(box.rights)
    messages = await s.store.list_messages(info.id)
    if readonly:  # EXAMINE leaves \Recent alone (§6.3.3): peek at the count only
        recent = (await s.store.mailbox_status(info.id)).recent
        first_recent = messages[-recent].uid if 0 < recent <= len(messages) else info.uidnext
    else:
        # a write: on a full disk SELECT still works, without \Recent claims
        claimed = await s.claim_recent(info.id)
        first_recent = claimed if claimed is not None else info.uidnext
    sel = Selected.load(info, readonly, messages, first_recent)
    sel.uidonly = s.core.uidonly
    s.selected = sel
    s.rights = box.rights
    s.watcher = s.store.watch(info.id)
    s.state = State.SELECTED
    s.send(sel.flags_lines())
    s.send(b"* %d EXISTS\r\n" % sel.count)
    if s.rev1_recent:
        s.send(b"* %d RECENT\r\n" % len(sel.recent))
        unseen = next((seq for seq, m in sel.messages() if "\\Seen" not in m.flags), 0)
        if unseen:
            s.send(b"* OK [UNSEEN %d] First unseen\r\n" % unseen)
    s.send(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % info.uidvalidity)
    s.send(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % info.uidnext)
    s.send(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % sel.modseq)
    s.send(b"* OK [MAILBOXID (%s)] Ok\r\n" % mailbox_id(info).encode())
    if s.rev2:
        s.send(b"* LIST () \"/\" " + s.mailbox_name(info.name) + b"\r\n")
    if qresync is not None and qresync[0] == info.uidvalidity:
        await _qresync_replay(s, sel, qresync[1], qresync[2])
    if s.metadata_report is not None and is_shared_name(info.name):
        # ENABLE METADATA: another account's mailbox is watched from now on, its entries
        # as they are now the baseline (imap_metadata.py; its own ones always are)
        await s.metadata_report()
    s.ok(tag, "SELECT completed" if not readonly else "EXAMINE completed",
         "READ-ONLY" if readonly else "READ-WRITE")


async def _qresync_replay(s: ImapSession, sel: Selected, modseq: int, known: str | None) -> None:
    """RFC 7162 §3.2.5.2: VANISHED (EARLIER) for expunges, FETCH for changed flags."""

    changes = await s.store.changes_since(sel.info.id, modseq)
    gone = list(changes.expunged)
    if known is not None:
        known_set = parse_seqset_text(known)
        top = max([*gone, sel.top_uid], default=0)
        gone = [u for u in gone if known_set.contains_uid(u, top)]
    if gone:
        s.send(b"* VANISHED (EARLIER) " + seq_set(gone) + b"\r\n")
    for m in changes.changed:
        if m.uid in sel.meta:
            s.send(sel.flags_fetch(m.uid, s.rev1_recent, True))


async def cmd_select(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    await _select(s, tag, r, readonly=False)


async def cmd_examine(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    await _select(s, tag, r, readonly=True)


async def cmd_close(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    r.end()
    sel = s.selected
    if sel is not None and not sel.readonly and "e" in s.rights:  # RFC 4314 §4
        await s.store.expunge(sel.info.id)  # silently: no EXPUNGE responses (§6.4.1)
    s.unselect()
    s.ok(tag, "CLOSE completed")


async def cmd_unselect(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    r.end()
    s.unselect()
    s.ok(tag, "UNSELECT completed")


# --- CREATE / DELETE / RENAME / SUBSCRIBE ---------------------------------------------


async def cmd_create(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    name = r.mailbox().rstrip("/")  # a trailing separator declares intent only (§6.3.4)
    uses: list[str] = []
    if r.maybe_sp():  # CREATE-SPECIAL-USE (RFC 6154 §3): (USE (\Drafts ...))
        r.expect("(")
        while not r.accept(")"):
            r.maybe_sp()
            param = r.atom().upper()
            r.sp()
            if param != "USE":
                raise ParseError(f"unknown CREATE parameter {param}")
            r.expect("(")
            while not r.accept(")"):
                r.maybe_sp()
                uses.append(r.flag())
    r.end()
    if not valid_mailbox_name(name):
        raise Cannot("Invalid mailbox name")
    owner_id = s.account_id
    if is_shared_name(name):
        # a child of a shared mailbox: k on the parent (RFC 4314 §4), in the owner's tree
        parent = await resolve(s, name.rsplit("/", 1)[0])
        split = split_shared(name)
        if parent is None or parent.own or split is None:
            raise NoPerm("Cannot create mailboxes here")
        if "k" not in parent.rights:
            raise NoPerm("Permission denied")
        owner_id, name = parent.owner_id, split[1]
    use: SpecialUse | None = None
    if uses:
        known = {u.value.lower(): u for u in SpecialUse}
        if len(uses) > 1 or uses[0].lower() not in known:
            # one special use per mailbox here (RFC 6154 §3: NO [USEATTR])
            raise ImapError("Unsupported special-use attribute", "USEATTR")
        use = known[uses[0].lower()]
    try:
        info = await s.store.create_mailbox(owner_id, name, use)
    except AlreadyExists:
        raise MailboxExists from None
    # CREATE does not subscribe (RFC 9051 §6.3.4 / §6.3.7, as Dovecot and Cyrus): clients
    # that want it send SUBSCRIBE.
    s.ok(tag, "CREATE completed", f"MAILBOXID ({mailbox_id(info)})")


async def cmd_delete(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    name = r.mailbox()
    r.end()
    if name == "INBOX":
        raise Cannot("INBOX cannot be deleted")
    owner_id = s.account_id
    if is_shared_name(name):
        box = await resolve(s, name)
        if box is None:
            raise Nonexistent("No such mailbox")
        if "x" not in box.rights:  # RFC 4314 §4: DELETE needs x
            raise NoPerm("Permission denied")
        owner_id, name = box.owner_id, box.owner_name
        if s.selected is not None and s.selected.info.id == box.info.id:
            s.unselect()
    if s.selected is not None and s.selected.info.name == name:
        s.unselect()
    try:
        await s.store.delete_mailbox(owner_id, name)
    except NotFound:
        raise Nonexistent("No such mailbox") from None
    except StorageFull:
        raise  # NO [LIMIT] (StorageFull.imap_error, at the boundary)
    except StoreError as exc:
        raise Cannot(f"Cannot delete: {exc}") from exc
    s.ok(tag, "DELETE completed")


async def cmd_rename(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    old = r.mailbox()
    r.sp()
    new = r.mailbox()
    r.end()
    if not valid_mailbox_name(new) or new == "INBOX":
        raise Cannot("Invalid mailbox name")
    if is_shared_name(old) or is_shared_name(new):
        raise NoPerm("Shared mailboxes cannot be renamed")
    try:
        await s.store.rename_mailbox(s.account_id, old, new)
    except NotFound:
        raise Nonexistent("No such mailbox") from None
    except AlreadyExists:
        raise MailboxExists from None
    s.ok(tag, "RENAME completed")


async def _subscribe(s: ImapSession, tag: str, r: Reader, on: bool) -> None:
    name = r.mailbox()
    r.end()
    if on and is_shared_name(name) and await resolve(s, name) is None:
        raise Nonexistent("No such mailbox")
    try:
        await s.store.set_subscribed(s.account_id, name, on)
    except NotFound:
        if on:
            raise Nonexistent("No such mailbox") from None
    s.ok(tag, "SUBSCRIBE completed" if on else "UNSUBSCRIBE completed")


async def cmd_subscribe(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    await _subscribe(s, tag, r, True)


async def cmd_unsubscribe(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    await _subscribe(s, tag, r, False)


# --- LIST / LSUB / NAMESPACE ----------------------------------------------------------


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches anything, ``%`` anything but the separator (§6.3.9)."""
    out = []
    for c in pattern:
        out.append(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _match(pattern: str, name: str) -> bool:
    if pattern_regex(pattern).match(name):
        return True
    # INBOX is case-insensitive, also as a prefix of a pattern
    if name == "INBOX" or name.startswith("INBOX/"):
        upper = pattern[:5].upper() + pattern[5:]
        return bool(pattern_regex(upper).match(name))
    return False


async def _status_items(s: ImapSession, info: MailboxInfo, items: list[str]) -> bytes:
    st = await s.store.mailbox_status(info.id)
    values = {
        "MESSAGES": st.messages, "UIDNEXT": st.uidnext, "UIDVALIDITY": st.uidvalidity,
        "UNSEEN": st.unseen, "DELETED": st.deleted, "SIZE": st.size, "RECENT": st.recent,
        "HIGHESTMODSEQ": st.highestmodseq, "MAILBOXID": f"({mailbox_id(info)})",
    }
    body = " ".join(f"{i} {values[i]}" for i in items)
    return b"* STATUS " + s.mailbox_name(info.name) + b" (" + body.encode() + b")\r\n"


def _parse_status_items(r: Reader) -> list[str]:
    items = [x.upper() for x in r.paren_list()]
    if not items or any(i not in STATUS_ITEMS for i in items):
        raise ParseError("unknown STATUS item")
    return items


async def cmd_list(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    selection: set[str] = set()
    if r.peek() == "(":
        selection = {x.upper() for x in r.paren_list()}
        r.sp()
        if not selection <= {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}:
            raise ParseError("unknown LIST selection option")
        if "RECURSIVEMATCH" in selection and selection <= {"RECURSIVEMATCH", "REMOTE"}:
            # RFC 5258 §3.1: RECURSIVEMATCH needs another selection option
            raise ParseError("RECURSIVEMATCH alone is not allowed")
    reference = r.list_mailbox()
    r.sp()
    if r.peek() == "(":
        r.pos += 1
        patterns = [r.list_mailbox()]
        while r.maybe_sp():
            patterns.append(r.list_mailbox())
        r.expect(")")
    else:
        patterns = [r.list_mailbox()]
    returns: set[str] = set()
    status_items: list[str] = []
    metadata: list[str] = []
    if r.maybe_sp():
        r.expect("RETURN (")
        while not r.accept(")"):
            r.maybe_sp()
            opt = r.atom().upper()
            if opt == "STATUS":
                r.sp()
                status_items = _parse_status_items(r)
            elif opt == "METADATA":  # LIST-METADATA (RFC 9590)
                r.sp()
                metadata = md.parse_entries(r)
            elif opt not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "MYRIGHTS"):
                raise ParseError(f"unknown LIST return option {opt}")
            returns.add(opt)
    r.end()
    if patterns == [""]:
        # the hierarchy delimiter and root (§6.3.9)
        s.send(b'* LIST (\\Noselect) "/" ""\r\n')
        s.ok(tag, "LIST completed")
        return
    await _list(s, tag, reference, patterns, selection, returns, status_items, lsub=False,
                metadata=metadata)


async def cmd_lsub(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    reference = r.list_mailbox()
    r.sp()
    pattern = r.list_mailbox()
    r.end()
    await _list(s, tag, reference, [pattern], {"SUBSCRIBED"}, set(), [], lsub=True)


async def _list(
    s: ImapSession, tag: str, reference: str, patterns: list[str], selection: set[str],
    returns: set[str], status_items: list[str], lsub: bool, metadata: list[str] | None = None,
) -> None:
    boxes = await s.store.list_mailboxes(s.account_id)
    # LIST-METADATA: every own mailbox's entries in one read (shared ones: owner's only)
    entries = await s.store.account_metadata(s.account_id) if metadata else {}
    rights = {b.name: OWNER_RIGHTS for b in boxes}
    # other users' mailboxes this user may list (RFC 4314 'l'), as "Other Users/owner/.."
    for grant, shown, granted in await visible_shared(s):
        info = await s.store.get_mailbox(grant.owner_id, grant.mailbox)
        if info is not None:
            boxes.append(dataclasses.replace(info, name=shown))
            rights[shown] = granted
    by_name = {b.name: b for b in boxes}
    full = [(reference + p) if reference and not p.startswith("/") else p for p in patterns]
    names: set[str] = set(by_name)
    for b in boxes:  # parents implied by the hierarchy
        parts = b.name.split("/")
        for i in range(1, len(parts)):
            names.add("/".join(parts[:i]))
    only_subscribed = "SUBSCRIBED" in selection
    only_special = "SPECIAL-USE" in selection
    show_sub = only_subscribed or "SUBSCRIBED" in returns
    # subscriptions are names and may outlive their mailbox (RFC 9051 §6.3.7)
    subscribed = set(await s.store.list_subscriptions(s.account_id))
    if only_subscribed or lsub:
        names |= subscribed

    def matches(name: str) -> bool:
        return any(_match(p, name) for p in full)

    def hidden_subscribed_child(name: str) -> bool:
        """A subscribed descendant the patterns do not list themselves: LSUB shows the
        parent as \\Noselect (RFC 3501 §6.3.9), LIST RECURSIVEMATCH adds CHILDINFO
        (RFC 5258 §3.5)."""
        return any(x.startswith(name + "/") and not matches(x) for x in subscribed)

    for name in sorted(names, key=lambda n: (n != "INBOX", n)):
        if not matches(name):
            continue
        info = by_name.get(name)
        attrs: list[str] = []
        extended = b""
        if lsub:
            if name not in subscribed:
                if not hidden_subscribed_child(name):
                    continue
                attrs.append("\\Noselect")
            s.send(b"* LSUB (" + " ".join(attrs).encode() + b') "/" '
                   + s.mailbox_name(name) + b"\r\n")
            continue
        if only_subscribed:
            childinfo = "RECURSIVEMATCH" in selection and hidden_subscribed_child(name)
            if name not in subscribed and not childinfo:
                continue
            if childinfo:
                extended = b' ("CHILDINFO" ("SUBSCRIBED"))'
        elif info is None and "%" not in "".join(full):
            continue
        if only_special and (info is None or info.special_use is None):
            continue
        children = any(other.startswith(name + "/") for other in by_name)
        if info is None and is_shared_name(name):
            attrs.append("\\Noselect")  # "Other Users" and each owner: levels only
        elif info is None:
            attrs.append("\\NonExistent")
        attrs.append("\\HasChildren" if children else "\\HasNoChildren")
        if show_sub and name in subscribed:
            attrs.append("\\Subscribed")
        if info is not None and info.special_use is not None:
            attrs.append(str(info.special_use))
        s.send(b"* LIST (" + " ".join(attrs).encode() + b') "/" '
               + s.mailbox_name(name) + extended + b"\r\n")
        if status_items and info is not None and "r" in rights.get(name, ""):
            s.send(await _status_items(s, info, status_items))
        if "MYRIGHTS" in returns and info is not None:  # LIST-MYRIGHTS (RFC 8440)
            s.send(b"* MYRIGHTS " + s.mailbox_name(name) + b" "
                   + astring(rights.get(name, "")) + b"\r\n")
        if metadata and info is not None and not is_shared_name(name):
            found = md.select(entries.get(info.id, {}), metadata)
            if found:  # unset entries are left out, as GETMETADATA does
                s.send(md.response(s.mailbox_name(name), found))
    s.ok(tag, "LSUB completed" if lsub else "LIST completed")


async def cmd_namespace(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    r.end()
    # RFC 2342: personal, other users' (shared with this user by ACL), public folders
    s.send(b'* NAMESPACE (("" "/")) (("' + OTHER_USERS.encode() + b'/" "/")) (("'
           + PUBLIC.encode() + b'/" "/"))\r\n')
    s.ok(tag, "NAMESPACE completed")


async def cmd_status(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    name = r.mailbox()
    r.sp()
    items = _parse_status_items(r)
    r.end()
    box = await resolve(s, name)
    if box is None:
        raise Nonexistent("No such mailbox")
    if "r" not in box.rights:  # RFC 4314 §4: STATUS needs r
        raise NoPerm("Permission denied")
    s.send(await _status_items(s, box.info, items))
    s.ok(tag, "STATUS completed")


# --- APPEND ---------------------------------------------------------------------------


@dataclass(slots=True)
class Upload:
    """One message of an APPEND (MULTIAPPEND: several)."""

    flags: frozenset[str]
    date: float | None
    data: bytes | SpooledMessage
    parts: list[CatPart] | None = None  # CATENATE (RFC 4469), resolved after parsing


def parse_upload(r: Reader) -> Upload:
    """One message of APPEND (RFC 9051 §6.3.12, RFC 4466 append-message): flags, date,
    a literal (UTF8, literal8) or CATENATE."""
    flags: list[str] = []
    date: float | None = None
    if r.peek() == "(":
        flags = r.flag_list()
        r.sp()
    if r.peek() == '"':
        date = r.date_time()
        r.sp()
    wanted = frozenset(f for f in flags if f != "\\Recent" and f != "\\*")
    if r.accept("CATENATE ("):
        parts: list[CatPart] = []
        while not r.accept(")"):
            if parts:
                r.sp()
            kind = r.atom().upper()
            r.sp()
            if kind == "TEXT":
                text = r.message()
                if not isinstance(text, bytes | SpoolFile):
                    raise ParseError("unexpected literal")
                parts.append(("TEXT", text))
            elif kind == "URL":
                parts.append(("URL", r.astring()))
            else:
                raise ParseError(f"unknown CATENATE part {kind}")
        if not parts:
            raise ParseError("empty CATENATE")
        return Upload(wanted, date, b"", parts)
    # a literal8 "~{n}" (RFC 3516 §4.3) is read like a literal; a big one was spooled to
    # a temporary file as it arrived (SpoolFile), never whole in memory
    utf8 = r.accept("UTF8 (")  # UTF8=ACCEPT (RFC 6855 §4)
    literal = r.message()
    if utf8:
        r.expect(")")
    data: bytes | SpooledMessage
    if isinstance(literal, SpoolFile):
        if literal.failed:  # the disk was full while it arrived
            raise Limit
        data = SpooledMessage(literal.path, literal.written)
    elif isinstance(literal, bytes):
        data = bs.encode_binary_parts(literal)  # NUL octets: base64 (RFC 3516 §4.3)
    else:
        raise ParseError("unexpected literal")
    return Upload(wanted, date, data)


async def prepare_uploads(s: ImapSession, name: str, uploads: list[Upload]) -> Mailbox:
    """APPEND's checks and preparation, REPLACE's too (RFC 8508 §3.4): the target mailbox
    (``i`` needed), flags the user may not set dropped, CATENATE resolved, sizes checked,
    attachment keywords added."""
    box = await resolve(s, name)
    if box is None:
        raise TryCreate("No such mailbox")
    if "i" not in box.rights:  # RFC 4314 §4: APPEND needs i
        raise NoPerm("Permission denied")
    if box.rights != OWNER_RIGHTS:  # flags the user may not set are dropped (§4)
        for up in uploads:
            up.flags = frozenset(f for f in up.flags if can_change_flag(box.rights, f))
    for up in uploads:
        if up.parts is not None:
            up.data = await catenate(s, up.parts)
    for up in uploads:
        size = up.data.size if isinstance(up.data, SpooledMessage) else len(up.data)
        if not size:
            raise ImapError("Empty message")
        if size > s.append_limit:
            raise TooBig("Message too large")
    if s.limits.attachment_keywords:  # as delivery does, unless the client said which
        for up in uploads:
            if not up.flags & KEYWORDS:
                up.flags = up.flags | {await attachment_flag(up.data)}
    return box


def upload_target(box: Mailbox, up: Upload) -> LocalTarget:
    # the date is set here, not by the store, so the cache knows the message's key
    date = time.time() if up.date is None else up.date
    return LocalTarget(box.owner_id, box.owner_name, up.flags, date)


def remember_appended(s: ImapSession, box: Mailbox, up: Upload, target: LocalTarget,
                      result: AcceptResult) -> int:
    """The new UID; a message APPENDed to the selected mailbox goes to the part cache."""
    uid = result.local_uids[0][1] if result.local_uids else 0
    if (isinstance(up.data, bytes) and result.local_uids
            and result.local_uids[0][0] == box.info.id and target.internaldate is not None):
        s.ctx.imap_parts.put_appended(box.info, uid, result.blob_id, target.internaldate,
                                      up.data)
    return uid


async def cmd_append(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    """APPEND, and MULTIAPPEND (RFC 3502): all the messages or none."""
    name = r.mailbox()
    r.sp()
    uploads = [parse_upload(r)]
    while r.maybe_sp():
        uploads.append(parse_upload(r))
    r.end()
    box = await prepare_uploads(s, name, uploads)
    info = box.info
    uids: list[int] = []
    try:
        for up in uploads:
            target = upload_target(box, up)
            result = await s.store.accept(up.data, Envelope(sender=""), [target])
            uids.append(remember_appended(s, box, up, target, result))
    except StoreError as exc:
        if uids:  # MULTIAPPEND is atomic (RFC 3502 §6.3.11): take back what went in
            await s.store.expunge(info.id, uids)
        if isinstance(exc, NotFound):
            raise TryCreate from None
        raise
    s.added(info.id, uids)
    await imap_sieve.after(s, "APPEND", info, uids)  # RFC 6785
    await s.sync(allow_expunge=True)
    s.ok(tag, "APPEND completed",
         f"APPENDUID {info.uidvalidity} {seq_set(uids).decode()}")


# --- QUOTA (RFC 9208) -----------------------------------------------------------------


async def _quota_line(s: ImapSession) -> bytes:
    assert s.account is not None
    account = await s.store.get_account_by_id(s.account.id) or s.account
    if account.quota_bytes <= 0:
        return b'* QUOTA "" ()\r\n'
    used = await s.store.account_usage(account.id)
    return b'* QUOTA "" (STORAGE %d %d)\r\n' % (used // 1024, account.quota_bytes // 1024)


async def cmd_getquota(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    root = r.astring()
    r.end()
    if root != "":
        raise Nonexistent("No such quota root")
    s.send(await _quota_line(s))
    s.ok(tag, "GETQUOTA completed")


async def cmd_getquotaroot(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    name = r.mailbox()
    r.end()
    if await s.store.get_mailbox(s.account_id, name) is None:
        raise Nonexistent("No such mailbox")
    s.send(b"* QUOTAROOT " + s.mailbox_name(name) + b' ""\r\n')
    s.send(await _quota_line(s))
    s.ok(tag, "GETQUOTAROOT completed")


async def cmd_setquota(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    raise NoPerm("Quotas are set by the administrator")
