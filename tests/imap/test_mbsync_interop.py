"""Interop: mbsync (isync) syncs a mailbox both ways with our server over implicit TLS."""

from __future__ import annotations

from pathlib import Path

import pytest

from pochta.storage.interfaces import Envelope, FlagMode, LocalTarget
from tests.conftest import Server, need_tool, run_tool
from tests.imap.helpers import MESSAGE

pytestmark = pytest.mark.interop


def _config(server: Server, base: Path) -> Path:
    return mbsyncrc(base, server.port("imap", "implicit"), server.cert)


def mbsyncrc(base: Path, port: int, cert: Path) -> Path:
    """alice's INBOX and Archive over implicit TLS into the Maildir ``base/mail``."""
    cfg = base / "mbsyncrc"
    cfg.write_text(f"""
IMAPAccount pochta
Host localhost
Port {port}
User alice@example.test
Pass alice-pass
SSLType IMAPS
CertificateFile {cert}
SystemCertificates no

IMAPStore remote
Account pochta

MaildirStore local
Path {base}/mail/
Inbox {base}/mail/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX Archive
Create Both
Expunge Both
SyncState *
""")
    return cfg


def _files(folder: Path) -> list[Path]:
    return sorted(p for sub in ("cur", "new") for p in (folder / sub).glob("*") if p.is_file())


async def test_mbsync_two_way(imap_server: Server, tmp_path: Path) -> None:
    mbsync = need_tool("mbsync")
    store = imap_server.store
    account = await store.get_account("alice@example.test")
    assert account is not None
    for i in range(3):
        await store.accept(MESSAGE.replace(b"Hello there", b"Msg %d" % i), Envelope(sender=""),
                           [LocalTarget(account.id, "INBOX")])
    inbox = await store.get_mailbox(account.id, "INBOX")
    assert inbox is not None
    await store.store_flags(inbox.id, [2], frozenset({"\\Flagged"}), FlagMode.ADD)
    cfg = _config(imap_server, tmp_path)
    (tmp_path / "mail").mkdir()

    code, out = await run_tool(mbsync, "-c", str(cfg), "-a")
    assert code == 0, out
    local = _files(tmp_path / "mail" / "INBOX")
    assert len(local) == 3, out
    flagged = [p for p in local if ":2," in p.name and "F" in p.name.split(":2,")[1]]
    assert len(flagged) == 1 and b"Msg 1" in flagged[0].read_bytes()

    # locally: mark one seen, delete another, add a new message
    seen = next(p for p in local if b"Msg 0" in p.read_bytes())
    seen.rename(seen.parent.parent / "cur" / (seen.name.split(":2,")[0] + ":2,S"))
    gone = next(p for p in _files(tmp_path / "mail" / "INBOX") if b"Msg 2" in p.read_bytes())
    gone.unlink()
    new_dir = tmp_path / "mail" / "INBOX" / "new"
    (new_dir / "1700000000.local.host").write_bytes(
        MESSAGE.replace(b"Hello there", b"Written locally"))

    code, out = await run_tool(mbsync, "-c", str(cfg), "-a")
    assert code == 0, out
    metas = await store.list_messages(inbox.id)
    bodies = {m.uid: await store.read_blob(m.blob_id) for m in metas}
    subjects = sorted(b.split(b"Subject: ")[1].split(b"\r\n")[0] for b in bodies.values())
    assert subjects == [b"Msg 0", b"Msg 1", b"Written locally"], out
    msg0 = next(m for m in metas if b"Msg 0" in bodies[m.uid])
    assert "\\Seen" in msg0.flags

    # a third run with nothing changed is a no-op that still succeeds
    code, out = await run_tool(mbsync, "-c", str(cfg), "-a")
    assert code == 0, out
    assert len(_files(tmp_path / "mail" / "INBOX")) == 3
