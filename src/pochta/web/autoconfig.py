"""Mail clients that configure themselves, and the MTA-STS policy file.

- Thunderbird autoconfig (the "config-v1.1.xml" format of Mozilla's ISPDB):
  ``/.well-known/autoconfig/mail/config-v1.1.xml`` on the domain and
  ``/mail/config-v1.1.xml`` on ``autoconfig.DOMAIN``; ``?emailaddress=`` names the user.
- Outlook autodiscover, "POX" (plain old XML): ``POST /autodiscover/autodiscover.xml``
  with the address in ``<EMailAddress>``; answers the outlook 2006a response schema.
- An Apple configuration profile (``/apple/mail.mobileconfig?emailaddress=``), unsigned:
  iOS and macOS show it as "not verified" but install it.
- RFC 8461 MTA-STS: ``/.well-known/mta-sts.txt`` requested for ``mta-sts.DOMAIN`` (the Host
  header) of a local domain that enables it (``[web] mta_sts_*``).

Ports and TLS modes come from the configured listeners, implicit TLS first (RFC 8314).
Only local domains get an answer (404 otherwise), so the server does not describe itself
for names it does not serve.
"""

from __future__ import annotations

import plistlib
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, unescape

from ..config import Listener
from ..http.core import Request, Response
from ..http.router import Router
from ..mail.addresses import AddressError, domain_key, normalize_address, split_address

if TYPE_CHECKING:
    from ..context import AppContext

XML = "application/xml; charset=utf-8"
AUTODISCOVER_RESPONSE = ("http://schemas.microsoft.com/exchange/autodiscover/outlook/"
                         "responseschema/2006a")
AUTODISCOVER_ROOT = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
_EMAIL_ELEMENT = re.compile(r"<(?:\w+:)?EMailAddress>([^<]{1,320})</(?:\w+:)?EMailAddress>")
_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Service:
    protocol: str  # imap, pop3, smtp
    port: int
    tls: str  # implicit or starttls

    @property
    def socket_type(self) -> str:
        """Thunderbird's socketType."""
        return "SSL" if self.tls == "implicit" else "STARTTLS"


def services(ctx: AppContext) -> list[Service]:
    """The client-facing services, the implicit-TLS listener of each role first."""
    out: list[Service] = []
    bound: dict[Listener, int] = ctx.bound_ports
    for role, protocol in (("imap", "imap"), ("pop3", "pop3"), ("submission", "smtp")):
        found = [lst for lst in ctx.config.listeners if lst.role == role and lst.tls != "none"]
        found.sort(key=lambda lst: lst.tls != "implicit")
        out.extend(Service(protocol, bound.get(lst, lst.port), lst.tls) for lst in found[:1])
    return out


def host_name(request: Request) -> str:
    host = (request.header("host") or "").strip().lower()
    if host.startswith("["):
        return ""
    return host.rsplit(":", 1)[0].rstrip(".")


def _plain(status: int, text: str) -> Response:
    return Response(status, text.encode(), "text/plain; charset=utf-8")


