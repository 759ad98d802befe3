"""Regressions found by Dovecot's imaptest compliance scripts (one test per fix)."""

from __future__ import annotations

from pochta.proto.imap.bodystructure import envelope, parse, section_bytes

FOLDED_BOUNDARY = (
    b"From: user@domain.org\r\n"
    b"Mime-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="foo\r\n bar"\r\n'
    b"\r\n"
    b"prologue\r\n"
    b"\r\n"
    b"--foo bar\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"hello\r\n"
    b"\r\n"
    b"--foo bar--\r\n"
)


def test_folded_boundary_is_unfolded() -> None:
    """imaptest fetch-body-mime: a boundary parameter folded inside its quotes."""
    root = parse(FOLDED_BOUNDARY)
    assert root.is_multipart and len(root.children) == 1
    assert section_bytes(root, (1,), "") == b"hello\r\n"


TOP_RFC822 = (
    b"From: user@domain.org\r\n"
    b"Mime-Version: 1.0\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: sub@domain.org\r\n"
    b"Subject: submsg\r\n"
    b"\r\n"
    b"Hello world\r\n"
)


def test_top_level_message_rfc822_numbering() -> None:
    """imaptest fetch-body-message-rfc822: the top-level body of a non-multipart message is
    part 1 even when it is a message/rfc822 (RFC 9051 §6.4.5)."""
    root = parse(TOP_RFC822)
    inner = b"From: sub@domain.org\r\nSubject: submsg\r\n\r\nHello world\r\n"
    assert section_bytes(root, (1,), "") == inner
    assert section_bytes(root, (1,), "HEADER") == b"From: sub@domain.org\r\nSubject: submsg\r\n\r\n"
    assert section_bytes(root, (1,), "TEXT") == b"Hello world\r\n"
    assert section_bytes(root, (1, 1), "") == b"Hello world\r\n"
    assert section_bytes(root, (2,), "") is None


def test_envelope_comment_as_name_and_empty_group_comment() -> None:
    """imaptest fetch-envelope: `user@domain (Real Name)` takes the comment as its name;
    a comment alone inside a group is not an address."""
    msg = (b"From: user@domain (Real Name)\r\n"
           b"To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\r\n"
           b"Cc: group:;, group2: (foo) ;\r\n"
           b"\r\nbody\r\n")
    env = envelope(parse(msg))
    assert b'(("Real Name" NIL "user" "domain"))' in env
    assert (b'((NIL NIL "group" NIL) (NIL NIL NIL NIL) (NIL NIL "group2" NIL) '
            b"(NIL NIL NIL NIL))") in env
    # a phrase still wins over a comment
    env = envelope(parse(b"From: Bob (work) <bob@x.test>\r\n\r\n"))
    assert b'(("Bob" NIL "bob" "x.test"))' in env
