"""Every CLI command that reads the store opens the backend the configuration names
(``storage.factory.open_store`` through ``cliutil``): with ``backend = "postgresql"`` and
no server reachable, each fails with the database error instead of quietly reading the
SQLite file that ``pochta init`` left in the data directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = [
    ["apikey", "list"],
    ["suppress", "list", "example.test"],
    ["sieve", "list", "alice@example.test"],
    ["spam", "forget", "alice@example.test"],
    ["report", "tls"],
    ["report", "dmarc"],
    ["acl", "get", "alice@example.test", "INBOX"],
    ["metadata", "get"],
]


@pytest.fixture(scope="module")
def pg_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inst = tmp_path_factory.mktemp("pgcli") / "inst"
    pochta = [sys.executable, "-m", "pochta"]
    subprocess.run([*pochta, "init", "--dir", str(inst), "--hostname", "mail.example.test",
                    "--domain", "example.test"], check=True, capture_output=True)
    subprocess.run([*pochta, "-c", str(inst / "pochta.toml"), "user", "add",
                    "alice@example.test", "--password-stdin"], input="alice-pass-123\n",
                   text=True, check=True, capture_output=True)
    config = inst / "pochta.toml"
    # port 1 on loopback: nothing listens there
    config.write_text(config.read_text() + '\n[storage]\nbackend = "postgresql"\n'
                      'dsn = "postgresql://pochta@127.0.0.1:1/pochta"\n')
    return config


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_command_uses_the_configured_backend(pg_config: Path, command: list[str]) -> None:
    r = subprocess.run([sys.executable, "-m", "pochta", "-c", str(pg_config), *command],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "database unavailable" in r.stderr, r.stderr
