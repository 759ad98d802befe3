"""The POP3 front-end: drives ``pochta.proto.pop3.Pop3Session`` over one connection.

The maildrop is the account's INBOX, snapshotted at login (RFC 1939 §8: fixed for the
session), so RETR reads one blob per command and never the message list again. Messages
marked with DELE are expunged only when QUIT enters the UPDATE state; a dropped
connection or an autologout leaves the maildrop untouched. One POP3 session per account
at a time (RFC 1939 §8 exclusive-access lock, ``ctx.pop3_locks``); IMAP sessions on the
same INBOX go on beside it.

A message that IMAP expunges during the POP3 session answers RETR and TOP with
``-ERR Message was deleted by another session`` (and stays in LIST/UIDL/STAT, which
describe the login snapshot, RFC 1939 §8). RFC 1939 assumes an exclusively locked
maildrop and says nothing of this case. We answer -ERR rather than serve bytes the
user has deleted: the bytes still being in the blob segment
until compaction is an accident of storage, not something to promise, and a message
expunged over IMAP (perhaps to get rid of it) should not come back through POP3. Each
RETR/TOP asks the store what was expunged since the login snapshot (``changes_since``
with the INBOX modseq read before the snapshot), which costs one indexed query.

A write that fails for want of space (``StorageFull``: QUIT's \\Seen flags and
deletions) answers ``-ERR [SYS/TEMP] Insufficient system storage`` (RFC 3206 §4); the
deletions are not made, so the client can try again.

Command boundary (``_boundary``): a Pochta error (pochta/errors.py) raised while deciding
an event is answered with its own POP3 response (``[AUTH]``, ``[IN-USE]``,
``[SYS/TEMP]``); any other exception is logged with its traceback and answered
``-ERR [SYS/TEMP]``. The session goes on, unless a message was half sent (then the
connection closes: the client cannot tell the rest from a message). Who may log in, and
with which SASL mechanism, is ``AuthPolicy``'s decision (services/auth_policy.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import ssl
import time
from typing import TYPE_CHECKING

from pochta.config import Listener
from pochta.errors import (
    AuthError,
    AuthFailed,
    AuthLockedOut,
    MaildropInUse,
    PochtaError,
    StorageFull,
    StoreError,
)
from pochta.mail.addresses import normalize_login
from pochta.proto.pop3 import (
    NEED_DATA,
    ApopLogin,
    AuthAborted,
    AuthResponse,
    AuthStart,
    Closed,
    DropMessage,
    PasswordLogin,
    Pop3Session,
    ProtocolUsageError,
    Retrieve,
    StartTLS,
    Update,
    replies,
)
from pochta.proto.sasl.base import Challenge
from pochta.server.listener import Connection, ServerShutdown
from pochta.server.sessionlog import record_session
from pochta.server.trace import trace_account
from pochta.services.auth_policy import AuthPolicy, SASLExchange
from pochta.services.locks import HeldLock
from pochta.services.sasl_driver import Authenticated
from pochta.storage.interfaces import Account, FlagMode

if TYPE_CHECKING:
    from pochta.server.context import ServerContext

log = logging.getLogger("pochta.pop3")

# RETR of a message bigger than this streams it from the store in STREAM_CHUNK pieces.
STREAM_ABOVE = 256 * 1024
STREAM_CHUNK = 256 * 1024

# Write buffered replies out once this much is pending (pipelined RETRs).
_FLUSH_AT = 256 * 1024


def apop_enabled(ctx: ServerContext) -> bool:
    """APOP is off unless the configuration turns it on (``[pop3] apop = true``)."""
    return ctx.config.pop3.apop


class _Pop3Handler:
    def __init__(self, conn: Connection, ctx: ServerContext, listener: Listener) -> None:
        self.conn = conn
        self.ctx = ctx
        self.store = ctx.store
        self.locked_account: int | None = None
        self.maildrop_lock: HeldLock | None = None
        self.user = ""  # after the login, for the mail log
        self.mailbox_id = 0
        self.modseq = 0  # the INBOX's highest modseq at or before the login snapshot
        self.gone: set[int] = set()  # uids of the snapshot expunged since (IMAP)
        self.sasl: SASLExchange | None = None
        self.auth = AuthPolicy(ctx.config.auth, ctx.authenticator, listener.role,
                               listener.tls, conn, conn.peer_ip)
        timestamp = None
        if apop_enabled(ctx):
            # RFC 1939 §7: a unique, msg-id-like timestamp per greeting.
            timestamp = f"<{os.getpid()}.{secrets.token_hex(8)}@{ctx.config.hostname}>"
        self.session = Pop3Session(
            hostname=ctx.config.hostname,
            tls_active=conn.tls_active,
            tls_available=ctx.ssl_context is not None and listener.tls == "starttls",
            # a listener configured without TLS (behind a TLS proxy, or for local tests)
            # accepts credentials as it is; every other listener wants TLS first
            plaintext_auth=self.auth.plaintext_allowed,
            mechanisms=self._mechanisms(),
            apop_timestamp=timestamp,
            max_errors=ctx.config.limits.max_errors,
        )

    # -- helpers ------------------------------------------------------------------------

    def _mechanisms(self) -> tuple[str, ...]:
        return self.auth.offer().mechanisms

    def flush(self) -> None:
        out = self.session.data_to_send()
        if out:
            self.conn.write(out)

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        timeout = self.ctx.config.limits.pop3_idle_timeout
        self.conn.write(self.session.greeting())
        started = time.monotonic()
        try:
            while True:
                event = self.session.next_event()
                if event is NEED_DATA:
                    self.flush()
                    await self.conn.drain()
                    try:
                        data = await self.conn.read(timeout)
                    except TimeoutError:
                        # RFC 1939 §3: autologout timer; no UPDATE state.
                        self.conn.write(self.session.autologout())
                        return
                    if not data:
                        return  # dropped without QUIT: deletions are forgotten
                    self.session.receive_data(data)
                elif isinstance(event, Closed) or await self._boundary(event) is not None:
                    self.flush()
                    await self.conn.drain()
                    return
        finally:
            if self.locked_account is not None:
                self.ctx.pop3_locks.discard(self.locked_account)
            if self.maildrop_lock is not None:
                await self.maildrop_lock.release()
            if self.user:  # the web admin's mail log (services/eventlog.py)
                record_session(self.ctx.store, "pop3", self.user, self.conn, started)

    # -- the command boundary ---------------------------------------------------------------

    async def _boundary(self, event: object) -> Closed | None:
        """Decide one event; a Pochta error gets its own -ERR, a bug ``-ERR [SYS/TEMP]``
        and a logged traceback. Returns ``Closed`` when the session must end."""
        try:
            await self._dispatch(event)
        except (ConnectionError, TimeoutError, ssl.SSLError, ServerShutdown,
                asyncio.CancelledError):
            raise  # the connection's end, not a bug
        except AuthError as exc:
            # counted: a failed login is the client's error (RFC 1939 §4 allows closing)
            log.info("login refused from %s: %s", self.conn.peer_ip, exc)
            self.sasl = None
            if self.session.reject_login(exc.pop3_reply()) is not None:
                log.info("too many errors")
                return Closed()
        except PochtaError as exc:
            log.error("POP3 %s failed: %s", type(event).__name__, exc)
            return self._abandon(exc.pop3_reply())
        except Exception:
            log.exception("POP3 %s failed with an internal error", type(event).__name__)
            return self._abandon(replies.TEMPORARY_FAILURE)
        return None

    def _abandon(self, reply: replies.ErrReply) -> Closed | None:
        self.sasl = None
        try:
            event = self.session.abandon(reply)
        except ProtocolUsageError:
            # a message half sent or a TLS handshake under way: where the client stands
            # is unknown, so the connection ends
            raise ConnectionAbortedError("POP3 state unknown after an error") from None
        return event if isinstance(event, Closed) else None

    async def _dispatch(self, event: object) -> None:
        if isinstance(event, Retrieve):
            await self._retrieve(event)
            if self.session.pending_output > _FLUSH_AT:
                self.flush()
                await self.conn.drain()
        elif isinstance(event, PasswordLogin):
            await self._login(await self.auth.login(event.username, event.password))
        elif isinstance(event, AuthStart):
            await self._auth_start(event)
        elif isinstance(event, AuthResponse):
            assert self.sasl is not None
            await self._auth_outcome(await self.sasl.respond(event.data))
        elif isinstance(event, AuthAborted):
            self.sasl = None
        elif isinstance(event, ApopLogin):
            await self._apop_login(event)
        elif isinstance(event, StartTLS):
            self.flush()
            await self.conn.start_tls()
            self.session.tls_started()
            self.session.mechanisms = self._mechanisms()
        elif isinstance(event, Update):
            await self._update(event)

    # -- authentication -------------------------------------------------------------------

    async def _apop_login(self, event: ApopLogin) -> None:
        auth = self.ctx.authenticator
        ip = self.conn.peer_ip
        address = normalize_login(event.username)
        if not await auth.allowed(ip, address):
            raise AuthLockedOut("locked out")
        account = await self.store.get_account(address)
        secret = account.apop_secret if account is not None else None
        # Compare against a random digest when there is no secret, so unknown accounts
        # and accounts without APOP take the same path.
        material = event.timestamp + (secret if secret else secrets.token_hex(16))
        expected = hashlib.md5(material.encode("utf-8"), usedforsecurity=False).hexdigest()
        ok = hmac.compare_digest(expected, event.digest)
        if account is None or not secret or account.disabled or not ok:
            await auth.register_failure(ip, address, "APOP")
            raise AuthFailed("APOP digest")
        auth.limiter.record_success(ip, address)
        await self._login(account)

    async def _auth_start(self, event: AuthStart) -> None:
        # RFC 5034's +OK cannot carry SCRAM's server-final: a last challenge does
        self.sasl = self.auth.begin(event.mechanism, final_as_challenge=True)
        await self._auth_outcome(await self.sasl.start(event.initial_response))

    async def _auth_outcome(self, outcome: Challenge | Authenticated) -> None:
        if isinstance(outcome, Challenge):
            self.session.auth_challenge(outcome.data)
            return
        self.sasl = None
        await self._login(outcome.account)

    async def _login(self, account: Account) -> None:
        # RFC 1939 §8 / RFC 2449 §8.1.1: one POP3 session per maildrop, in this process
        # (a set, no store round trip) and across processes and nodes (a store lock).
        if account.id in self.ctx.pop3_locks:
            raise MaildropInUse(account.address)
        self.ctx.pop3_locks.add(account.id)
        self.locked_account = account.id
        try:
            self.maildrop_lock = await HeldLock.acquire(self.store, f"pop3:{account.id}")
            held_elsewhere = self.maildrop_lock is None
        except Exception as exc:
            if not isinstance(exc, StoreError):  # a bug: the boundary answers it
                self.ctx.pop3_locks.discard(account.id)
                self.locked_account = None
                raise
            # A full disk must not stop reading mail: this process's lock still holds.
            log.warning("cannot take the shared maildrop lock of %s (%s); locking in "
                        "this process only", account.address, exc)
            held_elsewhere = False
        if held_elsewhere:
            self.ctx.pop3_locks.discard(account.id)
            self.locked_account = None
            raise MaildropInUse(account.address)
        try:
            mailbox = await self.store.get_mailbox(account.id, "INBOX")
            if mailbox is None:
                raise StoreError("account has no INBOX")
            metas = await self.store.list_messages(mailbox.id)
        except Exception as exc:
            # whatever failed (a bug too, answered at the boundary), the maildrop is
            # not this session's: let the next login have it
            self.ctx.pop3_locks.discard(account.id)
            self.locked_account = None
            if self.maildrop_lock is not None:
                await self.maildrop_lock.release()
                self.maildrop_lock = None
            if not isinstance(exc, StoreError):
                raise
            log.error("maildrop of %s unavailable: %s", account.address, exc)
            self.session.reject_login(replies.MAILDROP_UNAVAILABLE)
            return
        self.mailbox_id = mailbox.id
        self.modseq = mailbox.highestmodseq
        # UIDL (RFC 1939 §7): UIDVALIDITY.UID stays the same across sessions and flag
        # changes, and never names another message.
        prefix = f"{mailbox.uidvalidity}."
        drop = [DropMessage(m.uid, m.blob_id, m.size, prefix + str(m.uid)) for m in metas]
        log.info("POP3 login %s from %s, %d messages",
                 account.address, self.conn.peer_ip, len(drop))
        trace_account(self.conn, "pop3", account.address, self.ctx.config.log.trace_accounts)
        self.user = account.address
        self.session.accept_login(account.address, drop)

    # -- transaction ----------------------------------------------------------------------

    async def _expunged_meanwhile(self, uid: int) -> bool:
        """Whether IMAP expunged ``uid`` since the login snapshot."""
        if uid not in self.gone:
            changes = await self.store.changes_since(self.mailbox_id, self.modseq)
            self.gone.update(changes.expunged)
            self.modseq = changes.highestmodseq
        return uid in self.gone

    async def _retrieve(self, event: Retrieve) -> None:
        try:
            if await self._expunged_meanwhile(event.message.uid):
                self.session.message_unavailable(replies.DELETED_ELSEWHERE)
                return
            if event.top_lines is None and event.message.size > STREAM_ABOVE:
                await self._stream(event)
                return
            data = await self.store.read_blob(event.message.blob_id)
        except (StoreError, OSError) as exc:
            log.warning("message uid %d unavailable: %s",
                        event.message.uid, exc)
            self.session.message_unavailable()
            return
        self.session.send_message(data)

    async def _stream(self, event: Retrieve) -> None:
        """RETR of a big message in pieces (never whole in memory). The store checks the
        blob before the first piece; a failure after the +OK cannot be put right in the
        protocol, so the connection is closed."""
        pieces = self.store.stream_blob(event.message.blob_id, chunk=STREAM_CHUNK)
        first = await anext(pieces)  # raises before anything is sent
        self.session.start_message(event.message.size)
        try:
            self.session.message_chunk(first)
            self.flush()
            async for piece in pieces:
                self.session.message_chunk(piece)
                self.flush()
                await self.conn.drain()
        except (StoreError, OSError) as exc:
            log.error("message uid %d failed while being sent: %s", event.message.uid, exc)
            raise ConnectionAbortedError("message unreadable mid-transfer") from exc
        self.session.end_message()

    async def _update(self, event: Update) -> None:
        ok = True
        try:
            if event.retrieved:
                # Like Dovecot: messages downloaded and kept show as read over IMAP.
                await self.store.store_flags(
                    self.mailbox_id, [m.uid for m in event.retrieved],
                    frozenset({"\\Seen"}), FlagMode.ADD,
                )
            if event.deleted:
                await self.store.expunge(self.mailbox_id, [m.uid for m in event.deleted])
        except StorageFull as exc:
            log.error("conn %s: UPDATE failed, storage full: %s", self.conn.conn_id, exc)
            self.session.update_done(False, replies.INSUFFICIENT_STORAGE)
            return
        except StoreError as exc:
            log.error("UPDATE failed: %s", exc)
            ok = False
        self.session.update_done(ok)


async def handle_pop3(conn: Connection, ctx: ServerContext, listener: Listener) -> None:
    """One POP3 connection (port 110 with STLS, or 995 with implicit TLS)."""
    await _Pop3Handler(conn, ctx, listener).run()
