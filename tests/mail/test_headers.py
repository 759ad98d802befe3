"""Header sections (RFC 5322 §2.2): splitting, fields with continuation lines, unfolding,
removing and folding."""

from __future__ import annotations

import email
import email.policy
import random
import re

import pytest

from pochta.mail.headers import (
    field_value,
    fold,
    header_end,
    header_fields,
    header_values,
    split_body,
    split_header,
    without_fields,
)


@pytest.mark.parametrize(("message", "header", "rest"), [
    (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", b"A: 1\r\nB: 2\r\n", b"\r\nbody\r\n"),
    (b"A: 1\n\nbody\n", b"A: 1\n", b"\nbody\n"),  # bare LF (files, tools)
    (b"A: 1\r\n", b"A: 1\r\n", b""),  # no empty line: all header
    (b"A: 1", b"A: 1", b""),
    (b"\r\nbody\r\n\r\nmore", b"", b"\r\nbody\r\n\r\nmore"),  # no header at all
    (b"\nbody", b"", b"\nbody"),
    (b"", b"", b""),
    # the first empty line ends the header, whichever line ends come later
    (b"A: 1\n\nB\r\n\r\n", b"A: 1\n", b"\nB\r\n\r\n"),
])
def test_split_header(message: bytes, header: bytes, rest: bytes) -> None:
    assert split_header(message) == (header, rest)
    assert header + rest == message


def test_split_body_drops_the_empty_line() -> None:
    assert split_body(b"A: 1\r\n\r\nbody") == (b"A: 1\r\n", b"body")
    assert split_body(b"A: 1\n\nbody") == (b"A: 1\n", b"body")
    assert split_body(b"\r\nbody") == (b"", b"body")
    assert header_end(b"A: 1") == (4, 4)


def test_header_end_is_the_first_empty_line() -> None:
    # the definition: the first match of \r?\n(\r?\n) (header_end finds it without it)
    blank = re.compile(rb"\r?\n(\r?\n)")
    rng = random.Random(5322)
    for _ in range(20000):
        message = b"".join(rng.choice([b"\r", b"\n", b"\r\n", b"A", b": ", b" "])
                           for _ in range(rng.randint(0, 12)))
        m = blank.search(message)
        if message.startswith((b"\r\n", b"\n")):
            continue  # an empty first line: no header at all (the tests above)
        expected = (m.start(1), m.end(1)) if m else (len(message), len(message))
        assert header_end(message) == expected, message


def test_fields_keep_their_continuation_lines() -> None:
    header = (b"Subject: a long\r\n\tsubject\r\nTo: x@example.test\r\n"
              b"Received: from a\r\n  by b\r\n  with c\r\nno colon here\r\n")
    fields = header_fields(header)
    assert [name for name, _ in fields] == [b"Subject", b"To", b"Received", b""]
    assert b"".join(raw for _, raw in fields) == header  # nothing lost or reordered
    assert field_value(fields[0][1]) == b"a long subject"
    assert field_value(fields[2][1]) == b"from a by b with c"


def test_a_continuation_line_first_is_not_a_field() -> None:
    fields = header_fields(b" Subject: x\r\nTo: y\r\n")
    assert [name for name, _ in fields] == [b"", b"To"]


def test_header_values_unfolded_case_insensitive() -> None:
    header = b"FROM: a@example.test\r\nfrom: b@example.test,\r\n c@example.test\r\nX: 1\r\n"
    assert header_values(header, "From") == ["a@example.test",
                                            "b@example.test, c@example.test"]
    assert header_values(header, "Subject") == []
    # bytes that are not UTF-8 survive (surrogateescape)
    assert header_values(b"Subject: \xff\r\n", "subject") == ["\udcff"]


def test_without_fields() -> None:
    header = b"Subject: old\r\n continued\r\nTo: x\r\nsubject: again\r\n"
    assert without_fields(header, "Subject") == b"To: x\r\n"


def test_fold_short_and_long_ascii() -> None:
    assert fold("Subject", "hi") == "Subject: hi"
    words = " ".join(f"word{i}" for i in range(40))
    folded = fold("Subject", words)
    lines = folded.split("\r\n")
    assert len(lines) > 1 and all(len(line) <= 78 for line in lines)
    assert all(line.startswith(" ") for line in lines[1:])  # folding white space
    assert folded.replace("\r\n", "") == f"Subject: {words}"  # unfolds to the original


def test_fold_long_word_without_spaces_stays_whole() -> None:
    """RFC 5322 §2.2.3 folds only at white space: a 200-character token is not cut."""
    token = "x" * 200
    assert fold("References", token) == f"References: {token}"
    folded = fold("References", f"<{token}> <short@id>")
    assert folded.split("\r\n") == [f"References: <{token}>", " <short@id>"]


def test_fold_non_ascii_is_encoded_words_with_crlf() -> None:
    value = "Привет " * 30
    folded = fold("Subject", value)
    assert folded.isascii() and "=?utf-8?" in folded
    assert "\n" not in folded.replace("\r\n", "")  # never a bare LF
    msg = email.message_from_bytes(f"{folded}\r\n\r\n".encode(), policy=email.policy.default)
    assert str(msg["Subject"]) == value
