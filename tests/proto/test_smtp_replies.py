"""The SMTP reply catalogue: every entry valid, codes consistent, formatting."""

from __future__ import annotations

import pytest

from pochta.proto.smtp import replies
from pochta.proto.smtp.replies import Reply

CATALOGUE = replies.catalogue()


def test_catalogue_is_large_and_named() -> None:
    assert len(CATALOGUE) > 50
    assert CATALOGUE["BYE"] is replies.BYE


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_reply_is_consistent(name: str) -> None:
    reply = CATALOGUE[name]
    klass = str(reply.code)[0]
    if klass == "3":
        assert reply.enhanced == ""
    else:
        # Every catalogue reply outside 3xx carries an enhanced code of its own class.
        assert reply.enhanced, name
        assert reply.enhanced.split(".")[0] == klass, name
    data = reply.to_bytes()
    assert data.endswith(b"\r\n") and data.count(b"\r\n") == len(reply.lines())
    assert data.startswith(f"{reply.code} ".encode()) or data.startswith(
        f"{reply.code}-".encode()
    )
    # Only 221 and 421 close the connection.
    assert reply.close == (reply.code in (221, 421)), name


def test_to_bytes_single_and_multi_line() -> None:
    assert replies.OK.to_bytes() == b"250 2.0.0 Ok\r\n"
    multi = Reply(550, "5.7.1", "first\nsecond\nthird")
    assert multi.to_bytes() == b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n"
    assert replies.ehlo("h", ["A", "B"]).to_bytes() == b"250-h\r\n250-A\r\n250 B\r\n"
    assert replies.auth_challenge("").to_bytes() == b"334 \r\n"
    assert replies.greeting("h", "ESMTP x").to_bytes() == b"220 h ESMTP x\r\n"
    assert replies.queued("ABC").to_bytes() == b"250 2.0.0 Ok: queued as ABC\r\n"


@pytest.mark.parametrize(
    ("code", "enhanced", "text"),
    [
        (250, "5.0.0", "x"),  # class mismatch
        (550, "2.1.1", "x"),
        (450, "5.1.1", "x"),
        (550, "5.1", "x"),
        (550, "6.0.0", "x"),
        (550, "5.1000.0", "x"),
        (550, "", "x"),  # failure without enhanced code
        (199, "", "x"),
        (600, "", "x"),
        (250, "2.0.0", "a\rb"),
        (250, "2.0.0", "a\x00b"),
    ],
)
def test_invalid_replies_are_refused(code: int, enhanced: str, text: str) -> None:
    with pytest.raises(ValueError):
        Reply(code, enhanced, text)
