"""`pochta probe` against Pochta on loopback (every role) and against the sink."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from pochta.diag.sink import Sink, SinkOptions
from tests.conftest import Server

from .helpers import run_cli, run_json
from .schema import PROBE, assert_valid


def _port(doc: dict[str, Any], port: int) -> dict[str, Any]:
    return next(p for p in doc["ports"] if p["port"] == port)


async def test_probe_all_roles(running_server: Server, monkeypatch: pytest.MonkeyPatch
                               ) -> None:
    s = running_server
    ports = {
        "mta": (s.port("mta"), "smtp"),
        "sub": (s.port("submission", "starttls"), "submission"),
        "subs": (s.port("submission", "implicit"), "submissions"),
        "imap": (s.port("imap", "starttls"), "imap"),
        "imaps": (s.port("imap", "implicit"), "imaps"),
        "pop3": (s.port("pop3", "starttls"), "pop3"),
        "pop3s": (s.port("pop3", "implicit"), "pop3s"),
    }
    args = ["probe", "127.0.0.1", "--cafile", str(s.cert), "--timeout", "5"]
    for port, hint in ports.values():
        args += ["--port", f"{port}/{hint}"]
    rc, doc = await run_json(*args)
    assert_valid(doc, PROBE)
    for f in doc["findings"]:
        assert f["status"] in ("ok", "info", "warn", "fail")
    assert rc == 0, [f for f in doc["findings"] if f["status"] != "ok"]
    mta = _port(doc, ports["mta"][0])
    assert mta["state"] == "open" and mta["protocol"] == "smtp"
    assert mta["tls_mode"] == "starttls"
    assert mta["banner"].startswith("220 mail.example.test")
    assert "STARTTLS" in mta["capabilities_before_tls"]
    assert mta["tls"]["verified"] is True
    sub = _port(doc, ports["sub"][0])
    assert sub["auth_before_tls"] == []
    assert "PLAIN" in sub["auth_after_tls"]
    assert any("submission requires AUTH" in f["message"] for f in sub["findings"])
    subs = _port(doc, ports["subs"][0])
    assert subs["tls_mode"] == "implicit" and "PLAIN" in subs["auth_after_tls"]
    imap = _port(doc, ports["imap"][0])
    assert "LOGINDISABLED" in [c.upper() for c in imap["capabilities_before_tls"]]
    assert imap["auth_before_tls"] == []
    assert "PLAIN" in imap["auth_after_tls"]
    pop3 = _port(doc, ports["pop3"][0])
    assert pop3["protocol"] == "pop3" and pop3["tls_mode"] == "starttls"
    assert pop3["auth_before_tls"] == []
    assert "USER/PASS" in pop3["auth_after_tls"] or pop3["auth_after_tls"]
    for key in ("imaps", "pop3s"):
        p = _port(doc, ports[key][0])
        assert p["tls_mode"] == "implicit" and p["tls"]["version"].startswith("TLSv1.")


async def test_probe_autodetect_and_login(running_server: Server,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    s = running_server
    monkeypatch.setenv("PW", "alice-pass")
    imaps, pop3, sub = s.port("imap", "implicit"), s.port("pop3"), s.port("submission",
                                                                          "starttls")
    rc, doc = await run_json("probe", "127.0.0.1", "--port", str(imaps), "--port", str(pop3),
                             "--port", f"{sub}/submission", "--user", "alice@example.test",
                             "--password-env", "PW", "--timeout", "5")
    # without --cafile the self-signed certificate does not verify: a warning
    assert rc == 1
    p = _port(doc, imaps)
    assert p["protocol"] == "imap" and p["tls_mode"] == "implicit"  # detected
    assert p["tls"]["verified"] is False and "self-signed" in p["tls"]["verify_error"]
    assert p["login"]["ok"] is True and p["login"]["messages"] == 0
    q = _port(doc, pop3)
    assert q["protocol"] == "pop3" and q["login"]["ok"] is True
    assert q["login"]["messages"] == 0
    r = _port(doc, sub)
    assert r["login"]["ok"] is True
    assert {f["status"] for f in doc["findings"]} <= {"ok", "warn", "info"}


async def test_probe_wrong_password_fails(running_server: Server,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "nope-nope")
    port = running_server.port("imap", "implicit")
    rc, doc = await run_json("probe", "127.0.0.1", "--port", f"{port}/imaps", "--user",
                             "alice@example.test", "--password-env", "PW",
                             "--cafile", str(running_server.cert))
    assert rc == 1
    assert any(f["status"] == "fail" and "login" in f["message"] for f in doc["findings"])


async def test_probe_flags_plaintext_auth_and_no_tls() -> None:
    # the sink offers no TLS here; its AUTH is hidden without TLS, so fake a server that
    # offers AUTH PLAIN in clear text
    async def handler(reader: Any, writer: Any) -> None:
        writer.write(b"220 old.test ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-old.test\r\n250 AUTH PLAIN LOGIN\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    import asyncio

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        rc, doc = await run_json("probe", "127.0.0.1", "--port", f"{port}/submission")
    finally:
        server.close()
    assert rc == 1
    msgs = {f["message"]: f for f in doc["findings"]}
    plain = next(f for m, f in msgs.items() if "without TLS: PLAIN LOGIN" in m)
    assert plain["status"] == "warn" and "smtpd_tls_auth_only" in plain["fix"]
    assert any("STARTTLS is not offered" in m for m in msgs)
    assert any(f["status"] == "fail" and "without AUTH" in m for m, f in msgs.items())


async def test_probe_sink_human_output() -> None:
    sink = Sink(SinkOptions(port=0, tls="starttls"))
    port = await sink.start()
    try:
        rc, out = await run_cli("probe", "127.0.0.1", "--port", str(port))
    finally:
        await sink.close()
    assert rc == 1  # self-signed certificate
    assert f"port {port}: open SMTP tls=starttls" in out
    assert "AUTH after TLS: PLAIN LOGIN" in out
    assert "certificate subject: CN=sink.invalid" in out
    assert "WARN" in out and "certificate does not verify" in out


async def test_probe_closed_port_exit_3() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, doc = await run_json("probe", "127.0.0.1", "--port", str(port))
    assert rc == 3
    assert doc["ports"][0]["state"] == "closed"
    assert doc["findings"][0]["status"] == "fail"


async def test_probe_usage() -> None:
    rc, _ = await run_cli("probe", "127.0.0.1", "--port", "25/gopher")
    assert rc == 2
