"""Formatting IMAP response data (RFC 9051 §7, §9): strings, lists, flags, dates."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from pochta.proto.imap.parser import MONTHS

# printable US-ASCII may be quoted (with " and \ escaped); anything left after deleting
# those octets needs a literal (or, after UTF8=ACCEPT, is checked as UTF-8)
_PRINTABLE = bytes(range(0x20, 0x7F))


def quoted_or_literal(value: str | bytes, utf8: bool = False) -> bytes:
    """A string: quoted when it is short and plain, a literal otherwise (RFC 9051 §4.3)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) < 1024 and (
        not data.translate(None, _PRINTABLE)
        or (utf8 and b"\r" not in data and b"\n" not in data and b"\x00" not in data
            and _is_utf8(data))
    ):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(data)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def nstring(value: str | bytes | None, utf8: bool = False) -> bytes:
    return b"NIL" if value is None else quoted_or_literal(value, utf8)


def astring(value: str, utf8: bool = False) -> bytes:
    data = value.encode("utf-8")
    if data and all(
        0x21 <= b <= 0x7E and b not in b'(){%*"\\' for b in data
    ):
        return data
    return quoted_or_literal(data, utf8)


def plist(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def flags(values: Iterable[str]) -> bytes:
    return plist(f.encode("utf-8") for f in sorted(values))


def internaldate(ts: float) -> bytes:
    """date-time in UTC: "17-Jul-1996 09:44:25 +0000"."""
    t = time.gmtime(ts)
    return b'"%2d-%s-%04d %02d:%02d:%02d +0000"' % (
        t.tm_mday, MONTHS[t.tm_mon - 1].encode(), t.tm_year, t.tm_hour, t.tm_min, t.tm_sec
    )


def seq_set(numbers: Sequence[int]) -> bytes:
    """Compact sequence-set ("1:3,7") from ascending numbers."""
    if not numbers:
        return b""
    parts: list[bytes] = []
    start = prev = numbers[0]
    for n in numbers[1:]:
        if n == prev + 1:
            prev = n
            continue
        parts.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
        start = prev = n
    parts.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
    return b",".join(parts)


def tagged(tag: str, status: str, text: str, code: str | None = None) -> bytes:
    code_part = f"[{code}] " if code else ""
    return f"{tag} {status} {code_part}{text}\r\n".encode()


def untagged(text: str | bytes) -> bytes:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return b"* " + data + b"\r\n"
