"""SPF (RFC 7208): an asynchronous ``check_host()`` over the shared ``Resolver``.

Evaluation is recursive (include, redirect), so it is written here as an async evaluator
rather than wrapping pyspf's synchronous DNS hook. The RFC's processing limits hold for the
whole evaluation: at most 10 terms that cause DNS queries (§4.6.4), at most 2 void lookups,
at most 10 MX hosts per "mx" and 10 PTR names per "ptr".
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

from pochta.dns import Resolver, TemporaryDNSError
from pochta.mail.addresses import domain_key

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")

MAX_DNS_TERMS = 10  # §4.6.4
MAX_VOID_LOOKUPS = 2  # §4.6.4
MAX_MX = 10
MAX_PTR = 10

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class SPFResult:
    result: str  # one of RESULTS
    domain: str = ""  # the domain whose policy was checked
    identity: str = "mailfrom"  # "mailfrom" or "helo" (RFC 7208 §2.3, §2.4)
    sender: str = ""  # the checked <sender> (postmaster@helo for the HELO identity)
    explanation: str = ""  # §6.2, for fail results
    reason: str = ""  # the mechanism that matched or the error
    helo: SPFResult | None = field(default=None, compare=False)  # the HELO check, if made


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


# --- syntax ---------------------------------------------------------------------------

_MACRO_RE = re.compile(r"%\{([slodiphcrtvSLODIPHCRTV])([0-9]*)(r?)([.\-+,/_=]*)\}", re.ASCII)
_TOPLABEL_RE = re.compile(
    r"^(?:[a-z0-9]*[a-z][a-z0-9]*|[a-z0-9]+-[a-z0-9-]*[a-z0-9])$", re.ASCII | re.IGNORECASE
)
_MODIFIER_RE = re.compile(r"^([A-Za-z][A-Za-z0-9\-_.]*)=(.*)$", re.DOTALL)
_MECH_RE = re.compile(r"^([+\-~?]?)([A-Za-z][A-Za-z0-9]*)(.*)$", re.DOTALL)
_CIDR_RE = re.compile(r"^(.*?)(?:/(0|[1-9][0-9]*))?(?://(0|[1-9][0-9]*))?$", re.DOTALL)


def _tokenize_macro_string(s: str, explain: bool = False) -> list[str | re.Match[str]]:
    """Split into literals and macro matches; permerror on a bad '%' or character (§7.1)."""
    out: list[str | re.Match[str]] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "%":
            nxt = s[i + 1 : i + 2]
            if nxt == "%":
                out.append("%")
                i += 2
            elif nxt == "_":
                out.append(" ")
                i += 2
            elif nxt == "-":
                out.append("%20")
                i += 2
            else:
                m = _MACRO_RE.match(s, i)
                if not m:
                    raise _PermError(f"bad macro in {s!r}")
                if m.group(1).lower() in "crt" and not explain:
                    raise _PermError(f"%{{{m.group(1)}}} is only allowed in exp (§7.2)")
                out.append(m)
                i = m.end()
        else:
            if not (0x21 <= ord(c) <= 0x7E or (explain and c == " ")):
                raise _PermError(f"invalid character {c!r} in {s!r}")
            out.append(c)
            i += 1
    return out


def _check_domain_spec(spec: str) -> None:
    """domain-spec = macro-string domain-end (§7.1)."""
    if not spec:
        raise _PermError("empty domain-spec")
    tokens = _tokenize_macro_string(spec)
    if tokens and isinstance(tokens[-1], re.Match):
        return  # ends in macro-expand
    if spec.endswith(("%%", "%_", "%-")) and not spec.endswith("%%%"):
        return
    literal = spec[:-1] if spec.endswith(".") else spec
    if "." not in literal:
        raise _PermError(f"domain-spec {spec!r} lacks a top label")
    top = literal.rsplit(".", 1)[1]
    if "%" in top or not _TOPLABEL_RE.match(top):
        raise _PermError(f"domain-spec {spec!r} has an invalid top label")


@dataclass(slots=True)
class _Term:
    qualifier: str
    name: str
    spec: str | None = None  # domain-spec (unexpanded) or ip network text
    cidr4: int | None = None
    cidr6: int | None = None


@dataclass(slots=True)
class _Record:
    terms: list[_Term]
    redirect: str | None
    exp: str | None


def _parse_record(text: str) -> _Record:
    if not text.isascii():
        raise _PermError("non-ASCII character in SPF record")
    terms: list[_Term] = []
    redirect = exp = None
    for raw in text.split(" ")[1:]:
        if not raw:
            continue  # one or more SP separate terms (§4.6.1)
        mod = _MODIFIER_RE.match(raw)  # name "=" comes before any ":" or "/" (§4.6.1)
        if mod:
            name, value = mod.group(1).lower(), mod.group(2)
            if name == "redirect":
                if redirect is not None:
                    raise _PermError("redirect appears twice")
                _check_domain_spec(value)
                redirect = value
            elif name == "exp":
                if exp is not None:
                    raise _PermError("exp appears twice")
                _check_domain_spec(value)
                exp = value
            else:
                _tokenize_macro_string(value)  # unknown modifiers are ignored, not unchecked
            continue
        mm = _MECH_RE.match(raw)
        if not mm:
            raise _PermError(f"unknown term {raw!r}")
        terms.append(_parse_mechanism(mm.group(1) or "+", mm.group(2).lower(), mm.group(3), raw))
    return _Record(terms, redirect, exp)


def _parse_mechanism(qualifier: str, name: str, rest: str, raw: str) -> _Term:
    if name not in _MECHANISMS or (rest and rest[0] not in ":/"):
        raise _PermError(f"unknown mechanism {raw!r}")
    if name == "all":
        if rest:
            raise _PermError(f"bad term {raw!r}")
        return _Term(qualifier, name)
    if name in ("include", "exists"):
        if not rest.startswith(":"):
            raise _PermError(f"{name} needs a domain: {raw!r}")
        _check_domain_spec(rest[1:])
        return _Term(qualifier, name, rest[1:])
    if name in ("ip4", "ip6"):
        if not rest.startswith(":"):
            raise _PermError(f"{name} needs a network: {raw!r}")
        addr, _, cidr = rest[1:].partition("/")
        try:
            if name == "ip4":
                ipaddress.IPv4Address(addr)
                bits, maxlen = (32 if not cidr else _cidr(cidr)), 32
            else:
                ipaddress.IPv6Address(addr)
                bits, maxlen = (128 if not cidr else _cidr(cidr)), 128
        except ValueError:
            raise _PermError(f"bad network in {raw!r}") from None
        if bits > maxlen:
            raise _PermError(f"bad prefix length in {raw!r}")
        return _Term(qualifier, name, addr, bits if name == "ip4" else None,
                     bits if name == "ip6" else None)
    # a, mx, ptr: [":" domain-spec] [dual-cidr-length]
    m = _CIDR_RE.match(rest)
    assert m is not None  # the pattern matches any string
    spec_part, c4, c6 = m.group(1), m.group(2), m.group(3)
    if name == "ptr" and (c4 or c6):
        raise _PermError(f"ptr takes no prefix length: {raw!r}")
    if spec_part:
        if not spec_part.startswith(":"):
            raise _PermError(f"bad term {raw!r}")
        _check_domain_spec(spec_part[1:])
    cidr4 = int(c4) if c4 is not None else None
    cidr6 = int(c6) if c6 is not None else None
    if (cidr4 is not None and cidr4 > 32) or (cidr6 is not None and cidr6 > 128):
        raise _PermError(f"bad prefix length in {raw!r}")
    return _Term(qualifier, name, spec_part[1:] if spec_part else None, cidr4, cidr6)


def _cidr(text: str) -> int:
    if not re.fullmatch(r"0|[1-9][0-9]*", text):
        raise ValueError(text)
    return int(text)


def _valid_dns_name(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return (
        bool(name) and len(name.rstrip(".")) <= 253
        and all(0 < len(x) <= 63 for x in labels)
    )


def _is_fqdn(domain: str) -> bool:
    """§4.3: a domain we can check (not a literal, at least two labels, valid lengths)."""
    d = domain.rstrip(".")
    return "." in d and _valid_dns_name(d) and not d.startswith("[")


# --- evaluation ---------------------------------------------------------------------------


class _Evaluator:
    def __init__(
        self, ip: IPAddress, sender: str, helo: str, resolver: Resolver, receiver: str,
        now: float | None,
    ) -> None:
        self.ip = ip
        local, _, sdomain = sender.rpartition("@")
        self.local = local or "postmaster"
        self.sender_domain = sdomain
        self.sender = f"{self.local}@{sdomain}"
        self.helo = helo
        self.resolver = resolver
        self.receiver = receiver
        self.now = now
        self.dns_terms = 0
        self.void = 0

    # -- DNS helpers
    def _count_term(self) -> None:
        self.dns_terms += 1
        if self.dns_terms > MAX_DNS_TERMS:
            raise _PermError("more than 10 DNS-querying terms (RFC 7208 §4.6.4)")

    def _void(self, answers: Sequence[object]) -> None:
        if not answers:
            self.void += 1
            if self.void > MAX_VOID_LOOKUPS:
                raise _PermError("more than 2 void lookups (RFC 7208 §4.6.4)")

    async def _addresses(self, name: str) -> list[str]:
        try:
            if isinstance(self.ip, ipaddress.IPv4Address):
                return await self.resolver.a(name)
            return await self.resolver.aaaa(name)
        except TemporaryDNSError as exc:
            raise _TempError(str(exc)) from exc

    def _in_net(self, addr: str, cidr4: int | None, cidr6: int | None) -> bool:
        try:
            a = ipaddress.ip_address(addr)
        except ValueError:
            return False
        if a.version != self.ip.version:
            return False
        bits = (32 if cidr4 is None else cidr4) if a.version == 4 else (
            128 if cidr6 is None else cidr6)
        net = ipaddress.ip_network(f"{a}/{bits}", strict=False)
        return self.ip in net

    async def _validated_names(self, limit_lookups: bool = True) -> list[str]:
        """§5.5: PTR names whose own A/AAAA lead back to the IP."""
        try:
            names = await self.resolver.ptr(str(self.ip))
        except TemporaryDNSError:
            return []  # a DNS error makes ptr not match
        if limit_lookups:
            self._void(names)
        out = []
        for name in names[:MAX_PTR]:
            try:
                addrs = await self._addresses(name)
            except _TempError:
                continue
            if any(self._in_net(a, None, None) for a in addrs):
                out.append(name.rstrip(".").lower())
        return out

    # -- macros (§7)
    async def expand(self, spec: str, domain: str, explain: bool = False) -> str:
        out = []
        for tok in _tokenize_macro_string(spec, explain):
            if isinstance(tok, str):
                out.append(tok)
                continue
            letter, digits, reverse, delims = tok.groups()
            value = await self._macro_value(letter.lower(), domain)
            parts = re.split("[" + re.escape(delims or ".") + "]", value)
            if reverse:
                parts.reverse()
            if digits:
                n = int(digits)
                if n == 0:
                    raise _PermError("macro digit transformer of 0")
                parts = parts[-n:]
            text = ".".join(parts)
            if letter.isupper():
                text = urllib.parse.quote(text, safe="")
            out.append(text)
        return "".join(out)

    async def _macro_value(self, letter: str, domain: str) -> str:
        if letter == "s":
            return self.sender
        if letter == "l":
            return self.local
        if letter == "o":
            return self.sender_domain
        if letter == "d":
            return domain
        if letter == "i":
            if isinstance(self.ip, ipaddress.IPv4Address):
                return str(self.ip)
            return ".".join(self.ip.exploded.replace(":", ""))
        if letter == "v":
            return "in-addr" if self.ip.version == 4 else "ip6"
        if letter == "h":
            return self.helo
        if letter == "c":
            return str(self.ip)
        if letter == "r":
            return self.receiver or "unknown"
        if letter == "t":
            return str(int(self.now if self.now is not None else time.time()))
        # "p": a validated name, preferably the domain itself or a subdomain (§7.3)
        names = await self._validated_names(limit_lookups=False)
        for n in names:
            if n == domain.lower():
                return n
        for n in names:
            if n.endswith("." + domain.lower()):
                return n
        return names[0] if names else "unknown"

    async def target(self, spec: str | None, domain: str) -> str:
        if spec is None:
            return domain
        name = await self.expand(spec, domain)
        name = name.rstrip(".")
        while len(name) > 253 and "." in name:  # §7.3: drop labels from the left
            name = name.split(".", 1)[1]
        return name

    # -- check_host (§4)
    async def check_host(self, domain: str) -> tuple[str, str, str]:
        """(result, explanation, reason)."""
        domain = domain.rstrip(".")
        if not _is_fqdn(domain):
            return "none", "", f"{domain!r} is not a valid domain"
        try:
            records = await self.resolver.txt(domain)
        except TemporaryDNSError as exc:
            return "temperror", "", str(exc)
        spf = [r for r in records if re.match(r"^v=spf1( |$)", r, re.IGNORECASE)]
        if not spf:
            return "none", "", f"no SPF record at {domain}"
        if len(spf) > 1:
            return "permerror", "", f"{len(spf)} SPF records at {domain} (§4.5)"
        try:
            record = _parse_record(spf[0])
            return await self._evaluate(record, domain)
        except _PermError as exc:
            return "permerror", "", str(exc)
        except _TempError as exc:
            return "temperror", "", str(exc)

    async def _evaluate(self, record: _Record, domain: str) -> tuple[str, str, str]:
        for term in record.terms:
            if await self._matches(term, domain):
                result = _QUALIFIERS[term.qualifier]
                expl = await self._explain(record, domain) if result == "fail" else ""
                return result, expl, f"matched {term.qualifier}{term.name}"
        # §6.1: redirect applies when no mechanism matched (an "all" always matches)
        if record.redirect is not None:
            self._count_term()
            target = await self.target(record.redirect, domain)
            if not _is_fqdn(target):
                raise _PermError(f"redirect to invalid domain {target!r}")
            result, expl, reason = await self.check_host(target)
            if result == "none":
                raise _PermError(f"redirect to {target} found no SPF record")
            return result, expl, reason
        return "neutral", "", "no mechanism matched"

    async def _explain(self, record: _Record, domain: str) -> str:
        """§6.2: errors while building the explanation leave it empty."""
        if record.exp is None:
            return ""
        try:
            target = await self.target(record.exp, domain)
            if not _is_fqdn(target):
                return ""
            texts = await self.resolver.txt(target)
            if len(texts) != 1 or not texts[0].isascii():
                return ""
            return await self.expand(texts[0], domain, explain=True)
        except (_PermError, _TempError, TemporaryDNSError):
            return ""

    async def _matches(self, term: _Term, domain: str) -> bool:
        name = term.name
        if name == "all":
            return True
        if name == "ip4" or name == "ip6":
            assert term.spec is not None
            return self._in_net(term.spec, term.cidr4, term.cidr6)
        self._count_term()
        target = await self.target(term.spec, domain)
        if name == "include":
            if not _is_fqdn(target):
                raise _PermError(f"include of invalid domain {target!r}")
            result, _, reason = await self.check_host(target)
            # §5.2: the included result only decides whether this mechanism matches
            if result == "pass":
                return True
            if result in ("fail", "softfail", "neutral"):
                return False
            if result == "temperror":
                raise _TempError(reason)
            raise _PermError(f"include:{target}: {result} ({reason})")
        if not _valid_dns_name(target):
            return False  # an unusable name cannot match (RFC 7208 leaves this open)
        if name == "a":
            addrs = await self._addresses(target)
            self._void(addrs)
            return any(self._in_net(a, term.cidr4, term.cidr6) for a in addrs)
        if name == "mx":
            try:
                mxs = await self.resolver.mx(target)
            except TemporaryDNSError as exc:
                raise _TempError(str(exc)) from exc
            self._void(mxs)
            if len(mxs) > MAX_MX:
                raise _PermError(f"{target} has more than {MAX_MX} MX records (§4.6.4)")
            for mx in mxs:
                if not mx.host:
                    continue
                addrs = await self._addresses(mx.host)
                if any(self._in_net(a, term.cidr4, term.cidr6) for a in addrs):
                    return True
            return False
        if name == "ptr":
            target = target.lower()
            for n in await self._validated_names():
                if n == target or n.endswith("." + target):
                    return True
            return False
        # exists: always an A query (§5.7)
        try:
            addrs = await self.resolver.a(target)
        except TemporaryDNSError as exc:
            raise _TempError(str(exc)) from exc
        self._void(addrs)
        return bool(addrs)


def _parse_ip(ip: str) -> IPAddress | None:
    try:
        addr = ipaddress.ip_address(ip.strip().removeprefix("IPv6:").strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


async def check_host(
    ip: str, domain: str, sender: str, resolver: Resolver, *, helo: str = "",
    receiver: str = "", now: float | None = None,
) -> tuple[str, str, str]:
    """RFC 7208 §4 check_host(): (result, explanation, reason)."""
    addr = _parse_ip(ip)
    if addr is None:
        return "permerror", "", f"{ip!r} is not an IP address"
    ev = _Evaluator(addr, sender, helo, resolver, receiver, now)
    return await ev.check_host(domain)


async def check_spf(
    ip: str, mail_from: str, helo: str, resolver: Resolver, *, receiver: str = "",
    check_helo: bool = True,
) -> SPFResult:
    """Check the MAIL FROM identity (or, for the null sender, the HELO identity, §2.4).

    The HELO identity is also checked when ``check_helo`` and attached as ``.helo``.
    """
    helo = helo.strip()
    helo_result: SPFResult | None = None
    if check_helo or not mail_from:
        helo_sender = f"postmaster@{helo}"
        if _is_fqdn(helo):
            res, expl, reason = await check_host(ip, helo, helo_sender, resolver, helo=helo,
                                                 receiver=receiver)
        else:
            res, expl, reason = "none", "", "HELO name is not a domain"
        helo_result = SPFResult(res, helo.lower(), "helo", helo_sender, expl, reason)
    if not mail_from:
        assert helo_result is not None
        return helo_result
    local, at, domain = mail_from.rpartition("@")
    if not at:
        domain, local = mail_from, ""
    domain = domain_key(domain)
    sender = f"{local or 'postmaster'}@{domain}"
    res, expl, reason = await check_host(ip, domain, sender, resolver, helo=helo,
                                         receiver=receiver)
    return SPFResult(res, domain, "mailfrom", sender, expl, reason, helo_result)
