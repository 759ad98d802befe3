"""Open and click tracking for messages the sender built itself: the API's ``raw``
messages and what an API key submits over SMTP. The ``text/html`` parts of the message
(not those inside an attached ``message/rfc822``: a forwarded message is not ours to
track) are decoded, rewritten by tracking.py's rewriter, and encoded again with their own
transfer encoding; every other byte of the message stays as the sender wrote it. A part
whose charset or encoding cannot be read is left alone, and a 7bit/8bit part whose
rewritten lines would pass 998 octets (RFC 5322 §2.1.1) becomes quoted-printable."""

from __future__ import annotations

import base64
import quopri
import re
from collections.abc import Callable, Iterator

from ..proto.imap import bodystructure as bs

MAX_LINE = 998
_CTE_FIELD = re.compile(rb"(?im)^content-transfer-encoding:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*\r?\n")


def _html_leaves(part: bs.Part) -> Iterator[bs.Part]:
    if part.is_multipart:
        for child in part.children:
            yield from _html_leaves(child)
    elif part.message is None and part.content_type == "text/html":
        yield part


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _encode(body: bytes, cte: str) -> tuple[bytes, str]:
    """The body in ``cte``, or in quoted-printable when 7bit/8bit lines grew too long."""
    if cte == "base64":
        return base64.encodebytes(body).replace(b"\n", b"\r\n"), cte
    if cte == "quoted-printable":
        return _crlf(quopri.encodestring(_crlf(body).replace(b"\r\n", b"\n"))), cte
    body = _crlf(body)
    if max((len(line) for line in body.split(b"\r\n")), default=0) <= MAX_LINE:
        return body, cte
    return _encode(body, "quoted-printable")


def _with_cte(header: bytes, cte: str) -> bytes:
    header = _CTE_FIELD.sub(b"", header)
    end = len(header) - (2 if header.endswith(b"\r\n") else 1 if header.endswith(b"\n")
                         else 0)
    return header[:end] + b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n" + \
        header[end:]


def html_rebuilder(data: bytes) -> Callable[[Callable[[str], str]], bytes] | None:
    """``Outgoing.rebuild`` for a message written by its sender: None when it has no
    HTML of its own (nothing to track, every copy is the same)."""
    if next(_html_leaves(bs.parse(data)), None) is None:
        return None
    return lambda rewrite: rewrite_html_parts(data, rewrite)


def rewrite_html_parts(data: bytes, rewrite: Callable[[str], str]) -> bytes:
    """``data`` with each of its own text/html parts passed through ``rewrite``."""
    for leaf in list(_html_leaves(bs.parse(data))):
        cte = (leaf.header_value("Content-Transfer-Encoding") or "7bit").strip().lower()
        if cte not in ("7bit", "8bit", "quoted-printable", "base64"):
            continue  # binary or unknown: not ours to re-encode
        try:
            raw = bs.decode_body(leaf)
        except bs.UnknownCTE:
            continue
        charset = leaf.msg.get_content_charset() or "us-ascii"
        try:
            text = raw.decode(charset)
            new = rewrite(text)
            body = new.encode(charset)
        except (LookupError, UnicodeError):
            continue  # a charset Python does not know, or text that is not in it
        if new == text:
            continue
        encoded, new_cte = _encode(body, cte)
        # a part's last line break belongs to the boundary after it (RFC 2046 §5.1.1)
        if not leaf.body.endswith(b"\n"):
            encoded = encoded.removesuffix(b"\r\n")
        elif not encoded.endswith(b"\r\n"):
            encoded += b"\r\n"
        header = leaf.header if new_cte == cte else _with_cte(leaf.header, new_cte)
        old = leaf.header + leaf.body
        if old in data:
            data = data.replace(old, header + encoded, 1)
    return data
