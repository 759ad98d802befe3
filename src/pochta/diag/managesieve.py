"""The ManageSieve probe of ``pochta doctor`` (RFC 5804): the listener greets with its
capabilities, offers STARTTLS (on a ``starttls`` listener) and no SASL mechanism before
TLS, lists the Sieve extensions the delivery's compiler accepts and the SASL mechanisms
after TLS; with credentials, AUTHENTICATE PLAIN and a CHECKSCRIPT round trip (a good
script is accepted, a broken one refused with its line number)."""

from __future__ import annotations

import base64
import re
import ssl

from pochta.sieve import EXTENSIONS

from .common import ConnectError, Finding, Transcript, Wire, client_context

GOOD_SCRIPT = 'require "fileinto";\r\nif header :contains "subject" "x" { fileinto "x"; }\r\n'
BAD_SCRIPT = 'require "fileinto";\r\n\r\nfileinto "x"\r\n'  # ";" missing: line 4
_LITERAL = re.compile(r"\{(\d{1,7})\+?\}$")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


class _Session:
    def __init__(self, wire: Wire) -> None:
        self.wire = wire

    async def response(self) -> tuple[list[str], str]:
        """(data lines, the final OK/NO/BYE line with any literal inlined)."""
        lines: list[str] = []
        while True:
            line = await self.wire.read_line()
            m = _LITERAL.search(line)
            if m is not None:  # a literal string: read its octets, then the line's rest
                n = int(m.group(1))
                data = await self.wire.reader.readexactly(n)
                rest = await self.wire.read_line()
                line = line[:m.start()] + '"' + data.decode("utf-8", "replace") + '"' + rest
            word = line.split(" ", 1)[0].upper()
            if word in ("OK", "NO", "BYE"):
                return lines, line
            if not line.startswith('"'):  # §1.7: capability lines are strings
                raise ConnectError(f"not a ManageSieve server: {line[:80]!r}")
            lines.append(line)
            if len(lines) > 200:
                raise ConnectError("too many capability lines")

    async def command(self, line: str, shown: str | None = None) -> tuple[list[str], str]:
        self.wire.send_line(line, shown)
        await self.wire.drain()
        return await self.response()


def capabilities(lines: list[str]) -> dict[str, str]:
    """``"SIEVE" "fileinto ..."`` lines -> {"SIEVE": "fileinto ..."}."""
    out: dict[str, str] = {}
    for line in lines:
        strings = _STRING.findall(line)
        if strings:
            out[strings[0].upper()] = strings[1] if len(strings) > 1 else ""
    return out


def capability_findings(name: str, caps: dict[str, str], tls: bool) -> list[Finding]:
    out: list[Finding] = []
    if caps.get("VERSION") != "1.0":
        out.append(Finding("fail", "managesieve", f"{name}: VERSION is "
                           f"{caps.get('VERSION')!r}, not \"1.0\" (RFC 5804 §1.7)",
                           "report this as a bug"))
    offered = frozenset(caps.get("SIEVE", "").lower().split())
    if offered != EXTENSIONS:
        missing = sorted(EXTENSIONS - offered)
        extra = sorted(offered - EXTENSIONS)
        out.append(Finding("fail", "managesieve", f"{name}: SIEVE capability differs from "
                           f"what delivery accepts (missing: {' '.join(missing) or '-'}; "
                           f"unknown: {' '.join(extra) or '-'})",
                           "is another ManageSieve server on this port?"))
    else:
        out.append(Finding("ok", "managesieve", f"{name}: SIEVE lists the {len(offered)} "
                           "extensions delivery accepts"))
    sasl = caps.get("SASL", "").split()
    if not tls and sasl:
        out.append(Finding("fail", "auth-tls", f"{name} offers SASL {' '.join(sasl)} "
                           "before TLS", "offer authentication only after TLS"))
    if tls and not sasl:
        out.append(Finding("fail", "managesieve", f"{name}: no SASL mechanism after TLS",
                           "check [auth] mechanisms"))
    return out


