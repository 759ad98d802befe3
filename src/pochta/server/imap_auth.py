"""IMAP commands valid in any state and authentication: CAPABILITY, NOOP, LOGOUT, ID,
ENABLE, STARTTLS, LOGIN, AUTHENTICATE (RFC 9051 §6.1, §6.2; SASL-IR RFC 4959).

Who may log in, when and with which mechanism is ``AuthPolicy``'s decision
(services/auth_policy.py); a refusal is raised as an ``AuthError`` (pochta/errors.py)
that the command boundary answers ``NO [AUTHENTICATIONFAILED]``/``[UNAVAILABLE]``."""

from __future__ import annotations

import base64
import binascii

from ..errors import AuthFailed
from ..proto.imap.errors import (
    BadCommand,
    Cannot,
    PrivacyRequired,
)
from ..proto.imap.parser import ParseError, Reader
from ..proto.imap.session import SaslResponse, State
from ..proto.sasl.base import Challenge
from ..services.auth_policy import AuthPolicy
from ..storage.interfaces import Account
from .imap_session import ImapSession
from .trace import trace_account


def _auth_policy(s: ImapSession) -> AuthPolicy:
    return AuthPolicy(s.ctx.config.auth, s.ctx.authenticator, s.listener.role,
                      s.listener.tls, s.conn, s.conn.peer_ip)


def capabilities(s: ImapSession) -> list[str]:
    caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"]
    if s.state is State.NOT_AUTHENTICATED:
        policy = _auth_policy(s)
        if policy.tls_first:
            # RFC 9051 §6.2.3: LOGIN and AUTHENTICATE wait for TLS
            caps += ["STARTTLS", "LOGINDISABLED"]
        else:
            caps += [f"AUTH={m}" for m in policy.offer().mechanisms]
        return caps
    caps += [
        "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "LIST-EXTENDED",
        "LIST-STATUS", "SPECIAL-USE", "ESEARCH", "SEARCHRES", "CONDSTORE", "QRESYNC",
        "QUOTA", "QUOTA=RES-STORAGE", f"APPENDLIMIT={s.append_limit}", "STATUS=SIZE",
        "UTF8=ACCEPT", "BINARY", "SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT",
        "THREAD=REFERENCES", "ESORT", "PARTIAL", "METADATA", "SAVEDATE", "OBJECTID",
        "PREVIEW", "CREATE-SPECIAL-USE", "MULTIAPPEND",
        "CATENATE", "UIDONLY", "CONTEXT=SEARCH", "CONTEXT=SORT",
        "URLAUTH", "URLAUTH=BINARY", "ACL", "RIGHTS=texk", "LIST-MYRIGHTS",
        "NOTIFY", "LIST-METADATA", "WITHIN", "REPLACE",
    ]
    if not s.conn.compressed:
        caps.append("COMPRESS=DEFLATE")
    if s.ctx.delivery.sieve is not None:  # RFC 6785 §2: where the scripts are managed
        caps.append(f"IMAPSIEVE=sieve://{s.ctx.config.hostname}")
    return caps


