"""Structured API messages become valid RFC 5322/MIME (read back with the stdlib parser):
non-ASCII names and subjects, alternatives, attachments, long lines, CRLF only."""

from __future__ import annotations

import base64
import email
import email.policy

import pytest

from pochta.sending.compose import InvalidRequest, parse_message

STREAMS = ["transactional", "bulk"]


def test_structured_message_round_trips() -> None:
    out = parse_message({
        "from": {"email": "Alice@Example.test", "name": "Ålice Ü"},
        "to": ["b@r.test", {"email": "c@r.test", "name": "Çé, Jr."}],
        "cc": "Dee <d@r.test>", "bcc": ["hidden@r.test"], "reply_to": "help@example.test",
        "subject": "Grüße {{who}} " + "long " * 30, "variables": {"who": "Bob"},
        "text": "héllo {{who}}\nworld " + "y" * 1200, "html": "<b>{{who}}</b>",
        "attachments": [{"filename": "rä.pdf", "content_type": "application/pdf",
                         "content": base64.b64encode(b"%PDF-1.4").decode()}],
        "headers": {"X-Campaign": "c1"}}, STREAMS, 10)
    assert out.sender == "alice@example.test" and out.domain == "example.test"
    assert out.recipients == ["b@r.test", "c@r.test", "d@r.test", "hidden@r.test"]
    assert b"hidden" not in out.data  # Bcc is never written
    assert b"\n" not in out.data.replace(b"\r\n", b"")
    assert max(len(line) for line in out.data.split(b"\r\n")) <= 998
    m = email.message_from_bytes(out.data, policy=email.policy.default)
    assert str(m["From"]) == "Ålice Ü <alice@example.test>"
    assert str(m["To"]) == 'b@r.test, "Çé, Jr." <c@r.test>'
    assert str(m["Subject"]).startswith("Grüße Bob long")
    assert m["X-Campaign"] == "c1" and m["Reply-To"] == "help@example.test"
    assert [p.get_content_type() for p in m.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html",
        "application/pdf"]
    plain = m.get_body(("plain",))
    assert plain is not None
    assert plain.get_content().replace("\r\n", "\n").startswith("héllo Bob\nworld yyy")
    [att] = list(m.iter_attachments())
    assert att.get_filename() == "rä.pdf" and att.get_content() == b"%PDF-1.4"


def test_ascii_text_stays_7bit_and_raw_messages_pass_through() -> None:
    out = parse_message({"from": "a@example.test", "to": "b@r.test", "subject": "s",
                         "text": "plain\nascii"}, STREAMS, 10)
    assert out.data.endswith(b"Content-Transfer-Encoding: 7bit\r\n\r\nplain\r\nascii\r\n")
    raw = parse_message({"raw": "From: Shop <shop@example.test>\nSubject: r\n\nbody\n",
                         "to": ["x@r.test"], "tags": ["r"]}, STREAMS, 10)
    assert raw.sender == "shop@example.test" and raw.subject == "r"
    assert raw.data == b"From: Shop <shop@example.test>\r\nSubject: r\r\n\r\nbody\r\n"
    with pytest.raises(InvalidRequest) as err:
        parse_message({"raw": "Subject: x\n\nbody\n", "to": "x@r.test"}, STREAMS, 10)
    assert err.value.code == "invalid_message"
    with pytest.raises(InvalidRequest) as err:
        parse_message({"raw": "From: a@example.test\n\nx", "to": "x@r.test", "html": "h"},
                      STREAMS, 10)
    assert err.value.code == "unknown_field"
