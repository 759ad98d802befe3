"""Transcript tests of the sans-IO POP3 session: every command in every state."""

from __future__ import annotations

import hashlib
from base64 import b64encode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pochta.proto.pop3 import (
    NEED_DATA,
    ApopLogin,
    AuthAborted,
    AuthResponse,
    AuthStart,
    Closed,
    DropMessage,
    Event,
    PasswordLogin,
    Pop3Session,
    ProtocolUsageError,
    Retrieve,
    StartTLS,
    State,
    Update,
    top_of,
)
from pochta.proto.pop3.replies import ErrReply

MSG1 = b"Subject: one\r\nFrom: a@example.test\r\n\r\nHello\r\n.dotted line\r\n..two\r\nend\r\n"
MSG2 = b"Subject: two\r\n\r\n.\r\nline2\r\nline3\r\n"
MSG3 = b"Subject: three\r\n\r\nno final newline"
BLOBS = {11: MSG1, 12: MSG2, 13: MSG3}
DROP = [
    DropMessage(uid=5, blob_id=11, size=len(MSG1), uidl="77.5"),
    DropMessage(uid=9, blob_id=12, size=len(MSG2), uidl="77.9"),
    DropMessage(uid=10, blob_id=13, size=len(MSG3), uidl="77.10"),
]
TOTAL = sum(m.size for m in DROP)
TS = "<1234.5678@mail.example.test>"
APOP_SECRET = "tanstaaf"


def apop_digest(timestamp: str) -> str:
    # RFC 1939 §7 fixes MD5 for APOP.
    return hashlib.md5((timestamp + APOP_SECRET).encode(), usedforsecurity=False).hexdigest()


class Driver:
    """A minimal driver: answers events like the real handler, records what happened."""

    def __init__(self, session: Pop3Session) -> None:
        self.s = session
        self.expunged: list[int] = []
        self.events: list[Event] = []
        self.closed = False
        self.greeting = session.greeting()
        self.sasl_stage = 0

    def send(self, data: bytes) -> bytes:
        self.s.receive_data(data)
        while True:
            ev = self.s.next_event()
            if ev is NEED_DATA:
                break
            self.events.append(ev)
            if isinstance(ev, PasswordLogin):
                if ev.username == "alice@example.test" and ev.password == "alice pass":
                    self.s.accept_login(ev.username, DROP)
                else:
                    if self.s.reject_login() is not None:
                        self.closed = True
                        break
            elif isinstance(ev, ApopLogin):
                want = apop_digest(ev.timestamp)
                if ev.username == "alice@example.test" and ev.digest == want:
                    self.s.accept_login(ev.username, DROP)
                else:
                    self.s.reject_login()
            elif isinstance(ev, AuthStart):
                if ev.initial_response is None:
                    self.s.auth_challenge(b"")
                else:
                    self._plain(ev.initial_response)
            elif isinstance(ev, AuthResponse):
                self._plain(ev.data)
            elif isinstance(ev, StartTLS):
                self.s.tls_started()
            elif isinstance(ev, Retrieve):
                if ev.message.blob_id in BLOBS:
                    self.s.send_message(BLOBS[ev.message.blob_id])
                else:
                    self.s.message_unavailable()
            elif isinstance(ev, Update):
                self.expunged = [m.uid for m in ev.deleted]
                self.s.update_done(True)
            elif isinstance(ev, Closed):
                self.closed = True
                break
        return self.s.data_to_send()

    def _plain(self, data: bytes) -> None:
        if data == b"\0alice@example.test\0alice pass":
            self.s.accept_login("alice@example.test", DROP)
        else:
            self.s.reject_login()


def make(**kw: object) -> Driver:
    opts: dict[object, object] = {"hostname": "mail.example.test", "tls_active": True}
    opts.update(kw)
    return Driver(Pop3Session(**opts))  # type: ignore[arg-type]


def logged_in(**kw: object) -> Driver:
    d = make(**kw)
    assert d.send(b"USER alice@example.test\r\n").startswith(b"+OK")
    assert d.send(b"PASS alice pass\r\n").startswith(b"+OK")
    return d


