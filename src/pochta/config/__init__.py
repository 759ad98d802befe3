"""The TOML configuration: typed sections with safe defaults and clear errors.

Every section is a frozen dataclass; the loader checks each key's type against the
annotation, rejects unknown keys, and names the key in every problem
(``listeners[2].port: expected an integer, got "abc"``). It reports every problem at once:
``ConfigError.problems`` lists them all (first the types, then the checks beyond types).
``pochta config-reference`` prints the documented reference generated from these classes.

The sections of a feature belong to the feature (``queue/settings.py``,
``storage/settings.py``, ``spam/settings.py``, ...): each defines its dataclasses and a
``check``/``validate`` function returning its problems as ``key: problem`` strings. Those
modules import nothing of Pochta's upper layers (a contract in ``.importlinter``), so this
package can gather them without an import cycle. The sections that belong to no single
feature (listeners, TLS, limits, SMTP, auth, logging, DNS) are defined here.

To add a section: define a dataclass with defaults and a ``doc`` metadata entry per field
in the feature's ``settings.py``, add it to ``Config`` and its checks to ``validate``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..http.settings import HTTPSettings
from ..http.settings import check as check_http
from ..policy.settings import DKIMSettings, DMARCSettings, SPFSettings
from ..policy.settings import validate as validate_policy
from ..queue.settings import QueueConfig, Route
from ..queue.settings import check as check_queue
from ..sending.settings import SendingSettings
from ..sending.settings import check as check_sending
from ..sieve.settings import SieveConfig
from ..sieve.settings import check as check_sieve
from ..spam.settings import AbuseConfig, GreylistConfig, ScreeningConfig, SpamConfig
from ..spam.settings import validate as validate_spam
from ..storage.settings import StorageConfig
from ..storage.settings import check as check_storage
from ..transport_security.settings import TransportSecurityConfig
from ..transport_security.settings import check as check_transport_security
from ..web.settings import AcmeSettings, WebSettings, check_acme  # issue 19
from ..web.settings import check as check_web

ROLES = ("mta", "submission", "imap", "pop3", "managesieve", "http")
TLS_MODES = ("none", "starttls", "implicit")
# A listener address meaning every IPv4 and every IPv6 address (one socket per family).
ALL_ADDRESSES = "*"


class ConfigError(Exception):
    """One or more bad configuration values; each problem names its key."""

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(problems))


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class Listener:
    role: str = field(metadata=_doc("mta, submission, imap, pop3, managesieve or http (http: "
                                    "tls none or implicit)"))
    port: int = field(metadata=_doc("TCP port"))
    address: str = field(
        default="127.0.0.1",
        metadata=_doc('IP address to bind; "*" binds every IPv4 and IPv6 address'),
    )
    tls: str = field(
        default="starttls",
        metadata=_doc("none, starttls (offer STARTTLS/STLS) or implicit (TLS first)"),
    )


@dataclass(frozen=True)
class TLSConfig:
    cert: str = field(default="tls/cert.pem", metadata=_doc("PEM certificate chain"))
    key: str = field(default="tls/key.pem", metadata=_doc("PEM private key"))
    min_version: str = field(default="TLSv1.2", metadata=_doc("TLSv1.2 or TLSv1.3"))


@dataclass(frozen=True)
class Limits:
    max_message_size: int = field(
        default=26_214_400, metadata=_doc("bytes; advertised with SIZE (RFC 1870)")
    )
    max_recipients: int = field(default=100, metadata=_doc("recipients per message"))
    max_errors: int = field(default=10, metadata=_doc("protocol errors before 421 and close"))
    max_connections: int = field(
        default=2000,
        metadata=_doc("connections in total, every role and TLS handshakes included "
                      "(keep below the open-file limit)"),
    )
    max_connections_per_ip: int = field(
        default=200,
        metadata=_doc("connections from one client address (IPv6: one /64) over every "
                      "role together"),
    )
    # Per-role pools, so a flood on one port never closes the others. Per-address values
    # fit an office behind one NAT address: Postfix allows 50 SMTP connections per client
    # (smtpd_client_connection_count_limit); ten IMAP clients open up to 10 each.
    mta_max_connections: int = field(default=500, metadata=_doc("mta connections in total"))
    mta_max_connections_per_ip: int = field(
        default=50, metadata=_doc("mta connections per client address"))
    submission_max_connections: int = field(
        default=500, metadata=_doc("submission connections in total"))
    submission_max_connections_per_ip: int = field(
        default=50, metadata=_doc("submission connections per client address"))
    imap_max_connections: int = field(default=1000, metadata=_doc("IMAP connections in total"))
    imap_max_connections_per_ip: int = field(
        default=100, metadata=_doc("IMAP connections per client address"))
    pop3_max_connections: int = field(default=300, metadata=_doc("POP3 connections in total"))
    pop3_max_connections_per_ip: int = field(
        default=50, metadata=_doc("POP3 connections per client address"))
    managesieve_max_connections: int = field(
        default=200, metadata=_doc("ManageSieve connections in total"))
    managesieve_max_connections_per_ip: int = field(
        default=20, metadata=_doc("ManageSieve connections per client address"))
    http_max_connections: int = field(
        default=500, metadata=_doc("HTTP (API, unsubscribe) connections in total"))
    http_max_connections_per_ip: int = field(
        default=100, metadata=_doc("HTTP connections per client address"))
    tls_handshake_timeout: float = field(
        default=10.0, metadata=_doc("seconds a TLS handshake (implicit TLS or STARTTLS) may take"))
    min_data_rate: int = field(
        default=100,
        metadata=_doc("bytes per second a client must send while a command or message is "
                      "in progress, measured over data_rate_window seconds of waiting "
                      "(Postfix smtpd_min_data_rate); every role; 0: off"),
    )
    data_rate_window: float = field(
        default=30.0, metadata=_doc("seconds over which min_data_rate is measured"))
    smtp_max_session_time: float = field(
        default=3600.0,
        metadata=_doc("seconds an SMTP session (mta, submission) may last before 421 4.4.2; "
                      "0: no limit"),
    )
    command_timeout: float = field(
        default=300.0, metadata=_doc("seconds to wait for an SMTP command (RFC 5321 4.5.3.2)")
    )
    data_timeout: float = field(
        default=180.0, metadata=_doc("seconds to wait for the next chunk of DATA")
    )
    greeting_timeout: float = field(
        default=30.0, metadata=_doc("seconds a client may stay silent before its first command")
    )
    imap_idle_timeout: float = field(
        default=1800.0, metadata=_doc("IMAP autologout (RFC 9051: at least 30 minutes)")
    )
    pop3_idle_timeout: float = field(
        default=600.0, metadata=_doc("POP3 autologout (RFC 1939: at least 10 minutes)")
    )


@dataclass(frozen=True)
class SMTPConfig:
    banner: str = field(default="ESMTP Pochta", metadata=_doc("text after the host name"))
    bare_lf: str = field(
        default="reject",
        metadata=_doc(
            "bare CR or LF inside DATA: reject (554 5.6.11, the message is refused) or "
            "normalize (converted to CRLF)"
        ),
    )
    received_show_auth: bool = field(
        default=False, metadata=_doc("name the authenticated user in Received: headers")
    )
    spool_threshold: int = field(
        default=1_048_576,
        metadata=_doc(
            "bytes of a message held in memory while it arrives; the rest goes to a spool "
            "file in the data directory (0: hold every message in memory)"
        ),
    )
    received_hide_client_ip: bool = field(
        default=False, metadata=_doc("leave the submitting client's IP out of Received:")
    )
    soft_error_limit: int = field(
        default=10,
        metadata=_doc("error replies in a session (protocol errors and refused MAIL/RCPT, "
                      "e.g. unknown users) after which each further one is delayed "
                      "(Postfix smtpd_soft_error_limit)"),
    )
    hard_error_limit: int = field(
        default=20,
        metadata=_doc("error replies in a session before 421 and close "
                      "(Postfix smtpd_hard_error_limit)"),
    )
    error_sleep_time: float = field(
        default=1.0,
        metadata=_doc("seconds added to the first error reply past soft_error_limit; the "
                      "n-th one past it waits n times as long (Postfix smtpd_error_sleep_time)"),
    )


@dataclass(frozen=True)
class SubmissionConfig:
    messages_per_hour: int = field(default=300, metadata=_doc("per account"))
    recipients_per_hour: int = field(default=1000, metadata=_doc("per account"))
    recipients_per_message: int = field(default=100, metadata=_doc("per message"))
    burl: bool = field(
        default=True,
        metadata=_doc("offer BURL (RFC 4468): a client sends a message it keeps in IMAP "
                      "by URL (GENURLAUTH with submit+user) instead of uploading it again"))


@dataclass(frozen=True)
class AuthConfig:
    failures_before_delay: int = field(
        default=3, metadata=_doc("failed logins (per IP or account) before replies slow down")
    )
    failures_before_lockout: int = field(
        default=10, metadata=_doc("failed logins before refusing for lockout_seconds")
    )
    lockout_seconds: float = field(default=300.0, metadata=_doc("how long a lockout lasts"))
    failure_delay: float = field(default=1.0, metadata=_doc("seconds added to a failure reply"))
    cache_seconds: float = field(
        default=300.0,
        metadata=_doc("remember a successful password check this long, so a client's "
                      "repeated logins skip argon2id (0: verify every time)"),
    )
    scram_plus: bool = field(
        default=False,
        metadata=_doc(
            "offer SCRAM-SHA-256-PLUS (channel binding: tls-exporter, RFC 9266; tls-unique "
            "on TLS 1.2) in SMTP AUTH, IMAP and POP3 when the TLS connection can supply "
            "it. Off by default: clients take the strongest mechanism offered, and "
            "Debian 12's mutt (gsasl) takes -PLUS, cannot supply tls-exporter over TLS "
            "1.3 and fails without falling back. SCRAM-SHA-256, PLAIN and LOGIN stay "
            "offered either way. Turn on when every client that picks -PLUS can bind "
            "(see services/sasl_driver.py)."),
    )
    # argon2id for new password hashes (a stored hash keeps the parameters it was made
    # with, so changing these never locks anybody out)
    argon2_time_cost: int = field(
        default=3, metadata=_doc("argon2id passes (RFC 9106 §4, second recommended "
                                 "option: 3 passes over 64 MiB)"))
    argon2_memory_kib: int = field(
        default=65536, metadata=_doc("argon2id memory in KiB per hash (at least 8 per lane)"))
    argon2_parallelism: int = field(default=4, metadata=_doc("argon2id lanes"))


@dataclass(frozen=True)
class IMAPConfig:
    preauth_timeout: float = field(
        default=60.0,
        metadata=_doc("seconds an IMAP client may stay silent before it has logged in "
                      "(after login, limits.imap_idle_timeout applies)"),
    )
    preauth_max_command: int = field(
        default=8192,
        metadata=_doc("bytes of one command before login, lines and literals together; a "
                      "bigger literal is refused unread (RFC 7888 §4)"),
    )
    max_command: int = field(
        default=1_048_576,
        metadata=_doc("bytes of one command after login, lines and literals together, "
                      "not counting APPEND's message (limited by limits.max_message_size)"),
    )
    max_literal: int = field(
        default=65536, metadata=_doc("bytes of one literal other than APPEND's message")
    )
    max_literals: int = field(default=256, metadata=_doc("literals in one command"))
    attachment_keywords: bool = field(
        default=True,
        metadata=_doc("every message delivered or APPENDed gets the keyword $HasAttachment "
                      "or $HasNoAttachment (as Dovecot's mail_attachment_detection_options"
                      " = add-flags): a part with Content-Disposition attachment, or inline"
                      " with a filename, is an attachment; signatures are not. Clients "
                      "show and search it without fetching each message's structure"),
    )
    admin_contact: str = field(
        default="",
        metadata=_doc("METADATA /shared/admin (RFC 5464 §6.2.1), a URI to reach the "
                      "administrator, e.g. mailto:help@example.org; empty: mailto:postmaster@ "
                      "the primary domain (the local domain the hostname is in, else the "
                      "first of 'pochta domain list'); 'pochta metadata set' overrides it"),
    )


@dataclass(frozen=True)
class POP3Config:
    apop: bool = field(
        default=False,
        metadata=_doc("offer APOP (RFC 1939) to accounts with an APOP secret "
                      "(`pochta user set --apop-secret-stdin`); puts a timestamp in the greeting"),
    )


@dataclass(frozen=True)
class DNSConfig:
    nameservers: list[str] = field(
        default_factory=list, metadata=_doc("resolver IPs; empty: the system's resolv.conf")
    )
    timeout: float = field(default=5.0, metadata=_doc("seconds per DNS lookup"))


@dataclass(frozen=True)
class LogConfig:
    level: str = field(default="info", metadata=_doc("debug, info, warning or error"))
    format: str = field(default="text", metadata=_doc("text or json"))
    trace_ips: list[str] = field(
        default_factory=list,
        metadata=_doc("client IPs or CIDR networks whose sessions are logged line by line "
                      "(logger pochta.trace; passwords and SASL data redacted)"),
    )
    trace_accounts: list[str] = field(
        default_factory=list,
        metadata=_doc("account addresses whose sessions (SMTP submission, IMAP, POP3, "
                      "ManageSieve) are logged line by line from their login on"),
    )


@dataclass(frozen=True)
class Config:
    hostname: str = field(metadata=_doc("this server's host name (EHLO, banners, Received:)"))
    data_dir: str = field(
        default="data", metadata=_doc("data directory; relative to the config file")
    )
    trusted_networks: list[str] = field(
        default_factory=list,
        metadata=_doc(
            "CIDR networks allowed to relay without AUTH on the mta role; empty by default "
            "(no network is trusted, loopback included)"
        ),
    )
    workers: int = field(
        default=1,
        metadata=_doc(
            "server processes sharing the listeners (SO_REUSEPORT), one per core is "
            "sensible; `pochta serve --workers N` overrides (see README: several processes)"
        ),
    )
    pin_workers: bool = field(
        default=True,
        metadata=_doc(
            "with several workers and at least as many usable CPUs, run worker i on the "
            "i-th CPU only (fewer migrations and cache misses; false lets the kernel move "
            "them, e.g. beside other busy services)"
        ),
    )
    listeners: list[Listener] = field(default_factory=list, metadata=_doc("[[listeners]]"))
    tls: TLSConfig = field(default_factory=TLSConfig, metadata=_doc("[tls]"))
    limits: Limits = field(default_factory=Limits, metadata=_doc("[limits]"))
    smtp: SMTPConfig = field(default_factory=SMTPConfig, metadata=_doc("[smtp]"))
    submission: SubmissionConfig = field(
        default_factory=SubmissionConfig, metadata=_doc("[submission]")
    )
    auth: AuthConfig = field(default_factory=AuthConfig, metadata=_doc("[auth]"))
    storage: StorageConfig = field(default_factory=StorageConfig, metadata=_doc("[storage]"))
    log: LogConfig = field(default_factory=LogConfig, metadata=_doc("[log]"))
    dns: DNSConfig = field(default_factory=DNSConfig, metadata=_doc("[dns]"))
    pop3: POP3Config = field(default_factory=POP3Config, metadata=_doc("[pop3]"))
    imap: IMAPConfig = field(default_factory=IMAPConfig, metadata=_doc("[imap]"))
    dkim: DKIMSettings = field(default_factory=DKIMSettings, metadata=_doc("[dkim]"))
    spf: SPFSettings = field(default_factory=SPFSettings, metadata=_doc("[spf]"))
    dmarc: DMARCSettings = field(default_factory=DMARCSettings, metadata=_doc("[dmarc]"))
    queue: QueueConfig = field(default_factory=QueueConfig, metadata=_doc("[queue]"))
    routes: list[Route] = field(
        default_factory=list,
        metadata=_doc("[[routes]]: static routes and smarthosts (see docs/outbound.md)"),
    )
    sieve: SieveConfig = field(default_factory=SieveConfig, metadata=_doc("[sieve]"))
    transport_security: TransportSecurityConfig = field(
        default_factory=TransportSecurityConfig,
        metadata=_doc("[transport_security]: MTA-STS, DANE, TLS-RPT (docs/transport-security.md)"),
    )
    # spam and abuse defence (spam/settings.py, docs/spam.md)
    screening: ScreeningConfig = field(default_factory=ScreeningConfig,
                                       metadata=_doc("[screening]"))
    greylist: GreylistConfig = field(default_factory=GreylistConfig, metadata=_doc("[greylist]"))
    spam: SpamConfig = field(default_factory=SpamConfig, metadata=_doc("[spam]"))
    abuse: AbuseConfig = field(default_factory=AbuseConfig, metadata=_doc("[abuse]"))
    http: HTTPSettings = field(default_factory=HTTPSettings, metadata=_doc("[http]"))
    sending: SendingSettings = field(default_factory=SendingSettings,
                                     metadata=_doc("[sending] (see docs/api.md)"))
    web: WebSettings = field(default_factory=WebSettings,
                             metadata=_doc("[web] (see docs/web.md)"))
    acme: AcmeSettings = field(default_factory=AcmeSettings,
                               metadata=_doc("[acme] (see docs/web.md)"))
    # where the file was loaded from; relative paths resolve against its folder
    base_dir: str = field(default=".", metadata=_doc("(set by the loader)"))

    def path(self, relative: str) -> Path:
        """Resolve a path from the config against the config file's folder."""
        p = Path(relative)
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def data_path(self) -> Path:
        return self.path(self.data_dir)


