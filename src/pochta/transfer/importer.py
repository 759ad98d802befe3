"""The one way imported mail enters the store: ``Importer.add``, shared by the Maildir,
mbox and IMAP importers.

Each message goes through ``MailStore.accept`` with a ``LocalTarget`` that names the
mailbox, the flags and the INTERNALDATE (like an IMAP APPEND), so quotas, blob storage and
change notifications behave as for any other message; sieve and spam filtering do not run
(this is the user's own old mail, not new mail arriving).

Re-running an import is safe: a message is skipped when the target mailbox already holds
one with the same size, the same INTERNALDATE (to the second) and the same bytes (SHA-256
of the CRLF-normalised message). The first two come from ``list_messages``; bytes are read
back only for the few messages that match them. No state is kept for this, so it also
recognises mail that came in by another route (an earlier IMAP import of the same mailbox).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..storage.interfaces import Account, Envelope, LocalTarget, MailStore
from .body import Body

Progress = Callable[[str], None]


@dataclass
class ImportReport:
    imported: int = 0
    skipped: int = 0
    bytes: int = 0
    mailboxes_created: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        took = time.monotonic() - self.started
        return (f"{self.imported} message(s) imported ({self.bytes / 1e6:.1f} MB), "
                f"{self.skipped} already there, in {took:.1f} s")


class _MailboxIndex:
    """(size, INTERNALDATE second) -> blob ids of one mailbox, and the hashes read."""

    def __init__(self, mailbox_id: int) -> None:
        self.mailbox_id = mailbox_id
        self.by_key: dict[tuple[int, int], list[int]] = {}
        self.known_hashes: dict[int, bytes] = {}


class Importer:
    def __init__(self, store: MailStore, account: Account, progress: Progress,
                 every: int = 500) -> None:
        self.store = store
        self.account = account
        self.progress = progress
        self.every = every
        self.report = ImportReport()
        self._boxes: dict[str, _MailboxIndex] = {}

    async def mailbox(self, name: str) -> _MailboxIndex:
        index = self._boxes.get(name)
        if index is not None:
            return index
        info = await self.store.get_mailbox(self.account.id, name)
        if info is None:
            info = await self.store.create_mailbox(self.account.id, name, subscribe=True)
            self.report.mailboxes_created.append(name)
            self.progress(f"created mailbox {name}")
        index = _MailboxIndex(info.id)
        for meta in await self.store.list_messages(info.id):
            index.by_key.setdefault((meta.size, int(meta.internaldate)), []).append(
                meta.blob_id)
        self._boxes[name] = index
        return index

    async def _blob_hash(self, index: _MailboxIndex, blob_id: int) -> bytes:
        known = index.known_hashes.get(blob_id)
        if known is None:
            digest = hashlib.sha256()
            async for chunk in self.store.stream_blob(blob_id):
                digest.update(chunk)
            known = index.known_hashes[blob_id] = digest.digest()
        return known

    async def add(self, mailbox: str, body: Body, flags: frozenset[str],
                  internaldate: float) -> bool:
        """Store one message unless the mailbox has it already; True if stored. The body
        is discarded either way."""
        try:
            index = await self.mailbox(mailbox)
            key = (body.size, int(internaldate))
            for blob_id in index.by_key.get(key, ()):
                if await self._blob_hash(index, blob_id) == body.sha256:
                    self.report.skipped += 1
                    return False
            result = await self.store.accept(
                body.for_store(), Envelope(sender=""),
                [LocalTarget(self.account.id, mailbox, flags, internaldate)])
        finally:
            body.discard()
        index.by_key.setdefault(key, []).append(result.blob_id)
        index.known_hashes[result.blob_id] = body.sha256
        self.report.imported += 1
        self.report.bytes += body.size
        if self.report.imported % self.every == 0:
            self.progress(self.report.line())
        return True
