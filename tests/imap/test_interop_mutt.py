"""Interop: Debian's mutt reads and changes the INBOX over implicit TLS.

mutt has no batch mode for reading (without a terminal it turns into a sender), so it
runs on a pseudo-terminal and is driven with `-e 'push ...'` key macros that end in
<quit>: the test then checks what mutt wrote locally and what it changed on the server.
"""

from __future__ import annotations

import asyncio
import os
import pty
from pathlib import Path

import pytest

from pochta.storage.interfaces import Envelope, LocalTarget
from tests.conftest import Server, need_tool
from tests.imap.helpers import MESSAGE

pytestmark = pytest.mark.interop


def _muttrc(server: Server, base: Path, extra: str = "") -> Path:
    rc = base / "muttrc"
    rc.write_text(f"""
set imap_user = "alice@example.test"
set imap_pass = "alice-pass"
set folder = "imaps://127.0.0.1:{server.port("imap", "implicit")}/"
set spoolfile = "+INBOX"
set ssl_ca_certificates_file = "{server.cert}"
set ssl_verify_host = no
set header_cache = ""
set message_cachedir = ""
set confirmcreate = no
set confirmappend = no
set delete = yes
set move = no
set mbox_type = mbox
{extra}
""")
    return rc


async def _run_mutt(rc: Path, push: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """mutt on a pty; returns its exit status and everything it drew on the screen."""
    mutt = need_tool("mutt")
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "vt100", "HOME": str(rc.parent)}
    proc = await asyncio.create_subprocess_exec(
        mutt, "-n", "-F", str(rc), "-e", f"push '{push}'",
        stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)

    def drain() -> bytes:
        screen = b""
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once mutt has exited and closed the pty
                return screen
            if not data:
                return screen
            screen += data

    try:
        screen = await asyncio.wait_for(asyncio.to_thread(drain), timeout)
        code = await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    finally:
        os.close(master)
    return code, screen


async def _deliver(server: Server, n: int) -> int:
    account = await server.store.get_account("alice@example.test")
    assert account is not None
    for i in range(n):
        await server.store.accept(MESSAGE.replace(b"Hello there", b"Mutt %d" % i),
                                  Envelope(sender=""), [LocalTarget(account.id, "INBOX")])
    inbox = await server.store.get_mailbox(account.id, "INBOX")
    assert inbox is not None
    return inbox.id


async def test_mutt_reads_inbox(imap_server: Server, tmp_path: Path) -> None:
    await _deliver(imap_server, 3)
    rc = _muttrc(imap_server, tmp_path)
    out = tmp_path / "copied.mbox"
    code, screen = await _run_mutt(
        rc, f"<tag-pattern>~A<enter><tag-prefix><copy-message>{out}<enter><quit>")
    assert code == 0, screen[-2000:]
    assert b"Msgs:3" in screen, screen[-2000:]
    data = out.read_bytes()
    assert data.count(b"\nFrom ") + data.startswith(b"From ") == 3
    for i in range(3):
        assert b"Subject: Mutt %d" % i in data
    assert data.count(b"Body text line one.") == 3


async def test_mutt_deletes_and_flags(imap_server: Server, tmp_path: Path) -> None:
    inbox = await _deliver(imap_server, 3)
    rc = _muttrc(imap_server, tmp_path, "set sort = mailbox-order\nset resolve = no")
    # flag the first message, delete the second, write the changes and quit
    code, screen = await _run_mutt(
        rc, "<first-entry><flag-message><next-undeleted><delete-message><sync-mailbox><quit>")
    assert code == 0, screen[-2000:]
    metas = await imap_server.store.list_messages(inbox)
    assert [m.uid for m in metas] == [1, 3], screen[-2000:]
    assert "\\Flagged" in metas[0].flags and "\\Flagged" not in metas[1].flags


async def test_mutt_scram_login(imap_server: Server, tmp_path: Path) -> None:
    """Only SCRAM-SHA-256 allowed (mutt's gsasl): no fallback to LOGIN hides a failure.

    (mutt 2.2 would try SCRAM-SHA-256-PLUS first if offered, which it is not by default
    (``[auth] scram_plus``): over TLS 1.3 gsasl gives up for want of a tls-exporter
    binding from mutt.)"""
    await _deliver(imap_server, 1)
    rc = _muttrc(imap_server, tmp_path, 'set imap_authenticators = "scram-sha-256"')
    code, screen = await _run_mutt(rc, "<quit>")
    assert code == 0, screen[-2000:]
    assert b"Authenticating (SCRAM-SHA-256)" in screen, screen[-3000:]
    assert b"Mutt 0" in screen and b"Logging in" not in screen, screen[-3000:]
