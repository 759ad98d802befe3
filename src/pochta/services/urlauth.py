"""What an authorized IMAP URL (URLAUTH, RFC 4467) names, for whoever may have it: IMAP's
URLFETCH (server/imap_urlauth.py) and submission's BURL (RFC 4468, server/smtp.py) resolve
URLs here, against the store, with the same checks in the same order.

The checks that need no message come first and all fail alike (``UrlUnauthorized``): the
access identifier, the expiry, the owner, the mailbox and its UIDVALIDITY, the token. A
caller without a valid token so learns nothing of which accounts, mailboxes or messages
exist. Only a URL whose token verifies can fail as ``UrlUnresolved`` (the message was
expunged, the section does not exist).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import PochtaError
from ..proto.imap import bodystructure as bs
from ..proto.imap.imapurl import BadUrl
from ..proto.imap.urlauth import AuthUrl, may_fetch, parse_auth_url, verify
from ..proto.smtp import replies
from ..storage.interfaces import MailStore, NotFound


class UrlUnauthorized(PochtaError):
    """Not a URL this requester may use: malformed, expired, another access identifier,
    or a token that does not verify (RFC 4468 §3.4's ``554 5.7.0``)."""

    smtp = replies.BURL_UNAUTHORIZED


class UrlUnresolved(PochtaError):
    """An authorized URL whose message or section is gone (RFC 4468 §6 ``554 5.6.6``)."""

    smtp = replies.BURL_UNRESOLVED


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks. ``fetcher``: the account logged in to IMAP (None: nobody), for URLFETCH.
    ``submitter``: the account authenticated to submission, for BURL, which alone may
    use ``submit+<that account>`` URLs (RFC 4468 §3.3)."""

    fetcher: str | None = None
    submitter: str | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    data: bytes  # the message, section or byte range the URL names
    part: bs.Part | None  # its structure (None for a byte range)


def allowed(url: AuthUrl, who: Requester, now: datetime) -> bool:
    if who.submitter is not None:
        # BURL: only submit+ URLs of the authenticated user; URLFETCH's rules otherwise
        # would let a submit client fetch what it could fetch anyway, so keep it narrow
        return (url.access == "submit" and (url.expire is None or now < url.expire)
                and url.access_user.lower() == who.submitter.lower())
    return may_fetch(url, who.fetcher, now)


async def resolve(store: MailStore, url: str, who: Requester,
                  now: datetime | None = None) -> Resolved:
    """The data of an authorized URL, or ``UrlUnauthorized`` / ``UrlUnresolved``."""
    try:
        auth = parse_auth_url(url, authorized=True)
    except BadUrl as exc:
        raise UrlUnauthorized(f"bad URL: {exc}") from None
    if not allowed(auth, who, now or datetime.now(UTC)):
        raise UrlUnauthorized(f"access {auth.access} not for this requester or expired")
    owner = await store.get_account(auth.owner_address().lower())
    info = None if owner is None else await store.get_mailbox(owner.id, auth.message.mailbox)
    if info is None or (auth.message.uidvalidity is not None
                        and auth.message.uidvalidity != info.uidvalidity):
        raise UrlUnauthorized("no such mailbox (or another UIDVALIDITY)")
    key = await store.urlauth_key(info.id, create=False)
    if key is None or not verify(key, auth):
        raise UrlUnauthorized("the token does not verify")
    metas = await store.list_messages(info.id)
    uids = [m.uid for m in metas]
    i = bisect.bisect_left(uids, auth.message.uid)
    if i >= len(uids) or uids[i] != auth.message.uid:
        raise UrlUnresolved(f"no UID {auth.message.uid} in the mailbox")
    try:
        data = await store.read_blob(metas[i].blob_id)
    except NotFound:
        raise UrlUnresolved("the message is gone") from None
    root = bs.parse(data)
    part: bs.Part | None = root
    u = auth.message
    if u.path or u.text:
        part = bs.find_part(root, u.path)
        section = bs.section_bytes(root, u.path, u.text)
        if section is None or part is None:
            raise UrlUnresolved("no such section")
        data = section
    if u.partial is not None:
        off, length = u.partial
        data = data[off : off + length] if length is not None else data[off:]
        part = None  # a byte range has no structure
    return Resolved(data, part)