def multiline(resp: bytes) -> list[bytes]:
    assert resp.startswith(b"+OK")
    assert resp.endswith(b"\r\n.\r\n")
    return resp.split(b"\r\n")[1:-2]


def unstuff(body: bytes) -> bytes:
    """What a client recovers from a multi-line body (without the terminator)."""
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


# --- greeting and AUTHORIZATION --------------------------------------------------------


def test_greeting_without_apop_has_no_timestamp() -> None:
    d = make()
    assert d.greeting == b"+OK mail.example.test POP3 server ready\r\n"


def test_greeting_with_apop_timestamp() -> None:
    d = make(apop_timestamp=TS)
    assert d.greeting.endswith(TS.encode() + b"\r\n")


def test_user_pass_login_and_stat() -> None:
    d = make()
    assert d.send(b"USER alice@example.test\r\n") == b"+OK Send your password\r\n"
    resp = d.send(b"PASS alice pass\r\n")
    assert resp == f"+OK Logged in, maildrop has 3 messages ({TOTAL} octets)\r\n".encode()
    assert d.s.state is State.TRANSACTION
    assert d.send(b"STAT\r\n") == f"+OK 3 {TOTAL}\r\n".encode()


def test_password_with_spaces_is_whole_rest_of_line() -> None:
    d = make()
    d.send(b"USER alice@example.test\r\n")
    d.send(b"PASS alice pass\r\n")
    ev = next(e for e in d.events if isinstance(e, PasswordLogin))
    assert ev.password == "alice pass"


def test_wrong_password_and_unknown_user_get_identical_replies() -> None:
    d = make()
    d.send(b"USER alice@example.test\r\n")
    bad_pass = d.send(b"PASS wrong\r\n")
    unknown_user = d.send(b"USER nobody@example.test\r\n")
    assert unknown_user == b"+OK Send your password\r\n"
    no_account = d.send(b"PASS wrong\r\n")
    assert bad_pass == no_account == b"-ERR [AUTH] Authentication failed\r\n"
    assert d.s.state is State.AUTHORIZATION


def test_pass_without_user_and_user_must_be_repeated_after_failure() -> None:
    d = make()
    assert d.send(b"PASS x\r\n") == b"-ERR USER first\r\n"
    d.send(b"USER alice@example.test\r\n")
    d.send(b"PASS wrong\r\n")
    assert d.send(b"PASS alice pass\r\n") == b"-ERR USER first\r\n"


def test_transaction_commands_refused_in_authorization() -> None:
    d = make()
    for cmd in (b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"NOOP", b"RSET", b"TOP 1 1", b"UIDL"):
        resp = d.send(cmd + b"\r\n")
        assert resp.startswith(b"-ERR ") and b"AUTHORIZATION state" in resp, cmd


def test_authorization_commands_refused_in_transaction() -> None:
    d = logged_in()
    for cmd in (b"USER x", b"PASS y", b"APOP a " + b"0" * 32, b"AUTH PLAIN", b"STLS", b"UTF8"):
        resp = d.send(cmd + b"\r\n")
        assert resp.startswith(b"-ERR ") and b"TRANSACTION state" in resp, cmd
    assert d.send(b"NOOP\r\n") == b"+OK\r\n"


def test_plaintext_refused_before_tls_and_allowed_after_stls() -> None:
    d = make(tls_active=False, tls_available=True)
    caps = multiline(d.send(b"CAPA\r\n"))
    assert b"STLS" in caps
    assert b"USER" not in caps and not any(c.startswith(b"SASL") for c in caps)
    for cmd in (b"USER alice@example.test", b"PASS alice pass", b"AUTH PLAIN"):
        resp = d.send(cmd + b"\r\n")
        assert resp.startswith(b"-ERR [AUTH] Plaintext authentication disallowed"), cmd
    assert multiline(d.send(b"AUTH\r\n")) == []
    assert d.send(b"STLS\r\n") == b"+OK Begin TLS negotiation\r\n"
    assert d.s.tls_active
    caps = multiline(d.send(b"CAPA\r\n"))
    assert b"STLS" not in caps and b"USER" in caps
    assert d.send(b"STLS\r\n") == b"-ERR Command not permitted when TLS active\r\n"
    d.send(b"USER alice@example.test\r\n")
    assert d.send(b"PASS alice pass\r\n").startswith(b"+OK Logged in")


