"""Secrets of the sending layer: API keys, signed return paths (VERP) and signed
unsubscribe tokens.

* An API key is ``KEYID.SECRET``: ``KEYID`` is public ("k" and 12 hex digits) and names the
  stored row; ``SECRET`` is 32 random bytes (base64url). Only SHA-256(SECRET) is stored:
  with 256 bits of entropy a fast hash is as strong as a slow one, and every API call can
  afford it.
* The return path of each recipient's copy is ``bounces+MESSAGEID.MAC@domain`` where MAC
  is HMAC-SHA256(server secret, message id) truncated to 64 bits: a bounce names the copy
  it is about, and nobody can forge one for another message.
* An unsubscribe token is base64url("domain stream address message-id") + "." + MAC: the one-click
  POST needs no login, so the token itself must be unforgeable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_SCOPES = ("send", "events", "suppressions", "stats", "webhooks")
MAC_LEN = 16  # hex digits: 64 bits


def load_secret(data_dir: Path) -> bytes:
    """The server's signing secret (``data_dir/sending-secret``), made on first use."""
    path = data_dir / "sending-secret"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()  # another process made it first
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
        f.flush()
        os.fsync(f.fileno())
    return path.read_bytes()


def new_api_key() -> tuple[str, str, bytes]:
    """(key id, the whole key to show once, the hash to store)."""
    key_id = "k" + secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{key_id}.{secret}", hash_secret(secret)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def split_api_key(key: str) -> tuple[str, str] | None:
    key_id, dot, secret = key.strip().partition(".")
    if not dot or not key_id.startswith("k") or len(key_id) != 13 or not secret:
        return None
    return key_id, secret


def _mac(secret: bytes, text: str) -> str:
    return hmac.new(secret, text.encode("utf-8"), hashlib.sha256).hexdigest()[:MAC_LEN]


def verp_address(secret: bytes, local_part: str, message_id: str, domain: str) -> str:
    return f"{local_part}+{message_id}.{_mac(secret, 'verp ' + message_id)}@{domain}"


def parse_verp(secret: bytes, local_part: str, address: str) -> str | None:
    """The message id a return path names, or None if it is not one of ours (or forged)."""
    local, _, _domain = address.rpartition("@")
    prefix = local_part.lower() + "+"
    if not local.lower().startswith(prefix):
        return None
    tag = local[len(prefix):]
    message_id, dot, mac = tag.rpartition(".")
    if not dot or not message_id:
        return None
    expected = _mac(secret, "verp " + message_id.upper())
    if not hmac.compare_digest(expected, mac.lower()):
        return None
    return message_id.upper()


def unsubscribe_token(secret: bytes, domain: str, stream: str, address: str,
                      message_id: str) -> str:
    text = f"{domain} {stream} {address} {message_id}"
    body = base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")
    return f"{body}.{_mac(secret, 'unsub ' + text)}"


def parse_unsubscribe_token(secret: bytes, token: str
                            ) -> tuple[str, str, str, str] | None:
    """(domain, stream, address, message id) of a genuine token, else None."""
    body, dot, mac = token.rpartition(".")
    if not dot:
        return None
    try:
        text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    if not hmac.compare_digest(_mac(secret, "unsub " + text), mac):
        return None
    parts = text.split(" ")
    if len(parts) != 4:
        return None
    return parts[0], parts[1], parts[2], parts[3]
