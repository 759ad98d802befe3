"""RFC 5321 section 4.1.2 paths and ESMTP parameters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pochta.proto.smtp import replies
from pochta.proto.smtp.address import (
    AddressError,
    is_address_literal,
    is_domain,
    parse_mail_from,
    parse_mailbox,
    parse_rcpt_to,
    xtext_decode,
    xtext_encode,
)

MAX = 1000


def mail(text: str, **kw: bool) -> str:
    return parse_mail_from(text, max_message_size=MAX, **kw).address


def mail_error(text: str, **kw: bool) -> replies.Reply:
    with pytest.raises(AddressError) as exc:
        parse_mail_from(text, max_message_size=MAX, **kw)
    return exc.value.reply


def rcpt(text: str, smtputf8: bool = False) -> str:
    return parse_rcpt_to(text, smtputf8=smtputf8, local_hostname="mx.example.org").address


def rcpt_error(text: str, smtputf8: bool = False) -> replies.Reply:
    with pytest.raises(AddressError) as exc:
        parse_rcpt_to(text, smtputf8=smtputf8, local_hostname="mx.example.org")
    return exc.value.reply


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("<a@example.com>", "a@example.com"),
        (" <a@example.com>", "a@example.com"),
        ("<>", ""),
        ("<first.last+tag@sub.example.com>", "first.last+tag@sub.example.com"),
        ("<!#$%&'*+-/=?^_`{|}~@example.com>", "!#$%&'*+-/=?^_`{|}~@example.com"),
        ('<"john doe"@example.com>', '"john doe"@example.com'),
        ('<"joe"@example.com>', "joe@example.com"),
        ('<"a\\"b"@example.com>', '"a\\"b"@example.com'),
        ('<"a>b"@example.com>', '"a>b"@example.com'),
        ('<"a@b"@example.com>', '"a@b"@example.com'),
        ("<@a.example,@b.example:u@d.example>", "u@d.example"),
        ("<@a.example:u@d.example>", "u@d.example"),
        ("<u@[192.0.2.1]>", "u@[192.0.2.1]"),
        ("<u@[IPv6:2001:db8::1]>", "u@[IPv6:2001:db8::1]"),
        ("<u@[x-tag:content]>", "u@[x-tag:content]"),
        ("<u@xn--bcher-kva.example>", "u@xn--bcher-kva.example"),
        ("<u@a-b.example>", "u@a-b.example"),
    ],
)
def test_valid_paths(text: str, address: str) -> None:
    assert mail(text) == address


@pytest.mark.parametrize(
    "text",
    [
        "a@example.com",
        "<a@example.com",
        "<a@example.com>x",
        "<a@>",
        "<@example.com>",
        "<a..b@example.com>",
        "<.a@example.com>",
        "<a.@example.com>",
        "<a b@example.com>",
        "<a@-example.com>",
        "<a@example-.com>",
        "<a@exa_mple.com>",
        "<a@example..com>",
        "<a@example.com.>",
        "<a@[300.1.1.1]>",
        "<a@[IPv6:zz]>",
        "<a@[1.2.3.4>",
        "<@a.example u@d.example>",
        "<@:u@d.example>",
        "<a@b@c.example>",
        '<"unterminated@example.com>',
        '<"a"b@example.com>',
        "<a>",  # MAIL needs a domain
        "<a@" + "x" * 64 + ".example>",  # label over 63 octets
    ],
)
def test_invalid_sender_paths(text: str) -> None:
    assert mail_error(text) is replies.BAD_SENDER_SYNTAX


def test_rcpt_rules() -> None:
    assert rcpt("<Postmaster>") == "Postmaster@mx.example.org"
    assert rcpt("<postmaster>") == "postmaster@mx.example.org"
    assert rcpt_error("<user>") is replies.RECIPIENT_NEEDS_DOMAIN
    assert rcpt_error("<>") is replies.BAD_RECIPIENT_SYNTAX
    assert rcpt_error("<a@@b>") is replies.BAD_RECIPIENT_SYNTAX
    assert rcpt_error("b@example.com") is replies.BAD_RECIPIENT_SYNTAX
    assert rcpt("<@relay.example:b@example.com>") == "b@example.com"


def test_utf8_needs_smtputf8() -> None:
    assert mail_error("<ü@example.com>") is replies.NON_ASCII_ADDRESS
    assert mail_error("<u@bücher.example>") is replies.NON_ASCII_ADDRESS
    assert mail("<ü@bücher.example> SMTPUTF8") == "ü@bücher.example"
    assert rcpt_error("<ü@example.com>") is replies.NON_ASCII_ADDRESS
    assert rcpt("<ü@example.com>", smtputf8=True) == "ü@example.com"
    assert mail_error("<a@example.com> SMTPUTF8", smtputf8_enabled=False) is (
        replies.UNKNOWN_PARAMETER
    )
    assert mail_error("<a@example.com> SMTPUTF8=yes") is replies.BAD_PARAMETER


def test_mail_parameters() -> None:
    ev = parse_mail_from(
        "<a@example.com> size=100 body=7bit RET=full ENVID=abc+2Bd AUTH=<a@example.com>",
        max_message_size=MAX,
    )
    assert (ev.size, ev.body, ev.ret, ev.envid, ev.smtputf8) == (100, "7BIT", "FULL", "abc+d",
                                                                False)
    assert ev.params == {
        "SIZE": "100",
        "BODY": "7bit",
        "RET": "full",
        "ENVID": "abc+2Bd",
        "AUTH": "<a@example.com>",
    }
    assert parse_mail_from("<a@b.example>  SIZE=1", max_message_size=MAX).size == 1
    assert parse_mail_from("<a@b.example> SIZE=1000", max_message_size=MAX).size == 1000


@pytest.mark.parametrize(
    ("params", "reply"),
    [
        ("SIZE=1001", replies.MESSAGE_TOO_BIG),
        ("SIZE=", replies.BAD_PARAMETER),
        ("SIZE", replies.BAD_PARAMETER),
        ("SIZE=-1", replies.BAD_PARAMETER),
        ("SIZE=1 SIZE=2", replies.BAD_PARAMETER),
        ("SIZE=\uff11", replies.BAD_PARAMETER),  # a fullwidth digit
        ("BODY=BINARYMIME", replies.UNKNOWN_PARAMETER),
        ("BODY=QUOTED", replies.BAD_PARAMETER),
        ("RET=ALL", replies.BAD_PARAMETER),
        ("ENVID=a+zz", replies.BAD_PARAMETER),
        ("ENVID=" + "a" * 101, replies.BAD_PARAMETER),
        ("X-FOO", replies.UNKNOWN_PARAMETER),
        ("-BAD", replies.BAD_PARAMETER),
        ("A=b=c", replies.BAD_PARAMETER),
        ("NOTIFY=NEVER", replies.UNKNOWN_PARAMETER),
    ],
)
def test_mail_parameter_errors(params: str, reply: replies.Reply) -> None:
    assert mail_error(f"<a@example.com> {params}") is reply


def test_binarymime_when_enabled() -> None:
    ev = parse_mail_from(
        "<a@example.com> BODY=binarymime", max_message_size=MAX, binarymime_enabled=True
    )
    assert ev.body == "BINARYMIME"


def test_rcpt_parameters() -> None:
    ev = parse_rcpt_to(
        "<b@example.com> NOTIFY=failure,Success ORCPT=rfc822;b+2Bx@example.com",
        smtputf8=False,
        local_hostname="h",
    )
    assert ev.notify == "FAILURE,SUCCESS"
    assert ev.orcpt == "rfc822;b+x@example.com"
    for bad in ("NOTIFY=NEVER,DELAY", "NOTIFY=", "NOTIFY=SOMETIMES", "NOTIFY=DELAY,DELAY",
                "ORCPT=rfc822", "ORCPT=;x", "ORCPT=rfc822;a+q"):
        assert rcpt_error(f"<b@example.com> {bad}") is replies.BAD_PARAMETER, bad
    assert rcpt_error("<b@example.com> SIZE=1") is replies.UNKNOWN_PARAMETER


def test_domain_and_literal_helpers() -> None:
    assert is_domain("example.com") and is_domain("a") and is_domain("пример.рф")
    assert not is_domain("") and not is_domain("a" * 256)
    assert is_address_literal("[127.0.0.1]") and is_address_literal("[IPv6:::1]")
    assert not is_address_literal("[]") and not is_address_literal("127.0.0.1")
    assert not is_address_literal("[IPv6:1.2.3.4.5]")
    assert parse_mailbox("local") == ("local", "")


@given(st.text())
def test_xtext_roundtrip(s: str) -> None:
    encoded = xtext_encode(s)
    assert encoded.isascii() and "=" not in encoded
    assert xtext_decode(encoded) == s


@given(st.text(max_size=80))
def test_parsers_never_raise_anything_but_address_error(text: str) -> None:
    for fn in (
        lambda: parse_mail_from(text, max_message_size=MAX),
        lambda: parse_rcpt_to(text, smtputf8=True, local_hostname="h"),
    ):
        try:
            fn()
        except AddressError as exc:
            assert exc.reply.code >= 500
