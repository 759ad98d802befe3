"""Transcript tests of the sans-IO IMAP session core (no sockets, no store)."""

from __future__ import annotations

import ast
import pathlib

from pochta.proto.imap.errors import Limit, OverQuota, TryCreate
from pochta.proto.imap.parser import ParseError
from pochta.proto.imap.session import (
    COMMAND_STATES,
    NEED_DATA,
    UID_COMMANDS,
    Closed,
    Command,
    Event,
    IdleDone,
    ImapServerSession,
    SaslResponse,
    SessionLimits,
    State,
)
from pochta.server.imap_commands import COMMANDS


def events(s: ImapServerSession, data: bytes = b"") -> list[Event]:
    """Feed ``data`` and pull events up to NEED_DATA (or Closed)."""
    s.receive_data(data)
    out: list[Event] = []
    while True:
        ev = s.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)
        if isinstance(ev, Closed | IdleDone | SaslResponse):
            return out


def logged_in(limits: SessionLimits | None = None) -> ImapServerSession:
    s = ImapServerSession(limits)
    s.state = State.AUTHENTICATED
    return s


def test_command_tables_agree() -> None:
    assert set(COMMANDS) == set(COMMAND_STATES)
    assert set(UID_COMMANDS) <= set(COMMAND_STATES)


def test_command_event_and_state_checks() -> None:
    s = ImapServerSession()
    evs = events(s, b"a1 CAPABILITY\r\na2 SELECT INBOX\r\na3 UID FOO 1\r\na4 BLAH\r\n")
    assert len(evs) == 1 and isinstance(evs[0], Command)
    assert evs[0].tag == "a1" and evs[0].name == "CAPABILITY" and not evs[0].uid
    assert s.data_to_send() == (b"a2 BAD Log in first\r\na3 BAD Unknown UID command\r\n"
                                b"a4 BAD Unknown command\r\n")
    s.state = State.AUTHENTICATED
    assert events(s, b"b1 FETCH 1 FLAGS\r\n") == []
    assert s.data_to_send() == b"b1 BAD No mailbox selected\r\n"
    s.state = State.SELECTED
    evs = events(s, b"b2 UID fetch 1:* (FLAGS)\r\n")
    assert isinstance(evs[0], Command) and evs[0].uid and evs[0].name == "FETCH"
    assert evs[0].args.line[evs[0].args.pos:] == "1:* (FLAGS)"


def test_split_at_every_byte() -> None:
    data = b"a1 LOGIN {5}\r\nalice {4+}\r\npass\r\n"
    s = ImapServerSession()
    got: list[Event] = []
    sent = b""
    for i in range(len(data)):
        got += events(s, data[i : i + 1])
        sent += s.data_to_send()
    assert sent == b"+ Ready for literal data\r\n"
    assert len(got) == 1 and isinstance(got[0], Command)
    r = got[0].args
    assert r.astring() == "alice"
    r.sp()
    assert r.astring() == "pass"


def test_preauth_literal_refused_without_continuation() -> None:
    s = ImapServerSession(SessionLimits(preauth_max_command=100))
    assert events(s, b"a LOGIN {1000}\r\n") == []
    assert s.data_to_send() == b"a BAD [TOOBIG] Literal too large before login\r\n"
    assert events(s, b"b APPEND INBOX {1000+}\r\n") == [Closed()]
    out = s.data_to_send()
    assert out.startswith(b"b BAD [TOOBIG]") and out.endswith(b"* BYE Literal refused\r\n")
    assert s.state is State.LOGOUT


def test_append_limit_and_literal_caps_after_login() -> None:
    s = logged_in(SessionLimits(max_literal=10, max_command=50, append_limit=1000))
    assert events(s, b"a APPEND INBOX {2000}\r\n") == []
    assert s.data_to_send() == b"a NO [TOOBIG] Message exceeds APPENDLIMIT 1000\r\n"
    assert events(s, b"b APPEND INBOX {500}\r\n") == []
    assert s.data_to_send() == b"+ Ready for literal data\r\n"
    evs = events(s, b"x" * 500 + b"\r\n")
    assert isinstance(evs[0], Command) and evs[0].raw.literals == (b"x" * 500,)
    assert events(s, b"c LOGIN {11}\r\n") == []
    assert s.data_to_send() == b"c BAD [TOOBIG] Literal too large\r\n"


