"""Bounces and complaints that come back later, to the return path (VERP): RFC 3464 DSNs
as Postfix, Exim, Exchange and Gmail write them, plain-text bounces, delay notices, ARF
complaints; a forged return path; and the whole loop over SMTP."""

from __future__ import annotations

import json

import pytest

from pochta.sending.bounces import parse_report
from pochta.storage.interfaces_sending import EventKind
from tests.e2e.smtpclient import RawClient
from tests.sending.helpers import SendingServer

ORIGINAL = ("Return-Path: <{verp}>\r\nFrom: alice@example.test\r\nTo: {rcpt}\r\n"
            "Subject: hello\r\n\r\nbody\r\n")


def dsn(boundary: str, human: str, status_block: str, original: str = "",
        ctype: str = "message/delivery-status", sender: str = "MAILER-DAEMON@mx.remote.test",
        subject: str = "Undelivered Mail Returned to Sender") -> str:
    return (f"From: {sender}\r\nTo: x@example.test\r\nSubject: {subject}\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/report; "
            f"report-type=delivery-status; boundary=\"{boundary}\"\r\n\r\n"
            f"--{boundary}\r\nContent-Type: text/plain\r\n\r\n{human}\r\n"
            f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n{status_block}\r\n"
            f"--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n{original}\r\n"
            f"--{boundary}--\r\n")


POSTFIX = dsn("B1", "This is the mail system at host mx.remote.test.\r\n\r\nI'm sorry to "
              "have to inform you that your message could not\r\nbe delivered.",
              "Reporting-MTA: dns; mx.remote.test\r\nX-Postfix-Queue-ID: 4F1\r\n"
              "Arrival-Date: Mon,  1 Dec 2026 10:00:00 +0000 (UTC)\r\n\r\n"
              "Final-Recipient: rfc822; {rcpt}\r\nOriginal-Recipient: rfc822;{rcpt}\r\n"
              "Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mbox.remote.test\r\n"
              "Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected:\r\n"
              "    User unknown in virtual mailbox table")
EXIM = dsn("1733-exim", "This message was created automatically by mail delivery software."
           "\r\n\r\nA message that you sent could not be delivered to one or more of its\r\n"
           "recipients. This is a permanent error.",
           "Reporting-MTA: dns; mx.remote.test\r\n\r\nAction: failed\r\n"
           "Final-Recipient: rfc822;{rcpt}\r\nStatus: 5.0.0\r\n"
           "Remote-MTA: dns; mbox.remote.test\r\nDiagnostic-Code: smtp; 550 No such user here",
           sender="Mail Delivery System <Mailer-Daemon@mx.remote.test>",
           subject="Mail delivery failed: returning message to sender")
EXCHANGE = dsn("_000_exch", "Delivery has failed to these recipients or groups:\r\n{rcpt}\r\n"
               "The recipient's mailbox is full and can't accept messages now.",
               "Reporting-MTA: dns;EXCH01.remote.test\r\nReceived-From-MTA: dns;EXCH02\r\n"
               "Arrival-Date: Mon, 1 Dec 2026 10:00:00 +0000\r\n\r\n"
               "Original-Recipient: rfc822;{rcpt}\r\nFinal-Recipient: rfc822;{rcpt}\r\n"
               "Action: failed\r\nStatus: 5.2.2\r\n"
               "Diagnostic-Code: smtp;554 5.2.2 mailbox full; STOREDRV.Deliver.Exception",
               sender="postmaster@remote.test", subject="Undeliverable: hello")
