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
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from typing import TYPE_CHECKING

from pochta.addresses import normalize_login
from pochta.config import Listener
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
    Retrieve,
    StartTLS,
    Update,
)
from pochta.proto.sasl.base import Challenge
from pochta.server.listener import Connection
from pochta.services.locks import HeldLock
from pochta.services.sasl_driver import (
    Authenticated,
    Outcome,
    SASLDriver,
    SASLOffer,
    sasl_offer,
)
from pochta.storage.interfaces import Account, FlagMode, StorageFull, StoreError

if TYPE_CHECKING:
    from pochta.server.context import ServerContext

log = logging.getLogger("pochta.pop3")

# RETR of a message bigger than this streams it from the store in STREAM_CHUNK pieces.
STREAM_ABOVE = 256 * 1024
STREAM_CHUNK = 256 * 1024

# Reply to a client the brute-force limiter has locked out. It names no account and is
# the same whether the account exists.
_LOCKED_OUT = ("Too many failed logins, try again later", "SYS/TEMP")
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
        self.mailbox_id = 0
        self.modseq = 0  # the INBOX's highest modseq at or before the login snapshot
        self.gone: set[int] = set()  # uids of the snapshot expunged since (IMAP)
        self.sasl: SASLDriver | None = None
        timestamp = None
        if apop_enabled(ctx):
            # RFC 1939 §7: a unique, msg-id-like timestamp per greeting.
            timestamp = f"<{os.getpid()}.{secrets.token_hex(8)}@{ctx.config.hostname}>"
        self.session = Pop3Session(
            hostname=ctx.config.hostname,
            tls_active=conn.tls_active,
            tls_available=ctx.ssl_context is not None and listener.tls == "starttls",
            # A listener configured without TLS (behind a TLS proxy, or for local tests)
            # accepts credentials as it is; every other listener wants TLS first.
            plaintext_auth=listener.tls == "none",
            mechanisms=self._mechanisms(),
            apop_timestamp=timestamp,
            max_errors=ctx.config.limits.max_errors,
        )

    # -- helpers ------------------------------------------------------------------------

    def _sasl_offer(self) -> SASLOffer:
        # the session core itself keeps AUTH behind STLS unless plaintext_auth
        return sasl_offer(self.ctx.config.auth, self.conn, allow_plaintext=True)

    def _mechanisms(self) -> tuple[str, ...]:
        return self._sasl_offer().mechanisms

    def flush(self) -> None:
        out = self.session.data_to_send()
        if out:
            self.conn.write(out)

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        timeout = self.ctx.config.limits.pop3_idle_timeout
        self.conn.write(self.session.greeting())
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
                elif isinstance(event, Retrieve):
                    await self._retrieve(event)
                    if self.session.pending_output > _FLUSH_AT:
                        self.flush()
                        await self.conn.drain()
                elif isinstance(event, PasswordLogin):
                    await self._password_login(event.username, event.password)
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
                elif isinstance(event, Closed):
                    self.flush()
                    await self.conn.drain()
                    return
        finally:
            if self.locked_account is not None:
                self.ctx.pop3_locks.discard(self.locked_account)
            if self.maildrop_lock is not None:
                await self.maildrop_lock.release()

    # -- authentication -------------------------------------------------------------------

    async def _refuse(self, text: str = "Authentication failed", code: str = "AUTH") -> None:
        self.sasl = None
        if self.session.reject_login(text, code) is not None:
            log.info("too many errors")

    async def _password_login(self, username: str, password: str) -> None:
        auth = self.ctx.authenticator
        ip = self.conn.peer_ip
        if not await auth.allowed(ip, username):
            await self._refuse(*_LOCKED_OUT)
            return
        account = await auth.check_password(username, password, ip)
        if account is None:
            await self._refuse()
            return
        await self._login(account)

    async def _apop_login(self, event: ApopLogin) -> None:
        auth = self.ctx.authenticator
        ip = self.conn.peer_ip
        address = normalize_login(event.username)
        if not await auth.allowed(ip, address):
            await self._refuse(*_LOCKED_OUT)
            return
        account = await self.store.get_account(address)
        secret = account.apop_secret if account is not None else None
        # Compare against a random digest when there is no secret, so unknown accounts
        # and accounts without APOP take the same path.
        material = event.timestamp + (secret if secret else secrets.token_hex(16))
        expected = hashlib.md5(material.encode("utf-8"), usedforsecurity=False).hexdigest()
        ok = hmac.compare_digest(expected, event.digest)
        if account is None or not secret or account.disabled or not ok:
            await auth.register_failure(ip, address, "APOP")
            await self._refuse()
            return
        auth.limiter.record_success(ip, address)
        await self._login(account)

    async def _auth_start(self, event: AuthStart) -> None:
        self.sasl = SASLDriver.create(
            event.mechanism, self._sasl_offer(), self.ctx.authenticator, self.conn.peer_ip,
            # RFC 5034's +OK cannot carry SCRAM's server-final: a last challenge does
            final_as_challenge=True,
        )
        if self.sasl is None:
            await self._refuse("Unsupported authentication mechanism", "AUTH")
            return
        await self._auth_outcome(await self.sasl.start(event.initial_response))

    async def _auth_outcome(self, outcome: Outcome) -> None:
        if isinstance(outcome, Challenge):
            self.session.auth_challenge(outcome.data)
            return
        self.sasl = None
        if isinstance(outcome, Authenticated):
            await self._login(outcome.account)
            return
        log.info("AUTH failed: %s", outcome.reason)
        if outcome.locked:
            await self._refuse(*_LOCKED_OUT)
        else:
            await self._refuse()

    async def _login(self, account: Account) -> None:
        # RFC 1939 §8 / RFC 2449 §8.1.1: one POP3 session per maildrop, in this process
        # (a set, no store round trip) and across processes and nodes (a store lock).
        if account.id in self.ctx.pop3_locks:
            await self._refuse("Maildrop is locked by another POP3 session", "IN-USE")
            return
        self.ctx.pop3_locks.add(account.id)
        self.locked_account = account.id
        try:
            self.maildrop_lock = await HeldLock.acquire(self.store, f"pop3:{account.id}")
            held_elsewhere = self.maildrop_lock is None
        except StoreError as exc:
            # A full disk must not stop reading mail: this process's lock still holds.
            log.warning("cannot take the shared maildrop lock of %s (%s); locking in "
                        "this process only", account.address, exc)
            held_elsewhere = False
        if held_elsewhere:
            self.ctx.pop3_locks.discard(account.id)
            self.locked_account = None
            await self._refuse("Maildrop is locked by another POP3 session", "IN-USE")
            return
        try:
            mailbox = await self.store.get_mailbox(account.id, "INBOX")
            if mailbox is None:
                raise StoreError("account has no INBOX")
            metas = await self.store.list_messages(mailbox.id)
        except StoreError as exc:
            log.error("maildrop of %s unavailable: %s",
                      account.address, exc)
            self.ctx.pop3_locks.discard(account.id)
            self.locked_account = None
            if self.maildrop_lock is not None:
                await self.maildrop_lock.release()
                self.maildrop_lock = None
            await self._refuse("Maildrop unavailable, try again later", "SYS/TEMP")
            return
        self.mailbox_id = mailbox.id
        self.modseq = mailbox.highestmodseq
        # UIDL (RFC 1939 §7): UIDVALIDITY.UID stays the same across sessions and flag
        # changes, and never names another message.
        prefix = f"{mailbox.uidvalidity}."
        drop = [DropMessage(m.uid, m.blob_id, m.size, prefix + str(m.uid)) for m in metas]
        log.info("POP3 login %s from %s, %d messages",
                 account.address, self.conn.peer_ip, len(drop))
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
                self.session.message_unavailable("Message was deleted by another session",
                                                 code=None)
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
            self.session.update_done(False, "Insufficient system storage")
            return
        except StoreError as exc:
            log.error("UPDATE failed: %s", exc)
            ok = False
        self.session.update_done(ok)


async def handle_pop3(conn: Connection, ctx: ServerContext, listener: Listener) -> None:
    """One POP3 connection (port 110 with STLS, or 995 with implicit TLS)."""
    await _Pop3Handler(conn, ctx, listener).run()
