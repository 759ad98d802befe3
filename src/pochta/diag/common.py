"""Shared pieces of the diagnostics commands: findings, exit codes, TLS details and a
line-oriented connection that keeps a timed transcript.

Exit codes (documented in docs/diagnostics.md): 0 everything ok, 1 a check failed or
warned (or the server refused the mail), 2 usage error, 3 connection failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import getpass
import ipaddress
import json
import os
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509

from pochta.dns import DNSPythonResolver, Resolver
from pochta.mail.tls import client_context as tls_client_context
from pochta.tlsutil import private_keylog

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3

STATUSES = ("ok", "info", "warn", "fail")


class UsageError(Exception):
    """Bad command-line arguments (exit 2)."""


class ConnectError(Exception):
    """The server could not be reached or the connection broke (exit 3)."""


# --- findings --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One result of a check: ok, info (neutral fact), warn or fail, with the fix."""

    status: str
    check: str
    message: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def findings_exit(findings: Sequence[Finding]) -> int:
    return EXIT_FAILED if any(f.status in ("warn", "fail") for f in findings) else EXIT_OK


def print_findings(findings: Sequence[Finding], out: TextIO) -> None:
    for f in findings:
        out.write(f"  {f.status.upper():<4}  {f.check:<12} {f.message}\n")
        if f.fix and f.status in ("warn", "fail"):
            out.write(f"        {'':<12} fix: {f.fix}\n")
    counts = {s: sum(1 for f in findings if f.status == s) for s in STATUSES}
    out.write(f"\n{counts['ok']} ok, {counts['info']} info, {counts['warn']} warnings, "
              f"{counts['fail']} failures\n")


def dump_json(obj: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(obj, indent=2, sort_keys=False) + "\n")


# --- DNS -------------------------------------------------------------------------------


def make_resolver(nameservers: Sequence[str] = (), timeout: float = 5.0) -> Resolver:
    """The resolver the commands use; tests replace this function with a static one."""
    return DNSPythonResolver(nameservers, timeout)


# --- TLS -------------------------------------------------------------------------------


@dataclass(slots=True)
class CertInfo:
    subject: str
    issuer: str
    sans: list[str]
    not_before: str
    not_after: str
    days_left: int
    self_signed: bool


@dataclass(slots=True)
class TLSDetails:
    version: str
    cipher: str
    bits: int
    certificate: CertInfo | None
    verified: bool
    verify_error: str  # why verification failed ("" when verified)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"TLS {self.version}, cipher {self.cipher} ({self.bits} bits)"]
        c = self.certificate
        if c is not None:
            out += [
                f"certificate subject: {c.subject}",
                f"  SANs: {', '.join(c.sans) or '(none)'}",
                f"  issuer: {c.issuer}" + (" (self-signed)" if c.self_signed else ""),
                f"  valid: {c.not_before} .. {c.not_after} ({c.days_left} days left)",
            ]
        out.append("verification: " + ("ok" if self.verified else f"FAILED: {self.verify_error}"))
        return out


def cert_info(der: bytes) -> CertInfo:
    cert = x509.load_der_x509_certificate(der)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(n) for n in ext.get_values_for_type(x509.DNSName)]
        sans += [str(n) for n in ext.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        sans = []
    after = cert.not_valid_after_utc
    now = datetime.datetime.now(datetime.UTC)
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=sans,
        not_before=cert.not_valid_before_utc.isoformat(),
        not_after=after.isoformat(),
        days_left=(after - now).days,
        self_signed=cert.subject == cert.issuer,
    )


def tls_details(obj: ssl.SSLObject | ssl.SSLSocket | None, verified: bool,
                verify_error: str) -> TLSDetails | None:
    if obj is None:
        return None
    cipher = obj.cipher()
    der = obj.getpeercert(binary_form=True)
    return TLSDetails(
        version=obj.version() or "",
        cipher=cipher[0] if cipher else "",
        bits=cipher[2] if cipher else 0,
        certificate=cert_info(der) if der else None,
        verified=verified,
        verify_error=verify_error,
    )


