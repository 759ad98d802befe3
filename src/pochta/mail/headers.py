"""Header sections of RFC 5322 messages: where the header ends, its fields with their
continuation lines, unfolded values, and folding a field to write.

Line ends: messages on the wire and in the store use CRLF; a few readers get bare LF
(files, tools), so splitting accepts both.
"""

from __future__ import annotations

import email.header

LINE_WIDTH = 78  # RFC 5322 §2.1.1: lines SHOULD be no longer than 78 characters


def header_end(message: bytes) -> tuple[int, int]:
    """(end of the header section after its last line end, start of the body after the
    empty line). Without an empty line everything is header: (len, len)."""
    if message.startswith(b"\r\n"):
        return 0, 2
    if message.startswith(b"\n"):
        return 0, 1
    # the first line end followed by an empty line (the first match of \r?\n(\r?\n)),
    # by two plain searches: a regular expression starting with \r? is tried at every octet
    crlf, lf = message.find(b"\n\r\n"), message.find(b"\n\n")
    if crlf < 0 and lf < 0:
        return len(message), len(message)
    if lf < 0 or 0 <= crlf < lf:
        return crlf + 1, crlf + 3
    return lf + 1, lf + 2


def split_header(message: bytes) -> tuple[bytes, bytes]:
    """(header section including its final line end, the rest starting at the empty
    line); ``header + rest == message``."""
    cut, _ = header_end(message)
    return message[:cut], message[cut:]


def split_body(message: bytes) -> tuple[bytes, bytes]:
    """(header section including its final line end, the body after the empty line)."""
    cut, body = header_end(message)
    return message[:cut], message[body:]


def header_fields(header: bytes) -> list[tuple[bytes, bytes]]:
    """(name as written, the whole field: its lines with their line ends) in order.
    Continuation lines (starting with space or tab) belong to the field before them;
    a line without a colon is its own field with an empty name."""
    fields: list[tuple[bytes, bytes]] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if fields:
                name, raw = fields[-1]
                fields[-1] = (name, raw + line)
            else:
                fields.append((b"", line))
        else:
            name, colon, _ = line.partition(b":")
            fields.append((name.strip() if colon else b"", line))
    return fields


def field_value(field: bytes) -> bytes:
    """The unfolded value of one field from ``header_fields`` (RFC 5322 §2.2.3): the
    continuation lines joined by one space, leading and trailing white space gone."""
    _, _, value = field.partition(b":")
    return b" ".join(part.strip() for part in value.splitlines())


def header_values(header: bytes, name: str) -> list[str]:
    """Unfolded values of every field called ``name`` (case-insensitive), in order."""
    wanted = name.lower().encode("ascii")
    return [field_value(raw).decode("utf-8", "surrogateescape")
            for fname, raw in header_fields(header) if fname.lower() == wanted]


def without_fields(header: bytes, name: str) -> bytes:
    """``header`` with every field called ``name`` (case-insensitive) removed."""
    wanted = name.lower().encode("ascii")
    return b"".join(raw for fname, raw in header_fields(header) if fname.lower() != wanted)


def fold(name: str, value: str, width: int = LINE_WIDTH) -> str:
    """One field ``name: value`` without its final CRLF, folded (RFC 5322 §2.2.3).

    Non-ASCII values become RFC 2047 encoded words, folded by the email package. ASCII
    values are folded at spaces so no line is longer than ``width`` where a space allows;
    a word longer than a line stays whole (folding happens only at white space)."""
    if not value.isascii():
        encoded = email.header.Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
        return f"{name}: {encoded}"
    line = f"{name}: {value}"
    if len(line) <= width:
        return line
    # The name and the first word stay on one line: folding right after the colon
    # would make a line no shorter.
    name_part, *words = line.split(" ")
    out, current = [], f"{name_part} {words.pop(0)}"
    for word in words:
        if len(current) + 1 + len(word) > width:
            out.append(current)
            current = " " + word
        else:
            current = f"{current} {word}"
    out.append(current)
    return "\r\n".join(out)
