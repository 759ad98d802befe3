"""``pochta import maildir|mbox`` and ``pochta export`` over real files: Maildirs written
by Dovecot (through doveadm) and by hand in the Postfix/Courier and LAYOUT=fs shapes, an
mbox written by mutt and an mboxrd one, a Maildir exported and read back by Dovecot."""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Instance
from tests.transfer.dovecot import Dovecot
from tests.transfer.helpers import mailbox_view, message, pochta, write_config

OLD = "old@example.org"
ALICE = "alice@example.test"


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    server = Dovecot({OLD: "old-pass"})
    try:
        yield server
    finally:
        server.stop()


def maildir_dates(root: Path) -> dict[str, int]:
    """Subject -> file mtime for every message file under a Maildir."""
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and path.parent.name in ("cur", "new"):
            for line in path.read_bytes().split(b"\n"):
                if line.startswith(b"Subject: "):
                    out[line[9:].decode()] = int(path.stat().st_mtime)
    return out


def fill_with_doveadm(dovecot: Dovecot) -> None:
    dovecot.doveadm("mailbox", "create", "-u", OLD, "Work/Projects", "Résumé")
    for box, subject in (("INBOX", "inbox seen"), ("INBOX", "inbox answered"),
                         ("INBOX", "inbox new"), ("Work/Projects", "work draft"),
                         ("Résumé", "resume deleted")):
        dovecot.save(OLD, box, message(subject))
    for flags, box, subject in (("\\Seen $Important", "INBOX", "inbox seen"),
                                ("\\Answered \\Flagged", "INBOX", "inbox answered"),
                                ("\\Draft \\Seen", "Work/Projects", "work draft"),
                                ("\\Deleted", "Résumé", "resume deleted")):
        dovecot.doveadm("flags", "add", "-u", OLD, flags, "mailbox", box, "subject", subject)
    # a message as Postfix's local(8) delivers it: new/, no info, its own mtime
    root = dovecot.maildir(OLD)
    delivered = root / "new" / "1588636800.V801I2M3.mail.example.org"
    delivered.write_bytes(message("postfix delivered"))
    os.utime(delivered, (1588636800, 1588636800))


EXPECTED_FLAGS = {
    ("INBOX", "inbox seen"): {"\\Seen", "$Important"},
    ("INBOX", "inbox answered"): {"\\Answered", "\\Flagged"},
    ("INBOX", "inbox new"): set(),
    ("INBOX", "postfix delivered"): set(),
    ("Work/Projects", "work draft"): {"\\Draft", "\\Seen"},
    ("Résumé", "resume deleted"): {"\\Deleted"},
}


def test_import_dovecot_maildir(instance: Instance, dovecot: Dovecot) -> None:
    config = write_config(instance)
    fill_with_doveadm(dovecot)
    root = dovecot.maildir(OLD)
    dates = maildir_dates(root)
    done = pochta(config, "import", "maildir", ALICE, str(root))
    assert done.returncode == 0, done.stderr
    assert "6 message(s) imported" in done.stdout
    assert "created mailbox Work/Projects" in done.stdout
    view = asyncio.run(mailbox_view(instance, ALICE))
    got = {(box, subject): set(flags) for box, rows in view.items()
           for subject, flags, _, _ in rows}
    assert got == EXPECTED_FLAGS
    for box, rows in view.items():
        for subject, _, date, _ in rows:
            assert date == dates[subject], (box, subject)  # INTERNALDATE = the mtime
    assert dates["postfix delivered"] == 1588636800
    # the bytes are the file's, with CRLF line endings
    inbox = {subject: digest for subject, _, _, digest in view["INBOX"]}
    assert inbox["postfix delivered"] == hashlib.sha256(
        message("postfix delivered").replace(b"\n", b"\r\n")).hexdigest()

    again = pochta(config, "import", "maildir", ALICE, str(root))
    assert again.returncode == 0, again.stderr
    assert "0 message(s) imported" in again.stdout and "6 already there" in again.stdout
    assert asyncio.run(mailbox_view(instance, ALICE)) == view