# --- loading ---------------------------------------------------------------------------


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file (create one with 'pochta init')") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    raw["base_dir"] = str(p.resolve().parent)
    return from_dict(raw)


def from_dict(raw: dict[str, Any]) -> Config:
    """Build and check a Config; raise ConfigError listing every problem found."""
    problems: list[str] = []
    cfg = _build(Config, raw, "", problems)
    if problems:  # a value of the wrong type: checks beyond types would mislead
        raise ConfigError(*problems)
    assert isinstance(cfg, Config)
    problems = validate(cfg)
    if problems:
        raise ConfigError(*problems)
    return cfg


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if tp in names:
        return names[tp]
    return getattr(tp, "__name__", str(tp))


class _Invalid(Exception):
    """One value of the wrong type (collected by ``_build``)."""


def _convert(tp: Any, value: Any, key: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise _Invalid(f"{key}: expected a table")
        return _build(tp, value, key + ".", problems)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise _Invalid(f"{key}: expected a list")
        items = []
        for i, v in enumerate(value):
            try:
                items.append(_convert(item_tp, v, f"{key}[{i}]", problems))
            except _Invalid as exc:
                problems.append(str(exc))
        return items
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, key, problems)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise _Invalid(f"{key}: expected an integer, got {value!r}")
    if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
        raise _Invalid(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def _build(cls: type[Any], raw: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    """The dataclass ``cls`` from ``raw``; every problem goes to ``problems`` (then the
    result is a placeholder, None, that the caller never uses)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    before = len(problems)
    for key in raw:
        if key not in fields:
            problems.append(f"{prefix}{key}: unknown setting")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in raw:
            try:
                kwargs[name] = _convert(hints[name], raw[name], prefix + name, problems)
            except _Invalid as exc:
                problems.append(str(exc))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{prefix}{name}: required setting is missing")
    if len(problems) > before:
        return None
    return cls(**kwargs)


def validate(cfg: Config) -> list[str]:
    """Every problem beyond types, each as ``key: problem``; empty when all is well."""
    problems: list[str] = []

    def _check(ok: bool, key: str, problem: str) -> None:
        if not ok:
            problems.append(f"{key}: {problem}")

    _check(bool(cfg.hostname) and "." in cfg.hostname, "hostname", "must be a full domain name")
    for i, net in enumerate(cfg.trusted_networks):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            problems.append(f"trusted_networks[{i}]: {net!r} is not a CIDR network")
    seen: set[tuple[str, int]] = set()
    for i, lst in enumerate(cfg.listeners):
        key = f"listeners[{i}]"
        _check(lst.role in ROLES, f"{key}.role", f"must be one of {', '.join(ROLES)}")
        _check(lst.tls in TLS_MODES, f"{key}.tls", f"must be one of {', '.join(TLS_MODES)}")
        # port 0 asks the OS for a free port (tests); operators give real ones
        _check(0 <= lst.port <= 65535, f"{key}.port", "must be from 1 to 65535")
        try:
            if lst.address != ALL_ADDRESSES:
                ipaddress.ip_address(lst.address)
        except ValueError:
            problems.append(f"{key}.address: {lst.address!r} is not an IP address "
                            f'(or "{ALL_ADDRESSES}" for every address)')
        _check(lst.role != "http" or lst.tls != "starttls", f"{key}.tls",
               "an http listener is none or implicit")
        _check(lst.port == 0 or (lst.address, lst.port) not in seen, key,
               "address and port used twice")
        seen.add((lst.address, lst.port))
    _check(cfg.tls.min_version in ("TLSv1.2", "TLSv1.3"), "tls.min_version", "TLSv1.2 or 1.3")
    lim = cfg.limits
    for name in ("max_message_size", "max_recipients", "max_errors", "max_connections",
                 "max_connections_per_ip", "tls_handshake_timeout", "data_rate_window",
                 *(f"{role}_max_connections{suffix}" for role in ROLES
                   for suffix in ("", "_per_ip"))):
        _check(getattr(lim, name) > 0, f"limits.{name}", "must be positive")
    _check(lim.min_data_rate >= 0, "limits.min_data_rate", "must be 0 (off) or positive")
    _check(lim.smtp_max_session_time >= 0, "limits.smtp_max_session_time",
           "must be 0 (no limit) or positive")
    _check(cfg.smtp.hard_error_limit > 0, "smtp.hard_error_limit", "must be positive")
    _check(cfg.smtp.soft_error_limit >= 0, "smtp.soft_error_limit", "must not be negative")
    _check(cfg.smtp.error_sleep_time >= 0, "smtp.error_sleep_time", "must not be negative")
    _check(lim.imap_idle_timeout >= 1800, "limits.imap_idle_timeout", "RFC 9051: at least 1800")
    imap = cfg.imap
    _check(0 < imap.preauth_timeout <= lim.imap_idle_timeout, "imap.preauth_timeout",
           "must be positive and at most limits.imap_idle_timeout")
    # LOGIN with a long user name and password as literals must still fit
    _check(imap.preauth_max_command >= 1024, "imap.preauth_max_command", "at least 1024")
    _check(imap.max_literal >= 1024, "imap.max_literal", "at least 1024")
    _check(imap.max_command >= max(imap.max_literal, 65536), "imap.max_command",
           "at least 65536 and imap.max_literal")
    _check(imap.max_literals >= 2, "imap.max_literals", "at least 2")
    _check(not imap.admin_contact or re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*:\S+",
                                                  imap.admin_contact) is not None,
           "imap.admin_contact", "a URI such as mailto:postmaster@example.org")
    _check(lim.pop3_idle_timeout >= 600, "limits.pop3_idle_timeout", "RFC 1939: at least 600")
    _check(cfg.smtp.bare_lf in ("reject", "normalize"), "smtp.bare_lf", "reject or normalize")
    _check(1 <= cfg.workers <= 64, "workers", "must be from 1 to 64")
    problems += check_storage(cfg.storage)
    _check(cfg.log.level in ("debug", "info", "warning", "error"), "log.level", "bad level")
    _check(cfg.log.format in ("text", "json"), "log.format", "text or json")
    for i, net in enumerate(cfg.log.trace_ips):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            problems.append(f"log.trace_ips[{i}]: {net!r} is not an IP or network")
    for i, who in enumerate(cfg.log.trace_accounts):
        if "@" not in who or who.strip() != who:
            problems.append(f"log.trace_accounts[{i}]: {who!r} is not an account address")
    for i, ns in enumerate(cfg.dns.nameservers):
        try:
            ipaddress.ip_address(ns)
        except ValueError:
            problems.append(f"dns.nameservers[{i}]: {ns!r} is not an IP address")
    _check(cfg.dns.timeout > 0, "dns.timeout", "must be positive")
    auth = cfg.auth
    _check(auth.argon2_time_cost >= 1, "auth.argon2_time_cost", "must be at least 1")
    _check(auth.argon2_parallelism >= 1, "auth.argon2_parallelism", "must be at least 1")
    _check(auth.argon2_memory_kib >= 8 * max(auth.argon2_parallelism, 1),
           "auth.argon2_memory_kib", "must be at least 8 per lane (argon2_parallelism)")
    # the features' own sections, each checked by its owner
    problems += validate_policy(cfg.dkim, cfg.spf, cfg.dmarc)
    problems += check_queue(cfg.queue, cfg.routes)
    problems += check_sieve(cfg.sieve)
    problems += check_transport_security(cfg.transport_security)
    problems += validate_spam(cfg.screening, cfg.greylist, cfg.spam, cfg.abuse)
    problems += [*check_http(cfg.http), *check_sending(cfg.sending), *check_web(cfg.web),
                 *check_acme(cfg.acme)]
    return problems


def reference() -> str:
    """A Markdown reference of every setting, its default and meaning."""
    out = ["# Configuration reference", "", "Generated by `pochta config-reference`.", ""]

    def section(cls: type[Any], title: str, path: str = "") -> None:
        # ``path``: the dotted TOML path of this table ("queue."), so nested tables are
        # named as they are written: [[queue.tls_policies]], not [[tls_policies]].
        out.extend([f"## {title}", "", "| key | default | meaning |", "| --- | --- | --- |"])
        nested: list[tuple[type[Any], str, str]] = []
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "base_dir":
                continue
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp) and isinstance(tp, type):
                nested.append((tp, f"[{path}{f.name}]", f"{path}{f.name}."))
                continue
            if typing.get_origin(tp) is list:
                (item,) = typing.get_args(tp)
                if dataclasses.is_dataclass(item) and isinstance(item, type):
                    nested.append((item, f"[[{path}{f.name}]]", f"{path}{f.name}."))
                    continue
            if f.default is not dataclasses.MISSING:
                default = repr(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = repr(f.default_factory())
            else:
                default = "(required)"
            out.append(f"| `{f.name}` | `{default}` | {f.metadata.get('doc', '')} |")
        out.append("")
        for sub, name, sub_path in nested:
            section(sub, name, sub_path)

    section(Config, "top level")
    return "\n".join(out)
