"""pochta admin add|list|passwd|remove."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pytest

from pochta.cli import main
from pochta.passwords import verify_password
from pochta.storage.sqlite import SQLiteStore
from tests.conftest import Instance


def run(monkeypatch: pytest.MonkeyPatch, config: Path, *argv: str, stdin: str = "") -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(["-c", str(config), *argv])


def test_admin_commands(instance: Instance, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    config = instance.dir / "pochta.toml"
    config.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\n'
                      f'[tls]\ncert = "{instance.cert}"\nkey = "{instance.key}"\n')
    assert run(monkeypatch, config, "admin", "add", "root", "--password-stdin",
               stdin="first-password\n") == 0
    assert run(monkeypatch, config, "admin", "add", "root", "--password-stdin",
               stdin="other-password\n") == 1
    assert run(monkeypatch, config, "admin", "add", "a@b.test", "--password-stdin",
               stdin="other-password\n") == 1
    assert run(monkeypatch, config, "admin", "add", "ops", "--password-stdin",
               stdin="short\n") == 1
    assert run(monkeypatch, config, "admin", "passwd", "root", "--password-stdin",
               stdin="second-password\n") == 0
    capsys.readouterr()
    assert run(monkeypatch, config, "admin", "list") == 0
    assert capsys.readouterr().out.startswith("root ")

    async def check() -> None:
        store = await SQLiteStore.open(instance.dir / "data")
        admin = await store.get_admin("root")
        await store.close()
        assert admin is not None and verify_password(admin.password_hash, "second-password")

    asyncio.run(check())
    assert run(monkeypatch, config, "admin", "remove", "root") == 0
    assert run(monkeypatch, config, "admin", "remove", "root") == 1
