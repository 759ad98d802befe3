"""`pochta check DOMAIN`: the DNS side of a mail domain (dig for mail).

MX hosts and their addresses, reverse DNS and forward-confirmed reverse DNS of those
addresses, SPF (syntax through Pochta's RFC 7208 evaluator, DNS lookup count, the ``all``
policy), DKIM keys for given selectors (syntax, key type and size), DMARC (RFC 7489),
MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) records, and the null MX (RFC 7505).
Every finding is ok, info, warn or fail with a one-line fix.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import ipaddress
import re
import sys
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from pochta.dns import Resolver, TemporaryDNSError
from pochta.mail.addresses import domain_key
from pochta.policy import dmarc, spf
from pochta.transport_security.mtasts import (
    HTTPSPolicyFetcher,
    PolicyError,
    PolicyFetcher,
    mx_matches,
    parse_policy,
)

from . import common
from .common import EXIT_CONNECT, Finding, dump_json, findings_exit, print_findings

TEST_IP = "192.0.2.1"  # RFC 5737 TEST-NET-1: matches no real SPF policy


class _DNSDown(Exception):
    pass


async def check_domain(domain: str, resolver: Resolver,
                       selectors: Sequence[str] = (),
                       sts_fetcher: PolicyFetcher | None = None) -> list[Finding]:
    """``sts_fetcher``: fetch the MTA-STS policy with it (None: the HTTPS policy is not
    fetched, only the TXT record is checked)."""
    domain = domain_key(domain)
    out: list[Finding] = []
    accepts_mail = await _check_mx(domain, resolver, out)
    await _check_spf(domain, resolver, out, accepts_mail)
    await _check_dkim(domain, resolver, selectors, out)
    await _check_dmarc(domain, resolver, out)
    await _check_mta_sts(domain, resolver, out)
    if sts_fetcher is not None and out[-1].check == "mta-sts" and out[-1].status == "ok":
        await check_sts_policy(domain, resolver, sts_fetcher, out)
    await _check_tlsrpt(domain, resolver, out)
    return out


# --- MX and addresses ------------------------------------------------------------------


async def _addresses(name: str, resolver: Resolver) -> list[str]:
    return [*await resolver.a(name), *await resolver.aaaa(name)]


async def _check_mx(domain: str, resolver: Resolver, out: list[Finding]) -> bool:
    """Findings for MX and the MX hosts; False when the domain accepts no mail."""
    try:
        mxs = sorted(await resolver.mx(domain))
    except TemporaryDNSError as exc:
        raise _DNSDown(f"MX lookup for {domain} failed: {exc}") from None
    if any(not mx.host for mx in mxs):
        if len(mxs) == 1:
            out.append(Finding("info", "mx", f"null MX: {domain} accepts no mail (RFC 7505)"))
        else:
            out.append(Finding("fail", "mx", "a null MX ('0 .') must be the only MX record "
                               "(RFC 7505 §3)", "remove the null MX or the other MX records"))
        return False
    if not mxs:
        addrs = await _addresses(domain, resolver)
        if addrs:
            out.append(Finding("warn", "mx", f"no MX record; mail goes to {domain}'s own "
                               f"address ({', '.join(addrs)}) (RFC 5321 §5.1 implicit MX)",
                               f"publish '{domain}. IN MX 10 mail.{domain}.'"))
            mxs_hosts = [domain]
        else:
            out.append(Finding("fail", "mx", f"no MX and no A/AAAA record: {domain} cannot "
                               "receive mail", f"publish an MX record for {domain}"))
            return False
    else:
        out.append(Finding("ok", "mx", "MX: " + ", ".join(f"{m.preference} {m.host}"
                                                          for m in mxs)))
        mxs_hosts = [m.host for m in mxs]
    for host in mxs_hosts:
        await _check_host(host, resolver, out)
    return True


async def _check_host(host: str, resolver: Resolver, out: list[Finding]) -> None:
    try:
        ipaddress.ip_address(host.strip("[]"))
        out.append(Finding("fail", "mx", f"MX target {host} is an IP address; it must be a "
                           "host name (RFC 5321 §5.1)", "point the MX at a host name"))
        return
    except ValueError:
        pass
    try:
        addrs = await _addresses(host, resolver)
    except TemporaryDNSError as exc:
        out.append(Finding("warn", "mx", f"{host}: address lookup failed: {exc}",
                           "check the DNS servers of the host's zone"))
        return
    if not addrs:
        out.append(Finding("fail", "mx", f"MX host {host} has no A/AAAA record",
                           f"publish an A (and AAAA) record for {host}"))
        return
    out.append(Finding("ok", "mx", f"{host} has address {', '.join(addrs)}"))
    for addr in addrs:
        ip = ipaddress.ip_address(addr)
        if ip.is_private or ip.is_loopback or ip.is_link_local:
            out.append(Finding("warn", "mx", f"{host} address {addr} is not publicly "
                               "routable", f"publish {host}'s public address"))
        await _check_rdns(host, addr, resolver, out)


async def _check_rdns(host: str, addr: str, resolver: Resolver, out: list[Finding]) -> None:
    try:
        names = await resolver.ptr(addr)
    except TemporaryDNSError as exc:
        out.append(Finding("warn", "rdns", f"{addr}: PTR lookup failed: {exc}", ""))
        return
    if not names:
        out.append(Finding("warn", "rdns", f"{addr} has no reverse DNS (PTR); many "
                           "receivers refuse mail from such addresses",
                           f"ask the owner of {addr} (your provider) to set its PTR to "
                           f"{host}"))
        return
    confirmed = []
    for name in names:
        try:
            if addr in await _addresses(name, resolver):
                confirmed.append(name)
        except TemporaryDNSError:
            continue
    if not confirmed:
        out.append(Finding("warn", "rdns", f"{addr} reverse DNS {', '.join(names)} is not "
                           "forward-confirmed (the name does not resolve back to the "
                           "address)", f"publish an A/AAAA record {names[0]} -> {addr}"))
    elif host.lower() not in (n.lower() for n in confirmed):
        out.append(Finding("info", "rdns", f"{addr} reverse DNS {confirmed[0]} is "
                           f"forward-confirmed (differs from the MX name {host}; fine if the "
                           "server's HELO uses it)"))
    else:
        out.append(Finding("ok", "rdns", f"{addr} reverse DNS {confirmed[0]} "
                           "(forward-confirmed)"))


# --- SPF -------------------------------------------------------------------------------


def _spf_records(texts: list[str]) -> list[str]:
    return [t for t in texts if re.match(r"^v=spf1( |$)", t, re.IGNORECASE)]


async def spf_lookups(domain: str, resolver: Resolver, depth: int = 0,
                      seen: set[str] | None = None) -> int:
    """DNS-querying terms of ``domain``'s SPF policy, includes and redirects followed
    (what RFC 7208 §4.6.4 limits to 10), for a sender that matches nothing."""
    seen = seen if seen is not None else set()
    if depth > 10 or domain in seen:
        return 0
    seen.add(domain)
    try:
        records = _spf_records(await resolver.txt(domain))
    except TemporaryDNSError:
        return 0
    if len(records) != 1:
        return 0
    count = 0
    for term in records[0].split()[1:]:
        t = term.lstrip("+-~?").lower()
        name = re.split(r"[:/=]", t, maxsplit=1)[0]
        if name in ("a", "mx", "ptr", "exists"):
            count += 1
        elif name in ("include", "redirect"):
            count += 1
            target = t.split(":" if name == "include" else "=", 1)[-1]
            if "%" not in target:
                count += await spf_lookups(target, resolver, depth + 1, seen)
    return count


async def _check_spf(domain: str, resolver: Resolver, out: list[Finding],
                     accepts_mail: bool) -> None:
    try:
        records = _spf_records(await resolver.txt(domain))
    except TemporaryDNSError as exc:
        out.append(Finding("warn", "spf", f"TXT lookup failed: {exc}", ""))
        return
    if not records:
        fix = (f"publish '{domain}. IN TXT \"v=spf1 mx -all\"'" if accepts_mail
               else f"publish '{domain}. IN TXT \"v=spf1 -all\"' (the domain sends no mail)")
        out.append(Finding("warn", "spf", "no SPF record; receivers cannot tell forged "
                           "senders", fix))
        return
    if len(records) > 1:
        out.append(Finding("fail", "spf", f"{len(records)} SPF records; more than one is a "
                           "permanent error (RFC 7208 §4.5)", "merge them into one record"))
        return
    record = records[0]
    lookups = await spf_lookups(domain, resolver)
    if lookups > spf.MAX_DNS_TERMS:
        out.append(Finding("fail", "spf", f"'{record}' needs {lookups} DNS lookups (the "
                           "limit is 10, RFC 7208 §4.6.4): receivers answer permerror",
                           "flatten includes into ip4:/ip6: terms"))
        return
    result, _, reason = await spf.check_host(TEST_IP, domain, f"postmaster@{domain}",
                                             resolver)
    if result == "permerror":
        out.append(Finding("fail", "spf", f"'{record}' is invalid: {reason}",
                           "fix the record (RFC 7208 §4.6, §5)"))
        return
    if result == "temperror":
        out.append(Finding("warn", "spf", f"'{record}': a lookup failed: {reason}", ""))
    out.append(Finding("ok", "spf", f"'{record}' ({lookups} DNS lookups of 10)"))
    terms = [t.lower() for t in record.split()[1:]]
    alls = [t for t in terms if t.lstrip("+-~?") == "all"]
    if alls:
        q = alls[-1][0] if alls[-1][0] in "+-~?" else "+"
        if q == "+":
            out.append(Finding("fail", "spf", "'+all' lets every host on the internet send "
                               "as this domain", "end the record with -all or ~all"))
        elif q == "?":
            out.append(Finding("warn", "spf", "'?all' (neutral) protects nothing",
                               "end the record with -all or ~all"))
    elif not any(t.startswith("redirect=") for t in terms):
        out.append(Finding("warn", "spf", "no 'all' term: unlisted senders get 'neutral'",
                           "end the record with -all or ~all"))


# --- DKIM ------------------------------------------------------------------------------


def dkim_key_findings(selector: str, record: str) -> list[Finding]:
    name = f"dkim {selector}"
    tags: dict[str, str] = {}
    for part in record.split(";"):
        k, eq, v = part.partition("=")
        if eq:
            tags[k.strip().lower()] = re.sub(r"\s+", "", v)
    if "v" in tags and tags["v"] != "DKIM1":
        return [Finding("fail", name, f"v={tags['v']}: must be DKIM1 (RFC 6376 §3.6.1)",
                        "start the record with v=DKIM1")]
    if "p" not in tags:
        return [Finding("fail", name, "no p= tag: not a DKIM key record",
                        "publish the record printed by 'pochta dns records'")]
    if not tags["p"]:
        return [Finding("warn", name, "the key is revoked (empty p=)",
                        "publish the current key or stop signing with this selector")]
    try:
        raw = base64.b64decode(tags["p"], validate=True)
    except (binascii.Error, ValueError):
        return [Finding("fail", name, "p= is not valid base64", "republish the key")]
    k = tags.get("k", "rsa").lower()
    if k == "ed25519":
        if len(raw) != 32:
            return [Finding("fail", name, f"ed25519 key of {len(raw)} bytes (must be 32, "
                            "RFC 8463)", "republish the key")]
        return [Finding("ok", name, "ed25519 key (RFC 8463)")]
    if k != "rsa":
        return [Finding("fail", name, f"unknown key type k={k}", "use k=rsa or k=ed25519")]

    try:
        key = load_der_public_key(raw)
    except ValueError:
        return [Finding("fail", name, "p= is not an RSA public key", "republish the key")]
    if not isinstance(key, rsa.RSAPublicKey):
        return [Finding("fail", name, "p= holds a non-RSA key with k=rsa", "fix k= or p=")]
    bits = key.key_size
    if bits < 1024:
        return [Finding("fail", name, f"RSA key of {bits} bits: verifiers ignore keys under "
                        "1024 bits (RFC 8301)", "generate a 2048-bit key")]
    if bits < 2048:
        return [Finding("warn", name, f"RSA key of {bits} bits", "rotate to a 2048-bit key")]
    return [Finding("ok", name, f"RSA key of {bits} bits")]


async def _check_dkim(domain: str, resolver: Resolver, selectors: Sequence[str],
                      out: list[Finding]) -> None:
    if not selectors:
        out.append(Finding("info", "dkim", "no --selector given: DKIM keys cannot be "
                           "discovered from DNS"))
        return
    for sel in selectors:
        name = f"{sel}._domainkey.{domain}"
        try:
            texts = await resolver.txt(name)
        except TemporaryDNSError as exc:
            out.append(Finding("warn", f"dkim {sel}", f"{name}: lookup failed: {exc}", ""))
            continue
        if not texts:
            out.append(Finding("fail", f"dkim {sel}", f"no key record at {name}",
                               "publish the record printed by 'pochta dns records'"))
            continue
        if len(texts) > 1:
            out.append(Finding("warn", f"dkim {sel}", f"{len(texts)} TXT records at {name}; "
                               "verifiers may pick any", "keep one record"))
        record = next((t for t in texts if "p=" in t), texts[0])
        out.extend(dkim_key_findings(sel, record))


# --- DMARC, MTA-STS, TLS-RPT ------------------------------------------------------------


async def _check_dmarc(domain: str, resolver: Resolver, out: list[Finding]) -> None:
    name = f"_dmarc.{domain}"
    fix = f"publish '{name}. IN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@{domain}\"'"
    try:
        texts = [t for t in await resolver.txt(name)
                 if re.match(r"^v\s*=\s*DMARC1", t, re.IGNORECASE)]
    except TemporaryDNSError as exc:
        out.append(Finding("warn", "dmarc", f"lookup failed: {exc}", ""))
        return
    if not texts:
        org = dmarc.organizational_domain(domain)
        if org != domain:
            out.append(Finding("info", "dmarc", f"no record at {name}; the policy of the "
                               f"organizational domain {org} applies"))
            return
        out.append(Finding("warn", "dmarc", "no DMARC record", fix))
        return
    if len(texts) > 1:
        out.append(Finding("fail", "dmarc", f"{len(texts)} DMARC records: receivers ignore "
                           "them all (RFC 7489 §6.6.3)", "keep one record"))
        return
    rec = dmarc.parse_record(texts[0])
    if rec is None:
        out.append(Finding("fail", "dmarc", f"'{texts[0]}' is not a valid DMARC record "
                           "(no valid p= and no rua=)", fix))
        return
    if rec.p == "none":
        out.append(Finding("warn", "dmarc", "p=none: monitoring only, forged mail is "
                           "delivered", "move to p=quarantine, then p=reject, once the "
                           "reports are clean"))
    else:
        out.append(Finding("ok", "dmarc", f"p={rec.p}" + (f" pct={rec.pct}"
                                                          if rec.pct != 100 else "")))
    if not rec.rua:
        out.append(Finding("warn", "dmarc", "no rua=: you get no aggregate reports",
                           f"add rua=mailto:postmaster@{domain}"))


async def _check_mta_sts(domain: str, resolver: Resolver, out: list[Finding]) -> None:
    name = f"_mta-sts.{domain}"
    try:
        texts = [t for t in await resolver.txt(name) if t.lower().startswith("v=stsv1")]
    except TemporaryDNSError as exc:
        out.append(Finding("warn", "mta-sts", f"lookup failed: {exc}", ""))
        return
    if not texts:
        out.append(Finding("info", "mta-sts", "no MTA-STS record (optional, RFC 8461)"))
        return
    if len(texts) > 1:
        out.append(Finding("fail", "mta-sts", "more than one MTA-STS record (RFC 8461 §3.1)",
                           "keep one record"))
        return
    m = re.search(r"(?:^|;)\s*id\s*=\s*([A-Za-z0-9]{1,32})\s*(?:;|$)", texts[0])
    if not m:
        out.append(Finding("fail", "mta-sts", f"'{texts[0]}' has no valid id= (1-32 letters "
                           "and digits, RFC 8461 §3.1)", "publish v=STSv1; id=YYYYMMDDNN"))
        return
    out.append(Finding("ok", "mta-sts", f"id={m.group(1)}"))


def make_policy_fetcher(resolver: Resolver, timeout: float) -> PolicyFetcher | None:
    """The HTTPS fetcher of MTA-STS policies (tests without a network replace this)."""
    return HTTPSPolicyFetcher(resolver, timeout=timeout)


async def check_sts_policy(domain: str, resolver: Resolver, fetcher: PolicyFetcher,
                           out: list[Finding]) -> None:
    """Fetch the HTTPS policy (RFC 8461 §3.3) and check the MX hosts against it."""
    url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
    try:
        policy = parse_policy(await fetcher.fetch(domain))
    except PolicyError as exc:
        out.append(Finding("fail", "mta-sts", f"policy {url}: {exc} ({exc.result})",
                           "serve the policy as text/plain over HTTPS with a valid "
                           f"certificate for mta-sts.{domain}"))
        return
    out.append(Finding("ok", "mta-sts", f"policy: mode={policy.mode} "
                       f"mx={','.join(policy.mx) or '-'} max_age={policy.max_age}"))
    if policy.mode == "none":
        return
    try:
        hosts = [m.host for m in await resolver.mx(domain) if m.host]
    except TemporaryDNSError:
        return
    outside = [h for h in hosts if not any(mx_matches(p, h) for p in policy.mx)]
    if outside:
        level = "fail" if policy.mode == "enforce" else "warn"
        out.append(Finding(level, "mta-sts", f"MX host(s) {', '.join(outside)} not covered "
                           f"by the policy (mode {policy.mode}: senders "
                           f"{'refuse' if policy.mode == 'enforce' else 'report'} them)",
                           "add mx: lines for them to the policy"))


async def _check_tlsrpt(domain: str, resolver: Resolver, out: list[Finding]) -> None:
    name = f"_smtp._tls.{domain}"
    try:
        texts = [t for t in await resolver.txt(name) if t.lower().startswith("v=tlsrptv1")]
    except TemporaryDNSError as exc:
        out.append(Finding("warn", "tls-rpt", f"lookup failed: {exc}", ""))
        return
    if not texts:
        out.append(Finding("info", "tls-rpt", "no TLS-RPT record (optional, RFC 8460)"))
        return
    m = re.search(r"rua\s*=\s*([^;]+)", texts[0])
    uris = [u.strip() for u in m.group(1).split(",")] if m else []
    if not uris or not all(u.startswith(("mailto:", "https:")) for u in uris):
        out.append(Finding("fail", "tls-rpt", f"'{texts[0]}' needs rua=mailto:... or "
                           "https://... (RFC 8460 §3)", f"add rua=mailto:tlsrpt@{domain}"))
        return
    out.append(Finding("ok", "tls-rpt", f"reports go to {', '.join(uris)}"))


# --- command ---------------------------------------------------------------------------


def register_check(sub: Any) -> None:
    p = sub.add_parser("check", help="check a domain's mail DNS records",
                       description="MX, rDNS, SPF, DKIM, DMARC, MTA-STS and TLS-RPT of DOMAIN.")
    p.add_argument("domain")
    p.add_argument("--selector", "-s", action="append", default=[],
                   help="DKIM selector to check (repeat)")
    p.add_argument("--nameserver", action="append", default=[],
                   help="ask this DNS server (IP) instead of the system's")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per DNS lookup")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-fetch", action="store_true",
                   help="do not fetch the MTA-STS policy over HTTPS")
    p.set_defaults(func=cmd_check, needs_config=False)


def cmd_check(args: argparse.Namespace, _config: object) -> int:
    resolver = common.make_resolver(args.nameserver, args.timeout)
    try:
        fetcher = None if args.no_fetch else make_policy_fetcher(resolver, args.timeout * 4)
        findings = asyncio.run(check_domain(args.domain, resolver, args.selector, fetcher))
        code = findings_exit(findings)
        error = None
    except _DNSDown as exc:
        findings, code, error = [], EXIT_CONNECT, str(exc)
    if args.json:
        dump_json({"command": "check", "domain": args.domain.lower(),
                   "findings": [f.to_json() for f in findings], "exit_code": code,
                   "error": error})
        return code
    if error:
        print(f"pochta check: {error}", file=sys.stderr)
        return code
    print(f"Mail DNS of {args.domain.lower()}:")
    print_findings(findings, sys.stdout)
    return code
