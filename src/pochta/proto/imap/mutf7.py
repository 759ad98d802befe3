"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3), for IMAP4rev1 clients without UTF8=ACCEPT."""

from __future__ import annotations

import base64


def encode_mutf7(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for c in name:
        if 0x20 <= ord(c) <= 0x7E:
            flush()
            out.append("&-" if c == "&" else c)
        else:
            pending.append(c)
    flush()
    return "".join(out)


def decode_mutf7(name: str) -> str:
    """Decode; text that is not valid modified UTF-7 is returned unchanged (lenient)."""
    if "&" not in name:
        return name
    out: list[str] = []
    i = 0
    while i < len(name):
        c = name[i]
        if c != "&":
            out.append(c)
            i += 1
            continue
        end = name.find("-", i)
        if end < 0:
            return name
        chunk = name[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            try:
                out.append(base64.b64decode(b64, validate=True).decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError):
                return name
        i = end + 1
    return "".join(out)
