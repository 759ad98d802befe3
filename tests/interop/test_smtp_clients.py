"""Debian's SMTP clients against our MTA and submission ports: swaks, curl, msmtp, and
Postfix's smtp-source as a load client."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Server, need_tool, run_tool
from tests.e2e.test_mta import inbox


async def test_swaks_to_mta_with_starttls(running_server: Server) -> None:
    code, out = await run_tool(
        need_tool("swaks"), "--server", f"127.0.0.1:{running_server.port('mta')}",
        "--from", "someone@elsewhere.test", "--to", "bob@example.test", "--tls",
        "--helo", "client.elsewhere.test", "--header", "Subject: via swaks")
    assert code == 0, out
    assert "250 2.0.0 Ok: queued as" in out
    [stored] = await inbox(running_server, "bob@example.test")
    assert b"Subject: via swaks" in stored and b"with ESMTPS" in stored


async def test_swaks_submission_starttls_and_implicit(running_server: Server) -> None:
    for flag, port in (("--tls", running_server.port("submission", "starttls")),
                       ("--tlsc", running_server.port("submission", "implicit"))):
        code, out = await run_tool(
            need_tool("swaks"), "--server", f"127.0.0.1:{port}", flag,
            "--auth", "PLAIN", "--auth-user", "alice@example.test",
            "--auth-password", "alice-pass",
            "--from", "alice@example.test", "--to", "bob@example.test")
        assert code == 0, out
        assert "235 2.7.0" in out
    assert len(await inbox(running_server, "bob@example.test")) == 2


async def test_swaks_auth_before_tls_is_refused(running_server: Server) -> None:
    code, out = await run_tool(
        need_tool("swaks"), "--server",
        f"127.0.0.1:{running_server.port('submission', 'starttls')}",
        "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "alice-pass",
        "--from", "alice@example.test", "--to", "bob@example.test")
    assert code != 0
    assert "Host did not advertise authentication" in out or "530 5.7.0" in out


async def test_curl_smtp_ssl_reqd_and_smtps(running_server: Server, tmp_path: Path) -> None:
    mail = tmp_path / "mail.eml"
    mail.write_bytes(b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: curl\r\n"
                     b"\r\nsent by curl\r\n")
    for url in (f"smtp://127.0.0.1:{running_server.port('submission', 'starttls')}",
                f"smtps://127.0.0.1:{running_server.port('submission', 'implicit')}"):
        code, out = await run_tool(
            need_tool("curl"), "-sS", "--ssl-reqd", "--cacert", str(running_server.cert),
            "--url", url, "--user", "bob@example.test:bob-pass",
            "--mail-from", "bob@example.test", "--mail-rcpt", "alice@example.test",
            "--upload-file", str(mail))
        assert code == 0, out
    stored = await inbox(running_server, "alice@example.test")
    assert len(stored) == 2 and all(b"sent by curl" in s for s in stored)


async def test_msmtp_submission(running_server: Server, tmp_path: Path) -> None:
    config = tmp_path / "msmtprc"
    config.write_text(
        "account default\nhost 127.0.0.1\n"
        f"port {running_server.port('submission', 'starttls')}\n"
        "tls on\ntls_starttls on\n"
        f"tls_trust_file {running_server.cert}\ntls_certcheck off\n"
        "auth on\nuser bob@example.test\npassword bob-pass\nfrom bob@example.test\n")
    config.chmod(0o600)
    code, out = await run_tool(
        need_tool("msmtp"), "-C", str(config), "alice@example.test",
        stdin=b"Subject: msmtp\r\n\r\nhello from msmtp\r\n")
    assert code == 0, out
    [stored] = await inbox(running_server, "alice@example.test")
    assert b"hello from msmtp" in stored and b"Message-ID:" in stored


async def test_smtp_source_load(running_server: Server) -> None:
    """50 sessions of Postfix's load generator, 500 messages, all stored."""
    code, out = await run_tool(
        need_tool("smtp-source"), "-c", "-s", "20", "-m", "500", "-l", "2048",
        "-f", "load@elsewhere.test", "-t", "bob@example.test",
        f"127.0.0.1:{running_server.port('mta')}", timeout=120)
    assert code == 0, out
    assert len(await inbox(running_server, "bob@example.test")) == 500


def _mutt_send_rc(server: Server, base: Path, url: str, extra: str = "") -> Path:
    rc = base / "muttrc"
    rc.write_text(f"""
set smtp_url = "{url}"
set smtp_pass = "alice-pass"
set from = "alice@example.test"
set use_from = yes
set ssl_ca_certificates_file = "{server.cert}"
set ssl_verify_host = no
set ssl_force_tls = yes
set ssl_starttls = yes
set record = ""
set copy = no
{extra}
""")
    return rc


async def test_mutt_submission_with_defaults(running_server: Server, tmp_path: Path) -> None:
    """Debian's mutt (gsasl) sends through 587 STARTTLS and 465 implicit TLS with the
    server's default mechanisms. mutt picks the strongest mechanism offered and does not
    fall back: with SCRAM-SHA-256-PLUS on offer it failed ("SASL authentication failed"),
    as gsasl gets no tls-exporter data from mutt."""
    mutt = need_tool("mutt")
    urls = (f"smtp://alice%40example.test@127.0.0.1:"
            f"{running_server.port('submission', 'starttls')}/",
            f"smtps://alice%40example.test@127.0.0.1:"
            f"{running_server.port('submission', 'implicit')}/")
    for i, url in enumerate(urls):
        home = tmp_path / f"home{i}"
        home.mkdir()
        rc = _mutt_send_rc(running_server, home, url)
        code, out = await run_tool(
            mutt, "-n", "-F", str(rc), "-s", f"via mutt {i}", "--", "bob@example.test",
            stdin=f"sent by mutt {i}\n".encode())
        assert code == 0, out
    stored = await inbox(running_server, "bob@example.test")
    assert len(stored) == 2
    for i in range(2):
        assert any(b"Subject: via mutt %d" % i in s for s in stored)