def test_stls_discards_pipelined_plaintext() -> None:
    s = Pop3Session(hostname="h.example.test", tls_available=True)
    s.receive_data(b"STLS\r\nUSER alice@example.test\r\nPASS alice pass\r\n")
    assert isinstance(s.next_event(), StartTLS)
    assert s.data_to_send() == b"+OK Begin TLS negotiation\r\n"
    s.receive_data(b"more plaintext before the handshake\r\n")
    s.tls_started()
    assert s.next_event() is NEED_DATA
    assert s.data_to_send() == b""


def test_stls_not_available_without_tls_configured() -> None:
    d = make(tls_active=False)
    assert b"STLS" not in multiline(d.send(b"CAPA\r\n"))
    assert d.send(b"STLS\r\n") == b"-ERR TLS is not available\r\n"


def test_plaintext_listener_allows_login_when_configured() -> None:
    d = make(tls_active=False, plaintext_auth=True)
    d.send(b"USER alice@example.test\r\n")
    assert d.send(b"PASS alice pass\r\n").startswith(b"+OK Logged in")


def test_capa_lists_rfc2449_capabilities() -> None:
    d = make(mechanisms=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"))
    caps = multiline(d.send(b"CAPA\r\n"))
    for cap in (b"TOP", b"UIDL", b"USER", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING",
                b"EXPIRE NEVER", b"UTF8", b"IMPLEMENTATION Pochta",
                b"SASL PLAIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS"):
        assert cap in caps, cap
    d.send(b"USER alice@example.test\r\nPASS alice pass\r\n")
    caps = multiline(d.send(b"CAPA\r\n"))
    assert b"TOP" in caps and b"USER" not in caps and b"UTF8" not in caps


def test_apop_only_when_enabled() -> None:
    digest = apop_digest(TS)
    d = make()
    line = f"APOP alice@example.test {digest}\r\n".encode()
    assert d.send(line) == b"-ERR APOP is not available\r\n"
    d = make(apop_timestamp=TS)
    assert d.send(b"APOP alice@example.test " + b"0" * 32 + b"\r\n") == (
        b"-ERR [AUTH] Authentication failed\r\n"
    )
    assert d.send(b"APOP alice@example.test nothex\r\n") == b"-ERR Syntax: APOP name digest\r\n"
    assert d.send(line).startswith(b"+OK Logged in")


def test_auth_plain_with_initial_response() -> None:
    d = make()
    token = b64encode(b"\0alice@example.test\0alice pass")
    assert d.send(b"AUTH PLAIN " + token + b"\r\n").startswith(b"+OK Logged in")


def test_auth_plain_with_challenge_and_empty_initial_response() -> None:
    d = make()
    assert d.send(b"AUTH PLAIN\r\n") == b"+ \r\n"
    token = b64encode(b"\0alice@example.test\0alice pass")
    assert d.send(token + b"\r\n").startswith(b"+OK Logged in")
    d = make()
    d.send(b"AUTH PLAIN =\r\n")
    ev = next(e for e in d.events if isinstance(e, AuthStart))
    assert ev.initial_response == b""


def test_auth_cancel_and_bad_base64_keep_session_usable() -> None:
    d = make()
    assert d.send(b"AUTH PLAIN\r\n") == b"+ \r\n"
    assert d.send(b"*\r\n") == b"-ERR [AUTH] Authentication cancelled\r\n"
    assert isinstance(d.events[-1], AuthAborted)
    d.send(b"AUTH PLAIN\r\n")
    assert d.send(b"%%%\r\n") == b"-ERR [AUTH] Invalid base64 in authentication response\r\n"
    assert d.send(b"AUTH PLAIN %%%\r\n") == b"-ERR [AUTH] Invalid base64 in initial response\r\n"
    assert d.send(b"AUTH CRAM-MD5\r\n").startswith(b"-ERR Unsupported authentication")
    token = b64encode(b"\0alice@example.test\0alice pass")
    assert d.send(b"AUTH plain " + token + b"\r\n").startswith(b"+OK Logged in")


def test_auth_without_arguments_lists_mechanisms() -> None:
    d = make(mechanisms=("PLAIN", "SCRAM-SHA-256"))
    assert multiline(d.send(b"AUTH\r\n")) == [b"PLAIN", b"SCRAM-SHA-256"]


def test_auth_initial_response_may_exceed_255_octets() -> None:
    d = make()
    token = b64encode(b"\0alice@example.test\0" + b"x" * 300)
    assert d.send(b"AUTH PLAIN " + token + b"\r\n") == b"-ERR [AUTH] Authentication failed\r\n"


def test_utf8_command() -> None:
    d = make()
    assert d.send("USER jörg@example.test\r\n".encode()).startswith(b"-ERR Non-ASCII")
    assert d.send(b"UTF8\r\n") == b"+OK UTF8 enabled\r\n"
    assert d.send("USER jörg@example.test\r\n".encode()) == b"+OK Send your password\r\n"


def test_lang_lists_and_picks_by_lookup() -> None:
    """RFC 6856 §3, in both states: one language, found by RFC 4647 lookup."""
    d = make()
    assert b"LANG" in multiline(d.send(b"CAPA\r\n"))
    assert multiline(d.send(b"LANG\r\n")) == [b"en English"]
    for wanted in (b"en", b"EN-gb", b"en-x-private", b"*"):
        assert d.send(b"LANG " + wanted + b"\r\n") == b"+OK en Language changed\r\n", wanted
    assert d.send(b"LANG de\r\n") == b"-ERR Invalid language\r\n"
    assert d.send(b"LANG en de\r\n") == b"-ERR Syntax: LANG [language-range]\r\n"
    d.send(b"USER alice@example.test\r\nPASS alice pass\r\n")
    assert b"LANG" in multiline(d.send(b"CAPA\r\n"))
    assert d.send(b"LANG en-US\r\n") == b"+OK en Language changed\r\n"


def test_quit_in_authorization() -> None:
    d = make()
    assert d.send(b"QUIT\r\n") == b"+OK mail.example.test POP3 server signing off\r\n"
    assert d.closed and d.s.state is State.CLOSED


# --- TRANSACTION -----------------------------------------------------------------------


def test_list_and_uidl() -> None:
    d = logged_in()
    listing = multiline(d.send(b"LIST\r\n"))
    assert listing == [f"{i} {m.size}".encode() for i, m in enumerate(DROP, 1)]
    assert d.send(b"LIST 2\r\n") == f"+OK 2 {DROP[1].size}\r\n".encode()
    assert multiline(d.send(b"UIDL\r\n")) == [b"1 77.5", b"2 77.9", b"3 77.10"]
    assert d.send(b"UIDL 3\r\n") == b"+OK 3 77.10\r\n"


def test_retr_is_byte_exact_after_unstuffing() -> None:
    d = logged_in()
    for n, blob in ((1, MSG1), (2, MSG2)):
        resp = d.send(b"RETR %d\r\n" % n)
        first, _, rest = resp.partition(b"\r\n")
        assert first == b"+OK %d octets" % len(blob)
        assert rest.endswith(b"\r\n.\r\n")
        assert unstuff(rest[: -len(b".\r\n")]) == blob
    resp = d.send(b"RETR 1\r\n")
    assert b"\r\n..dotted line\r\n...two\r\n" in resp


def test_retr_adds_crlf_to_unterminated_message() -> None:
    d = logged_in()
    resp = d.send(b"RETR 3\r\n")
    assert resp.endswith(b"no final newline\r\n.\r\n")


def test_top() -> None:
    d = logged_in()
    resp = d.send(b"TOP 1 0\r\n")
    assert resp == (
        b"+OK Top of message follows\r\nSubject: one\r\nFrom: a@example.test\r\n\r\n.\r\n"
    )
    resp = d.send(b"TOP 1 2\r\n")
    assert resp.endswith(b"\r\n\r\nHello\r\n..dotted line\r\n.\r\n")
    resp = d.send(b"TOP 2 100\r\n")
    assert unstuff(resp.partition(b"\r\n")[2][:-3]) == MSG2
    assert d.send(b"TOP 1\r\n") == b"-ERR Syntax: TOP message-number lines\r\n"
    assert d.send(b"TOP 1 -1\r\n") == b"-ERR Syntax: TOP message-number lines\r\n"


def test_invalid_message_numbers() -> None:
    d = logged_in()
    assert d.send(b"RETR 0\r\n") == b"-ERR No such message 0\r\n"
    assert d.send(b"RETR 4\r\n") == b"-ERR No such message 4\r\n"
    assert d.send(b"RETR x\r\n") == b"-ERR Invalid message number\r\n"
    assert d.send(b"LIST -1\r\n") == b"-ERR Invalid message number\r\n"
    assert d.send(b"RETR 99999999999999999999\r\n") == b"-ERR Invalid message number\r\n"
    assert d.send(b"RETR\r\n") == b"-ERR Syntax: RETR message-number\r\n"
    arabic_one = "LIST \u0661\r\n".encode()
    assert d.send(arabic_one) == b"-ERR Invalid message number\r\n"
    assert d.send(b"STAT\r\n").startswith(b"+OK 3 ")


def test_dele_rset_and_deleted_message_access() -> None:
    d = logged_in()
    assert d.send(b"DELE 2\r\n") == b"+OK Message 2 deleted\r\n"
    assert d.send(b"DELE 2\r\n") == b"-ERR Message 2 is deleted\r\n"
    assert d.send(b"RETR 2\r\n") == b"-ERR Message 2 is deleted\r\n"
    assert d.send(b"LIST 2\r\n") == b"-ERR Message 2 is deleted\r\n"
    assert d.send(b"UIDL 2\r\n") == b"-ERR Message 2 is deleted\r\n"
    assert d.send(b"TOP 2 0\r\n") == b"-ERR Message 2 is deleted\r\n"
    assert [ln.split()[0] for ln in multiline(d.send(b"LIST\r\n"))] == [b"1", b"3"]
    assert [ln.split()[0] for ln in multiline(d.send(b"UIDL\r\n"))] == [b"1", b"3"]
    size = TOTAL - DROP[1].size
    assert d.send(b"STAT\r\n") == f"+OK 2 {size}\r\n".encode()
    assert d.send(b"RSET\r\n") == f"+OK Maildrop has 3 messages ({TOTAL} octets)\r\n".encode()
    assert d.send(b"RETR 2\r\n").startswith(b"+OK")


def test_quit_enters_update_and_expunges_marked_messages() -> None:
    d = logged_in()
    d.send(b"DELE 1\r\nDELE 3\r\n")
    resp = d.send(b"QUIT\r\n")
    assert resp == b"+OK mail.example.test POP3 server signing off (1 messages left)\r\n"
    assert d.expunged == [5, 10]
    assert d.closed


def test_quit_without_deletions_or_retrievals_has_no_update() -> None:
    d = logged_in()
    d.send(b"TOP 1 0\r\nQUIT\r\n")
    assert d.closed and not any(isinstance(e, Update) for e in d.events)


def test_update_marks_retrieved_messages_seen() -> None:
    d = logged_in()
    d.send(b"RETR 1\r\nRETR 2\r\nTOP 3 1\r\nDELE 2\r\nQUIT\r\n")
    update = next(e for e in d.events if isinstance(e, Update))
    assert [m.uid for m in update.deleted] == [9]
    assert [m.uid for m in update.retrieved] == [5]


def test_update_failure_reported() -> None:
    s = Pop3Session(hostname="h.example.test", tls_active=True)
    s.receive_data(b"USER a\r\nPASS b\r\n")
    assert isinstance(s.next_event(), PasswordLogin)
    s.accept_login("a", DROP)
    s.receive_data(b"DELE 1\r\nQUIT\r\n")
    ev = s.next_event()
    assert isinstance(ev, Update)
    assert isinstance(s.update_done(False), Closed)
    assert s.data_to_send().endswith(b"-ERR [SYS/TEMP] Some deleted messages not removed\r\n")


def test_message_unavailable_keeps_session() -> None:
    gone = [DropMessage(uid=1, blob_id=999, size=10, uidl="1.1")]
    s = Pop3Session(hostname="h.example.test", tls_active=True)
    s.receive_data(b"USER a\r\nPASS b\r\n")
    s.next_event()
    s.accept_login("a", gone)
    s.receive_data(b"RETR 1\r\n")
    assert isinstance(s.next_event(), Retrieve)
    s.message_unavailable()
    s.receive_data(b"NOOP\r\n")
    assert s.next_event() is NEED_DATA
    assert s.data_to_send().endswith(b"-ERR [SYS/TEMP] Message is no longer available\r\n+OK\r\n")


def test_pipelined_commands_answered_in_order() -> None:
    d = logged_in()
    resp = d.send(b"STAT\r\nLIST 1\r\nUIDL 1\r\nNOOP\r\n")
    assert resp == f"+OK 3 {TOTAL}\r\n+OK 1 {DROP[0].size}\r\n+OK 1 77.5\r\n+OK\r\n".encode()


def test_lines_split_across_reads_and_lowercase_commands() -> None:
    d = logged_in()
    assert d.send(b"st") == b""
    assert d.send(b"at\r") == b""
    assert d.send(b"\n") == f"+OK 3 {TOTAL}\r\n".encode()
    assert d.send(b"noop\n") == b"+OK\r\n"


# --- bad input -------------------------------------------------------------------------


def test_unknown_command_and_garbage() -> None:
    d = logged_in()
    assert d.send(b"LAST\r\n") == b"-ERR Unknown command LAST\r\n"
    assert d.send(b"\r\n") == b"-ERR Empty command\r\n"
    assert d.send("ЖЖЖ\r\n".encode()) == b"-ERR Unknown command ?\r\n"
    assert d.send(b"NO\x00OP\r\n") == b"-ERR NUL in command line\r\n"
    assert d.send(b"\xff\xfe\r\n") == b"-ERR Command line is not valid UTF-8\r\n"
    assert d.send(b"STAT extra\r\n") == b"-ERR Syntax: STAT takes no arguments\r\n"
    assert d.send(b"NOOP\r\n") == b"+OK\r\n"


def test_overlong_command_line() -> None:
    d = logged_in(max_errors=100)
    resp = d.send(b"NOOP " + b"x" * 300 + b"\r\n")
    assert resp == b"-ERR Line too long (RFC 2449: at most 255 octets)\r\n"
    assert d.send(b"x" * 10000) == b""  # might still be a long AUTH line
    assert d.send(b"y" * 10000) == b"-ERR Line too long, closing connection\r\n"
    assert d.closed and d.s.state is State.CLOSED


def test_overlong_auth_line_closes() -> None:
    d = make()
    assert d.send(b"AUTH PLAIN\r\n") == b"+ \r\n"
    assert d.send(b"A" * 20000 + b"\r\n") == b"-ERR Line too long, closing connection\r\n"
    assert d.closed


def test_error_limit_closes_session() -> None:
    d = make(max_errors=3)
    d.send(b"BOGUS\r\nBOGUS\r\n")
    assert not d.closed
    resp = d.send(b"BOGUS\r\nNOOP\r\n")
    assert resp.endswith(b"-ERR Too many errors, closing connection\r\n")
    assert d.closed and d.s.state is State.CLOSED


def test_failed_logins_count_towards_error_limit() -> None:
    d = make(max_errors=2)
    d.send(b"USER a\r\nPASS b\r\n")
    d.send(b"USER a\r\nPASS b\r\n")
    assert d.closed


def test_driver_misuse_is_detected() -> None:
    s = Pop3Session(hostname="h.example.test", tls_active=True)
    with pytest.raises(ProtocolUsageError):
        s.send_message(b"x")
    s.receive_data(b"USER a\r\nPASS b\r\n")
    s.next_event()
    with pytest.raises(ProtocolUsageError):
        s.next_event()


def test_autologout() -> None:
    d = logged_in()
    d.send(b"DELE 1\r\n")
    assert d.s.autologout() == b"-ERR Autologout; idle for too long\r\n"
    assert d.s.state is State.CLOSED
    assert d.expunged == []


# --- encoding helpers ------------------------------------------------------------------




def test_top_of_message_without_body() -> None:
    assert top_of(b"A: b\r\nC: d\r\n", 3) == b"A: b\r\nC: d\r\n"
    assert top_of(b"A: b\r\n\r\nl1\r\nl2\r\nl3", 5) == b"A: b\r\n\r\nl1\r\nl2\r\nl3"


# --- fuzzing ---------------------------------------------------------------------------

_WORDS = [b"USER a", b"PASS alice pass", b"USER alice@example.test", b"STAT", b"LIST",
          b"LIST 2", b"RETR 1", b"TOP 2 1", b"DELE 1", b"RSET", b"UIDL", b"NOOP", b"CAPA",
          b"AUTH PLAIN", b"*", b"STLS", b"UTF8", b"APOP a b", b"QUIT", b"\xff", b"\x00", b""]


@given(st.lists(st.one_of(st.sampled_from(_WORDS), st.binary(max_size=300)), max_size=40),
       st.integers(min_value=1, max_value=7))
@settings(max_examples=300, deadline=None)
def test_no_input_breaks_the_session(chunks: list[bytes], split: int) -> None:
    d = make(tls_active=False, tls_available=True, plaintext_auth=True)
    stream = b"".join(c + b"\r\n" for c in chunks)
    out = b""
    for i in range(0, len(stream), split * 13):
        if d.closed:
            break
        out += d.send(stream[i : i + split * 13])
    # Every reply line the session itself formats is well-formed (message bodies aside).
    for line in out.split(b"\r\n"):
        if line.startswith((b"+OK", b"-ERR")):
            assert len(line) + 2 <= 512  # RFC 2449 §4: responses up to 512 octets


def _pending(command: bytes) -> Pop3Session:
    s = Pop3Session(hostname="h.example.test", tls_active=True)
    s.receive_data(b"USER a\r\nPASS b\r\n")
    s.next_event()
    s.accept_login("a", DROP)
    s.data_to_send()
    s.receive_data(command)
    s.next_event()
    return s


def test_abandon_answers_whatever_is_pending_and_the_session_goes_on() -> None:
    """The driver's command boundary: an error while deciding any event becomes one
    -ERR (not counted as the client's), and the next command is read as usual."""
    err = ErrReply("Local error in processing, try again later", "SYS/TEMP")
    s = Pop3Session(hostname="h.example.test", tls_active=True, max_errors=1)
    s.receive_data(b"USER a\r\nPASS b\r\n")
    assert isinstance(s.next_event(), PasswordLogin)
    assert s.abandon(err) is None
    s.receive_data(b"CAPA\r\n")
    s.next_event()
    out = s.data_to_send()
    assert b"-ERR [SYS/TEMP] Local error in processing, try again later\r\n" in out
    assert s.state is State.AUTHORIZATION and b"Too many errors" not in out

    r = _pending(b"RETR 1\r\n")
    assert r.abandon(err) is None
    r.receive_data(b"STAT\r\n")
    assert r.next_event() is NEED_DATA
    assert r.data_to_send().startswith(b"-ERR [SYS/TEMP] Local error")

    u = _pending(b"DELE 1\r\nQUIT\r\n")
    assert isinstance(u.abandon(err), Closed)
    assert u.data_to_send().endswith(b"-ERR [SYS/TEMP] Local error in processing, try "
                                     b"again later\r\n")


def test_abandon_refuses_when_the_answer_has_begun() -> None:
    s = _pending(b"RETR 1\r\n")
    s.start_message(10)
    with pytest.raises(ProtocolUsageError):
        s.abandon()
    idle = Pop3Session(hostname="h.example.test", tls_active=True)
    with pytest.raises(ProtocolUsageError):
        idle.abandon()
