"""What ``pochta serve`` checks before it listens, shared with ``pochta config-check``.

A config that loads is not yet one that runs: the certificate must exist and load, the
protocol modules must import, the data directory must be writable and the ports
bindable. Those are *errors*: ``serve`` stops on them, so ``config-check`` must report
them first. Some choices run but are unsafe or useless (a submission port without TLS
refuses every AUTH with ``538 5.7.11``; IMAP or POP3 without TLS takes passwords in
clear): those are *warnings*, printed by ``config-check`` and logged by ``serve`` at
start.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass

from ..config import ALL_ADDRESSES, Config, ConfigError, Listener
from ..tlsutil import server_context

__all__ = ["Problem", "preflight", "unsafe_choices"]


@dataclass(frozen=True, slots=True)
class Problem:
    level: str  # "error" (serve refuses to start) or "warning" (it runs, but see message)
    key: str  # the config key, as in ConfigError messages
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def _listener_key(i: int, lst: Listener) -> str:
    return f"listeners[{i}] ({lst.role} {lst.address}:{lst.port})"


def unsafe_choices(config: Config) -> list[Problem]:
    """Settings that start but are unsafe or cannot work; each says what to do."""
    out: list[Problem] = []
    for i, lst in enumerate(config.listeners):
        if lst.tls != "none":
            continue
        key = _listener_key(i, lst)
        if lst.role == "submission":
            out.append(Problem("warning", key, 'tls = "none" on a submission port: every '
                               "AUTH is refused with 538 5.7.11 (encryption required), so no "
                               'client can send; use tls = "starttls" (587) or "implicit" '
                               "(465)"))
        elif lst.role == "http":  # the sending API (issue 18)
            if lst.address not in ("127.0.0.1", "::1"):
                out.append(Problem("warning", key, 'tls = "none" on an http port reachable '
                                   "from other machines: API keys travel in clear text; use "
                                   'tls = "implicit", or bind 127.0.0.1 behind a TLS proxy'))
        elif lst.role in ("imap", "pop3"):
            out.append(Problem("warning", key, f'tls = "none": {lst.role.upper()} clients '
                               "send their passwords in clear text on this port; use "
                               'tls = "starttls" or "implicit"'))
        else:
            out.append(Problem("warning", key, 'tls = "none": no STARTTLS, so mail from other '
                               'servers arrives unencrypted; use tls = "starttls"'))
    for i, net in enumerate(config.trusted_networks):
        if ipaddress.ip_network(net, strict=False).prefixlen == 0:
            out.append(Problem("warning", f"trusted_networks[{i}]", f"{net} trusts every "
                               "address: this is an open relay; list only your own networks"))
    return out


def build_ssl_context(config: Config) -> ssl.SSLContext | None:
    cert, key = config.path(config.tls.cert), config.path(config.tls.key)
    needs_tls = any(lst.tls != "none" for lst in config.listeners)
    if not cert.exists() or not key.exists():
        if needs_tls:
            raise ConfigError(f"tls.cert/tls.key: {cert} or {key} does not exist "
                              "(pochta init creates a self-signed pair)")
        return None
    try:
        return server_context(cert, key, config.tls.min_version)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"tls.cert/tls.key: cannot load {cert} / {key}: {exc}") from None


def _check_tls(config: Config) -> list[Problem]:
    try:
        build_ssl_context(config)
    except ConfigError as exc:
        key, _, message = str(exc).partition(": ")
        return [Problem("error", key, message)]
    return []


def _check_data_dir(config: Config) -> list[Problem]:
    path = config.data_path
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        return [Problem("error", "data_dir", f"{path} cannot be created or written "
                        f"({probe} is not a writable directory for this user)")]
    return []


def _check_bind(config: Config) -> list[Problem]:
    """Bind each port for a moment, as serve will. A port in use is only a warning: it is
    what a running pochta looks like."""
    out = []
    for i, lst in enumerate(config.listeners):
        if lst.port == 0:
            continue
        host = "::" if lst.address == ALL_ADDRESSES and socket.has_ipv6 else lst.address
        if host == ALL_ADDRESSES:
            host = "0.0.0.0"  # the operator asked for every address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        key = _listener_key(i, lst)
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, lst.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                out.append(Problem("warning", key, "the port is in use (fine if it is this "
                                   "pochta, already running)"))
            elif exc.errno == errno.EACCES:
                out.append(Problem("error", key, "permission denied: ports below 1024 need "
                                   "root or CAP_NET_BIND_SERVICE (setcap or systemd "
                                   "AmbientCapabilities)"))
            else:
                out.append(Problem("error", key, f"cannot bind: {exc.strerror}"))
    return out


def preflight(config: Config, bind: bool = True) -> list[Problem]:
    """Every check ``serve`` makes at start, plus the unsafe choices; errors first."""
    problems = [*_check_tls(config), *_check_data_dir(config)]
    if bind:
        problems += _check_bind(config)
    problems += unsafe_choices(config)
    return sorted(problems, key=lambda p: p.level != "error")
