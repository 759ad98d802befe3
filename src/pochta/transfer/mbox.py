"""mbox files, read for import, one message at a time (a big mbox is never in memory).

A message starts at a ``From `` line at the start of the file or after an empty line
(mutt, Postfix's local(8), Dovecot and Thunderbird all write that empty line; requiring it
keeps an unescaped ``From `` in an mboxo body from splitting a message). The empty line
before the next ``From `` belongs to the separator and is dropped.

A message whose ``Content-Length:`` header ends exactly at a message boundary (mboxcl2, as
mutt writes with ``mbox_type=mbox``, and Solaris mail) is taken as that many bytes, with
nothing unescaped: mutt does not escape ``From `` in such a body. Otherwise unescaping
follows mboxrd (RFC 4155 §2 and the mboxrd convention): a line ``>From ``,
``>>From ``, ... loses one ``>``. For mboxo files (which escape ``From `` but not
``>From ``) this is the same except for a body line that was ``>From `` to begin with, which
mboxo had already made ambiguous.

INTERNALDATE comes from the ``From `` line's asctime date (taken as UTC: the line has no
zone), else the ``Date:`` header, else the file's mtime. Flags come from the ``Status:``
(``R`` \\Seen) and ``X-Status:`` (``A`` \\Answered, ``F`` \\Flagged, ``T`` \\Draft,
``D`` \\Deleted) headers that mutt, Pine and Dovecot's mbox driver write; the headers stay
in the message.
"""

from __future__ import annotations

import calendar
import contextlib
import email.utils
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .body import Body, BodyWriter

_ESCAPED_FROM = re.compile(rb"^>+From ")
STATUS_FLAGS = {"R": "\\Seen"}
X_STATUS_FLAGS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}


class MboxError(Exception):
    """The file is not an mbox we can read."""


@dataclass(frozen=True, slots=True)
class MboxMessage:
    body: Body
    flags: frozenset[str]
    internaldate: float
    number: int  # 1-based position in the file


def from_line_date(line: bytes) -> float | None:
    """``From sender Mon Jan  1 10:00:00 2024`` (asctime, maybe a zone after the year)."""
    words = line.decode("ascii", "replace").split()
    for end in (len(words), len(words) - 1):
        if end - 5 < 2:
            continue
        try:
            parsed = time.strptime(" ".join(words[end - 5:end]), "%a %b %d %H:%M:%S %Y")
        except ValueError:
            continue
        return float(calendar.timegm(parsed))
    return None


class _Headers:
    """What the importer needs from the header section, collected while it streams by."""

    def __init__(self) -> None:
        self.done = False
        self.flags: set[str] = set()
        self.date: float | None = None
        self.length: int | None = None  # Content-Length (mboxcl2)

    def feed(self, line: bytes) -> None:
        if line in (b"\n", b"\r\n"):
            self.done = True
            return
        name, sep, value = line.partition(b":")
        if not sep:
            return
        key = name.strip().lower()
        text = value.decode("ascii", "replace").strip()
        if key == b"status":
            self.flags.update(STATUS_FLAGS[c] for c in text if c in STATUS_FLAGS)
        elif key == b"x-status":
            self.flags.update(X_STATUS_FLAGS[c] for c in text if c in X_STATUS_FLAGS)
        elif key == b"content-length" and text.isdigit():
            self.length = int(text)
        elif key == b"date" and self.date is None:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                self.date = email.utils.parsedate_to_datetime(text).timestamp()


def _length_fits(f: BinaryIO, start: int, length: int) -> bool:
    """Does a ``Content-Length`` body end where a message boundary (or the file) is?"""
    try:
        f.seek(start + length)
        after = f.readline()
        if after in (b"\n", b"\r\n"):
            after = f.readline()
        return after == b"" or after.startswith(b"From ")
    finally:
        f.seek(start)


def read_mbox(path: Path, spool_dir: Path | None = None) -> Iterator[MboxMessage]:
    """The messages of the mbox at ``path``, each as a finished ``Body`` (CRLF line
    endings, From_ unescaped); the caller discards each body when done with it."""
    if not path.exists():
        raise MboxError(f"{path}: no such file or directory")
    if path.is_dir():
        raise MboxError(f"{path}: a directory (a Maildir? use pochta import maildir)")
    mtime = path.stat().st_mtime
    with open(path, "rb") as f:
        first = f.readline()
        if not first:
            return
        if not first.startswith(b"From "):
            raise MboxError(f"{path}: not an mbox (it does not start with a 'From ' line)")
        number = 0
        from_line: bytes | None = first
        while from_line is not None:
            number += 1
            writer = BodyWriter(spool_dir)
            headers = _Headers()
            blank_pending = False  # an empty line held back: separator or content?
            next_from: bytes | None = None
            try:
                while line := f.readline():
                    if blank_pending:
                        if line.startswith(b"From "):
                            next_from = line
                            break
                        writer.write_line(b"\n")
                        blank_pending = False
                    if not headers.done:
                        headers.feed(line)
                        writer.write_line(line)
                        if headers.done and headers.length is not None \
                                and _length_fits(f, f.tell(), headers.length):
                            _copy_exactly(f, headers.length, writer)
                        continue
                    if line in (b"\n", b"\r\n"):
                        blank_pending = True
                        continue
                    if _ESCAPED_FROM.match(line):
                        line = line[1:]
                    writer.write_line(line)
            except BaseException:
                writer.abandon()
                raise
            body = writer.finish()
            date = from_line_date(from_line) or headers.date or mtime
            yield MboxMessage(body, frozenset(headers.flags), date, number)
            from_line = next_from


def _copy_exactly(f: BinaryIO, length: int, writer: BodyWriter) -> None:
    """mboxcl/mboxcl2 (mutt with Content-Length, Solaris): the body is the next
    ``length`` bytes as they are, nothing escaped."""
    left = length
    while left > 0 and (line := f.readline(left)):
        left -= len(line)
        writer.write_line(line)


def find_mboxes(path: Path) -> list[tuple[str, Path]]:
    """An mbox file, or a directory of them (mutt's ``~/Mail``): (mailbox name, file)."""
    if not path.exists():
        raise MboxError(f"{path}: no such file or directory")
    if path.is_file():
        return [("", path)]
    out = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        with open(file, "rb") as f:
            if f.read(5) != b"From ":
                continue
        name = "/".join(file.relative_to(path).parts)
        out.append(("INBOX" if name.upper() == "INBOX" else name, file))
    if not out:
        raise MboxError(f"{path}: no mbox file in this directory")
    return out
