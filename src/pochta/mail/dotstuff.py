"""The dot-stuffing codec of SMTP DATA (RFC 5321 §4.5.2) and POP3 multi-line responses
(RFC 1939 §3): a line that starts with "." gets another "." in front, and a line holding
only "." ends the content. Written once here for the SMTP client core, the POP3 server
core and ``pochta send``.

Line ends: on the wire every line ends in CRLF, and bare CR or LF are not allowed
(RFC 5321 §2.3.8); ``to_crlf`` makes them CRLF for senders whose input may have them.
"""

from __future__ import annotations

import re
from typing import overload

TERMINATOR = b".\r\n"
_BARE = re.compile(rb"\r\n|\r|\n")


def to_crlf(data: bytes) -> bytes:
    """Every line end (CRLF, bare CR, bare LF) as CRLF."""
    return _BARE.sub(b"\r\n", data)


def dot_stuff(data: bytes) -> bytes:
    """CRLF-lined ``data`` with leading dots doubled, ending in CRLF (no terminator).
    Line ends are taken as they are: only CRLF starts a line."""
    if data.startswith(b"."):
        data = b"." + data
    # bytes.replace returns the same object when nothing matches: no copy for the
    # common message without dot-lines.
    data = data.replace(b"\r\n.", b"\r\n..")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def dot_encode(message: bytes) -> bytes:
    """The whole DATA content of ``message``: CRLF line ends, leading dots doubled and
    the ``.`` line that ends it."""
    return dot_stuff(to_crlf(message)) + TERMINATOR


@overload
def dot_unstuff(line: bytes) -> bytes: ...
@overload
def dot_unstuff(line: str) -> str: ...
def dot_unstuff(line: bytes | str) -> bytes | str:
    """One received line (without its line end, bytes or text) with the stuffed dot
    removed: RFC 5321 §4.5.2 and RFC 1939 §3 delete a leading dot whatever follows it.
    The caller checks for the lone ``.`` that ends the content before calling this."""
    return line[1:] if line[:1] in (b".", ".") else line


class DotStuffer:
    """``dot_stuff`` over a message that arrives in pieces: a line start that falls
    between two pieces (even between the CR and the LF of a CRLF) is seen."""

    def __init__(self) -> None:
        self._tail = b"\r\n"  # the start counts as a line start

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        tail = self._tail
        if tail.endswith(b"\r\n") and chunk.startswith(b"."):
            chunk = b"." + chunk
        elif tail.endswith(b"\r") and chunk.startswith(b"\n."):
            chunk = b"\n." + chunk[1:]
        stuffed = chunk.replace(b"\r\n.", b"\r\n..")
        self._tail = (tail + stuffed)[-2:]
        return stuffed

    def end(self) -> bytes:
        """What closes the content: a CRLF if the last line lacked one, then ``.``."""
        return (b"" if self._tail == b"\r\n" else b"\r\n") + TERMINATOR
