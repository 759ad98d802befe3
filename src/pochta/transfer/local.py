"""Import from files on this machine: a Maildir tree or mbox files, through ``Importer``."""

from __future__ import annotations

from pathlib import Path

from ..storage.interfaces import Account, MailStore
from .body import Body, BodyWriter
from .importer import Importer, ImportReport, Progress
from .maildir import find_folders, scan
from .mbox import find_mboxes, read_mbox


def read_file(path: Path, spool_dir: Path | None) -> Body:
    writer = BodyWriter(spool_dir)
    try:
        with open(path, "rb") as f:
            for line in f:
                writer.write_line(line)
    except BaseException:
        writer.abandon()
        raise
    return writer.finish()


async def import_maildir(store: MailStore, account: Account, root: Path,
                         progress: Progress, spool_dir: Path | None = None) -> ImportReport:
    folders = find_folders(root)  # checks the layout before anything is written
    progress(f"{root}: {len(folders)} folder(s): " + ", ".join(n for n, _ in folders))
    importer = Importer(store, account, progress)
    for name, _ in folders:
        await importer.mailbox(name)  # empty folders are created too
    for message in scan(root):
        try:
            body = read_file(message.path, spool_dir)
        except FileNotFoundError:
            continue  # moved or expunged by a running IMAP server meanwhile
        await importer.add(message.mailbox, body, message.flags, message.internaldate)
    return importer.report


async def import_mbox(store: MailStore, account: Account, path: Path, mailbox: str | None,
                      progress: Progress, spool_dir: Path | None = None) -> ImportReport:
    files = find_mboxes(path)
    importer = Importer(store, account, progress)
    for name, file in files:
        target = mailbox if len(files) == 1 or not name else (
            f"{mailbox}/{name}" if mailbox else name)
        target = target or "INBOX"
        progress(f"{file} -> {target}")
        await importer.mailbox(target)
        for message in read_mbox(file, spool_dir):
            await importer.add(target, message.body, message.flags, message.internaldate)
    return importer.report
