"""The parsing rules of the transfer package, without files or servers."""

from __future__ import annotations

import calendar
from pathlib import Path

from pochta.transfer.body import BodyWriter, crlf
from pochta.transfer.imap import _batches, parse_fetch, parse_internaldate, parse_list
from pochta.transfer.maildir import folder_dir, parse_flags
from pochta.transfer.mbox import from_line_date


def test_maildir_info() -> None:
    keywords = {"a": "$Important", "b": "$Label1"}
    assert parse_flags("1.M2.host,S=10,W=12:2,DFPRST", {}) == {
        "\\Draft", "\\Flagged", "$Forwarded", "\\Answered", "\\Seen", "\\Deleted"}
    assert parse_flags("1.M2.host:2,Sab", keywords) == {"\\Seen", "$Important", "$Label1"}
    assert parse_flags("1.M2.host:2,Sz", keywords) == {"\\Seen"}  # unknown keyword letter
    assert parse_flags("1.M2.host", keywords) == frozenset()
    assert parse_flags("1.M2.host!2,RS", {}) == {"\\Answered", "\\Seen"}  # mbsync style


def test_folder_names_on_disk(tmp_path: Path) -> None:
    assert folder_dir(tmp_path, "INBOX") == tmp_path
    assert folder_dir(tmp_path, "Work/Projects") == tmp_path / ".Work.Projects"
    assert folder_dir(tmp_path, "Résumé") == tmp_path / ".R&AOk-sum&AOk-"


def test_from_line_dates() -> None:
    want = calendar.timegm((2024, 1, 1, 10, 0, 0))
    assert from_line_date(b"From a@b Mon Jan  1 10:00:00 2024\n") == want
    assert from_line_date(b"From a@b Mon Jan 1 10:00:00 2024 +0000\n") == want
    assert from_line_date(b"From MAILER-DAEMON garbage\n") is None


def test_body_writer_spills_and_normalises(tmp_path: Path) -> None:
    assert crlf(b"a\n") == b"a\r\n" and crlf(b"a\r\n") == b"a\r\n" and crlf(b"a") == b"a"
    writer = BodyWriter(tmp_path, spill_at=10)
    for _ in range(5):
        writer.write_line(b"0123456789\n")
    body = writer.finish()
    assert body.data is None and body.path is not None and body.size == 60
    assert Path(body.path).read_bytes() == b"0123456789\r\n" * 5
    assert Path(body.path).stat().st_mode & 0o777 == 0o600
    body.discard()
    assert not Path(body.path).exists()


def test_imap_list_and_fetch() -> None:
    folders = parse_list([
        b'(\\HasNoChildren) "/" INBOX',
        b'(\\HasChildren \\Noselect) "/" Work',
        b'(\\HasNoChildren) "/" "Work/Projects"',
        b'(\\HasNoChildren \\Sent) "." "INBOX.Sent Items"',
        (b'(\\HasNoChildren) "/" {6}', b'R&AOk-'),
    ])
    assert [(f.remote, f.local) for f in folders] == [
        ("INBOX", "INBOX"), ("R&AOk-", "Ré"), ("INBOX.Sent Items", "Sent"),
        ("Work/Projects", "Work/Projects")]
    fetched = parse_fetch([
        (b'1 (UID 7 FLAGS (\\Seen \\Recent $Junk) INTERNALDATE "01-Jan-2024 10:00:00 +0100"'
         b' BODY[] {5}', b"hello"),
        b")",
        (b'2 (UID 9 BODY[] {2}', b"hi"),
        b' FLAGS (\\Answered) INTERNALDATE " 2-Jan-2024 10:00:00 +0000")',
    ])
    assert [(m.uid, m.flags, m.body) for m in fetched] == [
        (7, frozenset({"\\Seen", "$Junk"}), b"hello"), (9, frozenset({"\\Answered"}), b"hi")]
    assert fetched[0].internaldate == calendar.timegm((2024, 1, 1, 9, 0, 0))
    assert fetched[1].internaldate == parse_internaldate("02-Jan-2024 10:00:00 +0000")


def test_fetch_batches_bounded_by_count_and_bytes() -> None:
    sizes = [(uid, 1000) for uid in range(1, 121)]
    assert [len(b) for b in _batches(sizes)] == [50, 50, 20]
    big = [(1, 10_000_000), (2, 10_000_000), (3, 100)]
    assert _batches(big) == [[1], [2, 3]]
