"""The ManageSieve front-end (RFC 5804, role ``managesieve``, port 4190): drives
``pochta.proto.managesieve.ManageSieveSession`` over one connection.

Authentication is IMAP's: the same policy (services/auth_policy.py ``AuthPolicy``:
mechanisms, TLS first on a STARTTLS listener), SASL exchange and brute-force limiter.
Scripts are checked with the delivery's own compiler (so an accepted script compiles at
delivery too), errors name the line, and the store keeps them (``SieveStore``).

Command boundary (``_boundary``): a Pochta error (pochta/errors.py) is answered with its
own ``NO`` and response code (``NONEXISTENT``, ``ACTIVE``, ``ALREADYEXISTS``,
``TRYLATER``...); any other exception is logged with its traceback and answered
``NO (TRYLATER)``; the session goes on.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from pochta.config import Listener
from pochta.errors import AuthError, AuthLockedOut, PochtaError, managesieve_reply_for
from pochta.proto.managesieve import (
    NEED_DATA,
    Authenticate,
    AuthResponse,
    Capabilities,
    CheckScript,
    Closed,
    DeleteScript,
    GetScript,
    HaveSpace,
    ListScripts,
    ManageSieveSession,
    PutScript,
    RenameScript,
    SetActive,
    StartTLS,
    Unauthenticate,
)
from pochta.proto.sasl.base import Challenge
from pochta.server.listener import Connection, ServerShutdown
from pochta.server.trace import trace_account
from pochta.services.auth_policy import AuthPolicy, SASLExchange
from pochta.services.sasl_driver import Authenticated
from pochta.services.sieve_check import check_script
from pochta.sieve import EXTENSIONS, SieveSyntaxError
from pochta.storage.interfaces import Account

if TYPE_CHECKING:
    from pochta.server.context import ServerContext

log = logging.getLogger("pochta.managesieve")

MAX_NAME = 512  # characters of a script name


def valid_name(name: str) -> bool:
    """RFC 5804 §1.6: no controls, no line/paragraph separators, not empty."""
    if not name or len(name) > MAX_NAME:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029"
                   for c in name)


class ManageSieveHandler:
    def __init__(self, conn: Connection, ctx: ServerContext, listener: Listener) -> None:
        self.conn = conn
        self.ctx = ctx
        self.listener = listener
        self.store = ctx.store
        self.config = ctx.config.sieve
        self.account: Account | None = None
        self.sasl: SASLExchange | None = None
        self.auth = AuthPolicy(ctx.config.auth, ctx.authenticator, listener.role,
                               listener.tls, conn, conn.peer_ip)
        self.session = ManageSieveSession(
            self._capabilities(), max_literal=self.config.max_script_size,
            tls_required=listener.tls == "starttls")
        self.session.tls_active = conn.tls_active

    def _capabilities(self) -> Capabilities:
        tls_wait = self.auth.tls_first
        return Capabilities(
            implementation="Pochta",
            sieve_extensions=sorted(EXTENSIONS),
            sasl=self.auth.offer().mechanisms,
            starttls=tls_wait and self.ctx.ssl_context is not None,
            max_redirects=self.config.max_redirects,
            owner=self.account.address if self.account else None,
        )

    def flush(self) -> None:
        out = self.session.data_to_send()
        if out:
            self.conn.write(out)

    async def run(self) -> None:
        timeout = self.ctx.config.limits.command_timeout
        self.conn.write(self.session.greeting())
        while True:
            event = self.session.next_event()
            if event is NEED_DATA:
                self.flush()
                await self.conn.drain()
                try:
                    data = await self.conn.read(timeout)
                except TimeoutError:
                    self.conn.write(b'BYE "Disconnected for inactivity"\r\n')
                    return
                except ServerShutdown:
                    self.conn.write(b'BYE "Server shutting down"\r\n')
                    return
                if not data:
                    return
                self.session.receive_data(data)
                continue
            if isinstance(event, Closed):
                self.flush()
                await self.conn.drain()
                return
            await self._boundary(event)

    async def _boundary(self, event: object) -> None:
        """Decide one event; any failure becomes its NO and the session goes on."""
        try:
            await self._dispatch(event)
        except (ConnectionError, TimeoutError, ssl.SSLError, ServerShutdown,
                asyncio.CancelledError):
            raise  # the connection's end, not a bug
        except PochtaError as exc:
            log.info("ip=%s %s refused: %s", self.conn.peer_ip, type(event).__name__, exc)
            # a failed login counts towards the error limit, a lockout does not
            counted = isinstance(exc, AuthError) and not isinstance(exc, AuthLockedOut)
            self._fail(event, exc.managesieve_reply(), counted)
        except Exception as exc:
            log.exception("ip=%s internal error deciding %s", self.conn.peer_ip,
                          type(event).__name__)
            self._fail(event, managesieve_reply_for(exc), False)

    def _fail(self, event: object, reply: tuple[str | None, str], counted: bool) -> None:
        self.sasl = None
        code, text = reply
        if isinstance(event, Authenticate | AuthResponse):
            self.session.auth_failed(text, code, count=counted)
        elif isinstance(event, StartTLS):
            raise ConnectionAbortedError("TLS state unknown after an error")
        else:
            self.session.no(code, text)

    async def _dispatch(self, event: object) -> None:
        s = self.session
        if isinstance(event, StartTLS):
            self.flush()
            await self.conn.drain()
            await self.conn.start_tls()
            s.tls_started(self._capabilities())
        elif isinstance(event, Authenticate):
            # RFC 5804 §2.1: the OK carries SCRAM's server-final message itself
            self.sasl = self.auth.begin(event.mechanism, final_as_challenge=False)
            await self._outcome(await self.sasl.start(event.initial))
        elif isinstance(event, AuthResponse):
            if event.data is None or self.sasl is None:
                self.sasl = None
                s.auth_aborted()
                return
            await self._outcome(await self.sasl.respond(event.data))
        elif isinstance(event, Unauthenticate):
            self.account = None
            s.capabilities = self._capabilities()
        else:
            assert self.account is not None
            await self._script_command(event, self.account.id)
            sieve = self.ctx.delivery.sieve
            if sieve is not None and isinstance(event, (PutScript, SetActive, DeleteScript,
                                                         RenameScript)):
                sieve.forget(self.account.id)  # delivery in this process sees it at once

    async def _outcome(self, outcome: Challenge | Authenticated) -> None:
        s = self.session
        if isinstance(outcome, Challenge):
            s.challenge(outcome.data)
            return
        self.sasl = None
        self.account = outcome.account
        trace_account(self.conn, self.listener.role, outcome.account.address,
                      self.ctx.config.log.trace_accounts)
        s.capabilities = self._capabilities()
        s.auth_succeeded(outcome.account.address, outcome.server_final)
        log.info("ip=%s login user=%s", self.conn.peer_ip, outcome.account.address)

    async def _check(self, account_id: int, name: str, content: bytes, strict: bool
                     ) -> tuple[str | None, str | None]:
        """(error, warnings): the script compiled with the scripts it includes. A
        missing included script or an include loop is an error when ``strict`` (the
        script is or becomes the active one), else a warning (RFC 5804 §1.3 WARNINGS):
        the user may upload the included script next, as Pigeonhole allows."""
        try:
            source = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"script is not UTF-8 (byte {exc.start})", None
        sieve = self.ctx.delivery.sieve
        checked = await check_script(
            self.store, self.ctx.config.path(self.config.global_dir), self.config.limits(),
            account_id, name, source, sieve.compile if sieve is not None else None)
        errors = checked.errors(strict)
        if errors:
            # every error, one a line (sent as a literal when more than one, §4)
            return SieveSyntaxError.of(errors).report().replace("\n", "\r\n"), None
        warnings = [] if strict else checked.resolved.warnings()
        return None, "\r\n".join(warnings) or None

    async def _is_active(self, account_id: int, name: str) -> bool:
        active = await self.store.get_active_sieve_script(account_id)
        return active is not None and active[0] == name

    async def _script_command(self, event: object, account_id: int) -> None:
        s = self.session
        if isinstance(event, HaveSpace):
            if not valid_name(event.name):
                s.no(None, "Invalid script name")
            elif event.size > self.config.max_script_size:
                s.no("QUOTA/MAXSIZE", f"Scripts may have at most "
                     f"{self.config.max_script_size} octets")
            elif await self._over_count(account_id, event.name):
                s.no("QUOTA/MAXSCRIPTS", f"At most {self.config.max_scripts} scripts")
            else:
                s.ok(None, "Putscript would succeed")
        elif isinstance(event, PutScript):
            if not valid_name(event.name):
                s.no(None, "Invalid script name")
                return
            if await self._over_count(account_id, event.name):
                s.no("QUOTA/MAXSCRIPTS", f"At most {self.config.max_scripts} scripts")
                return
            error, warnings = await self._check(
                account_id, event.name, event.content,
                strict=await self._is_active(account_id, event.name))
            if error is not None:
                s.no(None, error)
                return
            await self.store.put_sieve_script(account_id, event.name,
                                              event.content.decode("utf-8"))
            if warnings:
                s.ok("WARNINGS", warnings)
            else:
                s.ok(None, "Putscript completed")
        elif isinstance(event, CheckScript):
            # the name the script would have is unknown: a loop back to it cannot be seen
            error, warnings = await self._check(account_id, "", event.content, strict=False)
            if error is not None:
                s.no(None, error)
            elif warnings:
                s.ok("WARNINGS", warnings)
            else:
                s.ok(None, "Script is valid")
        elif isinstance(event, ListScripts):
            infos = await self.store.list_sieve_scripts(account_id)
            s.send_list([(i.name, i.active) for i in infos])
        elif isinstance(event, SetActive):
            if event.name:
                # the script delivery will run: its includes must be there, without a
                # loop (as Pigeonhole checks at activation)
                source = await self.store.get_sieve_script(account_id, event.name)
                if source is not None:
                    error, _ = await self._check(account_id, event.name,
                                                 source.encode("utf-8"), strict=True)
                    if error is not None:
                        s.no(None, error)
                        return
            # NotFound is NO (NONEXISTENT) at the boundary (pochta/errors.py)
            await self.store.set_active_sieve_script(account_id, event.name or None)
            s.ok(None, "Setactive completed")
        elif isinstance(event, GetScript):
            source = await self.store.get_sieve_script(account_id, event.name)
            if source is None:
                s.no("NONEXISTENT", "There is no script by that name")
            else:
                s.send_script(source.encode("utf-8"))
        elif isinstance(event, DeleteScript):
            # NotFound: NO (NONEXISTENT), ScriptActive: NO (ACTIVE), at the boundary
            await self.store.delete_sieve_script(account_id, event.name)
            s.ok(None, "Deletescript completed")
        elif isinstance(event, RenameScript):
            if not valid_name(event.new):
                s.no(None, "Invalid script name")
                return
            # NotFound: NO (NONEXISTENT), AlreadyExists: NO (ALREADYEXISTS), at the boundary
            await self.store.rename_sieve_script(account_id, event.old, event.new)
            s.ok(None, "Renamescript completed")

    async def _over_count(self, account_id: int, name: str) -> bool:
        infos = await self.store.list_sieve_scripts(account_id)
        return (name not in {i.name for i in infos}
                and len(infos) >= self.config.max_scripts)


async def handle_managesieve(conn: Connection, ctx: ServerContext, listener: Listener) -> None:
    await ManageSieveHandler(conn, ctx, listener).run()
