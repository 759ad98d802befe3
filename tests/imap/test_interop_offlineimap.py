"""Interop: offlineimap (Debian's offlineimap3) syncs a folder tree both ways over TLS."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

import pytest

from pochta.storage.interfaces import Envelope, FlagMode, LocalTarget
from tests.conftest import Server, need_tool, run_tool
from tests.imap.helpers import MESSAGE

pytestmark = pytest.mark.interop


def _config(server: Server, base: Path) -> Path:
    # offlineimap checks the host name against the certificate (mail.example.test); a
    # pinned fingerprint is its documented alternative for a self-signed server.
    der = ssl.PEM_cert_to_DER_cert(server.cert.read_text())
    rc = base / "offlineimaprc"
    rc.write_text(f"""
[general]
accounts = pochta
metadata = {base}/meta

[Account pochta]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {base}/mail
sep = /

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {server.port("imap", "implicit")}
ssl = yes
cert_fingerprint = {hashlib.sha512(der).hexdigest()}
remoteuser = alice@example.test
remotepass = alice-pass
createfolders = True
""")
    return rc


async def _sync(rc: Path) -> str:
    code, out = await run_tool(need_tool("offlineimap"), "-c", str(rc), "-o", "-u", "basic",
                               timeout=90)
    assert code == 0 and "ERROR" not in out, out
    return out


def _files(folder: Path) -> list[Path]:
    return sorted(p for sub in ("cur", "new") for p in (folder / sub).glob("*") if p.is_file())


async def test_offlineimap_folder_tree_both_ways(imap_server: Server, tmp_path: Path) -> None:
    need_tool("offlineimap")
    store = imap_server.store
    account = await store.get_account("alice@example.test")
    assert account is not None
    await store.create_mailbox(account.id, "Projects/2024")
    for i in range(2):
        await store.accept(MESSAGE.replace(b"Hello there", b"Inbox %d" % i), Envelope(sender=""),
                           [LocalTarget(account.id, "INBOX")])
    await store.accept(MESSAGE.replace(b"Hello there", b"Nested"), Envelope(sender=""),
                       [LocalTarget(account.id, "Projects/2024")])
    inbox = await store.get_mailbox(account.id, "INBOX")
    assert inbox is not None
    await store.store_flags(inbox.id, [1], frozenset({"\\Flagged"}), FlagMode.ADD)
    rc = _config(imap_server, tmp_path)
    mail = tmp_path / "mail"

    out = await _sync(rc)
    local_inbox = _files(mail / "INBOX")
    assert len(local_inbox) == 2, out
    nested = _files(mail / "Projects" / "2024")
    assert len(nested) == 1 and b"Subject: Nested" in nested[0].read_bytes()
    flagged = [p for p in local_inbox if "F" in p.name.rsplit(":2,", 1)[1]]
    assert len(flagged) == 1 and b"Inbox 0" in flagged[0].read_bytes()
    for special in ("Sent", "Trash", "Drafts", "Archive", "Junk"):
        assert (mail / special / "cur").is_dir(), special

    # local changes: a new nested folder with a message, a message marked seen,
    # one deleted, one added to INBOX
    # (offlineimap CREATEs each parent on the server too, so the parent must be a Maildir
    # here as well, or it stops at "getfolder() asked for a nonexisting folder")
    new_folder = mail / "Lists" / "python"
    for folder in (mail / "Lists", new_folder):
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    (new_folder / "new" / "1700000000.1.local").write_bytes(
        MESSAGE.replace(b"Hello there", b"Local list mail"))
    seen = next(p for p in local_inbox if b"Inbox 1" in p.read_bytes())
    seen.rename(seen.parent.parent / "cur" / (seen.name.rsplit(":2,", 1)[0] + ":2,S"))
    flagged[0].unlink()
    (mail / "INBOX" / "new" / "1700000001.2.local").write_bytes(
        MESSAGE.replace(b"Hello there", b"Written locally"))

    out = await _sync(rc)
    lists = await store.get_mailbox(account.id, "Lists/python")
    assert lists is not None, out
    metas = await store.list_messages(lists.id)
    assert len(metas) == 1
    assert b"Local list mail" in await store.read_blob(metas[0].blob_id)
    metas = await store.list_messages(inbox.id)
    bodies = {m.uid: await store.read_blob(m.blob_id) for m in metas}
    subjects = sorted(b.split(b"Subject: ")[1].split(b"\r\n")[0] for b in bodies.values())
    assert subjects == [b"Inbox 1", b"Written locally"], out
    one = next(m for m in metas if b"Inbox 1" in bodies[m.uid])
    assert "\\Seen" in one.flags

    # a server-side change after that travels down on the next run
    await store.store_flags(inbox.id, [one.uid], frozenset({"\\Answered"}), FlagMode.ADD)
    await _sync(rc)
    local = next(p for p in _files(mail / "INBOX") if b"Inbox 1" in p.read_bytes())
    assert local.name.endswith(":2,RS"), local.name