def test_import_fs_layout_and_courier_names(instance: Instance, tmp_path: Path) -> None:
    config = write_config(instance)
    root = tmp_path / "Maildir"
    for folder in (root, root / "Lists", root / "Lists" / "python", root / ".INBOX.Old"):
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True)
    (root / "cur" / "1.M1.host:2,S").write_bytes(message("top"))
    (root / "Lists" / "python" / "cur" / "2.M2.host,S=120:2,FR").write_bytes(message("py"))
    (root / ".INBOX.Old" / "cur" / "3.M3.host:2,T").write_bytes(message("old"))
    (root / "cur" / ".hidden").write_bytes(b"not a message")
    done = pochta(config, "import", "maildir", ALICE, str(root))
    assert done.returncode == 0, done.stderr
    view = asyncio.run(mailbox_view(instance, ALICE))
    assert [(s, set(f)) for s, f, _, _ in view["INBOX"]] == [("top", {"\\Seen"})]
    assert [(s, set(f)) for s, f, _, _ in view["Lists/python"]] == [
        ("py", {"\\Flagged", "\\Answered"})]
    assert [(s, set(f)) for s, f, _, _ in view["Old"]] == [("old", {"\\Deleted"})]
    assert view["Lists"] == []


def test_import_errors(instance: Instance, tmp_path: Path) -> None:
    config = write_config(instance)
    (tmp_path / "plain").mkdir()
    (tmp_path / "file.txt").write_text("hello\n")
    for argv, wanted in (
        (["maildir", ALICE, str(tmp_path / "missing")], "no such file or directory"),
        (["maildir", ALICE, str(tmp_path / "plain")], "not a Maildir"),
        (["maildir", ALICE, str(tmp_path / "file.txt")], "not a directory"),
        (["mbox", ALICE, str(tmp_path / "file.txt")], "not an mbox"),
        (["mbox", ALICE, str(tmp_path / "missing")], "no such file or directory"),
        (["maildir", "nobody@example.test", str(tmp_path / "plain")], "no account"),
    ):
        done = pochta(config, "import", *argv)
        assert done.returncode == 1, (argv, done.stdout)
        assert wanted in done.stderr, (argv, done.stderr)


MBOXRD = (b"From old@example.org Mon Jan  1 10:00:00 2024\n"
          b"Subject: escaped\nStatus: RO\nX-Status: AF\n\n"
          b">From the start of a line\n>>From twice\nplain\n\n"
          b"From someone@example.org Tue Jan  2 11:30:00 2024\n"
          b"Subject: second\n\nlast line\n")


def test_import_mbox_mboxrd_and_big(instance: Instance, tmp_path: Path) -> None:
    config = write_config(instance)
    big_body = ("x" * 75 + "\n") * 90_000  # 6.8 MB: spooled, never whole in memory
    path = tmp_path / "old.mbox"
    path.write_bytes(MBOXRD + b"\nFrom big@example.org Wed Jan  3 12:00:00 2024\n"
                     + message("big", big_body))
    done = pochta(config, "import", "mbox", ALICE, str(path), "--mailbox", "Old mail")
    assert done.returncode == 0, done.stderr
    assert "3 message(s) imported" in done.stdout
    view = asyncio.run(mailbox_view(instance, ALICE))
    rows = {s: (set(f), d) for s, f, d, _ in view["Old mail"]}
    assert rows["escaped"] == ({"\\Seen", "\\Answered", "\\Flagged"},
                               calendar.timegm((2024, 1, 1, 10, 0, 0)))
    assert rows["second"] == (set(), calendar.timegm((2024, 1, 2, 11, 30, 0)))
    digest = {s: h for s, _, _, h in view["Old mail"]}
    assert digest["escaped"] == hashlib.sha256(
        b"Subject: escaped\r\nStatus: RO\r\nX-Status: AF\r\n\r\n"
        b"From the start of a line\r\n>From twice\r\nplain\r\n").hexdigest()
    assert digest["big"] == hashlib.sha256(
        message("big", big_body).replace(b"\n", b"\r\n")).hexdigest()
    again = pochta(config, "import", "mbox", ALICE, str(path), "--mailbox", "Old mail")
    assert "0 message(s) imported" in again.stdout and "3 already there" in again.stdout


