"""$HasAttachment / $HasNoAttachment from the MIME structure (pochta/mail/attachments.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pochta.mail.attachments import (
    HAS_ATTACHMENT,
    HAS_NO_ATTACHMENT,
    attachment_keyword,
    attachment_keyword_of_file,
)

PLAIN = b"From: a@b.test\r\nSubject: hi\r\n\r\nContent-Disposition: attachment\r\n"


def mixed(*parts: bytes, boundary: bytes = b"b1") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return (b"Subject: x\r\nContent-Type: multipart/mixed;\r\n boundary=\"" + boundary
            + b"\"\r\n\r\npreamble\r\n" + body + b"--" + boundary + b"--\r\nepilogue\r\n")


TEXT = b"Content-Type: text/plain\r\n\r\nhello\r\n"
PDF = (b"Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
       b" filename=\"a.pdf\"\r\n\r\nJVBERi0=\r\n")


@pytest.mark.parametrize(("message", "keyword"), [
    # the body's text looks like a header but is none
    (PLAIN, HAS_NO_ATTACHMENT),
    (mixed(TEXT), HAS_NO_ATTACHMENT),
    (mixed(TEXT, PDF), HAS_ATTACHMENT),
    # inline with a file name (a photo in the text) counts, inline without one not
    (mixed(TEXT, b"Content-Type: image/png\r\nContent-Disposition: inline; "
           b"filename=p.png\r\n\r\niVBO\r\n"), HAS_ATTACHMENT),
    (mixed(TEXT, b"Content-Type: text/html\r\nContent-Disposition: inline\r\n\r\n<p>\r\n"),
     HAS_NO_ATTACHMENT),
    # a signature is not an attachment (RFC 3156)
    (mixed(TEXT, b"Content-Type: application/pgp-signature\r\nContent-Disposition: "
           b"attachment; filename=signature.asc\r\n\r\n-----BEGIN\r\n"), HAS_NO_ATTACHMENT),
    # nested: alternative inside mixed, and a forwarded message's own attachment
    (mixed(b"Content-Type: multipart/alternative; boundary=b2\r\n\r\n"
           b"--b2\r\n" + TEXT + b"\r\n--b2--\r\n", PDF), HAS_ATTACHMENT),
    (mixed(TEXT, b"Content-Type: message/rfc822\r\n\r\n" + mixed(TEXT, PDF, boundary=b"in")),
     HAS_ATTACHMENT),
    # a single-part message that is itself an attachment
    (b"Content-Type: application/zip\r\nContent-Disposition: attachment\r\n\r\nUEsD\r\n",
     HAS_ATTACHMENT),
    # only the header, no body
    (b"Subject: x\r\nContent-Disposition: attachment", HAS_ATTACHMENT),
])
def test_attachment_keyword(message: bytes, keyword: str) -> None:
    assert attachment_keyword(message) == keyword


def test_a_spooled_message_is_read_in_chunks(tmp_path: Path) -> None:
    big = mixed(TEXT + b"x" * 300_000, PDF)
    path = tmp_path / "spool"
    path.write_bytes(b"JUNK" + big[20:])
    # the prefix (trace headers) and the file from an offset, 7-byte chunks included
    assert attachment_keyword_of_file(str(path), 4, len(big) - 20, big[:20]) == \
        HAS_ATTACHMENT
    assert attachment_keyword_of_file(str(path), 4, len(big) - 20, big[:20],
                                      chunk=7) == HAS_ATTACHMENT
    path.write_bytes(mixed(TEXT + b"y" * 300_000, TEXT))
    assert attachment_keyword_of_file(str(path), 0, path.stat().st_size) == \
        HAS_NO_ATTACHMENT


def test_any_split_of_the_input_gives_the_same_answer() -> None:
    """Boundary lines, header lines and "\\n--" cut anywhere between two pieces."""
    from pochta.mail.attachments import AttachmentScan

    messages = [mixed(TEXT, PDF), mixed(TEXT, TEXT), mixed(
        b"Content-Type: multipart/alternative; boundary=b2\r\n\r\n--b2\r\n" + TEXT
        + b"\r\n--b2--\r\n", PDF), mixed(TEXT, b"Content-Type: message/rfc822\r\n\r\n"
                                        + mixed(TEXT, PDF, boundary=b"in"))]
    for message in messages:
        whole = attachment_keyword(message) == HAS_ATTACHMENT
        for size in range(1, 41):
            scan = AttachmentScan()
            for at in range(0, len(message), size):
                scan.feed(message[at:at + size])
            assert scan.result() == whole, (message, size)
