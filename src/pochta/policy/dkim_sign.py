"""Fast DKIM signing (RFC 6376, RFC 8463) with the ``cryptography`` library.

dkimpy, which verifies, also signed until issue 18 asked for bulk speed: per message it
re-read and re-parsed the PEM key and did RSA in pure Python (~46 ms a message with a
2048-bit key). Here the key is loaded once (cached by file, reloaded when the file
changes), relaxed/relaxed canonicalisation is a few regular expressions, and OpenSSL
signs: about 1-2 ms. Verification stays with dkimpy (dkim.py), and the tests check what
this module signs with dkimpy and libopendkim.

Only what ``dkim.sign_sync`` asks for is implemented: relaxed/relaxed, rsa-sha256 and
ed25519-sha256, CRLF messages (anything else goes back to dkimpy).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

_WSP_EOL = re.compile(rb"[\t ]+\r\n")
_WSP = re.compile(rb"[\t ]+")
_TRAILING_CRLF = re.compile(rb"(\r\n)+\Z")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_FIELD_START = re.compile(rb"^(?=[^ \t])", re.MULTILINE)

_keys: dict[Path, tuple[int, int, PrivateKey]] = {}
_keys_lock = threading.Lock()


def cached_private_key(path: Path) -> PrivateKey:
    """The key in ``path``, parsed once (OpenSSL's RSA key check is the slow part)."""
    st = os.stat(path)
    with _keys_lock:
        hit = _keys.get(path)
        if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
            return hit[2]
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path}: not an RSA or ed25519 private key")
    with _keys_lock:
        _keys[path] = (st.st_mtime_ns, st.st_size, key)
    return key


def supported(message: bytes) -> bool:
    """CRLF line ends only, and a final CRLF (what SMTP and the acceptance pipeline
    hold); other messages are signed by dkimpy, whose reading of a body without a final
    CRLF (trailing whitespace on that line) is what verifiers expect."""
    return message.endswith(b"\r\n") and _BARE_LF.search(message) is None


def split_message(message: bytes) -> tuple[list[bytes], bytes]:
    """(the header fields, each with its continuation lines and final CRLF; the body)."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        head, body = message, b""
        if not head.endswith(b"\r\n"):
            head += b"\r\n"
    else:
        head, body = message[:end + 2], message[end + 4:]
    fields = [f for f in _FIELD_START.split(head) if f]
    return fields, body


def relaxed_header(field: bytes) -> bytes:
    """RFC 6376 §3.4.2: lower-case name, unfolded, WSP runs to one SP, none around ':'
    or at the end."""
    name, _, value = field.partition(b":")
    value = value.replace(b"\r\n", b"")
    value = _WSP.sub(b" ", value).strip(b" ")
    return name.strip(b" \t").lower() + b":" + value


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4: no WSP at line ends, WSP runs to one SP, no empty lines at the
    end, a non-empty body ends with CRLF."""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    body = _WSP_EOL.sub(b"\r\n", body)
    body = _WSP.sub(b" ", body)
    body = _TRAILING_CRLF.sub(b"\r\n", body)
    return b"" if body == b"\r\n" else body


def _fold(prefix: str, items: Sequence[str], sep: str, width: int = 76) -> str:
    """``prefix`` followed by ``items`` joined by ``sep``, folded (CRLF TAB) at width."""
    out, line = [], prefix
    for i, item in enumerate(items):
        piece = item + (sep if i < len(items) - 1 else "")
        if len(line) + len(piece) > width and line.strip():
            out.append(line)
            line = "\t"
        line += piece
    out.append(line)
    return "\r\n".join(out)


def sign_message(message: bytes, domain: str, selector: str, key: PrivateKey,
                 include: Sequence[bytes], now: float | None = None) -> bytes:
    """One DKIM-Signature header field (CRLF-terminated), relaxed/relaxed, signing the
    fields named in ``include`` (a name listed more often than present over-signs it,
    RFC 6376 §5.4.2: instances are taken from the bottom up)."""
    fields, body = split_message(message)
    by_name: dict[bytes, list[bytes]] = {}
    for f in fields:
        by_name.setdefault(f.split(b":", 1)[0].strip(b" \t").lower(), []).append(f)
    signed: list[bytes] = []
    for name in include:
        instances = by_name.get(name)
        if instances:
            signed.append(relaxed_header(instances.pop()) + b"\r\n")
    bh = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode("ascii")
    algorithm = "rsa-sha256" if isinstance(key, rsa.RSAPrivateKey) else "ed25519-sha256"
    ts = int(time.time() if now is None else now)
    head = (f"DKIM-Signature: v=1; a={algorithm}; c=relaxed/relaxed; d={domain};"
            f" s={selector};\r\n\tt={ts}; ")
    h_tag = _fold("h=", [n.decode("ascii") for n in include], ":")
    unsigned = f"{head}{h_tag};\r\n\tbh={bh};\r\n\tb="
    data = b"".join(signed) + relaxed_header(unsigned.encode("ascii"))
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:  # RFC 8463 §3: Ed25519 over the SHA-256 hash
        sig = key.sign(hashlib.sha256(data).digest())
    b64 = base64.b64encode(sig).decode("ascii")
    chunks = [b64[i:i + 72] for i in range(0, len(b64), 72)]
    return (unsigned + "\r\n\t".join(chunks) + "\r\n").encode("ascii")
