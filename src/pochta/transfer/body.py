"""Message bodies on their way into the store: line endings made CRLF, counted, hashed,
and spilled to a private temporary file past a threshold so that a big message is never
whole in memory (the store takes it as a ``SpooledMessage``).

Every importer (Maildir, mbox, IMAP) feeds lines or chunks to a ``BodyWriter``; the same
normalisation makes the SHA-256 that duplicate detection compares, so a message imported
from a Maildir and again from an mbox of the same bytes is recognised.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..storage.interfaces import SpooledMessage

# Bodies up to this size stay in memory; bigger ones go to a temporary file.
SPILL_AT = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Body:
    """A finished body: bytes, or a temporary file that ``discard`` removes."""

    data: bytes | None
    path: str | None
    size: int
    sha256: bytes

    def for_store(self) -> bytes | SpooledMessage:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return SpooledMessage(path=self.path, size=self.size)

    def discard(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def crlf(line: bytes) -> bytes:
    """One line (with its terminator, if any) ending in CRLF; a last line without a
    terminator is left as it is."""
    if line.endswith(b"\r\n"):
        return line
    if line.endswith(b"\n"):
        return line[:-1] + b"\r\n"
    return line


class BodyWriter:
    def __init__(self, spool_dir: Path | None = None, spill_at: int = SPILL_AT) -> None:
        self._parts: list[bytes] = []
        self._held = 0
        self._size = 0
        self._hash = hashlib.sha256()
        self._file: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._spool_dir = spool_dir
        self._spill_at = spill_at

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._size += len(data)
        self._hash.update(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._parts.append(data)
        self._held += len(data)
        if self._held > self._spill_at:
            if self._spool_dir is not None:
                self._spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept past this call
                prefix="import-", dir=self._spool_dir, delete=False)
            os.fchmod(self._file.fileno(), 0o600)
            self._file.write(b"".join(self._parts))
            self._parts = []

    def write_line(self, line: bytes) -> None:
        self.write(crlf(line))

    @property
    def size(self) -> int:
        return self._size

    def finish(self) -> Body:
        digest = self._hash.digest()
        if self._file is None:
            return Body(b"".join(self._parts), None, self._size, digest)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return Body(None, self._file.name, self._size, digest)

    def abandon(self) -> None:
        if self._file is not None:
            self._file.close()
            os.unlink(self._file.name)
