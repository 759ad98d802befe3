"""Transcripts of the ManageSieve core (RFC 5804), without sockets: bytes in, events and
bytes out, fed whole and byte by byte."""

from __future__ import annotations

import base64

import pytest

from pochta.proto.managesieve import (
    NEED_DATA,
    Authenticate,
    AuthResponse,
    Capabilities,
    CheckScript,
    Closed,
    DeleteScript,
    GetScript,
    HaveSpace,
    ListScripts,
    ManageSieveSession,
    ProtocolUsageError,
    PutScript,
    RenameScript,
    SetActive,
    StartTLS,
    State,
    Unauthenticate,
)

CAPS = Capabilities("Pochta", ("fileinto", "vacation"), ("PLAIN",), starttls=False,
                    max_redirects=4)


def session(**kw: object) -> ManageSieveSession:
    s = ManageSieveSession(CAPS, max_literal=100, **kw)  # type: ignore[arg-type]
    s.greeting()
    return s


def feed(s: ManageSieveSession, data: bytes, bytewise: bool = False) -> list[object]:
    events: list[object] = []
    chunks = [data[i:i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        s.receive_data(chunk)
        while True:
            ev = s.next_event()
            if ev is NEED_DATA:
                break
            events.append(ev)
            if isinstance(ev, Closed):
                return events
            if isinstance(ev, Authenticate):
                s.auth_succeeded("alice@example.test")
            elif isinstance(ev, (HaveSpace, PutScript, CheckScript, SetActive, DeleteScript,
                                 RenameScript)):
                s.ok()
            elif isinstance(ev, ListScripts):
                s.send_list([("main", True), ('odd "name"', False)])
            elif isinstance(ev, GetScript):
                s.send_script(b"keep;\r\n")
    return events


def login(s: ManageSieveSession) -> None:
    token = base64.b64encode(b"\0alice@example.test\0pw").decode()
    feed(s, f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode())
    s.data_to_send()


def test_greeting_lists_capabilities() -> None:
    s = ManageSieveSession(CAPS)
    assert s.greeting() == (
        b'"IMPLEMENTATION" "Pochta"\r\n"SIEVE" "fileinto vacation"\r\n'
        b'"NOTIFY" "mailto"\r\n"MAXREDIRECTS" "4"\r\n"SASL" "PLAIN"\r\n'
        b'"UNAUTHENTICATE"\r\n"VERSION" "1.0"\r\nOK "Pochta ManageSieve ready"\r\n')


@pytest.mark.parametrize("bytewise", [False, True])
def test_script_commands_after_login(bytewise: bool) -> None:
    s = session()
    login(s)
    assert s.state is State.AUTHENTICATED
    events = feed(s, b'PUTSCRIPT "main" {9+}\r\nkeep;\r\n\r\n\r\n'
                     b"LISTSCRIPTS\r\n"
                     b'SETACTIVE "main"\r\n'
                     b'GETSCRIPT "main"\r\n'
                     b'HAVESPACE "x" 50\r\n'
                     b'CHECKSCRIPT "stop;"\r\n'
                     b'RENAMESCRIPT "main" "other"\r\n'
                     b'DELETESCRIPT "other"\r\n'
                     b'noop "tag"\r\n', bytewise)
    assert events == [PutScript("main", b"keep;\r\n\r\n"), ListScripts(), SetActive("main"),
                      GetScript("main"), HaveSpace("x", 50), CheckScript(b"stop;"),
                      RenameScript("main", "other"), DeleteScript("other")]
    assert s.data_to_send() == (
        b'OK\r\n"main" ACTIVE\r\n"odd \\"name\\""\r\nOK "Listscripts completed"\r\n'
        b'OK\r\n{7}\r\nkeep;\r\n\r\nOK "Getscript completed"\r\nOK\r\nOK\r\nOK\r\nOK\r\n'
        b'OK (TAG "tag") "Done"\r\n')


def test_authentication_required_and_states() -> None:
    s = session()
    assert feed(s, b"LISTSCRIPTS\r\nUNAUTHENTICATE\r\n") == []
    assert s.data_to_send() == (b'NO "LISTSCRIPTS: authenticate first"\r\n'
                                b'NO "UNAUTHENTICATE: authenticate first"\r\n')
    login(s)
    assert feed(s, b'AUTHENTICATE "PLAIN"\r\nUNAUTHENTICATE\r\n') == [Unauthenticate()]
    assert s.data_to_send() == (b'NO "AUTHENTICATE: already authenticated"\r\n'
                                b'OK "Unauthenticate completed"\r\n')
    assert s.state is State.NOT_AUTHENTICATED


def test_sasl_exchange_with_challenges_and_cancel() -> None:
    s = session()
    s.receive_data(b'AUTHENTICATE "SCRAM-SHA-256"\r\n')
    assert s.next_event() == Authenticate("SCRAM-SHA-256", None)
    s.challenge(b"server-first")
    assert s.data_to_send() == b'"c2VydmVyLWZpcnN0"\r\n'
    s.receive_data(b'{8+}\r\nY2xpZW50\r\n')
    assert s.next_event() == AuthResponse(b"client")
    s.auth_succeeded("alice@example.test", b"v=proof")
    assert s.data_to_send() == b'OK (SASL "dj1wcm9vZg==") "Logged in"\r\n'
    s = session()
    s.receive_data(b'AUTHENTICATE "PLAIN"\r\n')
    s.next_event()
    s.challenge(b"")
    s.receive_data(b'"*"\r\n')
    assert s.next_event() == AuthResponse(None)
    assert s.data_to_send().endswith(b'NO "Authentication cancelled"\r\n')
    assert s.state is State.NOT_AUTHENTICATED


def test_starttls_drops_pipelined_input_and_resends_capabilities() -> None:
    s = ManageSieveSession(Capabilities("Pochta", (), (), True, 4), tls_required=True)
    s.greeting()
    s.receive_data(b'AUTHENTICATE "PLAIN" "AGEAYg=="\r\n')
    assert s.next_event() is NEED_DATA
    assert s.data_to_send() == b'NO (ENCRYPT-NEEDED) "Use STARTTLS first"\r\n'
    s.receive_data(b"STARTTLS\r\nLISTSCRIPTS\r\n")
    assert s.next_event() == StartTLS()
    with pytest.raises(ProtocolUsageError):
        s.next_event()
    s.tls_started(Capabilities("Pochta", (), ("PLAIN",), False, 4))
    out = s.data_to_send()
    assert out.startswith(b'OK "Begin TLS negotiation now"\r\n"IMPLEMENTATION"')
    assert b'"SASL" "PLAIN"' in out and b"STARTTLS" not in out.split(b"now")[1]
    assert s.next_event() is NEED_DATA  # LISTSCRIPTS sent in clear was dropped


def test_oversized_literal_is_read_and_refused() -> None:
    s = session()
    login(s)
    script = b"#" * 500
    events = feed(s, b'PUTSCRIPT "big" {500+}\r\n' + script + b"\r\nLISTSCRIPTS\r\n",
                  bytewise=True)
    assert events == [ListScripts()]
    out = s.data_to_send()
    assert out.startswith(b'NO (QUOTA/MAXSIZE) "Script is larger than the limit of 100 '
                          b'octets"\r\n')


def test_bad_input_gets_no_then_bye() -> None:
    s = session()
    events = feed(s, b"FROB\r\n" + b'"unterminated\r\n' + b"\x01\r\n" * 10)
    assert events == [Closed()]
    out = s.data_to_send()
    assert out.startswith(b'NO "Unknown command FROB"\r\n')
    assert out.endswith(b'BYE "Too many errors"\r\n')
    assert s.closed


def test_logout() -> None:
    s = session()
    assert feed(s, b"LOGOUT\r\n") == [Closed()]
    assert s.data_to_send() == b'OK "Logout completed"\r\n'
