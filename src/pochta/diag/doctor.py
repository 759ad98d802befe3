"""`pochta doctor`: a self-test of the local installation.

The config loads; the certificate exists, parses, names the host and does not expire
within 14 days; every configured listener answers with its protocol; the MTA refuses the
classic relay tricks (an external recipient, the percent hack, a bang path, a source route,
a quoted local part holding an ``@``); no listener offers AUTH/LOGIN before TLS; the DNS
holds the records ``pochta dns records`` recommends; the outbound queue is healthy.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from pochta.config import ALL_ADDRESSES, Config, Listener
from pochta.dns import Resolver, TemporaryDNSError
from pochta.mail.addresses import AddressError, base_address, normalize_address, split_address
from pochta.policy import dkim, records
from pochta.proto.smtp.address import AddressError as PathError
from pochta.proto.smtp.address import parse_rcpt_to
from pochta.services.directory import Directory
from pochta.storage.factory import open_store
from pochta.storage.interfaces import MailStore, QueueState

from . import common
from .common import (
    ConnectError,
    Finding,
    Transcript,
    Wire,
    dump_json,
    findings_exit,
    print_findings,
    read_secret,
)
from .probe import PortResult, PortSpec, ProbeOptions, probe_port
from .smtpwire import command, ehlo, read_reply

EXPIRY_WARN_DAYS = 14
EXTERNAL = "other.test"


@dataclass
class DoctorOptions:
    cafile: str | None = None
    timeout: float = 10.0
    dns: bool = True
    sieve_user: str | None = None  # with a password: the ManageSieve CHECKSCRIPT round trip
    sieve_password: str | None = None


def relay_battery(domain: str) -> list[tuple[str, str]]:
    """(name, RCPT argument) pairs that a closed MTA must refuse without AUTH."""
    return [
        ("external recipient", f"<user@{EXTERNAL}>"),
        ("percent hack", f"<user%{EXTERNAL}@{domain}>"),
        ("bang path", f"<{EXTERNAL}!user@{domain}>"),
        ("source route", f"<@{domain}:user@{EXTERNAL}>"),
        ("quoted local part with @", f'<"user@{EXTERNAL}"@{domain}>'),
    ]


def _connect_address(lst: Listener) -> str:
    if lst.address == ALL_ADDRESSES:
        return "127.0.0.1"
    addr = ipaddress.ip_address(lst.address)
    if addr.is_unspecified:
        return "::1" if addr.version == 6 else "127.0.0.1"
    return lst.address


PROTOCOLS = {"mta": "smtp", "submission": "smtp", "imap": "imap", "pop3": "pop3"}


# --- checks ----------------------------------------------------------------------------


def check_certificate(config: Config) -> list[Finding]:
    if not any(lst.tls != "none" for lst in config.listeners):
        return [Finding("info", "certificate", "no listener uses TLS")]
    cert_path, key_path = config.path(config.tls.cert), config.path(config.tls.key)
    out: list[Finding] = []
    if not key_path.exists():
        out.append(Finding("fail", "certificate", f"key {key_path} is missing",
                           "install the key or run 'pochta init' for a self-signed pair"))
    try:
        pem = cert_path.read_bytes()
    except OSError as exc:
        return [*out, Finding("fail", "certificate", f"{cert_path}: {exc.strerror}",
                              "install a certificate (e.g. from Let's Encrypt)")]
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        return [*out, Finding("fail", "certificate", f"{cert_path}: not a PEM certificate "
                              f"({exc})", "install a valid PEM certificate")]
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    expiry = cert.not_valid_after_utc.date().isoformat()
    if left.total_seconds() < 0:
        out.append(Finding("fail", "certificate", f"expired on {expiry}", "renew it"))
    elif left.days < EXPIRY_WARN_DAYS:
        out.append(Finding("warn", "certificate", f"expires in {left.days} days ({expiry})",
                           "renew it (certbot renew, then restart pochta)"))
    else:
        out.append(Finding("ok", "certificate", f"{cert_path} valid until {expiry} "
                           f"({left.days} days)"))
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.lower() for n in sans.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    host = config.hostname.lower()
    if host not in names and not any(
        n.startswith("*.") and host.split(".", 1)[-1] == n[2:] for n in names
    ):
        out.append(Finding("warn", "certificate", f"does not name {host} (names: "
                           f"{', '.join(names) or 'none'})",
                           f"get a certificate for {host}"))
    return out


def check_reachability(config: Config) -> list[Finding]:
    """Every role here serves other machines (MTAs, mail clients): a listener bound to
    loopback only is reachable from this host alone, which a local test never shows."""
    out = []
    for lst in config.listeners:
        if lst.address == ALL_ADDRESSES:
            continue
        if ipaddress.ip_address(lst.address).is_loopback:
            out.append(Finding(
                "warn", "reach", f"{lst.role}:{lst.port} listens on {lst.address} only: no "
                "other machine can connect to it",
                'set address = "*" (every IPv4 and IPv6 address) or the public IP in its '
                "[[listeners]] entry (fine for a test instance)"))
    if not out:
        out.append(Finding("ok", "reach", "no listener is bound to loopback only"))
    return out


async def check_listeners(config: Config, opts: DoctorOptions
                          ) -> list[tuple[Listener, PortResult]]:
    async def one(lst: Listener) -> tuple[Listener, PortResult]:
        spec = PortSpec(lst.port, PROTOCOLS[lst.role], lst.tls,
                        submission=lst.role == "submission", explicit=True)
        popts = ProbeOptions(_connect_address(lst), timeout=opts.timeout, cafile=opts.cafile,
                             tls_name=config.hostname)
        return lst, await probe_port(spec, popts)

    # ManageSieve has its own probe (check_managesieve)
    # the probe speaks the mail protocols; http listeners are not probed (issue 19)
    return list(await asyncio.gather(*(one(lst) for lst in config.listeners
                                       if lst.role in PROTOCOLS)))


async def check_managesieve(config: Config, opts: DoctorOptions) -> list[Finding]:
    from .managesieve import probe_managesieve

    out: list[Finding] = []
    for lst in config.listeners:
        if lst.role == "managesieve":
            out += await probe_managesieve(
                _connect_address(lst), lst.port, lst.tls, opts.timeout, opts.cafile,
                config.hostname, opts.sieve_user, opts.sieve_password)
    return out


def listener_findings(results: Sequence[tuple[Listener, PortResult]]) -> list[Finding]:
    out = []
    for lst, r in results:
        name = f"{lst.role}:{lst.port}"
        if r.state != "open" or r.protocol != PROTOCOLS[lst.role] or r.error:
            out.append(Finding("fail", "listener", f"{name} ({lst.tls}) does not answer "
                               f"properly: {r.state} {r.error or ''}".rstrip(),
                               "check 'pochta serve' is running and its log"))
            continue
        out.append(Finding("ok", "listener", f"{name} ({lst.tls}) answers: {r.banner}"))
        if lst.tls != "none" and r.tls is None:
            out.append(Finding("fail", "listener", f"{name}: TLS was not negotiated",
                               "check tls.cert/tls.key"))
        if r.tls is not None and not r.tls.verified:
            out.append(Finding("warn", "listener", f"{name}: certificate does not verify: "
                               f"{r.tls.verify_error}", "use a publicly trusted certificate "
                               "for the host name (or pass --cafile for a private CA)"))
        plaintext = [m for m in r.auth_before_tls if m != "LOGIN-command"]
        if r.protocol == "imap" and "LOGIN-command" in r.auth_before_tls:
            plaintext.append("LOGIN")
        if lst.tls != "implicit":
            if plaintext:
                out.append(Finding("fail", "auth-tls", f"{name} offers {' '.join(plaintext)} "
                                   "before TLS", "offer authentication only after TLS"))
            else:
                out.append(Finding("ok", "auth-tls", f"{name}: no authentication before TLS"))
        if lst.role == "submission" and r.submission_requires_auth is False:
            out.append(Finding("fail", "listener", f"{name} accepts mail without AUTH",
                               "submission must require AUTH (RFC 6409)"))
    return out


# Where an accepted recipient would go: a description of its local delivery, or None
# when it would leave this server (see ``local_destination``).
Destination = Callable[[str], Awaitable[str | None]]


async def relay_test(host: str, port: int, domain: str, timeout: float,
                     trusted: bool, destination: Destination | None = None) -> list[Finding]:
    """Try every relay trick on the MTA port, without AUTH; no message is ever sent.

    A trick's address is in a local domain (``user%other.test@example.org``), so a
    server with a catch-all alias rightly accepts it and delivers it to the catch-all's
    mailbox: that is not relaying. ``destination`` tells where an accepted recipient
    would be delivered; only one that would leave the server is an open relay.
    """
    t = Transcript()
    out: list[Finding] = []
    try:
        wire = await Wire.connect(host, port, t, timeout)
    except (OSError, TimeoutError) as exc:
        return [Finding("fail", "relay", f"cannot connect to the MTA at {host}:{port}: {exc}",
                        "start the server")]
    try:
        banner = await read_reply(wire)
        if not banner.positive:
            return [Finding("fail", "relay", f"MTA greeting {banner}", "")]
        await ehlo(wire, "doctor.pochta.invalid")
        for name, rcpt in relay_battery(domain):
            mail = await command(wire, f"MAIL FROM:<doctor@{EXTERNAL}>")
            if not mail.positive:
                out.append(Finding("warn", "relay", f"MAIL FROM refused ({mail}); relay test "
                                   "incomplete", ""))
                break
            reply = await command(wire, f"RCPT TO:{rcpt}")
            await command(wire, "RSET")
            local = (await destination(rcpt)
                     if reply.positive and destination is not None else None)
            if local is not None:
                out.append(Finding("ok", "relay", f"{name} RCPT TO:{rcpt} accepted for local "
                                   f"delivery to {local}: not relayed"))
            elif reply.positive and trusted:
                out.append(Finding("info", "relay", f"{name} RCPT TO:{rcpt} accepted: this client "
                                   "address is in trusted_networks"))
            elif reply.positive:
                out.append(Finding("fail", "relay", f"OPEN RELAY: {name} RCPT TO:{rcpt} "
                                   f"accepted without AUTH ({reply})",
                                   "refuse non-local recipients without AUTH; report this "
                                   "as a bug if this is Pochta"))
            else:
                out.append(Finding("ok", "relay", f"{name} RCPT TO:{rcpt} refused "
                                   f"({reply.code})"))
        await command(wire, "QUIT")
    except ConnectError as exc:
        out.append(Finding("fail", "relay", f"relay test broke off: {exc}", ""))
    finally:
        await wire.aclose()
    return out


def _norm_txt(value: str) -> str:
    return " ".join(value.replace(";", "; ").split()).lower()


async def check_dns(config: Config, domains: Sequence[str], resolver: Resolver
                    ) -> list[Finding]:
    out: list[Finding] = []
    services = records.services_from_listeners(config.listeners)
    rua = config.dmarc.report_address or ""
    for domain in domains:
        keys = dkim.load_keys(config.data_path, domain)
        active = set(dkim.active_selectors(config.data_path, domain))
        inactive = {k.dns_name: k.selector for k in keys if k.selector not in active}
        for rec in records.records_for(domain, config.hostname, keys, rua=rua,
                                       services=services):
            if rec.type not in ("MX", "TXT"):
                continue  # the Resolver interface has no SRV/CNAME lookups
            try:
                found = await _compare(rec, resolver)
                if rec.name in inactive and found[0].status == "fail":
                    # not signing: a new key not yet published, or an old one retired
                    sel = inactive[rec.name]
                    found = [Finding("info", "dns", f"{rec.name}: inactive DKIM key "
                                     f"{sel} is not published; publish it before 'pochta "
                                     f"dkim activate', or if it is retired: 'pochta dkim "
                                     f"remove {domain} {sel}'")]
                out.extend(found)
            except TemporaryDNSError as exc:
                out.append(Finding("warn", "dns", f"{rec.name} {rec.type}: lookup failed: "
                                   f"{exc}", "check the zone's name servers"))
    return out


async def _compare(rec: Any, resolver: Resolver) -> list[Finding]:
    publish = f"publish '{rec.name}. IN {rec.type} {rec.value}'"
    if rec.type == "MX":
        want = rec.value.split()[1].rstrip(".").lower()
        have = [m.host.lower() for m in await resolver.mx(rec.name)]
        if want in have:
            return [Finding("ok", "dns", f"{rec.name} MX {want}")]
        return [Finding("fail", "dns", f"{rec.name} MX does not point here ({want}); "
                        f"found: {', '.join(have) or 'none'}", publish)]
    texts = await resolver.txt(rec.name)
    kind = rec.value.split(";")[0].split()[0]  # v=spf1, v=DKIM1, v=DMARC1, ...
    same_kind = [t for t in texts if t.lower().startswith(kind.lower())]
    if any(_norm_txt(t) == _norm_txt(rec.value) for t in texts):
        return [Finding("ok", "dns", f"{rec.name} TXT {kind} as recommended")]
    if kind.lower() == "v=dkim1":
        want_p = rec.value.split("p=")[-1]
        if any(want_p in t.replace(" ", "") for t in texts):
            return [Finding("ok", "dns", f"{rec.name} DKIM key matches")]
        return [Finding("fail", "dns", f"{rec.name}: the DKIM key is "
                        + ("different" if same_kind else "not published"), publish)]
    optional = kind.lower() in ("v=stsv1", "v=tlsrptv1")
    if same_kind:
        return [Finding("info", "dns", f"{rec.name} has '{same_kind[0]}' (pochta "
                        f"recommends '{rec.value}')")]
    return [Finding("info" if optional else "warn", "dns",
                    f"{rec.name}: no {kind} record", "" if optional else publish)]


def local_destination(store: MailStore, hostname: str) -> Destination:
    """Resolve a recipient as the MTA does (RFC 5321 path parsing, then the directory):
    a description of where our own aliases and mailboxes take it, or None if it would go
    where the trick asked (a domain we do not host, or the trick's own target)."""
    directory = Directory(store)

    async def where(rcpt: str) -> str | None:
        try:
            address = normalize_address(
                parse_rcpt_to(rcpt, smtputf8=True, local_hostname=hostname).address)
            domain = split_address(address)[1]
        except (PathError, AddressError):
            return None
        if not await directory.is_local_domain(domain):
            return None
        resolution = await directory.resolve(address)
        if resolution is None or any(r.endswith("@" + EXTERNAL) for r in resolution.remote):
            return None  # on its way to the domain the trick named: relayed
        names = [f"{r} (an alias forwards there)" for r in resolution.remote]
        for account_id in resolution.local:
            account = await store.get_account_by_id(account_id)
            names.append(account.address if account else f"account {account_id}")
        direct = [a for a in {address, base_address(address)}
                  if await store.get_alias(a) is not None
                  or await store.get_account(a) is not None]
        how = f" (the catch-all @{domain})" if not direct else ""
        return ", ".join(names) + how

    return where


async def check_queue(store: MailStore) -> list[Finding]:
    items = await store.list_queue()
    counts = {s: 0 for s in QueueState}
    old = 0
    now = time.time()
    for it in items:
        counts[it.state] += 1
        if it.state in (QueueState.PENDING, QueueState.DEFERRED) and now - it.created > 86400:
            old += 1
    waiting = counts[QueueState.PENDING] + counts[QueueState.DEFERRED]
    out = [Finding("ok" if waiting < 1000 else "warn", "queue",
                   f"{counts[QueueState.PENDING]} pending, {counts[QueueState.DEFERRED]} "
                   f"deferred, {counts[QueueState.FAILED]} failed, "
                   f"{counts[QueueState.DELIVERED]} delivered",
                   "" if waiting < 1000 else "look at 'pochta queue list'")]
    if old:
        out.append(Finding("warn", "queue", f"{old} recipients waiting for more than a day",
                           "see 'pochta queue list' for the last replies; fix the route or "
                           "'pochta queue delete'"))
    return out


# --- the whole run ---------------------------------------------------------------------


async def run_doctor(config: Config, opts: DoctorOptions, resolver: Resolver | None = None,
                     store: MailStore | None = None) -> list[Finding]:
    findings = [Finding("ok", "config", f"config is valid ({len(config.listeners)} "
                        "listeners)")]
    findings += check_certificate(config)
    findings += check_reachability(config)
    results = await check_listeners(config, opts)
    findings += listener_findings(results)
    findings += await check_managesieve(config, opts)
    own_store = store is None
    st: MailStore = store if store is not None else await open_store(config)
    try:
        domains = await st.list_domains()
        mta = next((lst for lst in config.listeners if lst.role == "mta"), None)
        if mta is None:
            findings.append(Finding("info", "relay", "no mta listener: relay test skipped"))
        else:
            host = _connect_address(mta)
            ip = ipaddress.ip_address(host)
            trusted = any(ip in ipaddress.ip_network(n, strict=False)
                          for n in config.trusted_networks)
            findings += await relay_test(host, mta.port, domains[0] if domains
                                         else config.hostname, opts.timeout, trusted,
                                         local_destination(st, config.hostname))
        if opts.dns:
            if not domains:
                findings.append(Finding("warn", "dns", "no local domains",
                                        "pochta domain add example.org"))
            else:
                findings += await check_dns(
                    config, domains,
                    resolver or common.make_resolver(config.dns.nameservers,
                                                     config.dns.timeout))
        findings += await check_queue(st)
    finally:
        if own_store:
            await st.close()
    return findings


def register_doctor(sub: Any) -> None:
    p = sub.add_parser("doctor", help="self-test of this installation",
                       description="Config, certificate, listeners (and whether other "
                                   "machines can reach them), open-relay battery, "
                                   "AUTH before TLS, DNS records, queue health.")
    p.add_argument("--cafile", help="CA bundle that verifies the server certificate "
                                    "(for a private CA or a self-signed certificate)")
    p.add_argument("--no-dns", action="store_true", help="skip the DNS comparison")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--sieve-user", help="log in to ManageSieve as this user and check a "
                                        "script (CHECKSCRIPT round trip)")
    p.add_argument("--password-env", metavar="VAR", help="--sieve-user's password from $VAR")
    p.add_argument("--password-file", metavar="FILE", help="... from the first line of FILE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace, config: Config) -> int:
    opts = DoctorOptions(cafile=args.cafile, timeout=args.timeout, dns=not args.no_dns)
    if getattr(args, "sieve_user", None):
        opts.sieve_user = args.sieve_user
        opts.sieve_password = read_secret(args)
    findings = asyncio.run(run_doctor(config, opts))
    code = findings_exit(findings)
    if args.json:
        dump_json({"command": "doctor", "findings": [f.to_json() for f in findings],
                   "exit_code": code})
    else:
        print(f"pochta doctor: {config.hostname}")
        print_findings(findings, sys.stdout)
    return code
