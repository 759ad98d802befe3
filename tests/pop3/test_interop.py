"""Debian's POP3 clients against the server: fetchmail (STLS and POP3S), getmail6 (POP3S)
and curl (pop3s://). Each downloads a maildrop, checks the bytes, and deletes on the
server where the client is told to."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from .conftest import Pop3Env

pytestmark = pytest.mark.interop

MESSAGES = [
    b"From: sender@example.test\r\nTo: alice@example.test\r\nSubject: first\r\n"
    b"Message-ID: <first@example.test>\r\n\r\n.leading dot\r\n.\r\nmiddle\r\n..\r\nend\r\n",
    b"From: sender@example.test\r\nTo: alice@example.test\r\nSubject: second\r\n"
    b"Message-ID: <second@example.test>\r\n\r\n" + b"x" * 5000 + b"\r\nlast\r\n",
]


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed (make deps installs it)")
    return path


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace")


def body_lines(data: bytes) -> list[bytes]:
    """A message's lines from its blank line on, line endings aside (clients write LF)."""
    text = data.replace(b"\r\n", b"\n")
    return text.split(b"\n\n", 1)[1].rstrip(b"\n").split(b"\n")


async def deliver_all(env: Pop3Env) -> None:
    for msg in MESSAGES:
        await env.deliver("alice@example.test", msg)


@pytest.mark.parametrize("mode", ["stls", "pop3s"])
async def test_fetchmail(pop3env: Pop3Env, tmp_path: Path, mode: str) -> None:
    fetchmail = need("fetchmail")
    await deliver_all(pop3env)
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    port = pop3env.port_stls if mode == "stls" else pop3env.port_tls
    tls = "ssl" if mode == "pop3s" else "sslproto TLS1.2+"
    rc = home / "fetchmailrc"
    rc.write_text(
        f"set no syslog\n"
        f"poll 127.0.0.1 with proto POP3 port {port} auth password\n"
        f'  user "alice@example.test" there with password "alice-pass" is "nobody" here\n'
        f"  {tls} sslcertck sslcertfile {pop3env.cert_path} "
        f'sslcommonname "mail.example.test"\n'
        f"  fetchall nokeep\n"
        f"  mda \"/bin/sh -c 'cat > {out}/msg.$$'\"\n"
    )
    rc.chmod(0o600)
    env = {"HOME": str(home), "FETCHMAILHOME": str(home), "PATH": "/usr/bin:/bin"}
    code, log = await run(fetchmail, "-f", str(rc), "-v", "--invisible", "--nosyslog", env=env)
    assert code == 0, log
    if mode == "stls":
        assert "STLS" in log
    got = sorted(p.read_bytes() for p in out.iterdir())
    assert len(got) == 2, log
    for msg in MESSAGES:
        assert any(body_lines(g) == body_lines(msg) for g in got), log
    assert await pop3env.inbox_uids("alice@example.test") == []


async def test_getmail6_pop3s(pop3env: Pop3Env, tmp_path: Path) -> None:
    getmail = need("getmail")
    await deliver_all(pop3env)
    out = tmp_path / "out"
    out.mkdir()
    gdir = tmp_path / "getmail"
    gdir.mkdir()
    rc = gdir / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"
        f"server = {pop3env.host}\n"
        f"port = {pop3env.port_tls}\n"
        "username = alice@example.test\n"
        "password = alice-pass\n"
        f"ca_certs = {pop3env.cert_path}\n"
        "ssl_cert_hostname = mail.example.test\n"
        "[destination]\n"
        # An external MDA: getmail's Maildir delivery refuses to run as root.
        "type = MDA_external\n"
        "path = /bin/sh\n"
        f"arguments = (\"-c\", \"cat > {out}/msg.$$\")\n"
        "allow_root_commands = true\n"
        "[options]\n"
        "read_all = true\n"
        "delete = true\n"
        "message_log_syslog = false\n"
    )
    code, log = await run(getmail, "--rcfile", str(rc), "--getmaildir", str(gdir))
    assert code == 0, log
    got = [p.read_bytes() for p in out.iterdir()]
    assert len(got) == 2, log
    for msg in MESSAGES:
        assert any(body_lines(g) == body_lines(msg) for g in got), log
    assert await pop3env.inbox_uids("alice@example.test") == []


async def test_curl_pop3s(pop3env: Pop3Env) -> None:
    curl = need("curl")
    await deliver_all(pop3env)
    common = ["-sS", "--cacert", str(pop3env.cert_path), "--user", "alice@example.test:alice-pass",
              "--resolve", f"mail.example.test:{pop3env.port_tls}:127.0.0.1"]
    url = f"pop3s://mail.example.test:{pop3env.port_tls}"
    code, listing = await run(curl, *common, url + "/")
    assert code == 0, listing
    assert listing.split() == ["1", str(len(MESSAGES[0])), "2", str(len(MESSAGES[1]))]
    # curl writes the message as received minus the dot-stuffing: byte for byte.
    proc = await asyncio.create_subprocess_exec(
        curl, *common, url + "/1", stdout=asyncio.subprocess.PIPE
    )
    raw, _ = await proc.communicate()
    assert proc.returncode == 0
    assert raw == MESSAGES[0]
    code, out = await run(curl, *common, "-X", "UIDL", url + "/")
    assert code == 0 and len(out.splitlines()) == 2, out
    # DELE then curl's QUIT: the message is gone (-I: no transfer expected).
    code, out = await run(curl, *common, "-X", "DELE", "-I", url + "/2")
    assert code == 0, out
    assert len(await pop3env.inbox_uids("alice@example.test")) == 1
