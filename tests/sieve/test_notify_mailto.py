"""mailto notifications (RFC 5435/5436) as sent: the URI's own To/Cc (with display
names) and header fields (never the reserved ones), one message per address per
delivery, the priority fields, Auto-Submitted with its owner; the envelope sender is
the user's address (or <> after a message from <>). End to end over SMTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.header import decode_header, make_header

import pytest

from pochta.sieve import SieveMessage
from pochta.sieve.autoreply import build_notification, notification_sender
from pochta.sieve.interpreter import Notify
from tests.conftest import Instance, Server, start_instance
from tests.sieve.test_e2e import LISTENERS, queued_to, smtp, upload

TRIGGER = SieveMessage(b"From: stephan@example.org\r\nTo: nico@example.net\r\n"
                       b"Subject: Frop!\r\n\r\nhi\r\n")


def notify(uri: str, **kw: object) -> tuple[list[str], SieveMessage]:
    built = build_notification(Notify(uri, **kw), TRIGGER, "nico@example.net",  # type: ignore[arg-type]
                               "mx.example.net", 0.0)
    assert built is not None
    return built[0], SieveMessage(built[1])


def test_uri_recipients_cc_and_header_fields() -> None:
    rcpts, m = notify("mailto:timo@example.com%2cstephan@dovecot.example.net"
                      "?cc=postmaster@frop.example.org&subject=Frop%20received"
                      "&reply-to=desk@example.com&from=evil@example.org"
                      "&auto-submitted=no&bcc=hidden@example.org")
    assert rcpts == ["timo@example.com", "stephan@dovecot.example.net",
                     "postmaster@frop.example.org"]
    assert m.addresses("to") == ["timo@example.com", "stephan@dovecot.example.net"]
    assert m.addresses("cc") == ["postmaster@frop.example.org"]
    assert m.headers("subject") == ["Frop received"]
    assert m.addresses("reply-to") == ["desk@example.com"]
    # reserved fields are the server's: never from the URI (RFC 5436)
    assert m.addresses("from") == ["nico@example.net"] and m.headers("bcc") == []
    assert m.headers("auto-submitted") == ['auto-notified; owner-email="nico@example.net"']
    assert m.headers("x-priority") == ["3 (Normal)"] and m.headers("importance") == ["Normal"]


def test_display_names_and_one_message_per_address() -> None:
    _, m = notify("mailto:?to=%3D%3Futf-8%3Fq%3FG%3DC3%3DBCnther%3F%3D%20M.%20Karotte"
                  "%20%3Cg.m.karotte%40example.com%3E")
    assert m.headers("to") == ["G\u00fcnther M. Karotte <g.m.karotte@example.com>"]
    seen: set[str] = set()
    first = build_notification(
        Notify("mailto:timo@example.com?cc=stephan@example.net"), TRIGGER,
        "nico@example.net", "mx", 0.0, seen)
    second = build_notification(
        Notify("mailto:stephan@example.net?cc=timo@example.com"), TRIGGER,
        "nico@example.net", "mx", 0.0, seen)
    assert first is not None and second is None  # everyone was notified already


def test_long_message_is_cut_and_priorities() -> None:
    _, m = notify("mailto:a@example.com", message="x" * 600, importance="1")
    [subject] = m.headers("subject")
    assert len(subject) == 256 and subject.endswith("\u2026")
    assert m.headers("x-priority") == ["1 (Highest)"] and m.headers("importance") == ["High"]


def test_envelope_sender() -> None:
    own = ["nico@example.net", "nico.smith@example.net"]
    assert notification_sender(Notify("mailto:a@x.test"), "s@remote.test", own) \
        == "nico@example.net"
    # :from is used only when it is the user's own address
    assert notification_sender(Notify("mailto:a@x.test", from_="Nico <nico.smith@example.net>"),
                               "s@remote.test", own) == "nico.smith@example.net"
    assert notification_sender(Notify("mailto:a@x.test", from_="ceo@example.net"),
                               "s@remote.test", own) == "nico@example.net"
    # after a message from <>, and when the admin says so: <>
    assert notification_sender(Notify("mailto:a@x.test"), "", own) == ""
    assert notification_sender(Notify("mailto:a@x.test"), "s@remote.test", own, "null") == ""


@pytest.fixture
async def server(instance: Instance) -> AsyncIterator[Server]:
    srv = await start_instance(instance, listeners=LISTENERS)
    try:
        yield srv
    finally:
        await srv.running.close(grace=1.0)
        await srv.store.close()


async def test_notification_over_smtp(server: Server) -> None:
    await upload(server, "alice@example.test", "alice-pass",
                 'require "enotify";\n'
                 'notify :message "New mail" '
                 '"mailto:pager@remote.test?cc=%22Desk%22%20%3Cdesk%40remote.test%3E";\n')
    msg = "From: boss@corp.test\nTo: alice@example.test\nSubject: s\n\nhi\n"
    assert (await smtp(server, "boss@corp.test", ["alice@example.test"], msg))[0] == 250
    sent = sorted(await queued_to(server))
    assert [(s, r) for s, r, _ in sent] == [("alice@example.test", "desk@remote.test"),
                                           ("alice@example.test", "pager@remote.test")]
    m = SieveMessage(sent[0][2])
    assert m.headers("cc") == ['Desk <desk@remote.test>']
    assert str(make_header(decode_header(m.headers("subject")[0]))) == "New mail"
    # a bounce (from <>) notifies with <> as the sender: no loop of automatic mail
    assert (await smtp(server, "", ["alice@example.test"], msg))[0] == 250
    later = [x for x in await queued_to(server) if x not in sent]
    assert sorted((s, r) for s, r, _ in later) == [("", "desk@remote.test"),
                                                   ("", "pager@remote.test")]
