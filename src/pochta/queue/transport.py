"""The asyncio driver of the SMTP client core: connect, greet, STARTTLS, AUTH, send.

``Connector``/``Channel`` are the network seam: ``TCPConnector`` uses asyncio streams;
tests may substitute an in-memory one. ``SMTPConnection.open()`` tries every hop and
every address of each hop in turn and returns the first usable session;
``deliver()`` runs one transaction and returns the per-recipient replies.

TLS: ``opportunistic`` uses STARTTLS when offered without checking the certificate and,
if the handshake fails, connects again in plaintext (as Postfix does at level "may");
``starttls``/``implicit`` require TLS (delivery is deferred without it); ``verify``
additionally checks the certificate against the host name (or the policy's names).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pochta.dns import TemporaryDNSError
from pochta.mail.tls import client_context
from pochta.proto.smtp.client import (
    ClientSession,
    EhloDone,
    Event,
    Greeting,
    Malformed,
    Preflight,
    Response,
    ServerReply,
    Transaction,
    TransactionDone,
    TransactionResult,
    local_reply,
)
from pochta.queue.dane import DANEMismatch, check_chain
from pochta.queue.mime import downgrade_8bit
from pochta.queue.routing import Destination, Router, TLSRequirement
from pochta.queue.webpki import classify_ssl_error, peer_chain, webpki_check

# TLS-RPT (RFC 8460): told the result of every TLS attempt on MX delivery:
# (destination, requirement for that host, host, address, "success" or a result-type)
TLSObserver = Callable[[Destination, TLSRequirement, str, str, str], Awaitable[None]]


class Channel(Protocol):
    async def read(self, timeout: float) -> bytes:
        """Next chunk; b"" at EOF; raises TimeoutError."""

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    async def start_tls(self, context: ssl.SSLContext, server_hostname: str | None) -> None: ...
    def tls_version(self) -> str | None: ...
    def close(self) -> None: ...


class Connector(Protocol):
    async def connect(
        self,
        address: str,
        port: int,
        timeout: float,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Channel: ...


class StreamChannel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self, timeout: float) -> bytes:
        return await asyncio.wait_for(self.reader.read(65536), timeout)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        await self.writer.start_tls(context, server_hostname=server_hostname)

    def tls_version(self) -> str | None:
        obj = self.writer.get_extra_info("ssl_object")
        return obj.version() if isinstance(obj, ssl.SSLObject) else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    def peer_chain(self) -> list[bytes]:
        return peer_chain(self.writer.get_extra_info("ssl_object"))


class TCPConnector:
    async def connect(
        self,
        address: str,
        port: int,
        timeout: float,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Channel:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                address, port, ssl=tls, server_hostname=server_hostname if tls else None
            ),
            timeout,
        )
        return StreamChannel(reader, writer)


class ConnectFailed(Exception):
    """No hop of the destination took a session; ``reply`` is the last reason."""

    def __init__(self, reply: ServerReply, tls_result: str = "") -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.tls_result = tls_result  # an RFC 8460 result-type when TLS was the trouble


class _TLSFallback(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 30.0
    command: float = 300.0
    data: float = 600.0


class SMTPConnection:
    """One open SMTP session to one hop, ready for transactions."""

    def __init__(
        self, channel: Channel, session: ClientSession, host: str, address: str,
        timeouts: Timeouts,
    ) -> None:
        self.channel = channel
        self.session = session
        self.host = host
        self.address = address
        self.timeouts = timeouts
        self.transactions = 0
        self._backlog: list[Event] = []
        # for the delivery log: was the hop encrypted, and was its certificate checked
        self.tls_log = "tls=none"
        self.tls_result = ""  # for TLS-RPT: "success" or a result-type
        # REQUIRETLS (RFC 8689): TLS validated by MTA-STS, DANE or a verified static route
        self.tls_validated = False

    def _tls_established(self, verify: bool) -> None:
        self.tls_log = (f"tls={self.channel.tls_version() or 'yes'} "
                        f"cert={'verified' if verify else 'unverified'}")

    @property
    def usable(self) -> bool:
        return not self.session.closed

    @property
    def remote(self) -> str:
        return f"{self.host} [{self.address}]"

    # -- opening ------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        dest: Destination,
        router: Router,
        connector: Connector,
        local_hostname: str,
        timeouts: Timeouts,
        password_loader: Callable[[str], str] | None = None,
        cafile: str | None = None,
        observer: TLSObserver | None = None,
    ) -> SMTPConnection:
        """Raises ``ConnectFailed`` with the last reason when no hop works."""
        last = local_reply(451, "4.4.1", f"no usable host for {dest.domain}")
        any_address = False
        dns_trouble = False
        for hop in dest.hops:
            host_tls = dest.tls.for_host(hop.host)
            if host_tls.refuse:
                # DANE: the TLSA lookup failed (bogus DNSSEC): this host must not be used
                last = local_reply(451, "4.7.5", f"{hop.host}: {host_tls.refuse}")
                if observer is not None:
                    await observer(dest, host_tls, hop.host, "", "dnssec-invalid")
                continue
            try:
                addresses = await router.addresses(hop.host)
            except TemporaryDNSError as exc:
                dns_trouble = True
                last = local_reply(451, "4.4.3", f"{hop.host}: address lookup failed: {exc}")
                continue
            if not addresses:
                last = local_reply(451, "4.4.4", f"{hop.host}: host has no address")
                continue
            any_address = True
            for address in addresses:
                tls = host_tls
                try:
                    try:
                        return await cls._open_one(
                            dest, hop.host, address, hop.port, tls, connector, local_hostname,
                            timeouts, password_loader, cafile, observer,
                        )
                    except _TLSFallback:
                        tls = TLSRequirement("none")
                        return await cls._open_one(
                            dest, hop.host, address, hop.port, tls, connector, local_hostname,
                            timeouts, password_loader, cafile, observer,
                        )
                except ConnectFailed as exc:
                    last = exc.reply
        if dest.implicit_mx and not any_address and not dns_trouble:
            # No MX and no address record: the domain cannot receive mail.
            raise ConnectFailed(
                local_reply(550, "5.1.2", f"{dest.domain} has no MX or address records")
            )
        raise ConnectFailed(last)

    @classmethod
    async def _open_one(
        cls, dest: Destination, host: str, address: str, port: int, tls: TLSRequirement,
        connector: Connector, local_hostname: str, timeouts: Timeouts,
        password_loader: Callable[[str], str] | None, cafile: str | None,
        observer: TLSObserver | None = None,
    ) -> SMTPConnection:
        where = f"{host}[{address}]:{port}"
        sni = None if host == address else host
        implicit = tls.mode == "implicit"
        try:
            channel = await connector.connect(
                address, port, timeouts.connect,
                client_context(tls.verify, cafile) if implicit else None,
                sni,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise ConnectFailed(
                local_reply(451, "4.4.1", f"connect to {where} failed: {exc or 'timeout'}")
            ) from exc
        session = ClientSession(local_hostname)
        conn = cls(channel, session, host, address, timeouts)
        if implicit:
            conn._tls_established(tls.verify)
            conn.tls_validated = tls.verify and dest.via_route
        try:
            await conn._handshake(dest, tls, sni, where, password_loader, cafile)
        except ConnectFailed as exc:
            channel.close()
            if observer is not None and exc.tls_result:
                await observer(dest, tls, host, address, exc.tls_result)
            raise
        except BaseException:
            channel.close()
            raise
        if observer is not None and conn.tls_result:
            await observer(dest, tls, host, address, conn.tls_result)
        return conn

    async def _handshake(
        self, dest: Destination, tls: TLSRequirement, sni: str | None, where: str,
        password_loader: Callable[[str], str] | None, cafile: str | None,
    ) -> None:
        s = self.session
        greeting = await self._expect(Greeting)
        if not greeting.reply.positive:
            raise ConnectFailed(_transient(greeting.reply, f"{where} greeted us with"))
        await self._ehlo()
        secure = tls.mode == "implicit"
        if tls.mode in ("opportunistic", "starttls"):
            if s.supports("STARTTLS"):
                s.starttls()
                resp = await self._expect(Response)
                if resp.reply.positive:
                    try:
                        await self.channel.start_tls(client_context(tls.verify, cafile), sni)
                    except (OSError, ssl.SSLError, TimeoutError) as exc:
                        if tls.mode == "opportunistic":
                            raise _TLSFallback from exc
                        raise ConnectFailed(
                            local_reply(454, "4.7.5", f"{_label(tls)}TLS handshake with "
                                        f"{where}: {exc}"), classify_ssl_error(exc),
                        ) from exc
                    s.tls_started()
                    self._tls_established(tls.verify)
                    self.tls_validated = self._check_peer(
                        tls, sni or self.host, dest.domain, where, cafile,
                    ) or (tls.verify and dest.via_route)
                    secure = True
                    await self._ehlo()
                elif tls.mode == "starttls":
                    raise ConnectFailed(_transient(resp.reply, f"STARTTLS refused by {where}:"))
            elif tls.mode == "starttls":
                raise ConnectFailed(
                    local_reply(451, "4.7.4", f"{_label(tls)}TLS is required, but {where} "
                                "does not offer it"), "starttls-not-supported",
                )
            else:
                self.tls_result = "starttls-not-supported"
        if dest.username:
            if not secure:
                raise ConnectFailed(local_reply(451, "4.7.0", "refusing AUTH without TLS"))
            password = password_loader(dest.password_file) if password_loader else ""
            await self._auth(dest.username, password, where)

    def _check_peer(
        self, tls: TLSRequirement, host: str, domain: str, where: str, cafile: str | None,
    ) -> bool:
        """After the handshake: DANE (the chain against the TLSA records, RFC 7672 §3)
        or, for MTA-STS testing, a Web PKI check that is reported, not enforced. True
        when MTA-STS (enforce) or DANE authenticated the peer (for REQUIRETLS)."""
        self.tls_result = "success"
        if tls.policy:
            self.tls_log += f" policy={tls.policy}"
        if not tls.tlsa and tls.policy not in ("dane", "sts-testing"):
            return tls.policy == "sts" and tls.verify
        get = getattr(self.channel, "peer_chain", None)
        chain: list[bytes] = get() if get is not None else []
        if tls.policy == "dane":
            if not any(r.usable for r in tls.tlsa):
                # RFC 7672 §2.2: only unusable records: TLS is mandatory, any certificate
                self.tls_log += " dane=unusable-records"
                return False
            try:
                matched = check_chain(tls.tlsa, chain, (host, domain))
            except DANEMismatch as exc:
                raise ConnectFailed(
                    local_reply(454, "4.7.5", f"DANE: certificate of {where}: {exc}"),
                    exc.result) from exc
            self.tls_log = self.tls_log.replace("cert=unverified", "cert=dane")
            self.tls_log += f" dane={matched.split(' ')[0]}"
            return True
        if tls.policy == "sts-testing":
            try:
                result = webpki_check(chain, host, cafile)
            except Exception:  # a report, never a reason not to deliver
                result = "validation-failure"
            if result != "success":
                self.tls_result = result
                self.tls_log += f" mta-sts-testing={result}"
        return False

    async def _ehlo(self) -> None:
        s = self.session
        s.ehlo()
        ehlo = await self._expect(EhloDone)
        if not ehlo.reply.positive:
            s.helo()
            resp = await self._expect(Response)
            if not resp.reply.positive:
                raise ConnectFailed(_transient(resp.reply, "HELO refused:"))

    async def _auth(self, username: str, password: str, where: str) -> None:
        s = self.session
        mechs = s.auth_mechanisms
        if "PLAIN" in mechs:
            s.auth("PLAIN", b"\0" + username.encode() + b"\0" + password.encode())
            resp = await self._expect(Response)
        elif "LOGIN" in mechs:
            s.auth("LOGIN")
            resp = await self._expect(Response)
            for answer in (username, password):
                if resp.reply.code != 334:
                    break
                s.auth_response(answer.encode())
                resp = await self._expect(Response)
        else:
            raise ConnectFailed(local_reply(451, "4.7.0", f"{where} offers no usable AUTH"))
        if not resp.reply.positive:
            raise ConnectFailed(_transient(resp.reply, f"AUTH at {where} failed:"))

    async def _flush(self) -> None:
        out = self.session.data_to_send()
        if out:
            self.channel.write(out)
            await self.channel.drain()

    async def _events(self, timeout: float) -> list[Event]:
        await self._flush()
        try:
            data = await self.channel.read(timeout)
        except TimeoutError:
            return self.session.timed_out()
        except (OSError, ssl.SSLError):
            return self.session.connection_lost()
        if not data:
            return self.session.connection_lost()
        return self.session.receive_data(data)

    async def _next_event(self, timeout: float) -> Event | None:
        while not self._backlog:
            if self.session.closed:
                return None
            self._backlog.extend(await self._events(timeout))
        return self._backlog.pop(0)

    async def _expect(self, kind: type[_E]) -> _E:
        """The next event, which must be a ``kind``; anything else ends the session."""
        ev = await self._next_event(self.timeouts.command)
        if isinstance(ev, kind):
            return ev
        self.close()
        if isinstance(ev, Malformed):
            raise ConnectFailed(local_reply(451, "4.5.0", f"protocol error: {ev.reason}"))
        if isinstance(ev, Response | Greeting | EhloDone) and not ev.reply.positive:
            raise ConnectFailed(_transient(ev.reply, "session ended:"))
        raise ConnectFailed(local_reply(451, "4.4.2", "connection lost during the handshake"))

    # -- sending ------------------------------------------------------------------------

    async def deliver(self, tx: Transaction) -> TransactionResult:
        """One transaction; every recipient's reply (local ones for local refusals)."""
        check = self.session.preflight(tx)
        if isinstance(check, ServerReply):
            return _refused(tx, check)
        if check is Preflight.DOWNGRADE_8BIT:
            converted = downgrade_8bit(tx.message)
            if converted is None:
                return _refused(tx, local_reply(
                    554, "5.6.3",
                    "8-bit message cannot be converted and the server lacks 8BITMIME",
                ))
            tx = Transaction(
                tx.sender, tx.recipients, converted, False, tx.smtputf8, tx.ret, tx.envid
            )
        self.transactions += 1
        self.session.send_transaction(tx)
        while True:
            # The final reply after the content may take long (RFC 5321 4.5.3.2.6).
            ev = await self._next_event(self.timeouts.data)
            if ev is None:
                # Closed without a verdict (the core reports one on every abort).
                return _refused(tx, local_reply(451, "4.4.2", "connection lost"))
            if isinstance(ev, TransactionDone):
                if self.session.closed:
                    self.channel.close()
                return ev.result

    async def quit(self) -> None:
        if self.usable:
            with contextlib.suppress(Exception):
                self.session.quit()
                await self._flush()
                await asyncio.wait_for(self._next_event(5.0), 5.0)
        self.close()

    def close(self) -> None:
        self.channel.close()


_E = TypeVar("_E", Greeting, EhloDone, Response)


def _label(tls: TLSRequirement) -> str:
    return {"sts": "MTA-STS (enforce): ", "dane": "DANE: "}.get(tls.policy, "")


def _transient(reply: ServerReply, context: str) -> ServerReply:
    """Session-level trouble (greeting, HELO, AUTH, STARTTLS) is retried later: another
    MX, a fixed configuration or a server back from maintenance may take the mail."""
    code = reply.code if reply.transient else 451
    enhanced = reply.enhanced or "4.0.0"
    if enhanced.startswith("5"):
        enhanced = "4" + enhanced[1:]
    return local_reply(code, enhanced, f"{context} {reply}")


def _refused(tx: Transaction, reply: ServerReply) -> TransactionResult:
    return TransactionResult(reply, (reply,) * len(tx.recipients), None, tx.recipients)
