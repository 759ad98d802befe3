"""Big incoming messages on disk while they arrive (SMTP DATA/BDAT, IMAP APPEND).

A ``Spool`` is a private file in ``<data_dir>/spool`` (0600 in a 0700 directory) that
takes a message's content in order and is removed when the message was stored or
refused. Header work (From checks, added headers, Authentication-Results) needs only the
header block, which ``split_head`` reads; the body stays in the file and reaches the store
as a ``SpooledMessage`` (prefix = the new headers, then the file from the body's offset),
so a 25 MB message never sits in memory whole. DKIM signing and verification need the
whole message (dkimpy has no streaming interface): ``read_all`` gives it, in a thread,
for as long as that step lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path

from ..mail.headers import header_end
from ..storage.interfaces import SpooledMessage

HEAD_LIMIT = 1024 * 1024  # a header block longer than this is treated as having no body
# Body bytes of a spooled message that content filters see (rspamd, the learning filter).
SPAM_SCAN_LIMIT = 512 * 1024


def read_spooled(message: SpooledMessage, limit: int | None = None) -> bytes:
    """The prefix and the file part of ``message`` (its first ``limit`` bytes if given)."""
    with open(message.path, "rb") as f:
        f.seek(message.offset)
        return message.prefix + f.read(message.size if limit is None
                                       else min(limit, message.size))


class Spool:
    def __init__(self, data_dir: Path) -> None:
        directory = data_dir / "spool"
        directory.mkdir(mode=0o700, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix="in-")  # mode 0600
        self.fd: int | None = fd
        self.path = name
        self.size = 0

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def split_head(self) -> tuple[bytes, int]:
        """The header block (through the empty line) and its length in the file."""
        with open(self.path, "rb") as f:
            start = f.read(HEAD_LIMIT)
        cut, body = header_end(start)
        if cut == body:
            return b"", 0  # no header block found: everything is body
        return start[:body], body

    def message(self, head: bytes, body_offset: int, prefix: bytes = b"") -> SpooledMessage:
        """What the store takes: ``prefix`` + ``head`` and the body from the file."""
        return SpooledMessage(self.path, self.size - body_offset, prefix + head, body_offset)

    def sample(self, head: bytes, body_offset: int, limit: int) -> bytes:
        """``head`` and the first ``limit`` bytes of the body."""
        return read_spooled(self.message(head, body_offset), limit)

    async def read_all(self, head: bytes, body_offset: int) -> bytes:
        return await asyncio.to_thread(read_spooled, self.message(head, body_offset))
