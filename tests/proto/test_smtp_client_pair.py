"""The SMTP client core paired in memory with our own SMTP server core."""

from __future__ import annotations

from dataclasses import dataclass, field

from pochta.proto.smtp import replies
from pochta.proto.smtp.client import (
    ClientSession,
    EhloDone,
    Event,
    Recipient,
    Transaction,
    TransactionDone,
    TransactionResult,
)
from pochta.proto.smtp.events import (
    NEED_DATA,
    ConnectionClosed,
    MessageReady,
    RcptTo,
)
from pochta.proto.smtp.server import ServerSession, SessionParams


@dataclass
class Pair:
    server: ServerSession
    client: ClientSession = field(default_factory=lambda: ClientSession("client.example.test"))
    refuse: set[str] = field(default_factory=set)
    messages: list[MessageReady] = field(default_factory=list)
    closed: bool = False

    def pump(self) -> list[Event]:
        events: list[Event] = []
        for _ in range(10_000):
            out = self.client.data_to_send()
            if out:
                self.server.receive_data(out)
            progressed = bool(out)
            while True:
                ev = self.server.next_event()
                if ev is NEED_DATA:
                    break
                if isinstance(ev, ConnectionClosed):
                    self.closed = True
                    break
                if isinstance(ev, RcptTo) and ev.address in self.refuse:
                    self.server.reject(replies.Reply(550, "5.1.1", "no such user"))
                elif isinstance(ev, MessageReady):
                    self.messages.append(ev)
                    self.server.accept(replies.queued(f"Q{len(self.messages)}"))
                else:
                    self.server.accept()  # MAIL, other RCPTs
            back = self.server.data_to_send()
            if back:
                events.extend(self.client.receive_data(back))
                progressed = True
            if not progressed or self.closed:
                break
        return events


def paired(**params: object) -> Pair:
    server = ServerSession(SessionParams("mx.example.test", **params))  # type: ignore[arg-type]
    pair = Pair(server)
    server.start()
    pair.pump()
    pair.client.ehlo()
    events = pair.pump()
    assert isinstance(events[-1], EhloDone) and events[-1].reply.positive
    return pair


def send(pair: Pair, tx: Transaction) -> TransactionResult:
    pair.client.send_transaction(tx)
    done = [e for e in pair.pump() if isinstance(e, TransactionDone)]
    assert len(done) == 1
    return done[0].result


def test_pipelined_chunked_transaction_against_our_server() -> None:
    pair = paired()
    assert pair.client.supports("PIPELINING") and pair.client.supports("CHUNKING")
    msg = b"Subject: hi\r\n\r\n.starts with a dot\r\nGr\xc3\xbc\xc3\x9fe\r\n"
    pair.refuse.add("nobody@example.test")
    tx = Transaction(
        "alice@example.net",
        (Recipient("bob@example.test", notify="FAILURE", orcpt="rfc822;bob@example.test"),
         Recipient("nobody@example.test")),
        msg, body_8bit=True, ret="HDRS", envid="ID1",
    )
    result = send(pair, tx)
    assert [r.code for _, r in result.outcomes()] == [250, 550]
    (m,) = pair.messages
    assert m.data == msg
    assert m.chunked
    assert m.mail_from.body == "8BITMIME" and m.mail_from.ret == "HDRS"
    assert m.mail_from.envid == "ID1" and m.mail_from.size == len(msg)
    assert [r.address for r in m.recipients] == ["bob@example.test"]
    assert m.recipients[0].notify == "FAILURE"
    assert m.recipients[0].orcpt == "rfc822;bob@example.test"


def test_several_transactions_on_one_session_and_quit() -> None:
    pair = paired()
    for n in range(3):
        body = b"Subject: %d\r\n\r\nx\r\n" % n
        result = send(pair, Transaction("a@example.net", (Recipient("b@example.test"),), body))
        assert result.outcome(0).code == 250
        assert f"Q{n + 1}" in result.outcome(0).text
    pair.client.quit()
    pair.pump()
    assert pair.closed and pair.client.closed
    assert [m.data for m in pair.messages][2] == b"Subject: 2\r\n\r\nx\r\n"


def test_smtputf8_addresses_accepted_by_our_server() -> None:
    pair = paired()
    tx = Transaction("jürgen@example.net", (Recipient("bob@example.test"),),
                     "Subject: ü\r\n\r\nx\r\n".encode(), body_8bit=True, smtputf8=True)
    assert send(pair, tx).outcome(0).code == 250
    assert pair.messages[0].mail_from.address == "jürgen@example.net"


def test_all_refused_then_next_transaction_works() -> None:
    pair = paired()
    pair.refuse.add("x@example.test")
    bad = Transaction("a@example.net", (Recipient("x@example.test"),), b"x\r\n")
    assert send(pair, bad).outcome(0).code == 550
    good = Transaction("a@example.net", (Recipient("y@example.test"),), b"y\r\n")
    assert send(pair, good).outcome(0).code == 250
    assert [m.data for m in pair.messages] == [b"y\r\n"]
