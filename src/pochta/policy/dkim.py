"""DKIM (RFC 6376) signing and verification, rsa-sha256 and ed25519-sha256 (RFC 8463).

Signing: dkim_sign.py (the ``cryptography`` library, a cached key); dkimpy signs only
messages with bare LF line ends. Verification: dkimpy does the canonicalisation and
cryptography. Its DNS hook is synchronous, so
verification first fetches every ``s._domainkey.d`` key record through our async
``Resolver`` and hands dkimpy a lookup function that answers from that table; the CPU work
(RSA, hashing) runs in a worker thread.

Keys live in the data directory, one PEM file per key::

    data_dir/dkim/<domain>/<selector>.<rsa|ed25519>.pem
    data_dir/dkim/<domain>/active        selectors that sign, one per line

A new selector made by ``rotate`` stays inactive (its DNS record published beside the old
one) until ``activate`` switches signing to it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from pochta.dns import Resolver, TemporaryDNSError
from pochta.mail.addresses import domain_key
from pochta.mail.headers import header_fields, split_header
from pochta.policy import dkim_sign

ALGORITHMS = ("rsa", "ed25519")
_SIG_ALGORITHM = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}

# RFC 6376 §5.4.1 recommended fields plus RFC 2369/8058 list fields; those present are
# signed, each as often as it occurs.
SIGNED_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "content-id",
    "content-description", "content-disposition", "in-reply-to", "references",
    "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc",
    "resent-message-id", "list-id", "list-help", "list-unsubscribe", "list-unsubscribe-post",
    "list-subscribe", "list-post", "list-owner", "list-archive",
)  # fmt: skip
# Listed once more than present ("over-signed", RFC 6376 §8.15) so that nobody can add
# another instance without breaking the signature.
OVERSIGNED_HEADERS = ("from",)

MAX_SIGNATURES = 10  # RFC 6376 §6.1: verifiers MAY limit the number of signatures checked
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?"
_SELECTOR_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


class DKIMError(Exception):
    """A key cannot be created or loaded, or a message cannot be signed."""


# --- keys --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class DKIMKey:
    domain: str
    selector: str
    algorithm: str  # "rsa" or "ed25519"
    path: Path  # the private key, PEM

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def private_key(self) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
        try:
            key = serialization.load_pem_private_key(self.path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise DKIMError(f"{self.path}: cannot load private key: {exc}") from exc
        if self.algorithm == "rsa" and isinstance(key, rsa.RSAPrivateKey):
            return key
        if self.algorithm == "ed25519" and isinstance(key, ed25519.Ed25519PrivateKey):
            return key
        raise DKIMError(f"{self.path}: not an {self.algorithm} private key")

    def public_key_b64(self) -> str:
        """The p= value: SubjectPublicKeyInfo for RSA, the raw 32 bytes for ed25519."""
        key = self.private_key()
        if isinstance(key, rsa.RSAPrivateKey):
            der = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        else:
            der = key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        return base64.b64encode(der).decode("ascii")

    def _dkimpy_private(self) -> bytes:
        """What dkimpy's signer takes: PKCS#1 PEM (RSA) or the base64 seed (ed25519)."""
        key = self.private_key()
        if isinstance(key, rsa.RSAPrivateKey):
            return key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        seed = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return base64.b64encode(seed)


def dns_txt_record(key: DKIMKey) -> str:
    """The TXT record to publish at ``key.dns_name`` (RFC 6376 §3.6.1, RFC 8463 §4)."""
    return f"v=DKIM1; k={key.algorithm}; p={key.public_key_b64()}"


def _domain_dir(data_dir: Path, domain: str) -> Path:
    domain = domain_key(domain)
    if not domain or "/" in domain or domain.startswith(".") or ".." in domain:
        raise DKIMError(f"{domain!r} is not a domain name")
    return Path(data_dir) / "dkim" / domain


def key_path(data_dir: Path, domain: str, selector: str, algorithm: str) -> Path:
    return _domain_dir(data_dir, domain) / f"{selector}.{algorithm}.pem"


def check_selector(selector: str) -> str:
    sel = selector.lower()
    if not _SELECTOR_RE.match(sel):
        raise DKIMError(f"{selector!r} is not a valid selector (DNS labels: a-z, 0-9, -)")
    return sel


