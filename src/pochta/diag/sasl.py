"""`pochta sasl-encode`: the base64 strings for typing AUTH PLAIN / LOGIN by hand
(``openssl s_client -starttls smtp``), and decoding them back."""

from __future__ import annotations

import base64
import binascii
from typing import Any


def encode_plain(user: str, password: str, authzid: str = "") -> str:
    """RFC 4616: [authzid] NUL authcid NUL passwd, base64 (RFC 4954 AUTH PLAIN)."""
    raw = f"{authzid}\0{user}\0{password}".encode()
    return base64.b64encode(raw).decode("ascii")


def encode_login(user: str, password: str) -> tuple[str, str]:
    """AUTH LOGIN: the user name and the password, each base64 on its own line."""
    return (base64.b64encode(user.encode()).decode("ascii"),
            base64.b64encode(password.encode()).decode("ascii"))


def decode(text: str) -> dict[str, Any]:
    """Decode a base64 string; a PLAIN response is split into its three fields."""
    value = text.strip()
    if value.upper().startswith("AUTH PLAIN "):
        value = value[11:].strip()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{text!r} is not valid base64") from None
    out: dict[str, Any] = {"bytes": raw.decode("utf-8", "replace"), "plain": None}
    parts = raw.split(b"\0")
    if len(parts) == 3:
        out["plain"] = {
            "authzid": parts[0].decode("utf-8", "replace"),
            "user": parts[1].decode("utf-8", "replace"),
            "password": parts[2].decode("utf-8", "replace"),
        }
    return out
