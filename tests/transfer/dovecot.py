"""A throwaway Dovecot for the import tests: started from a minimal config in a private
directory, IMAP with implicit TLS on a free 127.0.0.1 port, users in a passwd-file, mail
in Maildir++ (``doveadm`` writes the test Maildirs through it). Mail files belong to
``nobody`` (Dovecot refuses uid 0 for mail), so the directory lives outside pytest's 0700
tmp_path."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from pochta.tlsutil import generate_self_signed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dovecot:
    def __init__(self, users: dict[str, str], mail: dict[str, Path] | None = None) -> None:
        for tool in ("dovecot", "doveadm"):
            if shutil.which(tool) is None:
                pytest.skip(f"{tool} is not installed (Debian dovecot-core, dovecot-imapd)")
        self.root = Path(tempfile.mkdtemp(prefix="pochta-dovecot-"))
        os.chmod(self.root, 0o755)  # noqa: S103 - nobody (the mail user) must reach mail/
        self.nobody = pwd.getpwnam("nobody")
        for sub in ("run", "state", "mail", "home"):
            (self.root / sub).mkdir()
        for sub in ("mail", "home"):
            os.chown(self.root / sub, self.nobody.pw_uid, self.nobody.pw_gid)
        self.cert, self.key = self.root / "cert.pem", self.root / "key.pem"
        generate_self_signed("localhost", self.cert, self.key)
        self.port = free_port()
        mail = mail or {}
        lines = [f"{user}:{{PLAIN}}{password}::::::"
                 + (f"userdb_mail=maildir:{mail[user]}" if user in mail else "")
                 for user, password in users.items()]
        (self.root / "passwd").write_text("\n".join(lines) + "\n")
        self.conf = self.root / "dovecot.conf"
        self.conf.write_text(f"""
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{self.cert}
ssl_key = <{self.key}
auth_mechanisms = plain
mail_location = maildir:{self.root}/mail/%u
mail_uid = nobody
mail_gid = {self.nobody.pw_gid}
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.root}/passwd
}}
userdb {{
  driver = passwd-file
  args = {self.root}/passwd
  default_fields = uid=nobody gid={self.nobody.pw_gid} home={self.root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
  }}
  mailbox "Sent Items" {{
    special_use = \\Sent
  }}
}}
""")
        self.process = subprocess.Popen(["dovecot", "-F", "-c", str(self.conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.root / "dovecot.log")
                    raise RuntimeError("dovecot did not start: " + (
                        log.read_text() if log.exists() else "")) from None
                time.sleep(0.1)

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / user

    def doveadm(self, *argv: str, stdin: bytes | None = None) -> str:
        done = subprocess.run(["doveadm", "-c", str(self.conf), *argv], input=stdin,
                              capture_output=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(argv)}: {done.stderr.decode()}")
        return done.stdout.decode()

    def save(self, user: str, mailbox: str, message: bytes) -> None:
        self.doveadm("save", "-u", user, "-m", mailbox, stdin=message)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
