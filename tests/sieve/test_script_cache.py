"""The active script's compiled form at delivery (services/sieve.py): compiled once per
text read from the store, never a digest per delivery, never an older version than the
text just read, and a script that does not compile is not compiled again."""

from __future__ import annotations

import asyncio
import hashlib
from types import SimpleNamespace

import pytest

from pochta.services import sieve as service_module
from pochta.services.sieve import SieveLoadError, SieveService
from pochta.sieve import Script, compile_script
from pochta.sieve.settings import SieveConfig


class Store:
    """The store's side of loading an account's active script."""

    def __init__(self) -> None:
        self.active: dict[int, tuple[str, str]] = {}
        self.reads = 0

    async def get_active_sieve_script(self, account_id: int) -> tuple[str, str] | None:
        self.reads += 1
        return self.active.get(account_id)

    async def get_account_by_id(self, account_id: int) -> SimpleNamespace:
        return SimpleNamespace(id=account_id, address=f"u{account_id}@example.test")


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts compiled, and the texts digested (the cache of shared scripts) after
    them: one digest per new text, none per delivery."""
    seen: list[str] = []
    sha256 = hashlib.sha256

    def counting(source: str, name: str = "", *args: object, **kw: object) -> Script:
        seen.append(source)
        return compile_script(source, name, *args, **kw)  # type: ignore[arg-type]

    def digest(data: bytes) -> hashlib._Hash:
        seen.append("digest")
        return sha256(data)

    monkeypatch.setattr(service_module, "compile_script", counting)
    monkeypatch.setattr(hashlib, "sha256", digest)
    return seen


def load(service: SieveService, account_id: int) -> Script:
    loaded = asyncio.run(service.load(account_id))
    assert loaded is not None
    return loaded[1]


def test_the_active_script_compiles_once_per_text(compiles: list[str]) -> None:
    store = Store()
    service = SieveService(store, SieveConfig(script_cache_seconds=0),  # type: ignore[arg-type]
                           "mail.example.test")
    store.active[1] = ("main", 'require "fileinto";\nfileinto "a";\n')
    first = load(service, 1)
    assert load(service, 1) is first and store.reads == 2  # read again, not compiled
    assert len(compiles) == 2  # digest, compile
    # another process changed it: the next read runs the new text
    store.active[1] = ("main", 'require "fileinto";\nfileinto "b";\n')
    changed = load(service, 1)
    assert changed is not first and len(compiles) == 4
    assert changed.commands[1].extra["pos"] == ["b"]
    # the same text again (a copy of the string, as from a new query): nothing
    store.active[1] = ("main", "".join(['require "fileinto";\n', 'fileinto "b";\n']))
    assert load(service, 1) is changed and len(compiles) == 4
    # another account with the same text shares the compiled script (by digest)
    store.active[2] = ("other", 'require "fileinto";\nfileinto "b";\n')
    assert load(service, 2) is changed and compiles[4:] == ["digest"]


def test_a_broken_script_is_not_compiled_per_delivery(compiles: list[str]) -> None:
    store = Store()
    service = SieveService(store, SieveConfig(), "mail.example.test")  # type: ignore[arg-type]
    store.active[7] = ("bad", "if true { keep;\n")
    for _ in range(3):
        with pytest.raises(SieveLoadError, match="script 'bad': line"):
            asyncio.run(service.load(7))
    assert compiles == ["digest", "if true { keep;\n"]
    service.forget(7)  # ManageSieve stored a fixed one
    store.active[7] = ("bad", "keep;\n")
    assert load(service, 7).commands[0].name == "keep"