def generate_key(
    data_dir: Path, domain: str, selector: str, algorithm: str = "rsa", bits: int = 2048
) -> DKIMKey:
    """Create and store a new private key (mode 0600); refuses to overwrite one."""
    if algorithm not in ALGORITHMS:
        raise DKIMError(f"unknown algorithm {algorithm!r} (rsa or ed25519)")
    selector = check_selector(selector)
    domain = domain_key(domain)
    path = key_path(data_dir, domain, selector, algorithm)
    if any(key_path(data_dir, domain, selector, a).exists() for a in ALGORITHMS):
        raise DKIMError(f"selector {selector!r} already exists for {domain}")
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        if bits < 1024:
            raise DKIMError("RSA keys must have at least 1024 bits (RFC 8301)")
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        fmt = serialization.PrivateFormat.TraditionalOpenSSL  # PKCS#1, read by every tool
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        fmt = serialization.PrivateFormat.PKCS8
    pem = private.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return DKIMKey(domain, selector, algorithm, path)


def load_keys(data_dir: Path, domain: str | None = None) -> list[DKIMKey]:
    """Every stored key (of one domain, or all), sorted by domain and selector."""
    root = Path(data_dir) / "dkim"
    dirs = [_domain_dir(data_dir, domain)] if domain else sorted(root.glob("*"))
    keys = []
    for d in dirs:
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.pem")):
            parts = p.name.split(".")
            if len(parts) >= 3 and parts[-2] in ALGORITHMS:
                keys.append(DKIMKey(d.name, ".".join(parts[:-2]), parts[-2], p))
    return sorted(keys)


def active_selectors(data_dir: Path, domain: str) -> list[str]:
    path = _domain_dir(data_dir, domain) / "active"
    try:
        lines = path.read_text(encoding="ascii").split()
    except OSError:
        return []
    return [line.strip().lower() for line in lines if line.strip()]


def _write_active(data_dir: Path, domain: str, selectors: Sequence[str]) -> None:
    path = _domain_dir(data_dir, domain) / "active"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(s + "\n" for s in selectors), encoding="ascii")
    os.replace(tmp, path)


def activate(data_dir: Path, domain: str, selector: str) -> list[DKIMKey]:
    """Make ``selector`` sign for its algorithm(s), replacing the active key of the same
    algorithm. Returns the domain's active keys afterwards."""
    selector = check_selector(selector)
    keys = load_keys(data_dir, domain)
    chosen = [k for k in keys if k.selector == selector]
    if not chosen:
        raise DKIMError(f"no key with selector {selector!r} for {domain}")
    algs = {k.algorithm for k in chosen}
    by_sel = {k.selector: k for k in keys}
    keep = [
        s for s in active_selectors(data_dir, domain)
        if s in by_sel and by_sel[s].algorithm not in algs
    ]
    _write_active(data_dir, domain, [*keep, selector])
    return signing_keys(data_dir, domain)


def remove_key(data_dir: Path, domain: str, selector: str) -> list[DKIMKey]:
    """Delete a retired key (every algorithm under ``selector``); an active one is
    refused, since mail signed with it would stop verifying at once. Returns the keys
    removed."""
    selector = check_selector(selector)
    keys = [k for k in load_keys(data_dir, domain) if k.selector == selector]
    if not keys:
        raise DKIMError(f"no key with selector {selector!r} for {domain}")
    if selector in active_selectors(data_dir, domain):
        raise DKIMError(f"selector {selector!r} signs {domain}'s mail; activate another "
                        "key first ('pochta dkim rotate', then 'pochta dkim activate')")
    for k in keys:
        k.path.unlink()
    return keys


def remove_domain_keys(data_dir: Path, domain: str) -> list[DKIMKey]:
    """Delete every key of ``domain`` (for ``pochta domain remove``). Returns them."""
    keys = load_keys(data_dir, domain)
    for k in keys:
        k.path.unlink()
    ddir = _domain_dir(data_dir, domain)
    if ddir.is_dir():
        (ddir / "active").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            ddir.rmdir()
    return keys


def signing_keys(data_dir: Path, domain: str) -> list[DKIMKey]:
    """The keys that sign mail from ``domain`` (RSA first, then ed25519)."""
    active = set(active_selectors(data_dir, domain))
    keys = [k for k in load_keys(data_dir, domain) if k.selector in active]
    return sorted(keys, key=lambda k: (ALGORITHMS.index(k.algorithm), k.selector))


def new_selector(data_dir: Path, domain: str, algorithm: str, today: datetime.date | None = None
                 ) -> str:
    """A fresh selector named after the month: ``202611r`` (RSA), ``202611e`` (ed25519),
    then ``202611r2``... if that one is taken."""
    day = today or datetime.date.today()
    base = f"{day:%Y%m}{algorithm[0]}"
    taken = {k.selector for k in load_keys(data_dir, domain)}
    sel, n = base, 1
    while sel in taken:
        n += 1
        sel = f"{base}{n}"
    return sel


