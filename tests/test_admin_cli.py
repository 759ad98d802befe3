"""An admin's first day, through the real `pochta` command in a subprocess.

Every test runs the installed console script (``.venv/bin/pochta``) as a shell would,
on an instance made by ``pochta init`` in a temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

POCHTA = str(Path(sys.executable).parent / "pochta")


def pochta(*argv: str, stdin: str | None = None, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([POCHTA, *argv], input=stdin, capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**os.environ, **(env or {})},
                          check=False)


@pytest.fixture
def inst(tmp_path: Path) -> Path:
    """A fresh instance (demo ports); returns its config file."""
    r = pochta("init", "--dir", str(tmp_path / "etc"), "--hostname", "mail.example.org",
               "--domain", "example.org")
    assert r.returncode == 0, r.stderr
    return tmp_path / "etc" / "pochta.toml"


def test_init_standard_ports_binds_every_address(tmp_path: Path) -> None:
    r = pochta("init", "--dir", str(tmp_path / "std"), "--hostname", "mail.example.org",
               "--standard-ports")
    assert r.returncode == 0, r.stderr
    cfg = tomllib.loads((tmp_path / "std" / "pochta.toml").read_text())
    assert {lst["address"] for lst in cfg["listeners"]} == {"*"}
    assert "every IPv4 and IPv6 address" in r.stdout
    r = pochta("init", "--dir", str(tmp_path / "pub"), "--hostname", "mail.example.org",
               "--standard-ports", "--address", "192.0.2.7")
    cfg = tomllib.loads((tmp_path / "pub" / "pochta.toml").read_text())
    assert {lst["address"] for lst in cfg["listeners"]} == {"192.0.2.7"}


def test_init_demo_ports_stay_on_loopback(inst: Path) -> None:
    cfg = tomllib.loads(inst.read_text())
    assert {lst["address"] for lst in cfg["listeners"]} == {"127.0.0.1"}


def test_printed_commands_work_as_printed(tmp_path: Path) -> None:
    r = pochta("init", "--dir", str(tmp_path / "x"), "--hostname", "mail.example.org",
               "--domain", "example.org")
    next_line = next(line for line in r.stdout.splitlines() if line.startswith("next: "))
    command = next_line.removeprefix("next: ") + " --password-stdin"
    # a shell without the venv on PATH (what a new admin has)
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env=env,
                          timeout=60, check=False, input="a-long-password\n")
    assert done.returncode == 0, (command, done.stderr)
    assert "added user postmaster@example.org" in done.stdout


@pytest.mark.parametrize("bad", ["bad domain", "ex;ample.com", "x-.example", "nodot", "a..b"])
def test_domain_add_refuses_bad_names(inst: Path, bad: str) -> None:
    r = pochta("-c", str(inst), "domain", "add", bad)
    assert r.returncode == 1
    assert "is not a domain name" in r.stderr
    assert not (inst.parent / "data" / "dkim" / bad).exists()
    assert bad not in pochta("-c", str(inst), "domain", "list").stdout


def test_domain_remove_removes_dkim_keys(inst: Path) -> None:
    assert pochta("-c", str(inst), "domain", "add", "other.example").returncode == 0
    assert "other.example" in pochta("-c", str(inst), "dns", "records").stdout
    r = pochta("-c", str(inst), "domain", "remove", "other.example")
    assert r.returncode == 0, r.stderr
    assert "removed its DKIM keys" in r.stdout
    assert not (inst.parent / "data" / "dkim" / "other.example").exists()
    assert "other.example" not in pochta("-c", str(inst), "dns", "records").stdout


def test_dkim_remove_retired_selector(inst: Path) -> None:
    r = pochta("-c", str(inst), "dkim", "rotate", "example.org", "--algorithm", "ed25519")
    assert r.returncode == 0, r.stderr
    listing = pochta("-c", str(inst), "dkim", "list", "example.org").stdout.splitlines()
    old = next(line.split("\t")[1] for line in listing if "ed25519\tactive" in line)
    new = next(line.split("\t")[1] for line in listing if "ed25519\tinactive" in line)
    # the active key is refused
    r = pochta("-c", str(inst), "dkim", "remove", "example.org", old)
    assert r.returncode == 1 and "activate another key first" in r.stderr
    assert pochta("-c", str(inst), "dkim", "activate", "example.org", new).returncode == 0
    r = pochta("-c", str(inst), "dkim", "remove", "example.org", old)
    assert r.returncode == 0, r.stderr
    records = pochta("-c", str(inst), "dns", "records", "example.org").stdout
    assert f"{old}._domainkey" not in records and f"{new}._domainkey" in records


def test_user_add_with_closed_stdin_is_an_error_not_a_traceback(inst: Path) -> None:
    r = pochta("-c", str(inst), "user", "add", "alice@example.org", stdin="")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "--password-stdin" in r.stderr


def _add_user(inst: Path, address: str) -> None:
    r = pochta("-c", str(inst), "user", "add", address, "--password-stdin",
               stdin="a-long-password\n")
    assert r.returncode == 0, r.stderr


def test_user_remove_needs_confirmation_and_cleans_aliases(inst: Path) -> None:
    _add_user(inst, "alice@example.org")
    _add_user(inst, "bob@example.org")
    c = ("-c", str(inst))
    assert pochta(*c, "alias", "add", "postmaster@example.org", "alice@example.org"
                  ).returncode == 0
    assert pochta(*c, "alias", "add", "team@example.org", "alice@example.org",
                  "bob@example.org").returncode == 0
    r = pochta(*c, "user", "remove", "alice@example.org", stdin="")
    assert r.returncode == 1 and "--yes" in r.stderr and "Nothing was removed" in r.stderr
    assert "alice@example.org" in pochta(*c, "user", "list").stdout
    r = pochta(*c, "user", "remove", "alice@example.org", "--yes")
    assert r.returncode == 0, r.stderr
    assert "alias postmaster@example.org" in r.stdout
    assert "from alias team@example.org (it keeps bob@example.org)" in r.stdout
    aliases = pochta(*c, "alias", "list").stdout
    assert "postmaster@example.org" not in aliases
    assert "team@example.org -> bob@example.org" in aliases
    assert "alice@example.org" not in pochta(*c, "user", "list").stdout


def test_quota_units_and_usage(inst: Path) -> None:
    _add_user(inst, "alice@example.org")
    c = ("-c", str(inst))
    r = pochta(*c, "user", "set", "alice@example.org", "--quota", "2G")
    assert r.returncode == 0, r.stderr
    listing = pochta(*c, "user", "list").stdout
    assert "alice@example.org  (used 0 B of 2.0 GiB, 0%)" in listing, listing
    r = pochta(*c, "user", "set", "alice@example.org", "--quota", "2 lots")
    assert r.returncode == 2 and "K, M, G or T" in r.stderr
    assert pochta(*c, "user", "set", "alice@example.org", "--quota", "0").returncode == 0
    assert "used 0 B, no quota" in pochta(*c, "user", "list").stdout


def _free_ports(cfg_file: Path) -> None:
    """Port 0 everywhere: the demo ports may be taken on a shared test machine."""
    import re

    text = re.sub(r"(?m)^port = \d+$", "port = 0", cfg_file.read_text())
    cfg_file.write_text(text)


def test_config_check_ok(inst: Path) -> None:
    _free_ports(inst)
    r = pochta("-c", str(inst), "config-check")
    assert r.returncode == 0, r.stdout
    assert r.stdout.strip().endswith("ok (10 listeners)")


def test_config_check_runs_what_serve_runs(inst: Path) -> None:
    _free_ports(inst)
    (inst.parent / "tls" / "cert.pem").unlink()
    r = pochta("-c", str(inst), "config-check")
    assert r.returncode == 2, r.stdout
    assert "ERROR  tls.cert/tls.key:" in r.stdout and "does not exist" in r.stdout
    assert "would refuse to start" in r.stdout
    served = pochta("-c", str(inst), "serve")
    assert served.returncode == 2 and "tls.cert/tls.key" in served.stderr


def test_config_check_warns_about_plaintext_listeners(inst: Path) -> None:
    _free_ports(inst)
    text = inst.read_text()
    for role in ("submission", "imap"):
        text = text.replace(f'role = "{role}"\naddress = "127.0.0.1"\nport = 0\n'
                            'tls = "starttls"',
                            f'role = "{role}"\naddress = "127.0.0.1"\nport = 0\ntls = "none"')
    inst.write_text(text)
    r = pochta("-c", str(inst), "config-check")
    assert r.returncode == 1, r.stdout
    lines = r.stdout.splitlines()
    assert any(line.startswith("WARN ") and "submission" in line and "538 5.7.11" in line
               for line in lines), r.stdout
    assert any(line.startswith("WARN ") and "imap" in line and "clear text" in line
               for line in lines), r.stdout
    assert "serve' starts, but see the warnings" in r.stdout


def test_serve_warns_about_sslkeylogfile_and_keeps_it_private(inst: Path, tmp_path: Path
                                                              ) -> None:
    import re
    import signal
    import socket
    import ssl
    import stat

    _free_ports(inst)
    keylog = tmp_path / "keys.log"
    keylog.write_text("")
    keylog.chmod(0o644)  # as an earlier tool left it
    proc = subprocess.Popen([POCHTA, "-c", str(inst), "serve"], stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "SSLKEYLOGFILE": str(keylog)})
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while not any("role=pop3" in line and "implicit" in line for line in lines):
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        log = "".join(lines)
        assert "WARNING" in log and f"SSLKEYLOGFILE={keylog}" in log and "decrypt" in log
        assert stat.S_IMODE(keylog.stat().st_mode) == 0o600
        port = int(re.findall(r"role=imap address=\S+ port=(\d+) tls=implicit", log)[0])
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw) as tls:
            tls.recv(100)
        assert "CLIENT_TRAFFIC_SECRET" in keylog.read_text()
        assert stat.S_IMODE(keylog.stat().st_mode) == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_make_demo_installs_only_the_runtime(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    r = subprocess.run(["make", "-n", "-C", str(repo), "demo", f"VENV={tmp_path}/v"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "pip install --quiet -e ." in r.stdout and "[dev]" not in r.stdout, r.stdout
    r = subprocess.run(["make", "-n", "-C", str(repo), "venv", f"VENV={tmp_path}/v"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert "-e '.[dev]'" in r.stdout


def _serve(inst: Path, env: dict[str, str] | None = None
           ) -> tuple[subprocess.Popen[str], dict[tuple[str, str], int], list[str]]:
    """`pochta serve` on free ports; its process, ports by (role, tls), and log so far."""
    import re

    proc = subprocess.Popen([POCHTA, "-c", str(inst), "serve"], stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})
    assert proc.stderr is not None
    lines: list[str] = []
    while not any("role=pop3" in line and "implicit" in line for line in lines):
        line = proc.stderr.readline()
        assert line, "".join(lines)
        lines.append(line)
    ports = {(role, tls): int(port) for role, port, tls in re.findall(
        r"role=(\w+) address=\S+ port=(\d+) tls=(\w+)", "".join(lines))}
    return proc, ports, lines


def test_logs_answer_the_routine_questions(inst: Path) -> None:
    import imaplib
    import re
    import signal
    import smtplib
    import ssl

    _free_ports(inst)
    _add_user(inst, "bob@example.org")
    proc, ports, _ = _serve(inst)
    try:
        with smtplib.SMTP("127.0.0.1", ports["mta", "starttls"], timeout=10) as c:
            c.ehlo("client.example.net")
            c.sendmail("someone@example.net", ["bob@example.org"],
                       b"Subject: hi\r\n\r\nhello\r\n")
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        imap = imaplib.IMAP4_SSL("127.0.0.1", ports["imap", "implicit"], ssl_context=ctx)
        imap.login("bob@example.org", "a-long-password")
        imap.logout()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    conn_lines = [line for line in err.splitlines() if " conn=" in line]
    # one id format everywhere: <5 random base-32 characters>.<base-32 counter>
    assert conn_lines and all(re.search(r": conn=[0-9a-z]{5}\.[0-9a-z]+ ", line)
                              for line in conn_lines), err
    accepted = next(line for line in conn_lines if " accepted id=" in line)
    assert "to=<bob@example.org>" in accepted and "from=<someone@example.net>" in accepted
    smtp_id = re.findall(r"conn=(\S+)", accepted)[0]
    (summary,) = [line for line in conn_lines if " disconnect " in line
                  and f"conn={smtp_id} " in line]
    assert " INFO pochta.smtp: " in summary
    for part in ("ip=127.0.0.1", "helo=client.example.net", "tls=none", "messages=1",
                 "ehlo=1", "mail=1", "rcpt=1", "data=1", "quit=1", "commands=5", "errors=0"):
        assert part in summary, (part, summary)
    login = next(line for line in conn_lines if "authenticated user=" in line)
    assert "user='bob@example.org' ip=127.0.0.1 via=imap" in login, login
    assert re.findall(r"conn=(\S+)", login)[0] != smtp_id


def test_connection_ids_do_not_restart_with_the_process() -> None:
    code = "from pochta.logsetup import new_connection_id as n; print(n(), n())"
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(2)]
    assert runs[0][0] != runs[1][0]
    assert runs[0][0].split(".")[0] == runs[0][1].split(".")[0]  # one prefix per process


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0), ("2000000000", 2_000_000_000), ("500K", 500 * 1024), ("2G", 2 * 1024**3),
    ("1.5T", int(1.5 * 1024**4)), ("10 MiB", 10 * 1024**2), ("3mb", 3 * 1024**2)])
def test_parse_size(text: str, size: int) -> None:
    from pochta.cli import format_size, parse_size

    assert parse_size(text) == size
    assert format_size(2 * 1024**3) == "2.0 GiB" and format_size(900) == "900 B"