async def probe_managesieve(host: str, port: int, tls_mode: str, timeout: float,
                            cafile: str | None = None, tls_name: str | None = None,
                            user: str | None = None, password: str | None = None
                            ) -> list[Finding]:
    name = f"managesieve:{port}"
    t = Transcript()
    # the certificate itself is judged by the listener checks; this probe looks at the
    # protocol, so it goes on with a certificate that does not verify
    verify = client_context(False, cafile)
    ctx: ssl.SSLContext | None = verify if tls_mode == "implicit" else None
    try:
        wire = await Wire.connect(host, port, t, timeout, tls=ctx, tls_name=tls_name)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return [Finding("fail", "managesieve", f"cannot connect to {name}: {exc}",
                        "check 'pochta serve' is running and its log")]
    out: list[Finding] = []
    s = _Session(wire)
    try:
        lines, final = await s.response()
        caps = capabilities(lines)
        if not final.upper().startswith("OK") or "IMPLEMENTATION" not in caps:
            return [Finding("fail", "managesieve", f"{name} does not greet as a ManageSieve "
                            f"server: {final}", "is another service on this port?")]
        out.append(Finding("ok", "managesieve", f"{name} ({tls_mode}) answers: "
                           f"{caps['IMPLEMENTATION']}"))
        secure = tls_mode == "implicit"
        if tls_mode == "starttls":
            if "STARTTLS" not in caps:
                out.append(Finding("fail", "managesieve", f"{name} does not offer STARTTLS",
                                   "set tls = \"starttls\" and a certificate"))
                out += capability_findings(name, caps, tls=False)
                return out
            out.append(Finding("ok", "managesieve", f"{name} offers STARTTLS"))
            out += [f for f in capability_findings(name, caps, tls=False)
                    if f.check != "managesieve" or f.status != "ok"]
            _, final = await s.command("STARTTLS")
            if not final.upper().startswith("OK"):
                return [*out, Finding("fail", "managesieve", f"{name}: STARTTLS refused: "
                                      f"{final}", "check tls.cert/tls.key")]
            await wire.start_tls(verify, tls_name or host)
            lines, final = await s.response()  # RFC 5804 §2.2: capabilities again
            caps = capabilities(lines)
            secure = True
        out += capability_findings(name, caps, tls=secure)
        if user and password is not None:
            out += await _round_trip(s, name, user, password)
        await s.command("LOGOUT")
    except (ConnectError, ssl.SSLError, OSError, TimeoutError) as exc:
        out.append(Finding("fail", "managesieve", f"{name}: {exc}",
                           "check the server's log"))
    finally:
        await wire.aclose()
    return out


async def _round_trip(s: _Session, name: str, user: str, password: str) -> list[Finding]:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")
    _, final = await s.command(f'AUTHENTICATE "PLAIN" "{token}"',
                               shown='AUTHENTICATE "PLAIN" "<redacted>"')
    if not final.upper().startswith("OK"):
        return [Finding("fail", "managesieve", f"{name}: login as {user} failed: {final}",
                        "check the user and password")]
    good = GOOD_SCRIPT.encode()
    _, ok = await s.command(f"CHECKSCRIPT {{{len(good)}+}}\r\n{GOOD_SCRIPT}")
    bad = BAD_SCRIPT.encode()
    _, no = await s.command(f"CHECKSCRIPT {{{len(bad)}+}}\r\n{BAD_SCRIPT}")
    if ok.upper().startswith("OK") and no.upper().startswith("NO") and "line 4" in no:
        return [Finding("ok", "managesieve", f"{name}: logged in as {user}; CHECKSCRIPT "
                        "accepts a valid script and names the line of an error")]
    return [Finding("fail", "managesieve", f"{name}: CHECKSCRIPT round trip wrong "
                    f"(valid script: {ok}; broken script: {no})", "report this as a bug")]