def ensure_domain_keys(
    data_dir: Path, domain: str, algorithms: Sequence[str] = ALGORITHMS, bits: int = 2048
) -> list[DKIMKey]:
    """For ``pochta init`` and ``pochta domain add``: make and activate one key per algorithm
    that has no active key yet. Returns the domain's signing keys."""
    have = {k.algorithm for k in signing_keys(data_dir, domain)}
    for alg in algorithms:
        if alg not in have:
            key = generate_key(data_dir, domain, new_selector(data_dir, domain, alg), alg, bits)
            activate(data_dir, domain, key.selector)
    return signing_keys(data_dir, domain)


# --- signing ---------------------------------------------------------------------------


def _header_names(message: bytes) -> list[bytes]:
    """Lower-cased names of the header fields, in order (unfolding continuations)."""
    return [name.lower() for name, _ in header_fields(split_header(message)[0]) if name]


def headers_to_sign(message: bytes) -> list[bytes]:
    names = _header_names(message)
    include: list[bytes] = []
    for h in SIGNED_HEADERS:
        hb = h.encode("ascii")
        count = names.count(hb) + (1 if h in OVERSIGNED_HEADERS else 0)
        include.extend([hb] * count)
    return include


def sign_sync(message: bytes, keys: Sequence[DKIMKey]) -> bytes:
    """The DKIM-Signature header fields (CRLF-terminated) to prepend, one per key."""
    if b"from" not in _header_names(message):
        raise DKIMError("message has no From header field (RFC 6376 §5.4: From must be signed)")
    include = headers_to_sign(message)
    out = []
    fast = dkim_sign.supported(message)
    for key in keys:
        if fast:  # cryptography with a cached key (dkim_sign.py): ~1 ms, not ~46 ms
            try:
                loaded = dkim_sign.cached_private_key(key.path)
            except (OSError, ValueError) as exc:
                raise DKIMError(f"{key.path}: cannot load private key: {exc}") from exc
            if (key.algorithm == "rsa") != isinstance(loaded, rsa.RSAPrivateKey):
                raise DKIMError(f"{key.path}: not an {key.algorithm} private key")
            out.append(dkim_sign.sign_message(message, key.domain, key.selector, loaded,
                                              include))
            continue
        signer = dkimpy.DKIM(message, linesep=b"\r\n")
        private = key._dkimpy_private()
        try:
            header = signer.sign(
                key.selector.encode("ascii"), key.domain.encode("ascii"), private,
                signature_algorithm=_SIG_ALGORITHM[key.algorithm],
                canonicalize=(b"relaxed", b"relaxed"), include_headers=include,
            )
        except dkimpy.DKIMException as exc:
            raise DKIMError(f"signing with {key.dns_name}: {exc}") from exc
        out.append(header if header.endswith(b"\r\n") else header + b"\r\n")
    return b"".join(out)


async def sign(message: bytes, keys: Sequence[DKIMKey]) -> bytes:
    """Async ``sign_sync``: the crypto runs in a worker thread."""
    if not keys:
        return b""
    return await asyncio.to_thread(sign_sync, message, list(keys))


# --- verification -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DKIMResult:
    """One signature's outcome; ``result`` uses RFC 8601 §2.7.1 words:
    pass, fail, neutral, policy, temperror, permerror."""

    result: str
    domain: str = ""  # d= (the SDID, lower case)
    selector: str = ""
    algorithm: str = ""  # a=
    identity: str = ""  # i=
    b: str = ""  # the start of b= (RFC 6008 header.b)
    reason: str = ""


def _unfold_sig_headers(message: bytes) -> list[bytes]:
    """Raw values of the DKIM-Signature header fields, top first."""
    try:
        headers, _ = dkimpy.rfc822_parse(message)
    except dkimpy.DKIMException:
        return []
    return [v for k, v in headers if k.lower() == b"dkim-signature"]


def _parse_sig(value: bytes) -> dict[bytes, bytes] | None:
    try:
        tags = dkimpy.util.parse_tag_value(value)
    except (dkimpy.util.InvalidTagValueList, ValueError):
        return None
    return dict(tags)


def _ascii(v: bytes | None) -> str:
    return (v or b"").decode("ascii", "replace")


def _valid_domain(name: str) -> bool:
    labels = name.split(".")
    return (
        len(name) <= 253 and len(labels) >= 1
        and all(0 < len(x) <= 63 and x.isascii() and " " not in x for x in labels)
    )