GMAIL = dsn("000gm", "** Address not found **\r\n\r\nYour message wasn't delivered to {rcpt} "
            "because the address couldn't be found.",
            "Reporting-MTA: dns; googlemail.com\r\nArrival-Date: Mon, 01 Dec 2026\r\n\r\n"
            "Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            "Remote-MTA: dns; gmail-smtp-in.l.google.com. (142.250.1.26, the server for the "
            "domain gmail.com.)\r\nDiagnostic-Code: smtp; 550-5.1.1 The email account that you "
            "tried to reach does not exist.\r\nLast-Attempt-Date: Mon, 01 Dec 2026",
            sender="Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
            subject="Delivery Status Notification (Failure)")
DELAYED = dsn("D1", "Delayed", "Reporting-MTA: dns; mx.remote.test\r\n\r\n"
              "Final-Recipient: rfc822; {rcpt}\r\nAction: delayed\r\nStatus: 4.4.1\r\n"
              "Diagnostic-Code: X-Postfix; connect to mbox.remote.test: Connection timed out",
              subject="Delayed Mail (still being retried)")
TEXT = ("From: MAILER-DAEMON@old.remote.test\r\nTo: x@example.test\r\n"
        "Subject: failure notice\r\n\r\nHi. This is the qmail-send program at old.remote.test."
        "\r\nI'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
        "<{rcpt}>:\r\n192.0.2.1 does not like recipient.\r\n"
        "Remote host said: 550 sorry, no mailbox here by that name. (#5.1.1)\r\n")
ARF = ("From: staff@feedback.remote.test\r\nTo: x@example.test\r\nSubject: complaint\r\n"
       "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; "
       "boundary=\"arf\"\r\n\r\n--arf\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
       "--arf\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
       "User-Agent: SomeGenerator/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: {rcpt}\r\n\r\n"
       "--arf\r\nContent-Type: message/rfc822\r\n\r\n{original}\r\n--arf--\r\n")


@pytest.mark.parametrize(("sample", "kind", "status", "hard"), [
    (POSTFIX, EventKind.BOUNCED, "5.1.1", True),
    (EXIM, EventKind.BOUNCED, "5.0.0", True),  # "No such user" in the diagnostic
    (EXCHANGE, EventKind.BOUNCED, "5.2.2", False),
    (GMAIL, EventKind.BOUNCED, "5.1.1", True),
    (DELAYED, EventKind.DEFERRED, "4.4.1", False),
    (TEXT, EventKind.BOUNCED, "5.1.1", True),
    (ARF, EventKind.COMPLAINED, "", False),
])
def test_formats(sample: str, kind: EventKind, status: str, hard: bool) -> None:
    from pochta.sending.service import classify

    text = sample.replace("{rcpt}", "u@remote.test").replace("{original}", "Subject: x\r\n")
    finding = parse_report(text.encode())
    assert finding is not None
    assert finding.kind is kind and finding.status == status
    if kind is EventKind.BOUNCED:
        assert (classify(finding.status, finding.diagnostic) == "hard") is hard


async def send_to(api: SendingServer, rcpt: str) -> tuple[str, str]:
    r = await api.call("POST", "/v1/messages", {"from": "alice@example.test", "to": rcpt,
                                                "subject": "hello", "text": "body"})
    mid = r.json()["recipients"][0]["id"]
    await api.wait_events(EventKind.DELIVERED, 1)
    [m] = [m for m in api.sink.messages if rcpt in m.rcpts]
    return mid, m.sender


async def deliver(api: SendingServer, rcpt: str, data: str) -> tuple[int, str]:
    c = await RawClient.connect(api.server.port("mta"))
    await c.reply()
    await c.cmd("EHLO mx.remote.test")
    await c.cmd("MAIL FROM:<>")
    code, text = await c.cmd(f"RCPT TO:<{rcpt}>")
    if code != 250:
        await c.close()
        return code, text
    await c.cmd("DATA")
    reply = await c.cmd(data.replace("\r\n.", "\r\n..") + "\r\n.")
    await c.close()
    return reply


@pytest.mark.parametrize("sample", [POSTFIX, GMAIL, TEXT])
async def test_async_bounce_over_smtp_becomes_event_and_suppression(
        api: SendingServer, sample: str) -> None:
    mid, verp = await send_to(api, "gone@remote.test")
    data = sample.replace("{rcpt}", "gone@remote.test").replace(
        "{original}", ORIGINAL.format(verp=verp, rcpt="gone@remote.test"))
    assert (await deliver(api, verp, data))[0] == 250
    [ev] = await api.events(kinds=(EventKind.BOUNCED,))
    assert ev.message_id == mid and ev.recipient == "gone@remote.test"
    detail = json.loads(ev.detail)
    assert detail["type"] == "hard" and detail["status"] == "5.1.1"
    assert await api.store.suppressed("example.test", "bulk", ["gone@remote.test"]) == {
        "gone@remote.test"}
    [s] = await api.store.list_suppressions("example.test")
    assert s.reason == "bounce"
    # nothing landed in a mailbox or the queue
    assert [i for i in await api.store.list_queue() if i.message_id != mid] == []


async def test_complaint_to_plain_bounce_address_is_matched_inside(
        api: SendingServer) -> None:
    mid, verp = await send_to(api, "angry@remote.test")
    data = ARF.replace("{rcpt}", "angry@remote.test").replace(
        "{original}", ORIGINAL.format(verp=verp, rcpt="angry@remote.test"))
    assert (await deliver(api, "bounces@example.test", data))[0] == 250
    [ev] = await api.events(kinds=(EventKind.COMPLAINED,))
    assert ev.message_id == mid
    [s] = await api.store.list_suppressions("example.test")
    assert s.address == "angry@remote.test" and s.reason == "complaint"


async def test_forged_return_path_is_refused(api: SendingServer) -> None:
    _mid, verp = await send_to(api, "u@remote.test")
    local, domain = verp.split("@")
    forged = local[:-1] + ("0" if local[-1] != "0" else "1") + "@" + domain
    code, _ = await deliver(api, forged, "Subject: x\r\n\r\nx")
    assert code == 550
    assert await api.events(kinds=(EventKind.BOUNCED,)) == []
