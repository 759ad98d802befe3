"""The `pochta` command: everything an admin does, from `init` to `serve`.

Every subcommand takes ``-c/--config`` (default ``$POCHTA_CONFIG`` or ``./pochta.toml``).
Passwords are read from a prompt or ``--password-stdin``, never from the command line.
Exit codes: 0 ok, 1 the operation failed (message on stderr), 2 usage or config error.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .acl_cli import register as register_acl
from .cliutil import (
    CLIError,
    config_path,
    load_config,
    open_store,
    pochta_command,
    read_password,
    with_store,
)
from .config import ALL_ADDRESSES, Config, ConfigError, load, reference
from .diag.cli import register as register_diag
from .firewall import firewall_lines
from .mail.addresses import (
    AddressError,
    normalize_address,
    normalize_alias_source,
    normalize_domain,
    split_address,
)
from .metadata_cli import register as register_metadata
from .passwords import derive_scram, hash_password, password_hasher
from .policy import dkim
from .policy.cli import register as register_policy
from .policy.dkim import ensure_domain_keys
from .proto.smtp.address import is_domain
from .queue.cli import register as register_queue
from .sending.cli import register as register_sending
from .server.preflight import preflight
from .sieve.cli import register as register_sieve
from .spam.cli import INIT_SUGGESTIONS, register_user_release
from .spam.cli import register as register_spam
from .storage.cli import register as register_storage
from .storage.interfaces import MailStore, StoreError
from .storage.public import (
    CLI_FOLDER_TARGET,
    AmbiguousFolder,
    folder_target,
    is_public_owner,
    public_folder,
    shown_target,
)
from .tlsutil import generate_self_signed
from .transfer.cli import register as register_transfer
from .transport_security.cli import register as register_transport_security
from .web.cli import register as register_web
from .web.ops_cli import register_app_password

DEMO_PORTS = {
    ("mta", "starttls"): 2525,
    ("submission", "starttls"): 2587,
    ("submission", "implicit"): 2465,
    ("imap", "starttls"): 2143,
    ("imap", "implicit"): 2993,
    ("pop3", "starttls"): 2110,
    ("pop3", "implicit"): 2995,
    ("managesieve", "starttls"): 24190,
    ("http", "none"): 2080,
    ("http", "implicit"): 2443,
}
STANDARD_PORTS = {
    ("mta", "starttls"): 25,
    ("submission", "starttls"): 587,
    ("submission", "implicit"): 465,
    ("imap", "starttls"): 143,
    ("imap", "implicit"): 993,
    ("pop3", "starttls"): 110,
    ("pop3", "implicit"): 995,
    ("managesieve", "starttls"): 4190,
    # no http listener: 80/443 usually belong to a web server already; add one by hand
}

# --- init and demo ---------------------------------------------------------------------


def render_config(hostname: str, ports: dict[tuple[str, str], int], address: str) -> str:
    lines = [
        "# Pochta configuration. Every setting and its default: `pochta config-reference`.",
        f'hostname = "{hostname}"',
        'data_dir = "data"',
        "# Networks allowed to relay through the MTA port without AUTH (none by default).",
        "trusted_networks = []",
        "",
        "[tls]",
        'cert = "tls/cert.pem"',
        'key = "tls/key.pem"',
        "",
        *INIT_SUGGESTIONS,  # commented-out spam defence (spam/cli.py)
    ]
    for (role, tls), port in ports.items():
        lines += [
            "[[listeners]]",
            f'role = "{role}"',
            f'address = "{address}"',
            f"port = {port}",
            f'tls = "{tls}"',
            "",
        ]
    return "\n".join(lines)


async def init_instance(
    directory: Path,
    hostname: str,
    domain: str | None,
    ports: dict[tuple[str, str], int],
    address: str,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    cfg_file = directory / "pochta.toml"
    if cfg_file.exists():
        raise CLIError(f"{cfg_file} already exists; not overwriting it")
    cfg_file.write_text(render_config(hostname, ports, address), encoding="utf-8")
    config = load(cfg_file)
    generate_self_signed(hostname, config.path(config.tls.cert), config.path(config.tls.key))
    store = await open_store(config)
    try:
        if domain:
            await store.add_domain(normalize_domain(domain))
    finally:
        await store.close()
    if domain:
        _dkim_for_new_domain(config, normalize_domain(domain))
    return cfg_file


def _dkim_for_new_domain(config: Config, domain: str) -> None:
    """A new domain gets its DKIM keys at once, so `pochta dns records` can list them."""

    ensure_domain_keys(config.data_path, domain, config.dkim.algorithms, config.dkim.rsa_bits)


def cmd_init(args: argparse.Namespace, _config: Config | None) -> int:
    directory = Path(args.dir)
    ports = STANDARD_PORTS if args.standard_ports else DEMO_PORTS
    address = args.address
    if address is None:
        # a real deployment is reached from other machines; the demo ports stay private
        address = ALL_ADDRESSES if args.standard_ports else "127.0.0.1"
    domain = _checked_domain(args.domain) if args.domain else None
    cfg_file = asyncio.run(init_instance(directory, args.hostname, domain, ports, address))
    print(f"created {cfg_file}, data directory and a self-signed certificate for "
          f"{args.hostname}")
    where = ("every IPv4 and IPv6 address" if address == ALL_ADDRESSES else address)
    print(f"the listeners bind {where} (change with --address or in {cfg_file})")
    if args.standard_ports:
        print("\n".join(firewall_lines(ports)))
    print(f"next: {pochta_command()} -c {cfg_file} user add "
          f"postmaster@{domain or 'your.domain'}")
    return 0


DEMO_USERS = (("alice@example.test", "alice-demo-pass"), ("bob@example.test", "bob-demo-pass"))


def cmd_demo(args: argparse.Namespace, _config: Config | None) -> int:
    directory = Path(args.dir)
    cfg_file = directory / "pochta.toml"
    if not cfg_file.exists():

        async def setup() -> None:
            await init_instance(directory, "mail.example.test", "example.test", DEMO_PORTS,
                                "127.0.0.1")
            demo_config = load(cfg_file)
            hasher = password_hasher(demo_config)
            store = await open_store(demo_config)
            try:
                for address, password in DEMO_USERS:
                    await store.add_account(address, hash_password(password, hasher=hasher),
                                            derive_scram(password))
                await store.add_alias("postmaster@example.test", ["alice@example.test"])
            finally:
                await store.close()

        asyncio.run(setup())
        print(f"demo instance created in {directory}/")
    config = load(cfg_file)
    print(demo_banner(config, cfg_file))
    return run_server(config)


def demo_banner(config: Config, cfg_file: Path) -> str:
    out = ["", "Pochta demo: mail.example.test, users alice@example.test / alice-demo-pass",
           "and bob@example.test / bob-demo-pass (self-signed certificate).", ""]
    for lst in config.listeners:
        out.append(f"  {lst.role:<11} {lst.address}:{lst.port:<5}  tls={lst.tls}")
    by_role = {(lst.role, lst.tls): lst.port for lst in config.listeners}
    out += ["", "Try it:"]
    if ("mta", "starttls") in by_role:
        out.append(f"  swaks --server 127.0.0.1:{by_role['mta', 'starttls']} "
                   "--to bob@example.test --from someone@elsewhere.test")
    if ("submission", "starttls") in by_role:
        out.append(f"  swaks --server 127.0.0.1:{by_role['submission', 'starttls']} --tls "
                   "--auth-user alice@example.test --auth-password alice-demo-pass "
                   "--from alice@example.test --to bob@example.test")
    if ("imap", "implicit") in by_role:
        out.append(f"  curl -k 'imaps://127.0.0.1:{by_role['imap', 'implicit']}/INBOX;UID=1' "
                   "--user bob@example.test:bob-demo-pass   # the first message")
    if ("pop3", "implicit") in by_role:
        out.append(f"  curl -k 'pop3s://127.0.0.1:{by_role['pop3', 'implicit']}/' "
                   "--user bob@example.test:bob-demo-pass")
    if ("http", "implicit") in by_role:
        out.append(f"  {pochta_command()} -c {cfg_file} apikey add example.test "
                   "--scope send,events   # then, with KEY:")
        out.append(f"  curl -k https://127.0.0.1:{by_role['http', 'implicit']}/v1/messages "
                   "-H 'Authorization: Bearer KEY' -H 'Content-Type: application/json' "
                   "-d '{\"from\": \"alice@example.test\", \"to\": \"bob@example.test\", "
                   "\"subject\": \"hi\", \"text\": \"hello\"}'")
    out += [f"  {pochta_command()} -c {cfg_file} user list", "", "Ctrl-C stops the server.",
            ""]
    return "\n".join(out)


# --- serve -----------------------------------------------------------------------------


def run_server(config: Config, workers: int | None = None) -> int:
    # local: the whole server loads only for `pochta serve` and `demo`, not for every
    # admin command
    from .server.workers import run_one, supervise

    n = workers if workers is not None else config.workers
    if n > 1:
        return supervise(config, n)
    return run_one(config)


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    if args.workers is not None and not 1 <= args.workers <= 64:
        raise CLIError("--workers must be from 1 to 64")
    return run_server(config, args.workers)


def cmd_config_reference(args: argparse.Namespace, _config: Config | None) -> int:
    print(reference())
    return 0


def cmd_config_check(args: argparse.Namespace, config: Config) -> int:
    """Every check ``serve`` makes at start (exit 2 if it would refuse to start), then the
    unsafe choices (exit 1): one line each, naming the key."""

    problems = preflight(config)
    errors = [p for p in problems if p.level == "error"]
    if not problems:
        print(f"{config_path(args)}: ok ({len(config.listeners)} listeners)")
        return 0
    for p in problems:
        print(f"{'ERROR' if p.level == 'error' else 'WARN '}  {p}")
    verdict = ("'pochta serve' would refuse to start" if errors
               else "'pochta serve' starts, but see the warnings")
    print(f"{config_path(args)}: {len(errors)} error(s), {len(problems) - len(errors)} "
          f"warning(s): {verdict}")
    return 2 if errors else 1


# --- domains, users, aliases -----------------------------------------------------------


def _checked_domain(text: str) -> str:
    """A domain name an admin may add: DNS labels of letters, digits and hyphens (or
    U-labels), at least two of them."""
    try:
        domain = normalize_domain(text)
    except AddressError:
        domain = ""
    if not is_domain(domain) or "." not in domain:
        raise CLIError(f"{text!r} is not a domain name (labels of letters, digits and '-', "
                       "separated by dots, e.g. example.org)")
    return domain


@with_store
async def cmd_domain_add(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    domain = _checked_domain(args.domain)
    await store.add_domain(domain)
    _dkim_for_new_domain(config, domain)
    print(f"added domain {domain}")
    return 0


@with_store
async def cmd_domain_list(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    for domain in await store.list_domains():
        print(domain)
    return 0


@with_store
async def cmd_domain_remove(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    domain = normalize_domain(args.domain)
    await store.remove_domain(domain)
    print(f"removed domain {domain}")
    removed = dkim.remove_domain_keys(config.data_path, domain)
    if removed:
        print(f"removed its DKIM keys ({', '.join(k.selector for k in removed)}); "
              f"delete their DNS records: {', '.join(sorted({k.dns_name for k in removed}))}")
    return 0


def _local_address(address: str) -> str:
    address = normalize_address(address)
    if "+" in split_address(address)[0]:
        raise CLIError("'+' separates subaddresses (user+tag@domain); not allowed in a user name")
    return address


@with_store
async def cmd_user_add(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    address = _local_address(args.address)
    if not await store.has_domain(split_address(address)[1]):
        raise CLIError(f"{split_address(address)[1]} is not a local domain; "
                       "add it with 'pochta domain add'")
    password = read_password(args)
    await store.add_account(address, hash_password(password, hasher=password_hasher(config)),
                            derive_scram(password))
    print(f"added user {address}")
    return 0


@with_store
async def cmd_user_passwd(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    address = normalize_address(args.address)
    if await store.get_account(address) is None:
        raise CLIError(f"no user {address}")
    password = read_password(args)
    await store.set_password(address, hash_password(password, hasher=password_hasher(config)),
                             derive_scram(password))
    print(f"password changed for {address}")
    return 0


SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """``2G``, ``500M``, ``1.5T``, ``1000000``: bytes, with binary K/M/G/T suffixes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: a number of bytes, optionally with K, M, G or T "
            "(powers of 1024), e.g. 2G; 0 means no limit")
    return int(float(m.group(1)) * SIZE_UNITS[m.group(2).upper()])


