"""ID before login (RFC 2971): as big as §3.3 allows (imaptest's 32 KB ``id`` group),
while every other command before login stays within ``preauth_max_command``."""

from __future__ import annotations

from pochta.proto.imap.session import (
    PREAUTH_MAX_ID,
    Command,
    ImapServerSession,
    SessionLimits,
)
from tests.conftest import Server
from tests.imap.helpers import connect, st


def _rfc_max_id(tag: bytes = b"a") -> bytes:
    pairs = b" ".join(b'"%s" "%s"' % (b"f%029d" % i, b"v" * 1024) for i in range(30))
    return tag + b" ID (" + pairs + b")\r\n"


def _feed(s: ImapServerSession, data: bytes) -> list[object]:
    s.receive_data(data)
    out: list[object] = []
    while True:
        ev = s.next_event()
        if not isinstance(ev, Command):
            return out
        out.append(ev)


def test_id_at_rfc_limits_is_framed_before_login() -> None:
    s = ImapServerSession(SessionLimits(preauth_max_command=8192))
    line = _rfc_max_id()
    assert 8192 < len(line) <= PREAUTH_MAX_ID
    evs = _feed(s, line)
    assert len(evs) == 1 and isinstance(evs[0], Command) and evs[0].name == "ID"
    assert s.data_to_send() == b""


def test_other_commands_and_oversized_id_keep_the_small_cap() -> None:
    s = ImapServerSession(SessionLimits(preauth_max_command=8192))
    assert _feed(s, b"a LOGIN " + b"x" * 20000 + b" y\r\n") == []
    assert s.data_to_send() == b"a BAD line too long\r\n"
    assert _feed(s, b"b ID (" + b'"k" "v" ' * 5000 + b")\r\n") == []
    assert s.data_to_send() == b"b BAD line too long\r\n"
    # a literal inside ID counts against the same bound
    assert _feed(s, b"c ID ({40000}\r\n") == []
    assert s.data_to_send() == b"c BAD [TOOBIG] Literal too large before login\r\n"
    assert _feed(s, b'd ID ("name" {3}\r\n') == []
    assert s.data_to_send() == b"+ Ready for literal data\r\n"
    assert len(_feed(s, b'abc)\r\n')) == 1


async def test_id_of_32kb_before_login_over_a_socket(imap_server: Server) -> None:
    async with connect(imap_server) as c:
        c.send(_rfc_max_id(b"i1"))
        resp = await c.read_response("i1")
        assert resp[0].startswith(b'* ID ("name" "Pochta"'), resp
        assert resp[-1] == b"i1 OK ID completed\r\n"
        # beyond RFC 2971 §3.3: 31 pairs, or a field of 31 octets
        resp = await c.cmd(b'ID (' + b'"k" "v" ' * 31 + b')')
        assert st(resp).startswith(b"BAD"), resp
        resp = await c.cmd(b'ID ("' + b"f" * 31 + b'" "v")')
        assert st(resp).startswith(b"BAD"), resp
        # and the connection still logs in
        await c.login()