async def cmd_capability(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    r.end()
    s.send(("* CAPABILITY " + " ".join(capabilities(s)) + "\r\n").encode())
    s.ok(tag, "CAPABILITY completed")


async def cmd_noop(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    r.end()
    await s.sync(allow_expunge=True)
    s.ok(tag, "NOOP completed")


async def cmd_logout(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    r.end()
    s.send(b"* BYE Logging out\r\n")
    s.ok(tag, "LOGOUT completed")
    s.unselect()
    s.state = State.LOGOUT


async def cmd_id(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    # RFC 2971: the client's list is informational only; parse it to reject garbage,
    # within §3.3's bounds (30 pairs, fields of 30 octets, values of 1024), which also
    # bound what a client may make us buffer before login (session.PREAUTH_MAX_ID)
    if not r.accept("NIL"):
        r.expect("(")
        pairs = 0
        while not r.accept(")"):
            r.maybe_sp()
            field = r.string()
            r.sp()
            value = r.nstring()
            pairs += 1
            if pairs > 30 or len(field.encode()) > 30 or len((value or "").encode()) > 1024:
                raise ParseError("ID exceeds RFC 2971 limits (30 pairs, 30/1024 octets)")
    r.end()
    s.send(b'* ID ("name" "Pochta" "vendor" "Pochta")\r\n')
    s.ok(tag, "ID completed")


async def cmd_enable(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    names = [r.atom().upper()]
    while r.maybe_sp():
        names.append(r.atom().upper())
    r.end()
    enabled: list[str] = []
    for name in names:
        if name == "IMAP4REV2":
            s.core.rev2 = s.core.utf8 = True
            enabled.append("IMAP4rev2")
        elif name == "UTF8=ACCEPT":
            s.core.utf8 = True
            enabled.append("UTF8=ACCEPT")
        elif name == "CONDSTORE":
            s.core.condstore = True
            enabled.append("CONDSTORE")
        elif name == "UIDONLY":
            s.core.uidonly = True
            if s.selected is not None:
                s.selected.uidonly = True
            enabled.append("UIDONLY")
        elif name == "QRESYNC":
            s.core.condstore = s.core.qresync = True
            enabled.append("QRESYNC")
        elif name in ("METADATA", "METADATA-SERVER"):
            s.metadata_enabled = True  # unsolicited METADATA (RFC 5464 §4.1)
            enabled.append(name)
    s.send(("* ENABLED " + " ".join(enabled)).rstrip().encode() + b"\r\n")
    s.ok(tag, "ENABLE completed")


async def cmd_starttls(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    r.end()
    if s.listener.tls != "starttls" or s.conn.tls_active or s.ctx.ssl_context is None:
        raise BadCommand("STARTTLS not available")
    s.ok(tag, "Begin TLS negotiation now")
    await s.flush()
    # anything pipelined after STARTTLS was sent in clear: drop it (RFC 9051 §6.2.1)
    s.core.discard_buffered()
    await s.conn.start_tls()


async def cmd_compress(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    """COMPRESS DEFLATE (RFC 4978): the tagged OK is the last uncompressed line; the
    client compresses from its next command on, and so do we."""
    mechanism = r.atom().upper()
    r.end()
    if mechanism != "DEFLATE":
        raise BadCommand("Unknown compression mechanism")
    if s.conn.compressed:
        raise Cannot("Compression is already active", "COMPRESSIONACTIVE")
    s.ok(tag, "DEFLATE active")
    s.write_out()  # the OK is the last uncompressed line
    s.core.discard_buffered()  # a client must wait for the OK (RFC 4978 §3)
    s.conn.start_deflate()


async def _logged_in(s: ImapSession, tag: str, account: Account) -> None:
    s.account = account
    trace_account(s.conn, "imap", account.address, s.ctx.config.log.trace_accounts)
    s.state = State.AUTHENTICATED
    s.ok(tag, "Logged in", "CAPABILITY " + " ".join(capabilities(s)))


async def cmd_login(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    user = r.astring()
    r.sp()
    password = r.astring()
    r.end()
    policy = _auth_policy(s)
    if policy.tls_first:
        raise PrivacyRequired
    try:
        account = await policy.login(user, password)
    except AuthFailed:
        s.core.count_error()
        raise
    await _logged_in(s, tag, account)


def _b64(data: bytes) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


async def cmd_authenticate(s: ImapSession, tag: str, r: Reader, uid: bool) -> None:
    mech_name = r.atom().upper()
    initial: bytes | None = None
    if r.maybe_sp():
        token = r.atom(allow="=").encode()  # SASL-IR (RFC 4959): "=" is an empty response
        initial = b"" if token == b"=" else _b64(token)
        if initial is None:
            raise ParseError("bad base64 in initial response")
    r.end()
    policy = _auth_policy(s)
    if policy.tls_first:
        raise PrivacyRequired
    try:
        sasl = policy.begin(mech_name, final_as_challenge=True)
        outcome = await sasl.start(initial)
        while isinstance(outcome, Challenge):
            s.core.sasl_challenge(tag, outcome.data)
            event = await s.next_event()
            assert isinstance(event, SaslResponse)
            if event.data is None:  # the core answered BAD
                if event.error == "bad base64":
                    await s.ctx.authenticator.register_failure(s.conn.peer_ip, None,
                                                               "bad base64")
                return
            outcome = await sasl.respond(event.data)
    except AuthFailed:
        s.core.count_error()
        raise
    await _logged_in(s, tag, outcome.account)

