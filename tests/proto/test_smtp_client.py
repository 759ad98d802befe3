"""The sans-IO SMTP client core, paired in memory with a small scripted server."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pytest

from pochta.proto.smtp.client import (
    ClientSession,
    ClientStateError,
    EhloDone,
    Event,
    Greeting,
    Malformed,
    Preflight,
    Recipient,
    ReplyParser,
    Response,
    ServerReply,
    State,
    Transaction,
    TransactionDone,
    TransactionResult,
    dot_stuff,
    parse_extensions,
)


@dataclass
class MiniServer:
    """Enough of an SMTP server to exercise the client: line commands, DATA, BDAT."""

    extensions: tuple[str, ...] = ("PIPELINING", "8BITMIME", "SIZE 1000000")
    reject: set[str] = field(default_factory=set)  # recipients refused with 550
    defer: set[str] = field(default_factory=set)  # recipients refused with 450
    mail_reply: bytes = b"250 2.1.0 Ok\r\n"
    data_reply: bytes = b"250 2.0.0 Ok: queued\r\n"
    commands: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    batches: list[list[bytes]] = field(default_factory=list)
    _buf: bytearray = field(default_factory=bytearray)
    _in_data: bool = False
    _data: bytearray = field(default_factory=bytearray)
    _bdat_left: int = 0
    _bdat_last: bool = False
    _rcpts: int = 0
    _mail: bool = False

    def greeting(self) -> bytes:
        return b"220 mx.example.test ESMTP\r\n"

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        batch: list[bytes] = []
        while True:
            if self._bdat_left:
                take = min(self._bdat_left, len(self._buf))
                self._data += self._buf[:take]
                del self._buf[:take]
                self._bdat_left -= take
                if self._bdat_left:
                    break
                if self._bdat_last:
                    self.messages.append(bytes(self._data))
                    self._data.clear()
                    out += self.data_reply
                else:
                    out += b"250 2.0.0 chunk ok\r\n"
                continue
            idx = self._buf.find(b"\r\n")
            if idx < 0:
                break
            line = bytes(self._buf[:idx])
            del self._buf[: idx + 2]
            if self._in_data:
                if line == b".":
                    self._in_data = False
                    self.messages.append(bytes(self._data))
                    self._data.clear()
                    out += self.data_reply if self._rcpts else b"554 5.5.1 no rcpt\r\n"
                else:
                    self._data += (line[1:] if line.startswith(b".") else line) + b"\r\n"
                continue
            self.commands.append(line)
            batch.append(line)
            out += self._command(line)
        if batch:
            self.batches.append(batch)
        return bytes(out)

    def _command(self, line: bytes) -> bytes:
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            lines = ["mx.example.test", *self.extensions]
            return "".join(
                f"250{'-' if i < len(lines) - 1 else ' '}{t}\r\n" for i, t in enumerate(lines)
            ).encode()
        if verb == b"HELO":
            return b"250 mx.example.test\r\n"
        if verb == b"MAIL":
            self._rcpts = 0
            self._mail = self.mail_reply.startswith(b"2")
            return self.mail_reply
        if verb == b"RCPT":
            if not self._mail:
                return b"503 5.5.1 need MAIL\r\n"
            addr = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
            if addr in self.reject:
                return b"550 5.1.1 no such user\r\n"
            if addr in self.defer:
                return b"450 4.2.0 try later\r\n"
            self._rcpts += 1
            return b"250 2.1.5 Ok\r\n"
        if verb == b"DATA":
            if not self._rcpts:
                return b"554 5.5.1 no valid recipients\r\n"
            self._in_data = True
            return b"354 go ahead\r\n"
        if verb == b"BDAT":
            parts = line.split()
            self._bdat_left = int(parts[1])
            self._bdat_last = len(parts) > 2 and parts[2].upper() == b"LAST"
            if self._bdat_left == 0:
                if self._bdat_last:
                    self.messages.append(bytes(self._data))
                    self._data.clear()
                    return self.data_reply
                return b"250 2.0.0 chunk ok\r\n"
            return b""
        if verb == b"RSET":
            self._rcpts = 0
            return b"250 2.0.0 Ok\r\n"
        if verb == b"QUIT":
            return b"221 2.0.0 Bye\r\n"
        if verb == b"NOOP":
            return b"250 2.0.0 Ok\r\n"
        return b"502 5.5.2 unknown\r\n"


def pump(client: ClientSession, server: MiniServer, first: bytes = b"") -> list[Event]:
    """Move bytes both ways until both sides are quiet."""
    events: list[Event] = []
    incoming = first
    for _ in range(1000):
        if incoming:
            events.extend(client.receive_data(incoming))
        out = client.data_to_send()
        if not out:
            break
        incoming = server.feed(out)
        if not incoming:
            break
    return events


def connect(server: MiniServer) -> ClientSession:
    c = ClientSession("client.example.test")
    events = pump(c, server, server.greeting())
    assert isinstance(events[0], Greeting) and events[0].reply.code == 220
    c.ehlo()
    events = pump(c, server)
    assert isinstance(events[0], EhloDone)
    assert c.state is State.READY
    return c


def tx(*rcpts: str, message: bytes = b"Subject: hi\r\n\r\nbody\r\n", **kw: object) -> Transaction:
    return Transaction(
        "alice@example.test", tuple(Recipient(r) for r in rcpts), message, **kw  # type: ignore[arg-type]
    )


def run_tx(c: ClientSession, server: MiniServer, t: Transaction) -> TransactionResult:
    c.send_transaction(t)
    events = pump(c, server)
    done = [e for e in events if isinstance(e, TransactionDone)]
    assert len(done) == 1
    assert c.state is State.READY
    return done[0].result


# --- reply parsing -----------------------------------------------------------------------


def test_multiline_reply_and_enhanced_code() -> None:
    p = ReplyParser()
    assert p.feed(b"250-first\r\n250-sec") == []
    (r,) = p.feed(b"ond\r\n250 2.0.0 last\r\n")
    assert r.code == 250 and r.lines == ("first", "second", "2.0.0 last")
    assert ServerReply(550, ("5.1.1 no such user",)).enhanced == "5.1.1"
    # An enhanced code whose class does not match the reply code is not one (RFC 2034).
    assert ServerReply(550, ("2.1.1 odd",)).enhanced is None
    assert str(ServerReply(250, ("",))) == "250"


@pytest.mark.parametrize(
    "garbage", [b"hello\r\n", b"250-a\r\n251 b\r\n", b"2500 x\r\n", b"x" * 5000, b"650 no\r\n"]
)
def test_garbage_from_server_is_an_event_not_an_exception(garbage: bytes) -> None:
    c = ClientSession("client.example.test")
    events = c.receive_data(garbage)
    assert any(isinstance(e, Malformed) for e in events)
    assert c.state is State.CLOSED
    assert c.receive_data(b"220 ok\r\n") == []


def test_extensions_parsed_case_insensitively() -> None:
    ext = parse_extensions(ServerReply(250, ("mx", "pipelining", "SIZE 1000", "AUTH=LOGIN PLAIN")))
    assert ext["PIPELINING"] == "" and ext["SIZE"] == "1000"
    assert ext["AUTH"] == "LOGIN PLAIN"


def test_dot_stuffing_and_line_ends() -> None:
    assert dot_stuff(b".a\r\nb\r\n.\r\n..c") == b"..a\r\nb\r\n..\r\n...c\r\n.\r\n"
    assert dot_stuff(b"a\nb\rc") == b"a\r\nb\r\nc\r\n.\r\n"


# --- transactions ------------------------------------------------------------------------


def test_pipelined_transaction_sends_one_batch() -> None:
    server = MiniServer(reject={"bad@example.net"})
    c = connect(server)
    result = run_tx(c, server, tx("a@example.net", "bad@example.net", "b@example.net"))
    # MAIL, 3 RCPT and DATA went together (RFC 2920).
    assert server.batches[1][0].startswith(b"MAIL FROM:<alice@example.test>")
    assert [b.split(b":")[0] for b in server.batches[1]] == [
        b"MAIL FROM", *[b"RCPT TO"] * 3, b"DATA"
    ]
    assert b"SIZE=" in server.batches[1][0]
    codes = [r.code for _, r in result.outcomes()]
    assert codes == [250, 550, 250]
    assert result.data is not None and result.data.code == 250
    assert server.messages == [b"Subject: hi\r\n\r\nbody\r\n"]


def test_without_pipelining_commands_go_one_by_one() -> None:
    server = MiniServer(extensions=("8BITMIME",), defer={"b@example.net"})
    c = connect(server)
    result = run_tx(c, server, tx("a@example.net", "b@example.net"))
    assert all(len(b) == 1 for b in server.batches)
    assert [r.code for _, r in result.outcomes()] == [250, 450]


def test_all_recipients_refused_ends_with_rset_and_no_data() -> None:
    for ext in (("PIPELINING",), ()):
        server = MiniServer(extensions=ext, reject={"x@example.net"})
        c = connect(server)
        result = run_tx(c, server, tx("x@example.net"))
        assert result.outcome(0).code == 550
        assert server.messages == []
        assert server.commands[-1] == b"RSET"


def test_mail_refused_decides_every_recipient() -> None:
    for ext in (("PIPELINING",), ()):
        server = MiniServer(extensions=ext, mail_reply=b"553 5.1.8 bad sender\r\n")
        c = connect(server)
        result = run_tx(c, server, tx("a@example.net", "b@example.net"))
        assert [r.code for _, r in result.outcomes()] == [553, 553]
        assert server.messages == []


def test_data_refused_after_content() -> None:
    server = MiniServer(data_reply=b"554 5.7.1 spam\r\n")
    c = connect(server)
    result = run_tx(c, server, tx("a@example.net"))
    assert result.outcome(0).code == 554 and result.outcome(0).enhanced == "5.7.1"
    # The session is usable for the next message.
    server.data_reply = b"250 ok\r\n"
    assert run_tx(c, server, tx("a@example.net")).outcome(0).code == 250


def test_chunking_sends_bdat_without_dot_stuffing() -> None:
    server = MiniServer(extensions=("PIPELINING", "CHUNKING", "8BITMIME"))
    c = connect(server)
    msg = b"Subject: x\r\n\r\n.leading dot\r\n"
    result = run_tx(c, server, tx("a@example.net", message=msg))
    assert result.outcome(0).code == 250
    assert server.messages == [msg]
    assert any(cmd.startswith(b"BDAT ") and cmd.endswith(b"LAST") for cmd in server.commands)
    assert b"DATA" not in server.commands


def test_chunking_large_message_in_several_chunks() -> None:
    for ext in (("CHUNKING",), ("CHUNKING", "PIPELINING")):
        server = MiniServer(extensions=ext)
        c = connect(server)
        msg = b"Subject: x\r\n\r\n" + b"y" * 2_500_000 + b"\r\n"
        result = run_tx(c, server, tx("a@example.net", message=msg))
        assert result.outcome(0).code == 250
        assert server.messages == [msg]
        assert sum(cmd.startswith(b"BDAT") for cmd in server.commands) == 3


def test_8bit_message_gets_body_parameter() -> None:
    server = MiniServer()
    c = connect(server)
    msg = "Subject: x\r\n\r\nGrüße\r\n".encode()
    t = tx("a@example.net", message=msg, body_8bit=True)
    assert c.preflight(t) is Preflight.OK
    run_tx(c, server, t)
    assert b"BODY=8BITMIME" in server.commands[1]


def test_preflight_refusals() -> None:
    server = MiniServer(extensions=("SIZE 100",))
    c = connect(server)
    eight = "Subject: x\r\n\r\nGrüße\r\n".encode()
    assert c.preflight(tx("a@example.net", message=eight)) is Preflight.DOWNGRADE_8BIT
    big = c.preflight(tx("a@example.net", message=b"x" * 200))
    assert isinstance(big, ServerReply) and big.code == 552 and big.enhanced == "5.3.4"
    utf8 = c.preflight(tx("jürgen@example.net", smtputf8=True))
    assert isinstance(utf8, ServerReply) and utf8.enhanced == "5.6.7"
    hdr = c.preflight(tx("a@example.net", message="Subject: ü\r\n\r\nx\r\n".encode()))
    assert isinstance(hdr, ServerReply) and hdr.enhanced == "5.6.9"


def test_smtputf8_parameter_when_offered() -> None:
    server = MiniServer(extensions=("PIPELINING", "SMTPUTF8", "8BITMIME"))
    c = connect(server)
    t = tx("jürgen@example.net", smtputf8=True)
    assert c.preflight(t) is Preflight.OK
    run_tx(c, server, t)
    assert server.commands[1].endswith(b"SMTPUTF8")
    assert "jürgen".encode() in server.commands[2]


def test_dsn_parameters_only_when_offered() -> None:
    rcpt = Recipient("a@example.net", notify="SUCCESS,FAILURE", orcpt="rfc822;a@example.net")
    t = Transaction("s@example.test", (rcpt,), b"x\r\n", ret="HDRS", envid="QQ1")
    server = MiniServer(extensions=("DSN",))
    c = connect(server)
    run_tx(c, server, t)
    assert server.commands[1] == b"MAIL FROM:<s@example.test> RET=HDRS ENVID=QQ1"
    assert server.commands[2] == (
        b"RCPT TO:<a@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.net"
    )
    server = MiniServer(extensions=())
    c = connect(server)
    run_tx(c, server, t)
    assert server.commands[1] == b"MAIL FROM:<s@example.test>"


def test_421_mid_transaction_answers_everything() -> None:
    c = ClientSession("c.example.test")
    c.receive_data(b"220 hi\r\n")
    c.ehlo()
    c.receive_data(b"250-mx\r\n250 PIPELINING\r\n")
    c.send_transaction(tx("a@example.net", "b@example.net"))
    events = c.receive_data(b"250 ok\r\n421 4.3.2 shutting down\r\n")
    (done,) = [e for e in events if isinstance(e, TransactionDone)]
    assert [r.code for _, r in done.result.outcomes()] == [421, 421]
    assert c.state is State.CLOSED


def test_connection_lost_mid_transaction() -> None:
    c = ClientSession("c.example.test")
    c.receive_data(b"220 hi\r\n")
    c.ehlo()
    c.receive_data(b"250 mx\r\n")
    c.send_transaction(tx("a@example.net"))
    c.receive_data(b"250 ok\r\n")
    (done,) = c.connection_lost()
    assert isinstance(done, TransactionDone)
    assert done.result.outcome(0).code == 421


def test_starttls_resets_extensions_and_needs_ehlo() -> None:
    c = ClientSession("c.example.test")
    c.receive_data(b"220 hi\r\n")
    c.ehlo()
    c.receive_data(b"250-mx\r\n250 STARTTLS\r\n")
    c.starttls()
    assert c.data_to_send().endswith(b"STARTTLS\r\n")
    (ev,) = c.receive_data(b"220 2.0.0 go\r\n")
    assert isinstance(ev, Response) and ev.reply.code == 220
    c.tls_started()
    assert c.extensions == {}
    with pytest.raises(ClientStateError):
        c.send_transaction(tx("a@example.net"))
    c.ehlo()
    assert c.data_to_send() == b"EHLO c.example.test\r\n"


def test_auth_plain_and_challenge() -> None:
    c = ClientSession("c.example.test")
    c.receive_data(b"220 hi\r\n")
    c.ehlo()
    c.receive_data(b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n")
    c.data_to_send()
    assert c.auth_mechanisms == ["PLAIN", "LOGIN"]
    c.auth("LOGIN")
    assert c.data_to_send() == b"AUTH LOGIN\r\n"
    (ev,) = c.receive_data(b"334 VXNlcm5hbWU6\r\n")
    assert isinstance(ev, Response) and ev.reply.code == 334
    c.auth_response(b"user")
    assert c.data_to_send() == base64.b64encode(b"user") + b"\r\n"
    c.receive_data(b"334 UGFzc3dvcmQ6\r\n")
    c.auth_response(b"pw")
    c.data_to_send()
    (ev,) = c.receive_data(b"235 2.7.0 ok\r\n")
    assert isinstance(ev, Response) and ev.reply.code == 235
    assert c.state is State.READY


def test_wrong_state_is_a_driver_error() -> None:
    c = ClientSession("c.example.test")
    with pytest.raises(ClientStateError):
        c.ehlo()
    c.receive_data(b"220 hi\r\n")
    with pytest.raises(ClientStateError):
        c.send_transaction(tx("a@example.net"))


def test_unsolicited_421_closes() -> None:
    c = connect(MiniServer())
    events = c.receive_data(b"421 4.4.2 idle timeout\r\n")
    assert c.state is State.CLOSED
    assert not any(isinstance(e, Malformed) for e in events)


def test_helo_fallback_after_ehlo_refused() -> None:
    c = ClientSession("c.example.test")
    c.receive_data(b"220 hi\r\n")
    c.ehlo()
    (ev,) = c.receive_data(b"502 5.5.2 what\r\n")
    assert isinstance(ev, EhloDone) and not ev.reply.positive
    c.helo()
    c.data_to_send()
    c.receive_data(b"250 hi\r\n")
    assert c.state is State.READY and not c.esmtp
    c.send_transaction(tx("a@example.net"))
    assert c.data_to_send() == b"MAIL FROM:<alice@example.test>\r\n"
