"""``pochta dkim list|generate|rotate|activate|remove`` and ``pochta dns records``.

The main CLI calls ``register(subparsers)``; every parser it adds carries
``func(args, config, domains=None, out=sys.stdout) -> int``. ``domains`` lists the local
domains (from the store); when it is None, the domains that have DKIM keys are used.
Handlers need only ``config.data_path``, ``config.hostname`` and ``config.listeners``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from pochta.cliutil import pochta_command
from pochta.config import Config
from pochta.policy import dkim, records
from pochta.transport_security.records import own_tlsa


def register(subparsers: Any) -> None:
    """Add the ``dkim`` and ``dns`` commands to an argparse sub-parser collection."""
    p_dkim = subparsers.add_parser("dkim", help="DKIM signing keys")
    dk = p_dkim.add_subparsers(dest="dkim_command", required=True)

    p = dk.add_parser("list", help="list keys, their selectors and whether they sign")
    p.add_argument("domain", nargs="?", help="only this domain")
    p.set_defaults(func=cmd_dkim_list)

    p = dk.add_parser("generate", help="make keys for a domain (active if it has none)")
    p.add_argument("domain")
    p.add_argument("--selector", help="selector name (default: YYYYMM + r/e)")
    p.add_argument("--algorithm", choices=["rsa", "ed25519", "both"], default="both")
    p.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048)")
    p.set_defaults(func=cmd_dkim_generate)

    p = dk.add_parser(
        "rotate",
        help="make new keys beside the active ones; publish their DNS records, then activate",
    )
    p.add_argument("domain")
    p.add_argument("--algorithm", choices=["rsa", "ed25519", "both"], default="both")
    p.add_argument("--bits", type=int, default=2048)
    p.set_defaults(func=cmd_dkim_rotate)

    p = dk.add_parser("activate", help="sign with this selector from now on")
    p.add_argument("domain")
    p.add_argument("selector")
    p.set_defaults(func=cmd_dkim_activate)

    p = dk.add_parser("remove", help="delete a retired (inactive) key; its DNS record "
                      "can go too")
    p.add_argument("domain")
    p.add_argument("selector")
    p.set_defaults(func=cmd_dkim_remove)

    p_dns = subparsers.add_parser("dns", help="DNS records to publish")
    dn = p_dns.add_subparsers(dest="dns_command", required=True)
    p = dn.add_parser("records", help="MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT and SRV records")
    p.add_argument("domain", nargs="?", help="one domain (default: every local domain)")
    p.add_argument("--json", action="store_true", help="JSON instead of zone-file lines")
    p.set_defaults(func=cmd_dns_records)


def _algorithms(choice: str) -> list[str]:
    return ["rsa", "ed25519"] if choice == "both" else [choice]


def _known_domains(config: Config, domains: Sequence[str] | None) -> list[str]:
    if domains is not None:
        return sorted({d.lower() for d in domains})
    return sorted({k.domain for k in dkim.load_keys(config.data_path)})


def cmd_dkim_list(args: argparse.Namespace, config: Config,
                  domains: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    keys = dkim.load_keys(config.data_path, args.domain)
    if args.domain:
        names = [args.domain.lower()]
    else:
        names = sorted(set(_known_domains(config, domains)) | {k.domain for k in keys})
    if not names:
        out.write("no DKIM keys\n")
    for d in names:
        dkeys = [k for k in keys if k.domain == d]
        if not dkeys:
            out.write(f"{d}\t-\t-\tno keys (run: {pochta_command()} dkim generate {d})\n")
            continue
        active = set(dkim.active_selectors(config.data_path, d))
        for k in dkeys:
            state = "active" if k.selector in active else "inactive"
            out.write(f"{k.domain}\t{k.selector}\t{k.algorithm}\t{state}\t{k.dns_name}\n")
    return 0


def _print_key_records(keys: Sequence[dkim.DKIMKey], out: TextIO) -> None:
    recs = [records.DNSRecord(k.dns_name, "TXT", dkim.dns_txt_record(k)) for k in keys]
    out.write(records.zone_lines(recs))


def cmd_dkim_generate(args: argparse.Namespace, config: Config,
                      domains: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    made = []
    algs = _algorithms(args.algorithm)
    try:
        for alg in algs:
            sel = args.selector
            if sel and len(algs) > 1:
                sel = f"{sel}{alg[0]}"  # one selector per key: "mail" -> "mailr", "maile"
            sel = sel or dkim.new_selector(config.data_path, args.domain, alg)
            key = dkim.generate_key(config.data_path, args.domain, sel, alg, args.bits)
            made.append(key)
            if not any(k.algorithm == alg for k in dkim.signing_keys(config.data_path,
                                                                    key.domain)):
                dkim.activate(config.data_path, key.domain, key.selector)
    except dkim.DKIMError as exc:
        print(f"pochta dkim generate: {exc}", file=sys.stderr)
        return 1
    active = {k.selector for k in dkim.signing_keys(config.data_path, args.domain)}
    for k in made:
        state = "active" if k.selector in active else "inactive (use 'pochta dkim activate')"
        out.write(f"created {k.path} ({k.algorithm}, selector {k.selector}, {state})\n")
    out.write("publish:\n")
    _print_key_records(made, out)
    return 0


def cmd_dkim_rotate(args: argparse.Namespace, config: Config,
                    domains: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    made = []
    try:
        for alg in _algorithms(args.algorithm):
            sel = dkim.new_selector(config.data_path, args.domain, alg)
            made.append(dkim.generate_key(config.data_path, args.domain, sel, alg, args.bits))
    except dkim.DKIMError as exc:
        print(f"pochta dkim rotate: {exc}", file=sys.stderr)
        return 1
    out.write("new keys (not signing yet); publish these records beside the old ones:\n")
    _print_key_records(made, out)

    cmd = pochta_command()
    out.write("when they resolve, switch signing to them with:\n")
    for k in made:
        out.write(f"  {cmd} dkim activate {k.domain} {k.selector}\n")
    old = sorted({k.selector for k in dkim.signing_keys(config.data_path, args.domain)
                  if k.algorithm in {m.algorithm for m in made}})
    out.write("and a few days later retire the old keys (then delete their DNS records):\n")
    for sel in old:
        out.write(f"  {cmd} dkim remove {args.domain.lower()} {sel}\n")
    return 0


def cmd_dkim_activate(args: argparse.Namespace, config: Config,
                      domains: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    try:
        keys = dkim.activate(config.data_path, args.domain, args.selector)
    except dkim.DKIMError as exc:
        print(f"pochta dkim activate: {exc}", file=sys.stderr)
        return 1
    out.write(f"{args.domain.lower()} now signs with: "
              + ", ".join(f"{k.selector} ({k.algorithm})" for k in keys) + "\n")
    return 0


def cmd_dkim_remove(args: argparse.Namespace, config: Config,
                    domains: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    try:
        keys = dkim.remove_key(config.data_path, args.domain, args.selector)
    except dkim.DKIMError as exc:
        print(f"pochta dkim remove: {exc}", file=sys.stderr)
        return 1
    for k in keys:
        out.write(f"removed {k.path} ({k.algorithm}, selector {k.selector})\n")
    out.write(f"'pochta dns records' no longer lists it; delete '{keys[0].dns_name}. TXT' "
              "from the zone once no mail signed with it is in transit (a few days)\n")
    return 0


def cmd_dns_records(args: argparse.Namespace, config: Config,
                    domains: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    targets = [args.domain.lower()] if args.domain else _known_domains(config, domains)
    if not targets:
        print("pochta dns records: no domains (add one, or name it)", file=sys.stderr)
        return 1
    services = records.services_from_listeners(config.listeners)
    rua = config.dmarc.report_address or ""
    all_records = []
    for d in targets:
        keys = dkim.load_keys(config.data_path, d)
        all_records.extend(records.records_for(d, config.hostname, keys, rua=rua,
                                               services=services))
    # DANE: the TLSA record of this host's certificate (pochta.transport_security)

    tlsa, warning = own_tlsa(config)
    if tlsa is not None:
        all_records.append(tlsa)
    if warning:
        print(f"pochta dns records: warning: {warning}", file=sys.stderr)
    out.write(records.to_json(all_records) if args.json else records.zone_lines(all_records))
    return 0
