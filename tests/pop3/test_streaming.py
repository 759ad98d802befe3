"""RETR of a big message streams it in pieces: dot-stuffing holds across piece
boundaries (core), and poplib gets back exactly the stored bytes (end to end)."""

from __future__ import annotations

import asyncio
import poplib

import pytest

from pochta.mail.dotstuff import dot_stuff
from pochta.proto.pop3.session import (
    DropMessage,
    PasswordLogin,
    Pop3Session,
    Retrieve,
)
from pochta.storage.interfaces import Envelope, LocalTarget
from tests.conftest import Server


def piecewise(data: bytes, cuts: list[int]) -> bytes:
    """What a real session sends for RETR when the message comes in pieces."""
    s = Pop3Session(hostname="h.example.test", tls_active=True)
    s.receive_data(b"USER a\r\nPASS b\r\n")
    assert isinstance(s.next_event(), PasswordLogin)
    s.accept_login("a", [DropMessage(uid=1, blob_id=1, size=len(data), uidl="1.1")])
    s.data_to_send()
    s.receive_data(b"RETR 1\r\n")
    assert isinstance(s.next_event(), Retrieve)
    s.start_message(len(data))
    pos = 0
    for cut in [*cuts, len(data)]:
        s.message_chunk(data[pos:cut])
        pos = cut
    s.end_message()
    out = s.data_to_send()
    head = b"+OK %d octets\r\n" % len(data)
    assert out.startswith(head) and out.endswith(b".\r\n")
    return out[len(head):-3]


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5, 6, 7])
def test_dot_stuffing_across_piece_boundaries(cut: int) -> None:
    data = b".a\r\n.b\r\nc\r\n..d\r\n.\r\nend"
    for cuts in ([cut], [cut, cut + 1], [cut, cut + 2, cut + 5]):
        cuts = [c for c in cuts if 0 < c < len(data)]
        assert piecewise(data, cuts) == dot_stuff(data), cuts


async def test_big_retr_is_streamed_and_exact(running_server: Server) -> None:
    store = running_server.store
    bob = await store.get_account("bob@example.test")
    assert bob is not None
    line = b"x" * 77 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + b"".join(
        (b"." if n % 7 == 0 else b"") + line for n in range(40_000))  # 3.2 MB, dot-lines
    await store.accept(body, Envelope("a@elsewhere.test"), [LocalTarget(bob.id)])
    port = running_server.port("pop3", "implicit")

    def fetch() -> list[bytes]:
        pop = poplib.POP3_SSL("127.0.0.1", port, context=running_server.client_ssl())
        pop.user("bob@example.test")
        pop.pass_("bob-pass")
        resp, lines, _octets = pop.retr(1)
        assert resp.startswith(b"+OK %d octets" % len(body))
        pop.quit()
        return lines

    lines = await asyncio.to_thread(fetch)
    assert b"\r\n".join(lines) + b"\r\n" == body
