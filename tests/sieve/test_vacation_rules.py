"""Vacation replies as an admin configures them ([sieve] vacation_*): which of the
user's addresses a reply comes from (RFC 5230 §4.5), the default Subject, the To: of a
reply to a Sender:, an encoded :from; and end to end over SMTP: a reply for mail to an
alias comes from the alias, ``vacation_alias_recipient = false`` stops it, and
``vacation_send_from_recipient`` sets the envelope sender."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.header import decode_header, make_header

import pytest

from pochta.sieve import SieveMessage
from pochta.sieve.autoreply import VacationRules, build_vacation, vacation_plan
from pochta.sieve.interpreter import Vacation
from tests.conftest import Instance, Server, start_instance
from tests.sieve.test_e2e import LISTENERS, queued_to, smtp, upload

AWAY = Vacation("away", 86400)


def msg(head: str) -> SieveMessage:
    return SieveMessage((head.replace("\n", "\r\n") + "\r\n\r\nhello\r\n").encode())


def test_reply_comes_from_the_address_the_message_named() -> None:
    m = msg("From: timo@example.net\nTo: sales@example.com\nCc: x@example.org")
    mine = ["alice@example.com", "sales@example.com"]
    assert vacation_plan(m, "timo@example.net", mine, AWAY) == (None, "sales@example.com")
    # :addresses count too, after the user's own
    extra = Vacation("away", 86400, addresses=("x@example.org",))
    assert vacation_plan(m, "timo@example.net", ["alice@example.com"], extra) \
        == (None, "x@example.org")
    # named nowhere: no reply, unless the admin turned the check off (then from the
    # account's address)
    why, _ = vacation_plan(m, "timo@example.net", ["alice@example.com"], AWAY)
    assert why == "none of the user's addresses is in To/Cc"
    assert vacation_plan(m, "timo@example.net", ["alice@example.com"], AWAY,
                         check_recipient=False) == (None, "alice@example.com")
    # RFC 3834 rules stay whatever the check: never to a list
    listed = msg("From: l@example.net\nTo: alice@example.com\nList-Id: <l.example.net>")
    assert vacation_plan(listed, "l@example.net", ["alice@example.com"], AWAY,
                         check_recipient=False)[0] == "mailing list (list-id)"


def test_configured_subjects() -> None:
    rules = VacationRules("Out of office", "[away] %{subject}")
    with_subject = msg("From: a@example.net\nSubject: Lunch?\nTo: b@example.com")
    reply = SieveMessage(build_vacation(AWAY, with_subject, "b@example.com",
                                        "a@example.net", "mx.example.com", 0.0, rules))
    assert reply.headers("subject") == ["[away] Lunch?"]
    bare = msg("From: a@example.net\nTo: b@example.com")
    reply = SieveMessage(build_vacation(AWAY, bare, "b@example.com", "a@example.net",
                                        "mx.example.com", 0.0, rules))
    assert reply.headers("subject") == ["Out of office"]
    # :subject wins over both
    own = Vacation("away", 86400, subject="Gone fishing")
    reply = SieveMessage(build_vacation(own, bare, "b@example.com", "a@example.net",
                                        "mx.example.com", 0.0, rules))
    assert reply.headers("subject") == ["Gone fishing"]


def test_to_names_the_sender_field_that_matches_the_envelope() -> None:
    m = msg('From: "Stephan Bosch" <stephan@example.org>\n'
            'Sender: "Hendrik-Jan Tuinman" <h.j.tuinman@example.org>\nTo: n@example.com')

    def to(sender: str, rules: VacationRules | None = None) -> list[str]:
        data = build_vacation(AWAY, m, "n@example.com", sender, "mx.example.com", 0.0,
                              rules or VacationRules())
        return SieveMessage(data).headers("to")

    assert to("h.j.tuinman@example.org") == ['"Hendrik-Jan Tuinman" <h.j.tuinman@example.org>']
    assert to("stephan@example.org") == ['"Stephan Bosch" <stephan@example.org>']
    assert to("srs0=ab=cd=example.org=x@fwd.example") == ["<srs0=ab=cd=example.org=x@fwd.example>"]
    # the envelope is an SRS address: the To: shows who wrote (the reply still goes to it)
    assert to("srs0=ab=cd=example.org=x@fwd.example", VacationRules(to_ignore_envelope=True)) \
        == ['"Hendrik-Jan Tuinman" <h.j.tuinman@example.org>']


@pytest.mark.parametrize("display", [
    "=?utf-8?q?G=C3=BCnther?= M. Karotte <g.m.karotte@example.com>",
    "G\u00fcnther M. Karotte <g.m.karotte@example.com>",
])
def test_from_display_name_is_encoded_once(display: str) -> None:
    m = msg("From: a@example.net\nTo: g.m.karotte@example.com")
    data = build_vacation(Vacation("away", 86400, from_=display), m,
                          "g.m.karotte@example.com", "a@example.net", "mx.example.com", 0.0)
    head = data.split(b"\r\n\r\n")[0]
    [line] = [x for x in head.split(b"\r\n") if x.startswith(b"From: ")]
    assert line.isascii()  # RFC 2047: one encoded phrase, not a quoted encoded word
    assert str(make_header(decode_header(line[6:].decode()))) \
        == "G\u00fcnther M. Karotte <g.m.karotte@example.com>"
    assert SieveMessage(data).headers("from") \
        == ["G\u00fcnther M. Karotte <g.m.karotte@example.com>"]


SCRIPT = 'require "vacation";\nvacation :days 1 "Back on Monday.";\n'
MAIL = "From: timo@remote.test\nTo: {to}\nSubject: order {n}\nMessage-ID: <{n}@remote.test>\n\nhi\n"


async def _server(instance: Instance, **sieve: object) -> Server:
    srv = await start_instance(instance, listeners=LISTENERS, sieve=sieve)
    await srv.store.add_alias("sales@example.test", ["alice@example.test"])
    await upload(srv, "alice@example.test", "alice-pass", SCRIPT)
    return srv


@pytest.fixture
async def server(instance: Instance) -> AsyncIterator[Server]:
    srv = await _server(instance)
    try:
        yield srv
    finally:
        await srv.running.close(grace=1.0)
        await srv.store.close()


async def test_reply_to_mail_for_an_alias_comes_from_the_alias(server: Server) -> None:
    code, _ = await smtp(server, "timo@remote.test", ["sales@example.test"],
                         MAIL.format(to="sales@example.test", n=1))
    assert code == 250
    [(sender, rcpt, data)] = await queued_to(server)
    assert (sender, rcpt) == ("", "timo@remote.test")
    reply = SieveMessage(data)
    assert reply.addresses("from") == ["sales@example.test"]
    assert reply.headers("subject") == ["Auto: order 1"]


async def test_alias_recipient_off_and_send_from_recipient(instance: Instance) -> None:
    srv = await _server(instance, vacation_alias_recipient=False,
                        vacation_send_from_recipient=True,
                        vacation_subject_template="Re: %{subject} (away)")
    try:
        code, _ = await smtp(srv, "timo@remote.test", ["sales@example.test"],
                             MAIL.format(to="sales@example.test", n=1))
        assert code == 250
        assert await queued_to(srv) == []  # the alias is not the user's own address
        code, _ = await smtp(srv, "timo@remote.test", ["alice@example.test"],
                             MAIL.format(to="alice@example.test", n=2))
        assert code == 250
        [(sender, rcpt, data)] = await queued_to(srv)
        assert (sender, rcpt) == ("alice@example.test", "timo@remote.test")
        assert SieveMessage(data).headers("subject") == ["Re: order 2 (away)"]
    finally:
        await srv.running.close(grace=1.0)
        await srv.store.close()


def test_non_ascii_subjects_are_encoded_words() -> None:
    m = SieveMessage(b"From: a@example.net\r\nTo: b@example.com\r\nSubject: "
                     + "\u00dcber das Wetter".encode() + b"\r\n\r\nhi\r\n")
    data = build_vacation(AWAY, m, "b@example.com", "a@example.net", "mx.example.com", 0.0)
    head = data.split(b"\r\n\r\n")[0]
    assert head.isascii()  # RFC 5230 §5: no 8bit header material
    assert SieveMessage(data).headers("subject") == ["Auto: \u00dcber das Wetter"]