class AutoConfig:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def _local(self, domain: str) -> bool:
        return bool(_DOMAIN.match(domain)) and await self.ctx.directory.is_local_domain(domain)

    async def _target(self, request: Request, prefix: str) -> tuple[str, str] | None:
        """(address or "", domain) from ``emailaddress`` or the Host header."""
        given = request.query.get("emailaddress", "")
        if given:
            try:
                address = normalize_address(given)
                domain = split_address(address)[1]
            except AddressError:
                return None
        else:
            address, domain = "", host_name(request)
            if domain.startswith(prefix):
                domain = domain[len(prefix):]
        return (address, domain) if await self._local(domain) else None

    async def thunderbird(self, request: Request, _: dict[str, str]) -> Response:
        target = await self._target(request, "autoconfig.")
        if target is None:
            return _plain(404, "no such mail domain here\n")
        address, domain = target
        host = self.ctx.config.hostname
        user = escape(address) if address else "%EMAILADDRESS%"
        lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<clientConfig version="1.1">',
                 f'  <emailProvider id="{escape(domain)}">',
                 f"    <domain>{escape(domain)}</domain>",
                 f"    <displayName>{escape(domain)} mail</displayName>",
                 f"    <displayShortName>{escape(domain)}</displayShortName>"]
        for svc in services(self.ctx):
            tag = "outgoingServer" if svc.protocol == "smtp" else "incomingServer"
            lines += [f'    <{tag} type="{svc.protocol}">',
                      f"      <hostname>{escape(host)}</hostname>",
                      f"      <port>{svc.port}</port>",
                      f"      <socketType>{svc.socket_type}</socketType>",
                      "      <authentication>password-cleartext</authentication>",
                      f"      <username>{user}</username>",
                      f"    </{tag}>"]
        lines += ["  </emailProvider>", "</clientConfig>", ""]
        return Response(200, "\n".join(lines).encode(), XML, [("Cache-Control", "max-age=3600")])

    async def autodiscover(self, request: Request, _: dict[str, str]) -> Response:
        # The request is one element deep in a fixed schema: a pattern finds the address
        # without an XML parser (no DTDs, no entity expansion to defend against).
        found = _EMAIL_ELEMENT.search(request.body.decode("utf-8", "replace"))
        email = unescape(found.group(1).strip()) if found else ""
        try:
            address = normalize_address(email)
            domain = split_address(address)[1]
        except AddressError:
            return _plain(400, "no EMailAddress in the request\n")
        if not await self._local(domain):
            return _plain(404, "no such mail domain here\n")
        host = escape(self.ctx.config.hostname)
        parts = ['<?xml version="1.0" encoding="utf-8"?>',
                 f'<Autodiscover xmlns="{AUTODISCOVER_ROOT}">',
                 f'  <Response xmlns="{AUTODISCOVER_RESPONSE}">',
                 "    <Account>", "      <AccountType>email</AccountType>",
                 "      <Action>settings</Action>"]
        for svc in services(self.ctx):
            parts += ["      <Protocol>",
                      f"        <Type>{svc.protocol.upper()}</Type>",
                      f"        <Server>{host}</Server>",
                      f"        <Port>{svc.port}</Port>",
                      f"        <LoginName>{escape(address)}</LoginName>",
                      "        <DomainRequired>off</DomainRequired>",
                      "        <SPA>off</SPA>",
                      "        <SSL>on</SSL>",
                      f"        <Encryption>{'SSL' if svc.tls == 'implicit' else 'TLS'}"
                      "</Encryption>",
                      "        <AuthRequired>on</AuthRequired>",
                      "      </Protocol>"]
        parts += ["    </Account>", "  </Response>", "</Autodiscover>", ""]
        return Response(200, "\n".join(parts).encode(), XML)

    async def mobileconfig(self, request: Request, _: dict[str, str]) -> Response:
        target = await self._target(request, "autoconfig.")
        if target is None or not target[0]:
            return _plain(404, "give ?emailaddress= of a local domain\n")
        address, domain = target
        svcs = {s.protocol: s for s in services(self.ctx)}
        incoming = svcs.get("imap") or svcs.get("pop3")
        outgoing = svcs.get("smtp")
        if incoming is None or outgoing is None:
            return _plain(404, "no IMAP/POP3 or submission listener with TLS\n")
        host = self.ctx.config.hostname
        ident = f"{'.'.join(reversed(host.split('.')))}.pochta"
        account = {
            "PayloadType": "com.apple.mail.managed",
            "PayloadVersion": 1,
            "PayloadIdentifier": f"{ident}.mail.{address}",
            "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pochta:mail:{host}:{address}")),
            "PayloadDisplayName": f"{address} mail",
            "EmailAccountDescription": address,
            "EmailAccountName": address,
            "EmailAccountType": "EmailTypeIMAP" if incoming.protocol == "imap"
            else "EmailTypePOP",
            "EmailAddress": address,
            "IncomingMailServerHostName": host,
            "IncomingMailServerPortNumber": incoming.port,
            "IncomingMailServerUseSSL": incoming.tls == "implicit",
            "IncomingMailServerUsername": address,
            "IncomingMailServerAuthentication": "EmailAuthPassword",
            "OutgoingMailServerHostName": host,
            "OutgoingMailServerPortNumber": outgoing.port,
            "OutgoingMailServerUseSSL": outgoing.tls == "implicit",
            "OutgoingMailServerUsername": address,
            "OutgoingMailServerAuthentication": "EmailAuthPassword",
            "OutgoingPasswordSameAsIncomingPassword": True,
        }
        profile = {
            "PayloadType": "Configuration",
            "PayloadVersion": 1,
            "PayloadIdentifier": f"{ident}.{address}",
            "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pochta:{host}:{address}")),
            "PayloadDisplayName": f"{domain} mail ({address})",
            "PayloadDescription": f"Mail settings for {address} on {host}",
            "PayloadRemovalDisallowed": False,
            "PayloadContent": [account],
        }
        body = plistlib.dumps(profile)
        filename = re.sub(r"[^A-Za-z0-9._@-]", "_", address)
        disposition = f'attachment; filename="{filename}.mobileconfig"'
        return Response(200, body, "application/x-apple-aspen-config",
                        [("Content-Disposition", disposition)])

    async def mta_sts(self, request: Request, _: dict[str, str]) -> Response:
        web = self.ctx.config.web
        host = host_name(request)
        if web.mta_sts_mode == "off" or not host.startswith("mta-sts."):
            return _plain(404, "no MTA-STS policy here\n")
        domain = host[len("mta-sts."):]
        enabled = [domain_key(d) for d in web.mta_sts_domains]
        if (enabled and domain not in enabled) or not await self._local(domain):
            return _plain(404, "no MTA-STS policy for this domain\n")
        policy = mta_sts_policy(web.mta_sts_mode, self.ctx.config.hostname, web.mta_sts_max_age)
        return Response(200, policy.encode(), "text/plain; charset=utf-8",
                        [("Cache-Control", "max-age=3600")])


def mta_sts_policy(mode: str, mx: str, max_age: int) -> str:
    """RFC 8461 §3.2: key/value lines; the MX pattern is this server's host name."""
    return f"version: STSv1\r\nmode: {mode}\r\nmx: {mx.lower()}\r\nmax_age: {max_age}\r\n"


def register(router: Router, ctx: AppContext) -> None:
    auto = AutoConfig(ctx)
    router.add("GET", "/.well-known/autoconfig/mail/config-v1.1.xml", auto.thunderbird)
    router.add("GET", "/mail/config-v1.1.xml", auto.thunderbird)
    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml",
                 "/AutoDiscover/AutoDiscover.xml"):
        router.add("POST", path, auto.autodiscover)
    router.add("GET", "/apple/mail.mobileconfig", auto.mobileconfig)
    router.add("GET", "/.well-known/mta-sts.txt", auto.mta_sts)
