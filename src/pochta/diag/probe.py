"""`pochta probe HOST`: which mail ports answer and how (nmap + openssl s_client + imtest).

For every port: open, closed (refused) or filtered (no answer); the protocol (SMTP, IMAP,
POP3, from the well-known port, a hint like ``2465/smtps``, or the greeting); the TLS
mode (implicit, STARTTLS, none) with protocol version, cipher and certificate; the
capabilities and AUTH mechanisms offered before and after TLS; optionally a login
(``--user``) with mailbox counts. Findings flag the usual risks: plaintext AUTH before
TLS, no STARTTLS, certificates that do not verify or expire soon, submission without AUTH.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ssl
import sys
from dataclasses import dataclass, field
from typing import Any

from pochta.mail.dotstuff import dot_unstuff

from .common import (
    EXIT_CONNECT,
    ConnectError,
    Finding,
    TLSDetails,
    Transcript,
    UsageError,
    Wire,
    client_context,
    dump_json,
    findings_exit,
    print_findings,
    read_secret,
    tls_details,
)
from .smtpwire import auth_mechanisms, command, ehlo, read_reply

STANDARD_PORTS: dict[int, tuple[str, str]] = {
    25: ("smtp", "starttls"),
    465: ("smtp", "implicit"),
    587: ("smtp", "starttls"),
    110: ("pop3", "starttls"),
    995: ("pop3", "implicit"),
    143: ("imap", "starttls"),
    993: ("imap", "implicit"),
}
HINTS: dict[str, tuple[str, str]] = {
    "smtp": ("smtp", "starttls"), "submission": ("smtp", "starttls"),
    "smtps": ("smtp", "implicit"), "submissions": ("smtp", "implicit"),
    "imap": ("imap", "starttls"), "imaps": ("imap", "implicit"),
    "pop3": ("pop3", "starttls"), "pop3s": ("pop3", "implicit"),
}
SUBMISSION_PORTS = (465, 587)


@dataclass
class PortSpec:
    port: int
    protocol: str | None = None  # None: detect from the greeting
    tls: str | None = None
    submission: bool = False
    explicit: bool = False  # named by the user: closed is a failure


def parse_port(text: str) -> PortSpec:
    """``587``, ``2465/smtps``, ``2587/submission``, ``2143/imap``."""
    num, _, hint = text.partition("/")
    if not num.isdigit() or not 0 < int(num) < 65536:
        raise UsageError(f"bad port {text!r}")
    port = int(num)
    if hint:
        if hint.lower() not in HINTS:
            raise UsageError(f"bad protocol in {text!r}: one of {', '.join(HINTS)}")
        proto, tls = HINTS[hint.lower()]
        return PortSpec(port, proto, tls, hint.lower().startswith("submission"), True)
    if port in STANDARD_PORTS:
        proto, tls = STANDARD_PORTS[port]
        return PortSpec(port, proto, tls, port in SUBMISSION_PORTS, True)
    return PortSpec(port, explicit=True)


@dataclass
class Login:
    user: str
    password: str


@dataclass
class PortResult:
    port: int
    state: str = "open"  # open, closed, filtered, error
    protocol: str | None = None
    tls_mode: str | None = None  # implicit, starttls, none
    banner: str | None = None
    capabilities_before_tls: list[str] = field(default_factory=list)
    capabilities_after_tls: list[str] = field(default_factory=list)
    auth_before_tls: list[str] = field(default_factory=list)
    auth_after_tls: list[str] = field(default_factory=list)
    tls: TLSDetails | None = None
    login: dict[str, Any] | None = None
    error: str | None = None
    findings: list[Finding] = field(default_factory=list)
    submission_requires_auth: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "port": self.port, "state": self.state, "protocol": self.protocol,
            "tls_mode": self.tls_mode, "banner": self.banner,
            "capabilities_before_tls": self.capabilities_before_tls,
            "capabilities_after_tls": self.capabilities_after_tls,
            "auth_before_tls": self.auth_before_tls, "auth_after_tls": self.auth_after_tls,
            "tls": self.tls.to_json() if self.tls else None, "login": self.login,
            "error": self.error, "findings": [f.to_json() for f in self.findings],
        }


class _VerifyFailed(Exception):
    pass


@dataclass
class ProbeOptions:
    host: str
    timeout: float = 10.0
    detect_timeout: float = 3.0
    keylog: str | None = None
    cafile: str | None = None
    login: Login | None = None
    verbose: bool = False
    tls_name: str | None = None  # SNI and certificate name (default: host)


# --- one port --------------------------------------------------------------------------


async def probe_port(spec: PortSpec, opts: ProbeOptions) -> PortResult:
    why = ""
    for verify in (True, False):
        result = PortResult(spec.port)
        transcript = Transcript(echo=sys.stderr if opts.verbose else None)
        try:
            await _probe(spec, opts, result, transcript, verify, why)
        except _VerifyFailed as exc:
            why = str(exc)
            continue
        _judge(spec, result)
        return result
    raise AssertionError("unreachable: the second attempt does not verify")


async def _open(opts: ProbeOptions, port: int, t: Transcript,
                ctx: ssl.SSLContext | None) -> Wire:
    try:
        return await Wire.connect(opts.host, port, t, opts.timeout, ctx, opts.tls_name)
    except ssl.SSLCertVerificationError as exc:
        raise _VerifyFailed(exc.verify_message or str(exc)) from None


async def _probe(spec: PortSpec, opts: ProbeOptions, result: PortResult, t: Transcript,
                 verify: bool, why: str) -> None:
    ctx = client_context(verify, opts.cafile, opts.keylog)
    wire: Wire | None = None
    try:
        protocol, tls = spec.protocol, spec.tls
        greeting: str | None = None
        if protocol is None:
            # Detect: a plaintext server speaks first; an implicit-TLS one waits.
            wire = await _open(opts, spec.port, t, None)
            try:
                greeting = await wire.read_line(opts.detect_timeout)
                protocol, tls = _detect(greeting), "starttls"
            except ConnectError:
                await wire.aclose()
                wire = None
                tls = "implicit"
        if wire is None:
            wire = await _open(opts, spec.port, t, ctx if tls == "implicit" else None)
        if tls == "implicit":
            result.tls = tls_details(wire.ssl_object, verify, "" if verify else why)
            result.tls_mode = "implicit"
            if protocol is None:
                greeting = await wire.read_line(opts.detect_timeout)
                protocol = _detect(greeting)
        result.protocol = protocol
        if protocol == "smtp":
            await _smtp(wire, spec, opts, result, ctx, verify, why, greeting)
        elif protocol == "imap":
            await _imap(wire, opts, result, ctx, verify, why, greeting)
        elif protocol == "pop3":
            await _pop3(wire, opts, result, ctx, verify, why, greeting)
        else:
            result.banner = greeting
            result.error = "unknown protocol (no SMTP, IMAP or POP3 greeting)"
        if opts.login is not None and result.login is None and result.tls is None:
            # the password goes only through TLS: a stripped STARTTLS must not expose it
            result.login = {"user": opts.login.user, "ok": False, "sent": False,
                            "reply": "not attempted: no TLS on this port"}
    except ConnectionRefusedError:
        result.state = "closed"
    except TimeoutError:
        result.state = "filtered"
    except ssl.SSLCertVerificationError as exc:
        raise _VerifyFailed(exc.verify_message or str(exc)) from None
    except (OSError, ssl.SSLError, ConnectError) as exc:
        result.state = "error" if result.banner is None else "open"
        result.error = str(exc) or type(exc).__name__
    finally:
        if wire is not None:
            await wire.aclose()


def _detect(greeting: str) -> str | None:
    if greeting.startswith("220"):
        return "smtp"
    if greeting.upper().startswith("* OK") or greeting.upper().startswith("* PREAUTH"):
        return "imap"
    if greeting.startswith("+OK"):
        return "pop3"
    return None


async def _start_tls(wire: Wire, opts: ProbeOptions, result: PortResult,
                     ctx: ssl.SSLContext, verify: bool, why: str) -> None:
    try:
        await wire.start_tls(ctx, opts.tls_name or opts.host)
    except ssl.SSLCertVerificationError as exc:
        raise _VerifyFailed(exc.verify_message or str(exc)) from None
    result.tls_mode = "starttls"
    result.tls = tls_details(wire.ssl_object, verify, "" if verify else why)


# --- SMTP ------------------------------------------------------------------------------


async def _smtp(wire: Wire, spec: PortSpec, opts: ProbeOptions, result: PortResult,
                ctx: ssl.SSLContext, verify: bool, why: str, greeting: str | None) -> None:
    if greeting is None:
        banner = await read_reply(wire)
        result.banner = banner.lines[0] if banner.lines else ""
        code = banner.code
    else:
        result.banner, code = greeting[4:], int(greeting[:3])
        if greeting[3:4] == "-":
            await read_reply(wire)  # the rest of a multi-line greeting
    result.banner = f"{code} {result.banner}"
    if code != 220:
        return
    reply, ext = await ehlo(wire, "probe.pochta.invalid")
    caps = list(reply.lines[1:]) if reply.positive else []
    if result.tls_mode == "implicit":
        result.capabilities_after_tls, result.auth_after_tls = caps, auth_mechanisms(ext)
    else:
        result.capabilities_before_tls, result.auth_before_tls = caps, auth_mechanisms(ext)
        if "STARTTLS" in ext:
            r = await command(wire, "STARTTLS")
            if r.positive:
                await _start_tls(wire, opts, result, ctx, verify, why)
                reply, ext = await ehlo(wire, "probe.pochta.invalid")
                result.capabilities_after_tls = list(reply.lines[1:])
                result.auth_after_tls = auth_mechanisms(ext)
        else:
            result.tls_mode = "none"
    if spec.submission or spec.port in SUBMISSION_PORTS:
        # RFC 6409 4.3: a submission server requires AUTH before accepting mail.
        r = await command(wire, "MAIL FROM:<probe@pochta.invalid>")
        result.submission_requires_auth = not r.positive
        await command(wire, "RSET")
    if opts.login is not None and (result.tls is not None) and result.auth_after_tls:
        blob = base64.b64encode(b"\0" + opts.login.user.encode() + b"\0"
                                + opts.login.password.encode()).decode()
        r = await command(wire, f"AUTH PLAIN {blob}", "AUTH PLAIN <redacted>")
        result.login = {"user": opts.login.user, "ok": r.positive, "reply": str(r)}
    await command(wire, "QUIT")


# --- IMAP ------------------------------------------------------------------------------


async def _imap_command(wire: Wire, tag: str, line: str, shown: str | None = None
                        ) -> tuple[list[str], str]:
    wire.send_line(f"{tag} {line}", None if shown is None else f"{tag} {shown}")
    await wire.drain()
    untagged: list[str] = []
    while True:
        resp = await wire.read_line()
        if resp.startswith(tag + " "):
            return untagged, resp[len(tag) + 1:]
        untagged.append(resp)


def _imap_caps(untagged: list[str], status: str) -> list[str]:
    for line in untagged:
        if line.upper().startswith("* CAPABILITY "):
            return line.split()[2:]
    if "[CAPABILITY " in status.upper():
        inner = status[status.upper().index("[CAPABILITY ") + 12:]
        return inner.split("]")[0].split()
    return []


def _imap_auth(caps: list[str]) -> list[str]:
    mechs = [c[5:].upper() for c in caps if c.upper().startswith("AUTH=")]
    if "LOGINDISABLED" not in (c.upper() for c in caps):
        mechs.append("LOGIN-command")
    return mechs


async def _imap(wire: Wire, opts: ProbeOptions, result: PortResult, ctx: ssl.SSLContext,
                verify: bool, why: str, greeting: str | None) -> None:
    result.banner = greeting if greeting is not None else await wire.read_line()
    untagged, status = await _imap_command(wire, "p1", "CAPABILITY")
    caps = _imap_caps(untagged, status)
    if result.tls_mode == "implicit":
        result.capabilities_after_tls, result.auth_after_tls = caps, _imap_auth(caps)
    else:
        result.capabilities_before_tls, result.auth_before_tls = caps, _imap_auth(caps)
        if "STARTTLS" in (c.upper() for c in caps):
            _, status = await _imap_command(wire, "p2", "STARTTLS")
            if status.upper().startswith("OK"):
                await _start_tls(wire, opts, result, ctx, verify, why)
                untagged, status = await _imap_command(wire, "p3", "CAPABILITY")
                caps = _imap_caps(untagged, status)
                result.capabilities_after_tls, result.auth_after_tls = caps, _imap_auth(caps)
        else:
            result.tls_mode = "none"
    if opts.login is not None and result.tls is not None:
        user, pw = (_imap_quote(opts.login.user), _imap_quote(opts.login.password))
        _, status = await _imap_command(wire, "p4", f"LOGIN {user} {pw}",
                                        f"LOGIN {user} <redacted>")
        login: dict[str, Any] = {"user": opts.login.user, "ok": status.upper().startswith("OK"),
                                 "reply": status}
        if login["ok"]:
            untagged, _ = await _imap_command(wire, "p5", "STATUS INBOX (MESSAGES UNSEEN)")
            for line in untagged:
                words = line.replace("(", " ").replace(")", " ").split()
                for key in ("MESSAGES", "UNSEEN"):
                    if key in words and words.index(key) + 1 < len(words):
                        login[key.lower()] = int(words[words.index(key) + 1])
        result.login = login
    await _imap_command(wire, "p9", "LOGOUT")


def _imap_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- POP3 ------------------------------------------------------------------------------


async def _pop3_command(wire: Wire, line: str, multi: bool = False,
                        shown: str | None = None) -> tuple[str, list[str]]:
    wire.send_line(line, shown)
    await wire.drain()
    status = await wire.read_line()
    lines: list[str] = []
    if multi and status.startswith("+OK"):
        while True:
            item = await wire.read_line()
            if item == ".":
                break
            lines.append(dot_unstuff(item))
    return status, lines


def _pop3_auth(caps: list[str]) -> list[str]:
    mechs: list[str] = []
    for c in caps:
        words = c.upper().split()
        if words and words[0] == "SASL":
            mechs += words[1:]
        elif words and words[0] == "USER":
            mechs.append("USER/PASS")
    return mechs


async def _pop3(wire: Wire, opts: ProbeOptions, result: PortResult, ctx: ssl.SSLContext,
                verify: bool, why: str, greeting: str | None) -> None:
    result.banner = greeting if greeting is not None else await wire.read_line()
    _, caps = await _pop3_command(wire, "CAPA", multi=True)
    if result.tls_mode == "implicit":
        result.capabilities_after_tls, result.auth_after_tls = caps, _pop3_auth(caps)
    else:
        result.capabilities_before_tls, result.auth_before_tls = caps, _pop3_auth(caps)
        if "STLS" in (c.upper() for c in caps):
            status, _ = await _pop3_command(wire, "STLS")
            if status.startswith("+OK"):
                await _start_tls(wire, opts, result, ctx, verify, why)
                _, caps = await _pop3_command(wire, "CAPA", multi=True)
                result.capabilities_after_tls, result.auth_after_tls = caps, _pop3_auth(caps)
        else:
            result.tls_mode = "none"
    if opts.login is not None and result.tls is not None:
        status, _ = await _pop3_command(wire, f"USER {opts.login.user}")
        if status.startswith("+OK"):
            status, _ = await _pop3_command(wire, f"PASS {opts.login.password}",
                                            shown="PASS <redacted>")
        login: dict[str, Any] = {"user": opts.login.user, "ok": status.startswith("+OK"),
                                 "reply": status}
        if login["ok"]:
            stat, _ = await _pop3_command(wire, "STAT")
            parts = stat.split()
            if len(parts) >= 3 and parts[1].isdigit():
                login["messages"], login["octets"] = int(parts[1]), int(parts[2])
        result.login = login
    await _pop3_command(wire, "QUIT")


# --- judging ---------------------------------------------------------------------------


PLAINTEXT_FIX = {
    "smtp": "offer AUTH only after STARTTLS (Postfix: smtpd_tls_auth_only = yes)",
    "imap": "announce LOGINDISABLED before STARTTLS (Dovecot: disable_plaintext_auth = yes)",
    "pop3": "offer USER/SASL only after STLS (Dovecot: disable_plaintext_auth = yes)",
}


def _judge(spec: PortSpec, r: PortResult) -> None:
    f = r.findings
    name = f"port {r.port}"
    if r.state in ("closed", "filtered"):
        status = "fail" if spec.explicit and spec.port not in STANDARD_PORTS else "info"
        f.append(Finding(status, name, f"{r.state}", "start the service or open the firewall"
                         if status == "fail" else ""))
        return
    if r.state == "error" or r.protocol is None:
        f.append(Finding("fail", name, f"no usable mail service: {r.error}",
                         "check that the port runs SMTP, IMAP or POP3"))
        return
    f.append(Finding("ok", name, f"{r.protocol.upper()} {r.tls_mode or ''}: {r.banner}"))
    if r.error:
        f.append(Finding("fail", name, f"session broke: {r.error}", ""))
    plaintext = [m for m in r.auth_before_tls if m != "LOGIN-command"
                 ] if r.protocol == "imap" else r.auth_before_tls
    if r.protocol == "imap" and "LOGIN-command" in r.auth_before_tls:
        plaintext.append("LOGIN")
    if r.tls_mode != "implicit" and plaintext:
        f.append(Finding("warn", name,
                         f"authentication offered without TLS: {' '.join(plaintext)} "
                         "(passwords can be sent in clear text)",
                         PLAINTEXT_FIX[r.protocol]))
    if r.tls_mode == "none":
        f.append(Finding("warn", name, "no TLS: STARTTLS is not offered",
                         "configure a certificate and offer STARTTLS"))
    t = r.tls
    if t is not None:
        f.append(Finding("ok", name, f"{t.version} {t.cipher}"))
        if t.version in ("TLSv1", "TLSv1.1", "SSLv3"):
            f.append(Finding("warn", name, f"old TLS version {t.version}",
                             "allow TLS 1.2 and 1.3 only"))
        if not t.verified:
            f.append(Finding("warn", name, f"certificate does not verify: {t.verify_error}",
                             "use a certificate from a public CA (e.g. Let's Encrypt) that "
                             "names this host"))
        c = t.certificate
        if c is not None:
            if c.days_left < 0:
                f.append(Finding("fail", name, f"certificate expired on {c.not_after}",
                                 "renew the certificate"))
            elif c.days_left < 14:
                f.append(Finding("warn", name,
                                 f"certificate expires in {c.days_left} days ({c.not_after})",
                                 "renew the certificate"))
    if r.submission_requires_auth is False:
        f.append(Finding("fail", name, "submission accepts MAIL FROM without AUTH",
                         "require authentication on the submission port (RFC 6409)"))
    elif r.submission_requires_auth:
        f.append(Finding("ok", name, "submission requires AUTH"))
    if r.login is not None:
        if r.login.get("sent") is False:
            f.append(Finding("fail", name, f"login as {r.login['user']} not attempted: TLS "
                             "was not negotiated, and the password is never sent in clear "
                             "(anyone on the path can strip STARTTLS to read it)",
                             "probe the implicit-TLS port (465/993/995) or fix STARTTLS on "
                             "the server"))
        elif r.login["ok"]:
            extra = ", ".join(f"{k}={v}" for k, v in r.login.items()
                              if k in ("messages", "unseen", "octets"))
            f.append(Finding("ok", name, f"login as {r.login['user']} ok"
                             + (f" ({extra})" if extra else "")))
        else:
            f.append(Finding("fail", name, f"login as {r.login['user']} failed: "
                             f"{r.login['reply']}", "check the user name and password"))


# --- command ---------------------------------------------------------------------------


def register_probe(sub: Any) -> None:
    p = sub.add_parser("probe", help="which mail ports answer, TLS, capabilities, AUTH",
                       description="Probe the mail ports of HOST.")
    p.add_argument("host")
    p.add_argument("--port", "-p", action="append", default=[], metavar="PORT[/PROTO]",
                   help="port to probe instead of the standard ones; PROTO is smtp, "
                        "submission, smtps, submissions, imap, imaps, pop3 or pop3s "
                        "(default: from the port number or the greeting)")
    p.add_argument("--user", help="also log in as USER (after TLS only)")
    p.add_argument("--password-env", metavar="VAR")
    p.add_argument("--password-file", metavar="FILE")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("--cafile", help="CA bundle to verify certificates against")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--keylog", metavar="FILE", help="write TLS secrets (SSLKEYLOGFILE)")
    p.add_argument("--verbose", "-v", action="store_true", help="transcripts on stderr")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe, needs_config=False)


async def run_probe(specs: list[PortSpec], opts: ProbeOptions) -> list[PortResult]:
    return list(await asyncio.gather(*(probe_port(s, opts) for s in specs)))


def cmd_probe(args: argparse.Namespace, _config: object) -> int:
    try:
        specs = ([parse_port(x) for x in args.port] if args.port
                 else [PortSpec(p, *STANDARD_PORTS[p], p in SUBMISSION_PORTS)
                       for p in STANDARD_PORTS])
        login = Login(args.user, read_secret(args)) if args.user else None
    except UsageError as exc:
        print(f"pochta probe: {exc}", file=sys.stderr)
        return 2
    opts = ProbeOptions(args.host, timeout=args.timeout, keylog=args.keylog,
                        cafile=args.cafile, login=login, verbose=args.verbose)
    results = asyncio.run(run_probe(specs, opts))
    findings = [f for r in results for f in r.findings]
    code = findings_exit(findings)
    if not any(r.state == "open" for r in results):
        code = EXIT_CONNECT
    if args.json:
        dump_json({"command": "probe", "host": args.host,
                   "ports": [r.to_json() for r in results],
                   "findings": [f.to_json() for f in findings], "exit_code": code})
        return code
    out = sys.stdout
    for r in results:
        out.write(f"{args.host} port {r.port}: {r.state}"
                  + (f" {r.protocol.upper()} tls={r.tls_mode}" if r.protocol else "") + "\n")
        if r.state != "open":
            continue
        if r.banner:
            out.write(f"  banner: {r.banner}\n")
        if r.capabilities_before_tls:
            out.write(f"  before TLS: {' '.join(r.capabilities_before_tls)}\n")
            out.write(f"  AUTH before TLS: {' '.join(r.auth_before_tls) or 'none'}\n")
        if r.tls is not None:
            for line in r.tls.lines():
                out.write(f"  {line}\n")
        if r.capabilities_after_tls:
            out.write(f"  after TLS: {' '.join(r.capabilities_after_tls)}\n")
            out.write(f"  AUTH after TLS: {' '.join(r.auth_after_tls) or 'none'}\n")
    out.write("\n")
    print_findings(findings, out)
    return code