def format_size(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= SIZE_UNITS[unit]:
            return f"{n / SIZE_UNITS[unit]:.1f} {unit}iB"
    return f"{n} B"


@with_store
async def cmd_user_list(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    for account in await store.list_accounts(args.domain):
        if is_public_owner(account.address):
            continue  # the holder of public folders (pochta acl create-public): no user
        notes = []
        used = await store.account_usage(account.id)
        if account.quota_bytes:
            pct = 100 * used // account.quota_bytes
            notes.append(f"used {format_size(used)} of {format_size(account.quota_bytes)}, "
                         f"{pct}%")
        else:
            notes.append(f"used {format_size(used)}, no quota")
        if account.may_send_as_anyone:
            notes.append("may send as anyone")
        if account.disabled:
            notes.append("disabled")
        print(account.address + (f"  ({', '.join(notes)})" if notes else ""))
    return 0


@with_store
async def cmd_user_remove(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    address = normalize_address(args.address)
    account = await store.get_account(address)
    if account is None:
        raise CLIError(f"no user {address}")
    used = await store.account_usage(account.id)
    # aliases that name the user: the ones naming only them go, the others lose them
    aliases = [a for a in await store.list_aliases() if address in a.targets]
    dropped = [a for a in aliases if set(a.targets) == {address}]
    trimmed = [a for a in aliases if a not in dropped]
    plan = [f"user {address} and all their mail ({format_size(used)})"]
    plan += [f"alias {a.source} (it points only to {address})" for a in dropped]
    plan += [f"{address} from alias {a.source} (it keeps "
             f"{', '.join(t for t in a.targets if t != address)})" for a in trimmed]
    if not args.yes:
        if not sys.stdin.isatty():
            raise CLIError("this removes " + "; ".join(plan)
                           + ". Nothing was removed: confirm with --yes")
        print("This removes:\n  " + "\n  ".join(plan))
        try:
            answer = await asyncio.to_thread(input, "Remove? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 1
    await store.remove_account(address)
    for alias in aliases:
        await store.remove_alias(alias.source)
        rest = [t for t in alias.targets if t != address]
        if rest:
            await store.add_alias(alias.source, rest)
    print("removed " + "; ".join(plan))
    return 0


def _yes_no(value: str | None) -> bool | None:
    return None if value is None else value == "yes"


@with_store
async def cmd_user_set(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    apop_secret = None
    if args.apop_secret_stdin:
        # APOP needs the shared secret itself (RFC 1939 §7); "" on stdin removes it
        apop_secret = sys.stdin.readline().rstrip("\r\n")
    await store.update_account(
        normalize_address(args.address),
        may_send_as_anyone=_yes_no(args.send_as_anyone),
        quota_bytes=args.quota,
        disabled=_yes_no(args.disabled),
        apop_secret=apop_secret,
    )
    print(f"updated {args.address}")
    return 0


@with_store
async def cmd_alias_add(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    source = normalize_alias_source(args.source)
    domain = source.rpartition("@")[2]
    if not is_domain(domain):
        raise CLIError(f"{domain!r} is not a domain name")
    if not await store.has_domain(domain):
        raise CLIError(f"{domain} is not a local domain")
    targets = [await _alias_target(store, t) for t in args.targets]
    await store.add_alias(source, targets)
    print(f"{source} -> {', '.join(map(shown_target, targets))}")
    return 0


async def _alias_target(store: MailStore, target: str) -> str:
    """An address, or ``public:NAME``: the public folder NAME (storage/public.py)."""
    if not target.lower().startswith(CLI_FOLDER_TARGET):
        return normalize_address(target)
    name = target[len(CLI_FOLDER_TARGET):]
    try:
        box = await public_folder(store, name)
    except AmbiguousFolder:
        raise CLIError(f"several public folders are called {name!r} (in some case): "
                       "rename one") from None
    if box is None:
        raise CLIError(f"no public folder {name!r} (pochta acl create-public)")
    return folder_target(box.name)


@with_store
async def cmd_alias_list(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    for alias in await store.list_aliases(args.domain):
        print(f"{alias.source} -> {', '.join(map(shown_target, alias.targets))}")
    return 0


@with_store
async def cmd_alias_remove(args: argparse.Namespace, config: Config, store: MailStore) -> int:
    await store.remove_alias(normalize_alias_source(args.source))
    print(f"removed alias {args.source}")
    return 0


# --- the parser ------------------------------------------------------------------------

NO_CONFIG = {"init", "demo", "config-reference"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pochta", description="Pochta mail server")
    parser.add_argument("-c", "--config", help="config file (default $POCHTA_CONFIG or "
                        "./pochta.toml)")
    parser.add_argument("--version", action="version", version=f"pochta {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create a config, data directory and certificate")
    p.add_argument("--dir", default=".", help="where to create pochta.toml (default .)")
    p.add_argument("--hostname", required=True, help="this server's host name")
    p.add_argument("--domain", help="first mail domain to host")
    p.add_argument("--address", help="IP address the listeners bind; '*' for every IPv4 "
                   "and IPv6 address (default: '*' with --standard-ports, else 127.0.0.1)")
    p.add_argument("--standard-ports", action="store_true",
                   help="use 25/587/465/143/993/110/995 instead of 2525/2587/...")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("demo", help="create (once) and run the demo instance")
    p.add_argument("--dir", default="demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="run the server in the foreground")
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes sharing the listeners (default: the config's workers)")
    p.set_defaults(func=cmd_serve)
    sub.add_parser("config-reference", help="print every setting with its default").set_defaults(
        func=cmd_config_reference)
    sub.add_parser("config-check", help="run the checks serve makes at start and warn about "
                   "unsafe settings (exit 2: serve would refuse, 1: warnings)").set_defaults(
        func=cmd_config_check)

    dom = sub.add_parser("domain", help="local mail domains").add_subparsers(
        dest="action", required=True)
    for name, fn in (("add", cmd_domain_add), ("remove", cmd_domain_remove)):
        p = dom.add_parser(name)
        p.add_argument("domain")
        p.set_defaults(func=fn)
    dom.add_parser("list").set_defaults(func=cmd_domain_list)

    usr = sub.add_parser("user", help="accounts").add_subparsers(dest="action", required=True)
    for name, fn in (("add", cmd_user_add), ("passwd", cmd_user_passwd)):
        p = usr.add_parser(name)
        p.add_argument("address")
        p.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input")
        p.set_defaults(func=fn)
    p = usr.add_parser("list")
    p.add_argument("--domain")
    p.set_defaults(func=cmd_user_list)
    p = usr.add_parser("remove", help="remove an account, its mail and its aliases")
    p.add_argument("address")
    p.add_argument("--yes", action="store_true",
                   help="do not ask for confirmation (needed when not on a terminal)")
    p.set_defaults(func=cmd_user_remove)
    p = usr.add_parser("set", help="per-account settings")
    p.add_argument("address")
    p.add_argument("--send-as-anyone", choices=("yes", "no"),
                   help="may use any sender address in submission")
    p.add_argument("--quota", type=parse_size, metavar="SIZE",
                   help="storage quota: bytes, or with K/M/G/T (powers of 1024), "
                        "e.g. 2G (0: none)")
    p.add_argument("--disabled", choices=("yes", "no"))
    p.add_argument("--apop-secret-stdin", action="store_true",
                   help="read the POP3 APOP secret from standard input (empty: remove it)")
    p.set_defaults(func=cmd_user_set)
    register_user_release(usr)
    register_app_password(usr)  # pochta user app-password (issue 19)

    als = sub.add_parser("alias", help="aliases and catch-alls").add_subparsers(
        dest="action", required=True)
    p = als.add_parser("add", help="SOURCE (user@domain or @domain) -> TARGET...")
    p.add_argument("source")
    p.add_argument("targets", nargs="+",
                   help="addresses, or public:NAME for a public folder (it takes mail from "
                        "senders granted p: pochta acl set public NAME anyone +p)")
    p.set_defaults(func=cmd_alias_add)
    p = als.add_parser("list")
    p.add_argument("--domain")
    p.set_defaults(func=cmd_alias_list)
    p = als.add_parser("remove")
    p.add_argument("source")
    p.set_defaults(func=cmd_alias_remove)

    # the features' own subcommands
    for register in (register_policy, register_queue, register_diag, register_storage,
                     register_sieve, register_transport_security, register_spam,
                     register_sending, register_transfer, register_web, register_acl,
                     register_metadata):
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace, Any], int] = args.func
    try:
        # a subcommand that works without a config sets needs_config=False
        needs_config = args.command not in NO_CONFIG and getattr(args, "needs_config", True)
        config = load_config(args) if needs_config else None
        return func(args, config)
    except ConfigError as exc:
        for problem in exc.problems or [str(exc)]:  # every problem, one line each
            print(f"pochta: config error: {problem}", file=sys.stderr)
        return 2
    except (CLIError, StoreError, AddressError) as exc:
        print(f"pochta: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