def test_errors_in_a_row_end_the_session() -> None:
    s = ImapServerSession(SessionLimits(max_errors=3))
    evs = events(s, b"a X\r\nb Y\r\nc Z\r\nd CAPABILITY\r\n")
    assert evs == [Closed()]
    assert s.data_to_send().endswith(b"* BYE Too many errors\r\n")


def test_ok_resets_error_count_and_failures_map_codes() -> None:
    s = logged_in()
    s.bad("a", "x")
    s.ok("b", "fine")
    assert s.errors == 0
    s.fail("c", TryCreate())
    s.fail("d", OverQuota())
    s.fail("e", Limit())
    s.fail("f", ParseError("expected a space"))
    assert s.data_to_send() == (
        b"a BAD x\r\nb OK fine\r\nc NO [TRYCREATE] No such mailbox\r\n"
        b"d NO [OVERQUOTA] Over quota\r\ne NO [LIMIT] Insufficient system storage\r\n"
        b"f BAD Syntax error: expected a space\r\n")


def test_idle_done_and_bad_line() -> None:
    s = logged_in()
    s.begin_idle("i1")
    assert s.data_to_send() == b"+ idling\r\n"
    assert events(s, b"DO") == []
    assert events(s, b"NE\r\n") == [IdleDone("i1", True)]
    assert s.data_to_send() == b"i1 OK IDLE terminated\r\n"
    s.begin_idle("i2")
    assert events(s, b"NOPE\r\n") == [IdleDone("i2", False)]
    assert s.data_to_send().endswith(b"i2 BAD Expected DONE\r\n")


def test_sasl_exchange() -> None:
    s = ImapServerSession()
    s.sasl_challenge("a", b"hi")
    assert s.data_to_send() == b"+ aGk=\r\n"
    assert events(s, b"dGhlcmU=\r\n") == [SaslResponse("a", b"there")]
    s.sasl_challenge("b", b"")
    assert events(s, b"*\r\n") == [SaslResponse("b", None, "cancelled")]
    assert s.data_to_send().endswith(b"b BAD Authentication cancelled\r\n")
    s.sasl_challenge("c", b"")
    assert events(s, b"!!\r\n") == [SaslResponse("c", None, "bad base64")]


def test_timeout_text_depends_on_state() -> None:
    s = ImapServerSession()
    s.timed_out()
    assert s.data_to_send() == b"* BYE Timed out waiting for login\r\n"
    assert events(s) == [Closed()]
    s = logged_in()
    s.timed_out()
    assert s.data_to_send() == b"* BYE Autologout; idle for too long\r\n"


def test_preauth_line_is_short_then_long_after_login() -> None:
    s = ImapServerSession(SessionLimits(preauth_max_command=100))
    events(s, b"a NOOP " + b"x" * 200 + b"\r\n")
    assert s.data_to_send() == b"a BAD line too long\r\n"
    s.state = State.AUTHENTICATED
    evs = events(s, b"b NOOP " + b"x" * 200 + b"\r\n")
    assert isinstance(evs[0], Command)


def test_no_import_cycles_among_imap_modules() -> None:
    """proto/imap imports only proto; server modules import in one direction:
    imap_session <- handlers <- imap_commands <- imap."""
    root = pathlib.Path(__file__).resolve().parents[2] / "src" / "pochta"
    order = ["imap_session", "imap_catenate", "imap_shared", "imap_sieve", "imap_auth",
             "imap_mailbox", "imap_message", "imap_acl",
             "imap_sortorder", "imap_sort", "imap_metadata", "imap_urlauth", "imap_notify",
             "imap_replace",
             "imap_commands",
             "imap"]
    for path in sorted((root / "server").glob("imap*.py")):
        name = path.stem
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                other = node.module
                if other in order:
                    assert order.index(other) < order.index(name), (name, other)
    for path in sorted((root / "proto" / "imap").glob("*.py")):
        text = path.read_text()
        assert "pochta.server" not in text and "asyncio" not in text, path
