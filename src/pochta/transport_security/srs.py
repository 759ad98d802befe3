"""The Sender Rewriting Scheme (SRS, Shevek's scheme as postsrsd and Postfix use it), so
that mail an alias forwards to another domain passes SPF there, and bounces find their
way back.

When the queue sends a message whose envelope sender is not in one of our domains (we are
forwarding it: an alias to an outside address, or a relay), the sender is rewritten:

    alice@sender.example        -> SRS0=HHHH=TT=sender.example=alice@SRSDOMAIN
    SRS0=h=t=orig.example=bob@fwd.example (already rewritten by a forwarder before us)
                                -> SRS1=HHHH=fwd.example==h=t=orig.example=bob@SRSDOMAIN

HHHH: the first 4 characters of base64(HMAC-SHA1(secret, the rest, case-folded));
TT: days since the epoch, mod 1024, in 2 base32 characters. A bounce to such an address
(RCPT TO) is checked (hash, at most ``max_age_days`` old) and forwarded to the address
it wraps; anything forged or stale is an unknown user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from pathlib import Path

from pochta.mail.addresses import domain_key

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
SEP = "="


class SRS:
    def __init__(self, secret: bytes, domain: str, *, max_age_days: int = 21,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.domain = domain_key(domain)
        self.max_age_days = max_age_days
        self.clock = clock

    def _hash(self, *parts: str) -> str:
        mac = hmac.new(self.secret, "".join(parts).lower().encode("utf-8"), hashlib.sha1)
        return base64.b64encode(mac.digest()).decode("ascii")[:4]

    def _timestamp(self) -> str:
        days = int(self.clock() // 86400) % 1024
        return _B32[days >> 5] + _B32[days & 31]

    def _age_ok(self, ts: str) -> bool:
        if len(ts) != 2 or any(c not in _B32 for c in ts.upper()):
            return False
        then = (_B32.index(ts.upper()[0]) << 5) | _B32.index(ts.upper()[1])
        now = int(self.clock() // 86400) % 1024
        return (now - then) % 1024 <= self.max_age_days

    def forward(self, sender: str) -> str:
        """The rewritten envelope sender ("" stays "": bounces are never rewritten)."""
        if not sender or "@" not in sender:
            return sender
        local, _, domain = sender.rpartition("@")
        if domain_key(domain) == self.domain and not is_srs(local):
            return sender
        low = local.lower()
        if low.startswith("srs0" + SEP):
            # SRS1: keep the first forwarder's domain and its opaque part
            rest = local[5:]
            h = self._hash(domain, rest)
            return f"SRS1={h}={domain}=={rest}@{self.domain}"
        if low.startswith("srs1" + SEP):
            parts = local[5:].split(SEP, 2)  # HHHH, first forwarder, =opaque
            if len(parts) == 3 and parts[2].startswith(SEP):
                first, opaque = parts[1], parts[2][1:]
                h = self._hash(first, opaque)
                return f"SRS1={h}={first}=={opaque}@{self.domain}"
        ts = self._timestamp()
        h = self._hash(ts, domain, local)
        return f"SRS0={h}={ts}={domain}={local}@{self.domain}"

    def reverse(self, address: str) -> str | None:
        """The address a bounce to ``address`` goes to, or None (not SRS, forged, stale,
        or not for our SRS domain)."""
        local, _, domain = address.rpartition("@")
        if domain_key(domain) != self.domain:
            return None
        low = local.lower()
        if low.startswith("srs0" + SEP):
            parts = local[5:].split(SEP, 3)
            if len(parts) != 4:
                return None
            h, ts, orig_domain, orig_local = parts
            if not hmac.compare_digest(h.lower(), self._hash(ts, orig_domain, orig_local)
                                       .lower()) or not self._age_ok(ts):
                return None
            return f"{orig_local}@{orig_domain}"
        if low.startswith("srs1" + SEP):
            parts = local[5:].split(SEP, 2)
            if len(parts) != 3 or not parts[2].startswith(SEP):
                return None
            h, first, opaque = parts
            if not hmac.compare_digest(h.lower(), self._hash(first, opaque[1:]).lower()):
                return None
            return f"SRS0{opaque}@{first}"
        return None


def is_srs(local: str) -> bool:
    return local.lower().startswith(("srs0=", "srs1="))


def load_secret(path: Path) -> bytes:
    """The SRS secret in ``path``, made (32 random bytes, hex, mode 0600) if missing."""
    try:
        return path.read_text(encoding="ascii").strip().encode()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        secret = os.urandom(32).hex()
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secret + "\n")
        return secret.encode()
