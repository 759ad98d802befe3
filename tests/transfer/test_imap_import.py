"""``pochta import imap``: a whole account copied from Dovecot on loopback (implicit TLS,
its certificate trusted with --ca-file), every folder, flags, keywords and INTERNALDATE,
special-use folders mapped, and a second run that copies only the new mail."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Instance
from tests.transfer.dovecot import Dovecot
from tests.transfer.helpers import mailbox_view, message, pochta, write_config

OLD = "old@example.org"
ALICE = "alice@example.test"


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot({OLD: "old-pass"})
    try:
        yield server
    finally:
        server.stop()


def put(dovecot: Dovecot, folder: str, name: str, data: bytes, mtime: int) -> None:
    """A message file written straight into the Maildir (as an MDA would): Dovecot takes
    the mtime as its INTERNALDATE when it first indexes the file."""
    directory = dovecot.maildir(OLD) / folder / "cur"
    for sub in ("cur", "new", "tmp"):
        (directory.parent / sub).mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    for p in (dovecot.maildir(OLD), *dovecot.maildir(OLD).rglob("*")):
        os.chown(p, dovecot.nobody.pw_uid, dovecot.nobody.pw_gid)


def test_import_from_dovecot(instance: Instance, dovecot: Dovecot, tmp_path: Path) -> None:
    config = write_config(instance)
    dovecot.doveadm("mailbox", "create", "-u", OLD, "Work/Projects", "Sent Items", "Empty")
    root = dovecot.maildir(OLD)
    (root / "dovecot-keywords").write_text("0 $Important\n")
    put(dovecot, ".", "1700000000.M1.old:2,Sa", message("one"), 1700000000)
    put(dovecot, ".", "1700000100.M2.old:2,FR", message("two"), 1700000100)
    put(dovecot, ".Work.Projects", "1600000000.M3.old:2,D", message("draft"), 1600000000)
    put(dovecot, ".Sent Items", "1650000000.M4.old:2,S", message("sent"), 1650000000)
    password = tmp_path / "old-password"
    password.write_text("old-pass\n")
    url = f"imaps://{OLD}@localhost:{dovecot.port}"
    argv = ["import", "imap", ALICE, "--from", url, "--password-file", str(password),
            "--ca-file", str(dovecot.cert)]
    done = pochta(config, *argv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 message(s) imported" in done.stdout
    view = asyncio.run(mailbox_view(instance, ALICE))
    got = {box: [(s, set(f), d) for s, f, d, _ in rows] for box, rows in view.items()
           if rows}
    assert got == {
        "INBOX": [("one", {"\\Seen", "$Important"}, 1700000000),
                  ("two", {"\\Flagged", "\\Answered"}, 1700000100)],
        "Work/Projects": [("draft", {"\\Draft"}, 1600000000)],
        "Sent": [("sent", {"\\Seen"}, 1650000000)],  # \Sent special use -> Sent
    }
    assert "Empty" in view
    states = list((instance.dir / "data" / "import").glob("imap-*.json"))
    assert len(states) == 1
    folders = json.loads(states[0].read_text())["folders"]
    assert folders["INBOX"]["uid"] == 2 and folders["INBOX"]["uidvalidity"] > 0

    # new mail on the old server; the second run fetches only that
    dovecot.save(OLD, "INBOX", message("three"))
    again = pochta(config, *argv)
    assert again.returncode == 0, again.stderr
    assert "1 message(s) imported" in again.stdout and "0 already there" in again.stdout
    view = asyncio.run(mailbox_view(instance, ALICE))
    assert [s for s, _, _, _ in view["INBOX"]] == ["one", "three", "two"]

    # a forgotten resume state: everything is seen again and nothing doubled
    states[0].unlink()
    third = pochta(config, *argv)
    assert "0 message(s) imported" in third.stdout and "5 already there" in third.stdout


def test_import_imap_errors(instance: Instance, dovecot: Dovecot, tmp_path: Path) -> None:
    config = write_config(instance)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    url = f"imaps://{OLD}@localhost:{dovecot.port}"
    done = pochta(config, "import", "imap", ALICE, "--from", url, "--password-file",
                  str(wrong), "--ca-file", str(dovecot.cert))
    assert done.returncode == 1, done.stdout
    assert "authenticationfailed" in done.stderr.lower().replace(" ", ""), done.stderr
    untrusted = pochta(config, "import", "imap", ALICE, "--from", url, "--password-file",
                       str(wrong))
    assert untrusted.returncode == 1 and "certificate" in untrusted.stderr.lower()
    bad = pochta(config, "import", "imap", ALICE, "--from", "http://x", "--password-file",
                 str(wrong))
    assert bad.returncode == 1 and "imaps://" in bad.stderr
