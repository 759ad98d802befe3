"""``pochta export USER PATH``: the account as a Maildir++ tree (see maildir.py), every
mailbox with its flags, keywords and INTERNALDATE, read through the store contract."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..storage.interfaces import Account, MailStore
from .importer import Progress
from .maildir import MaildirError, MaildirWriter


@dataclass
class ExportReport:
    messages: int = 0
    bytes: int = 0
    mailboxes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


async def export_maildir(store: MailStore, account: Account, root: Path,
                         progress: Progress) -> ExportReport:
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise MaildirError(f"{root}: exists and is not an empty directory; export writes "
                           "a new Maildir")
    writer = MaildirWriter(root)
    report = ExportReport()
    boxes = sorted(await store.list_mailboxes(account.id),
                   key=lambda b: (b.name != "INBOX", b.name))
    for box in boxes:
        folder = writer.create_folder(box.name)
        report.mailboxes.append(box.name)
        count = 0
        for meta in await store.list_messages(box.id):
            # chunk by chunk into the file: a big message is never whole in memory
            await writer.add(folder, store.stream_blob(meta.blob_id), meta.flags,
                             meta.internaldate, meta.uid)
            size = meta.size
            count += 1
            report.bytes += size
        report.messages += count
        progress(f"{box.name}: {count} message(s)")
    writer.finish()
    return report