async def verify(message: bytes, resolver: Resolver) -> list[DKIMResult]:
    """Verify every DKIM-Signature (up to ``MAX_SIGNATURES``), top first."""
    raw = _unfold_sig_headers(message)[:MAX_SIGNATURES]
    if not raw:
        return []
    sigs = [_parse_sig(v) for v in raw]
    names: dict[int, str] = {}
    for i, sig in enumerate(sigs):
        if sig and b"s" in sig and b"d" in sig:
            name = f"{_ascii(sig[b's'])}._domainkey.{_ascii(sig[b'd'])}".lower()
            if _valid_domain(name):
                names[i] = name
    table: dict[str, list[str] | TemporaryDNSError] = {}

    async def fetch(name: str) -> None:
        try:
            table[name] = await resolver.txt(name)
        except TemporaryDNSError as exc:
            table[name] = exc

    await asyncio.gather(*(fetch(n) for n in set(names.values())))
    return await asyncio.to_thread(_verify_all, message, sigs, names, table)


def _verify_all(
    message: bytes,
    sigs: list[dict[bytes, bytes] | None],
    names: dict[int, str],
    table: dict[str, list[str] | TemporaryDNSError],
) -> list[DKIMResult]:
    return [_verify_one(message, i, sig, names.get(i), table) for i, sig in enumerate(sigs)]


def _key_record(records: list[str]) -> str | None:
    """RFC 6376 §3.6.2.2: one record expected; prefer one that looks like a DKIM key."""
    for r in records:
        if "p=" in r:
            return r
    return records[0] if records else None


def _verify_one(
    message: bytes,
    idx: int,
    sig: dict[bytes, bytes] | None,
    name: str | None,
    table: dict[str, list[str] | TemporaryDNSError],
) -> DKIMResult:
    if sig is None:
        return DKIMResult("permerror", reason="signature syntax error")
    base = DKIMResult(
        "permerror",
        domain=_ascii(sig.get(b"d")).lower(),
        selector=_ascii(sig.get(b"s")),
        algorithm=_ascii(sig.get(b"a")),
        identity=_ascii(sig.get(b"i")),
        b=re.sub(r"\s+", "", _ascii(sig.get(b"b")))[:8],
    )

    def res(result: str, reason: str) -> DKIMResult:
        return DKIMResult(result, base.domain, base.selector, base.algorithm, base.identity,
                          base.b, reason)

    try:
        dkimpy.validate_signature_fields(sig)
    except dkimpy.DKIMException as exc:
        return res("permerror", f"bad signature: {exc}")
    if name is None:
        return res("permerror", "bad d= or s=")
    # RFC 6376 §5.4: From MUST be signed
    h = [x.strip().lower() for x in sig.get(b"h", b"").split(b":")]
    if b"from" not in h:
        return res("permerror", "From not signed")
    records = table.get(name)
    if isinstance(records, TemporaryDNSError):
        return res("temperror", f"key lookup failed: {name}")  # RFC 6376 §6.1.2 TEMPFAIL
    record = _key_record(records or [])
    if record is None:
        return res("permerror", f"no key for signature ({name})")
    try:
        keytags = dict(dkimpy.util.parse_tag_value(record.encode("utf-8")))
    except (dkimpy.util.InvalidTagValueList, ValueError):
        return res("permerror", "key record syntax error")
    if not re.sub(rb"\s+", b"", keytags.get(b"p", b"")):
        return res("permerror", "key revoked")  # empty p= (RFC 6376 §3.6.1)
    if b"h" in keytags:
        allowed = [x.strip() for x in keytags[b"h"].split(b":")]
        if b"sha256" not in allowed:
            return res("permerror", "hash algorithm not allowed by key")
    ktag = keytags.get(b"k", b"rsa").strip()
    alg = sig.get(b"a", b"")
    if not alg.startswith(ktag + b"-"):
        return res("permerror", "key type does not match a=")
    try:
        dkimpy.evaluate_pk(name, record.encode("utf-8"))
    except dkimpy.DKIMException as exc:
        return res("permerror", f"bad key: {exc}")

    def dnsfunc(qname: bytes | str, timeout: float = 5) -> bytes | None:
        q = qname.decode("ascii", "replace") if isinstance(qname, bytes) else qname
        found = table.get(q.rstrip(".").lower())
        rec = _key_record(found) if isinstance(found, list) else None
        return rec.encode("utf-8") if rec is not None else None

    verifier = dkimpy.DKIM(message, minkey=1024)
    try:
        ok = verifier.verify(idx, dnsfunc=dnsfunc)
    except dkimpy.ValidationError as exc:
        if "body hash mismatch" in str(exc):
            return res("fail", "body hash did not verify")
        return res("permerror", str(exc))
    except dkimpy.KeyFormatError as exc:
        return res("permerror", str(exc))
    except dkimpy.DKIMException as exc:
        return res("permerror", str(exc))
    except Exception as exc:  # dkimpy on garbage input: never let it escape
        return res("permerror", f"cannot verify: {type(exc).__name__}")
    if ok:
        return res("pass", "")
    return res("fail", "signature did not verify")