def test_import_mbox_written_by_mutt(instance: Instance, tmp_path: Path) -> None:
    if shutil.which("mutt") is None:
        pytest.skip("mutt is not installed")
    config = write_config(instance)
    record = tmp_path / "sent.mbox"
    body = "line one\nFrom here, unescaped (mutt writes Content-Length)\n\n" \
           "From a line after an empty one\n>From quoted\n"
    for n in (1, 2):
        done = subprocess.run(
            ["mutt", "-n", "-F", "/dev/null", "-e",
             f"set copy=yes; set record={record}; set mbox_type=mbox; "
             "set sendmail=/bin/true; set from=old@example.org; set use_from=yes",
             "-s", f"mutt {n}", "bob@example.org"],
            input=body, capture_output=True, text=True, timeout=30,
            env={**os.environ, "HOME": str(tmp_path)})
        assert done.returncode == 0, done.stderr
    done = pochta(config, "import", "mbox", ALICE, str(record), "--mailbox", "Sent")
    assert done.returncode == 0, done.stderr
    assert "2 message(s) imported" in done.stdout
    store_view = asyncio.run(mailbox_view(instance, ALICE))
    assert [s for s, _, _, _ in store_view["Sent"]] == ["mutt 1", "mutt 2"]
    assert all(f == {"\\Seen"} for _, f, _, _ in store_view["Sent"])  # Status: RO

    async def body_of(uid: int) -> bytes:
        from pochta.storage.factory import open_store
        store = await open_store(instance.config())
        try:
            account = await store.get_account(ALICE)
            assert account is not None
            box = await store.get_mailbox(account.id, "Sent")
            assert box is not None
            meta = next(m for m in await store.list_messages(box.id) if m.uid == uid)
            return await store.read_blob(meta.blob_id)
        finally:
            await store.close()

    data = asyncio.run(body_of(1))
    assert data.endswith(b"\r\n\r\n" + body.replace("\n", "\r\n").encode())


def test_export_read_back_by_dovecot(instance: Instance, tmp_path: Path) -> None:
    config = write_config(instance)
    exported = "exported@example.org"
    source = Dovecot({OLD: "old-pass"})
    try:
        fill_with_doveadm(source)
        assert pochta(config, "import", "maildir", ALICE,
                      str(source.maildir(OLD))).returncode == 0
    finally:
        source.stop()
    view = asyncio.run(mailbox_view(instance, ALICE))
    target = tmp_path / "export"
    done = pochta(config, "export", ALICE, str(target))
    assert done.returncode == 0, done.stderr
    assert "6 message(s)" in done.stdout
    refused = pochta(config, "export", ALICE, str(target))
    assert refused.returncode == 1 and "not an empty directory" in refused.stderr

    reader = Dovecot({exported: "x-pass"}, mail={exported: Path("/nonexistent")})
    try:
        maildir = reader.root / "export"
        shutil.copytree(target, maildir)
        os.chown(maildir, reader.nobody.pw_uid, reader.nobody.pw_gid)
        for path in maildir.rglob("*"):
            os.chown(path, reader.nobody.pw_uid, reader.nobody.pw_gid)
        passwd = (reader.root / "passwd").read_text().replace("/nonexistent", str(maildir))
        (reader.root / "passwd").write_text(passwd)
        out = reader.doveadm("-f", "tab", "fetch", "-u", exported,
                             "mailbox flags date.received.unixtime hdr.subject", "all")
    finally:
        reader.stop()
    seen = set()
    for line in out.strip().split("\n")[1:]:
        box, flags, date, subject = line.split("\t")
        seen.add((box, subject.removeprefix("Subject: ").strip(),
                  frozenset(flags.split()) - {"\\Recent"}, int(date)))
    wanted = {(box, subject, flags, date) for box, rows in view.items()
              for subject, flags, date, _ in rows}
    assert seen == wanted