def client_context(verify: bool, cafile: str | None = None, keylog: str | None = None,
                   min_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = tls_client_context(verify, cafile, min_version)
    if keylog:
        # NSS key log format: Wireshark/tshark decrypt a capture with it

        ctx.keylog_filename = private_keylog(keylog)
    return ctx


def sni_for(host: str) -> str | None:
    """SNI and certificate checks use the host name; an IP literal gets no SNI."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    return None


# --- a connection with a transcript ----------------------------------------------------


@dataclass(slots=True)
class Line:
    t: float  # seconds since the transcript started
    dir: str  # "->" sent, "<-" received, "**" a note from the tool
    line: str


@dataclass
class Transcript:
    start: float = field(default_factory=time.monotonic)
    lines: list[Line] = field(default_factory=list)
    echo: TextIO | None = None  # print lines as they happen

    def add(self, direction: str, text: str) -> None:
        line = Line(round(time.monotonic() - self.start, 4), direction, text)
        self.lines.append(line)
        if self.echo is not None:
            self.echo.write(f"[{line.t:8.3f}] {direction} {text}\n")
            self.echo.flush()

    def note(self, text: str) -> None:
        self.add("**", text)

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(x) for x in self.lines]


MAX_LINE = 65536


class Wire:
    """A TCP (optionally TLS) connection read line by line, logging every line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 transcript: Transcript, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.transcript = transcript
        self.timeout = timeout

    @classmethod
    async def connect(cls, host: str, port: int, transcript: Transcript, timeout: float,
                      tls: ssl.SSLContext | None = None, tls_name: str | None = None) -> Wire:
        """``tls_name``: the name to send as SNI and check the certificate against
        (default: ``host`` unless it is an IP address)."""
        name = tls_name or sni_for(host)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls,
                                    server_hostname=name if tls else None,
                                    limit=MAX_LINE),
            timeout,
        )
        return cls(reader, writer, transcript, timeout)

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        obj = self.writer.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None

    @property
    def peer(self) -> str:
        info = self.writer.get_extra_info("peername")
        return str(info[0]) if info else ""

    async def start_tls(self, ctx: ssl.SSLContext, host: str) -> None:
        await asyncio.wait_for(self.writer.start_tls(ctx, server_hostname=sni_for(host)),
                               self.timeout)

    async def read_line(self, timeout: float | None = None) -> str:
        """One line without its CRLF; raises ConnectError at EOF or timeout."""
        try:
            raw = await asyncio.wait_for(self.reader.readline(), timeout or self.timeout)
        except TimeoutError:
            self.transcript.note("timeout waiting for the server")
            raise ConnectError("timeout waiting for the server") from None
        except (OSError, ValueError, ssl.SSLError) as exc:
            self.transcript.note(f"connection error: {exc}")
            raise ConnectError(f"connection error: {exc}") from None
        if not raw:
            self.transcript.note("connection closed by the server")
            raise ConnectError("connection closed by the server")
        text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        self.transcript.add("<-", text)
        return text

    def send_line(self, line: str, shown: str | None = None) -> None:
        """Send ``line`` + CRLF; the transcript shows ``shown`` instead (redaction)."""
        self.writer.write(line.encode("utf-8") + b"\r\n")
        self.transcript.add("->", line if shown is None else shown)

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        try:
            await asyncio.wait_for(self.writer.drain(), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise ConnectError(f"connection error while sending: {exc}") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    async def aclose(self) -> None:
        self.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)


def read_secret(args: argparse.Namespace, prompt: str = "Password: ") -> str:
    """From --password-env, --password-file, --password-stdin or a prompt (no echo)."""
    env = getattr(args, "password_env", None)
    if env:
        if env not in os.environ:
            raise UsageError(f"--password-env: ${env} is not set")
        return os.environ[env]
    file = getattr(args, "password_file", None)
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError) as exc:
            raise UsageError(f"--password-file {file}: cannot read a line ({exc})") from None
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass(prompt)
