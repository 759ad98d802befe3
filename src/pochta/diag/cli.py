"""The diagnostics subcommands: send, sink, probe, check, doctor, sasl-encode.

Every handler returns an exit code: 0 ok, 1 a check failed or warned (or the server
refused the mail), 2 usage error, 3 connection failure. ``--json`` prints one JSON
document (``sink --json`` prints JSON lines); the schemas are in docs/diagnostics.md.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
from pathlib import Path
from typing import Any

from pochta.mail.addresses import domain_of

from . import common
from .check import register_check
from .common import (
    EXIT_CONNECT,
    EXIT_OK,
    EXIT_USAGE,
    ConnectError,
    Transcript,
    UsageError,
    dump_json,
    read_secret,
)
from .doctor import register_doctor
from .probe import register_probe
from .sasl import decode, encode_login, encode_plain
from .send import QUIT_AFTER, TLS_MODES, SendOptions, SendResult, build_message, mx_target, send
from .sink import SinkOptions, parse_fault, run_sink


def register(subparsers: Any) -> None:
    _register_send(subparsers)
    _register_sink(subparsers)
    _register_sasl(subparsers)
    _register_probe(subparsers)
    _register_check(subparsers)
    _register_doctor(subparsers)


def _usage(command: str, exc: Exception) -> int:
    print(f"pochta {command}: {exc}", file=sys.stderr)
    return EXIT_USAGE


def split_hostport(value: str, default: int | None) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, ""
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"bad port in {value!r}")
        return host, int(port)
    return host, default


def _add_password_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password-env", metavar="VAR", help="take the password from $VAR")
    p.add_argument("--password-file", metavar="FILE", help="first line of FILE")
    p.add_argument("--password-stdin", action="store_true",
                   help="first line of standard input (default: prompt without echo)")


# --- send ------------------------------------------------------------------------------


def _register_send(sub: Any) -> None:
    p = sub.add_parser("send", help="send a test message to any SMTP server (like swaks)",
                       description="Run one SMTP transaction and print the whole transcript.")
    p.add_argument("--server", "-s", help="HOST[:PORT] (default: MX of the first recipient)")
    p.add_argument("--port", "-p", type=int, help="port (default 25, 465 with --tls implicit)")
    p.add_argument("--from", "-f", dest="sender", default=None,
                   help="envelope sender (default: the user running this @ this host)")
    p.add_argument("--to", "-t", dest="to", action="append", required=True,
                   help="recipient (repeat for several)")
    p.add_argument("--tls", choices=TLS_MODES, default="try",
                   help="starttls (required), implicit (TLS first), none, try (STARTTLS if "
                        "offered; default). With --auth, try means required: the password "
                        "is sent in clear only with --tls none")
    p.add_argument("--tls-verify", action="store_true",
                   help="stop when the certificate does not verify")
    p.add_argument("--cafile", help="CA bundle to verify the server certificate against")
    p.add_argument("--auth", nargs="?", const="", default=None, metavar="MECHANISM",
                   help="authenticate (PLAIN or LOGIN; default: what the server offers)")
    p.add_argument("--auth-user", "-au", help="user name for --auth")
    _add_password_options(p)
    p.add_argument("--header", "-H", action="append", default=[],
                   help="'Name: value' header (replaces a default one of that name)")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", help="body text")
    body.add_argument("--body-file", help="body from a file")
    body.add_argument("--data-file", help="the raw message (headers and body) from a file, "
                                          "'-' for standard input")
    p.add_argument("--attach", action="append", default=[], help="attach a file (repeat)")
    p.add_argument("--ehlo", default=None, help="EHLO name (default: this host's name)")
    p.add_argument("--pipeline", action="store_true", help="pipeline MAIL/RCPT/DATA "
                                                           "(RFC 2920) when offered")
    p.add_argument("--chunking", action="store_true", help="send with BDAT (RFC 3030) "
                                                           "when offered")
    p.add_argument("--quit-after", choices=QUIT_AFTER,
                   help="stop after this step (data: after the 354, before the content)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per step (30)")
    p.add_argument("--keylog", metavar="FILE",
                   help="append TLS secrets in SSLKEYLOGFILE format (for tshark/Wireshark)")
    p.add_argument("--show-secrets", action="store_true", help="do not redact AUTH data")
    p.add_argument("--json", action="store_true", help="print a JSON document")
    p.set_defaults(func=cmd_send, needs_config=False)


def cmd_send(args: argparse.Namespace, _config: object) -> int:
    try:
        ehlo_name = args.ehlo or socket.getfqdn() or "localhost"
        sender = args.sender if args.sender is not None else (
            f"{getpass.getuser()}@{ehlo_name}")
        recipients = list(args.to)
        if args.data_file:
            try:
                message = (sys.stdin.buffer.read() if args.data_file == "-"
                           else Path(args.data_file).read_bytes())
            except OSError as exc:
                raise UsageError(f"--data-file: {exc}") from None
        else:
            text = args.body
            if args.body_file:
                try:
                    text = Path(args.body_file).read_text(encoding="utf-8")
                except OSError as exc:
                    raise UsageError(f"--body-file: {exc}") from None
            message = build_message(sender, recipients, headers=args.header, body=text,
                                    attachments=[Path(a) for a in args.attach],
                                    ehlo_name=ehlo_name)
        default_port = 465 if args.tls == "implicit" else 25
        if args.auth is not None and not args.auth_user:
            raise UsageError("--auth needs --auth-user")
        password = read_secret(args) if args.auth is not None else ""
        opts = SendOptions(
            server=args.server, port=args.port, sender=sender, recipients=recipients,
            message=message, tls=args.tls, auth=args.auth, auth_user=args.auth_user or "",
            password=password, ehlo=ehlo_name, pipeline=args.pipeline,
            chunking=args.chunking, quit_after=args.quit_after, timeout=args.timeout,
            keylog=args.keylog, cafile=args.cafile, tls_verify=args.tls_verify,
            show_secrets=args.show_secrets,
        )
    except UsageError as exc:
        return _usage("send", exc)

    async def main() -> int:
        transcript = Transcript(echo=None if args.json else sys.stdout)
        try:
            if args.server:
                host, port = split_hostport(args.server, args.port or default_port)
            else:
                domain = domain_of(recipients[0])
                if not domain:
                    raise UsageError("no --server and the recipient has no domain")
                host = await mx_target(domain, common.make_resolver())
                transcript.note(f"MX for {domain}: {host}")
                port = args.port or default_port
        except UsageError as exc:
            return _usage("send", exc)
        except ConnectError as exc:
            print(f"pochta send: {exc}", file=sys.stderr)
            return EXIT_CONNECT
        assert port is not None
        result = SendResult(host, port, transcript=transcript)
        await send(opts, result)
        if args.json:
            dump_json(result.to_json())
        else:
            _print_send_summary(result)
        return result.exit_code

    return asyncio.run(main())


def _print_send_summary(result: Any) -> None:
    out = sys.stdout
    out.write("\nsteps: " + ", ".join(
        f"{s.step} {s.seconds * 1000:.1f} ms" + (f" ({s.code})" if s.code else "")
        for s in result.steps) + "\n")
    if result.ok:
        out.write("result: OK" + (f" ({result.message_reply})" if result.message_reply
                                  else "") + "\n")
    else:
        out.write(f"result: FAILED: {result.error}\n")


# --- sink ------------------------------------------------------------------------------


def _register_sink(sub: Any) -> None:
    p = sub.add_parser("sink", help="a throwaway SMTP server that accepts everything",
                       description="An SMTP server for testing clients (like smtp-sink).")
    p.add_argument("--listen", "-l", default="127.0.0.1:2526",
                   help="ADDRESS:PORT to listen on (default 127.0.0.1:2526, beside the "
                        "demo's MTA on 2525)")
    p.add_argument("--hostname", default="sink.invalid", help="name in the banner")
    p.add_argument("--tls", choices=("none", "starttls", "implicit"), default="none",
                   help="offer STARTTLS or speak TLS first (AUTH is offered after TLS)")
    p.add_argument("--cert", help="PEM certificate (default: a generated self-signed one)")
    p.add_argument("--key", help="PEM key for --cert")
    p.add_argument("--keylog", metavar="FILE", help="write TLS secrets (SSLKEYLOGFILE format)")
    p.add_argument("--save", metavar="DIR", help="save messages here (default: discard)")
    p.add_argument("--format", choices=("eml", "maildir"), default="eml",
                   help="one .eml file per message, or a Maildir (new/)")
    p.add_argument("--fault", action="append", default=[], metavar="CMD=CODE[@N]",
                   help="answer CODE (4xx/5xx) to CMD, only every Nth time with @N; CMD is "
                        "connect, ehlo, helo, starttls, auth, mail, rcpt, data (the reply "
                        "after the message), rset, noop, vrfy, quit")
    p.add_argument("--delay", action="append", default=[], metavar="CMD=SECONDS[@N]",
                   help="wait before answering CMD")
    p.add_argument("--disconnect", action="append", default=[], metavar="CMD[@N]",
                   help="drop the connection instead of answering CMD")
    p.add_argument("--throttle", metavar="N/SECONDS",
                   help="rate-limit like a large receiver: beyond N messages within SECONDS, "
                        "answer MAIL with 421 4.7.28 and close the connection")
    p.add_argument("--count", type=int, default=0, help="exit after N messages")
    p.add_argument("--duration", type=float, default=0.0, help="exit after SECONDS")
    p.add_argument("--json", action="store_true",
                   help="JSON lines: one per message, then a summary")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="print the dialogue, every command and reply (like smtp-sink -v); "
                        "message data and AUTH responses are summarised")
    p.set_defaults(func=cmd_sink, needs_config=False)


def cmd_sink(args: argparse.Namespace, _config: object) -> int:
    try:
        address, port = split_hostport(args.listen, 2526)
        assert port is not None
        faults = ([parse_fault("reply", s) for s in args.fault]
                  + [parse_fault("delay", s) for s in args.delay]
                  + [parse_fault("disconnect", s) for s in args.disconnect])
        if bool(args.cert) != bool(args.key):
            raise UsageError("--cert and --key go together")
        throttle = _throttle(args.throttle) if args.throttle else None
        opts = SinkOptions(
            hostname=args.hostname, address=address or "127.0.0.1", port=port,
            tls=args.tls, cert=Path(args.cert) if args.cert else None,
            key=Path(args.key) if args.key else None, keylog=args.keylog,
            save=Path(args.save) if args.save else None, format=args.format,
            faults=faults, throttle=throttle, count=args.count, duration=args.duration,
            json=args.json,
            verbose=args.verbose,
        )
    except UsageError as exc:
        return _usage("sink", exc)
    try:
        return asyncio.run(run_sink(opts, sys.stdout))
    except KeyboardInterrupt:
        return EXIT_OK
    except OSError as exc:
        print(f"pochta sink: cannot listen on {args.listen}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONNECT


def _throttle(spec: str) -> tuple[int, float]:
    count, _, seconds = spec.partition("/")
    try:
        n, window = int(count), float(seconds)
    except ValueError:
        raise UsageError(f"--throttle {spec!r}: expected N/SECONDS, e.g. 100/1") from None
    if n < 1 or not 0 < window <= 3600:
        raise UsageError(f"--throttle {spec!r}: N at least 1, SECONDS from 0 to 3600")
    return n, window


# --- sasl-encode -----------------------------------------------------------------------


def _register_sasl(sub: Any) -> None:
    p = sub.add_parser("sasl-encode", help="base64 for AUTH PLAIN/LOGIN typed by hand",
                       description="Print the strings to type after AUTH PLAIN or AUTH LOGIN "
                                   "in 'openssl s_client -starttls smtp', or decode one.")
    p.add_argument("mechanism", choices=("plain", "login", "decode"))
    p.add_argument("value", help="user name (plain, login) or the base64 text (decode)")
    p.add_argument("--authzid", default="", help="PLAIN authorization identity (rarely used)")
    _add_password_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sasl_encode, needs_config=False)


def cmd_sasl_encode(args: argparse.Namespace, _config: object) -> int:
    if args.mechanism == "decode":
        try:
            decoded = decode(args.value)
        except ValueError as exc:
            return _usage("sasl-encode", exc)
        if args.json:
            dump_json({"command": "sasl-encode", "mechanism": "decode", **decoded})
        elif decoded["plain"]:
            pl = decoded["plain"]
            print(f"PLAIN authzid={pl['authzid']!r} user={pl['user']!r} "
                  f"password={pl['password']!r}")
        else:
            print(repr(decoded["bytes"]))
        return EXIT_OK
    try:
        password = read_secret(args)
    except UsageError as exc:
        return _usage("sasl-encode", exc)
    if args.mechanism == "plain":
        blob = encode_plain(args.value, password, args.authzid)
        if args.json:
            dump_json({"command": "sasl-encode", "mechanism": "plain", "lines": [blob]})
        else:
            print(f"AUTH PLAIN {blob}")
        return EXIT_OK
    user, pw = encode_login(args.value, password)
    if args.json:
        dump_json({"command": "sasl-encode", "mechanism": "login", "lines": [user, pw]})
    else:
        print("AUTH LOGIN")
        print(f"{user}    (after 334 VXNlcm5hbWU6 = 'Username:')")
        print(f"{pw}    (after 334 UGFzc3dvcmQ6 = 'Password:')")
    return EXIT_OK


# --- probe, check, doctor ----------------------------------------------------------------


def _register_probe(sub: Any) -> None:
    register_probe(sub)


def _register_check(sub: Any) -> None:
    register_check(sub)


def _register_doctor(sub: Any) -> None:
    register_doctor(sub)
