"""The Sieve part of the storage contract (interfaces_sieve.py), on every backend of the
conformance suite: scripts per account with one active, and the vacation/duplicate
memory."""

from __future__ import annotations

import asyncio

import pytest

from pochta.storage.interfaces import AlreadyExists, MailStore, NotFound
from pochta.storage.interfaces_sieve import ScriptActive
from tests.storage.test_conformance import Factory, account_id, factory, store  # noqa: F401


async def test_scripts_put_get_list_replace(store: MailStore) -> None:  # noqa: F811
    a = await account_id(store)
    b = await account_id(store, "bob@example.test")
    assert await store.list_sieve_scripts(a) == []
    assert await store.get_active_sieve_script(a) is None
    await store.put_sieve_script(a, "main", "keep;")
    await store.put_sieve_script(a, "Vacation ✈", 'require "vacation";')
    await store.put_sieve_script(b, "main", "discard;")
    infos = await store.list_sieve_scripts(a)
    assert [(i.name, i.active) for i in infos] == [("Vacation ✈", False), ("main", False)]
    assert infos[0].size == len('require "vacation";')
    assert await store.get_sieve_script(a, "main") == "keep;"
    assert await store.get_sieve_script(a, "MAIN") is None  # names are case-sensitive
    await store.put_sieve_script(a, "main", "stop;")
    assert await store.get_sieve_script(a, "main") == "stop;"
    assert await store.get_sieve_script(b, "main") == "discard;"


async def test_one_active_script(store: MailStore) -> None:  # noqa: F811
    a = await account_id(store)
    await store.put_sieve_script(a, "one", "keep;")
    await store.put_sieve_script(a, "two", "discard;")
    await store.set_active_sieve_script(a, "one")
    assert await store.get_active_sieve_script(a) == ("one", "keep;")
    await store.set_active_sieve_script(a, "two")
    assert await store.get_active_sieve_script(a) == ("two", "discard;")
    assert [i.name for i in await store.list_sieve_scripts(a) if i.active] == ["two"]
    await store.put_sieve_script(a, "two", "stop;")  # replacing keeps it active
    assert await store.get_active_sieve_script(a) == ("two", "stop;")
    with pytest.raises(NotFound):
        await store.set_active_sieve_script(a, "three")
    assert await store.get_active_sieve_script(a) == ("two", "stop;")
    await store.set_active_sieve_script(a, None)
    assert await store.get_active_sieve_script(a) is None


async def test_delete_and_rename(store: MailStore) -> None:  # noqa: F811
    a = await account_id(store)
    await store.put_sieve_script(a, "one", "keep;")
    await store.put_sieve_script(a, "two", "discard;")
    await store.set_active_sieve_script(a, "one")
    with pytest.raises(ScriptActive):
        await store.delete_sieve_script(a, "one")
    with pytest.raises(NotFound):
        await store.delete_sieve_script(a, "nope")
    with pytest.raises(AlreadyExists):
        await store.rename_sieve_script(a, "one", "two")
    with pytest.raises(NotFound):
        await store.rename_sieve_script(a, "nope", "three")
    await store.rename_sieve_script(a, "one", "uno")
    assert await store.get_active_sieve_script(a) == ("uno", "keep;")
    await store.delete_sieve_script(a, "two")
    assert [i.name for i in await store.list_sieve_scripts(a)] == ["uno"]


async def test_scripts_go_with_their_account(store: MailStore) -> None:  # noqa: F811
    a = await account_id(store)
    await store.put_sieve_script(a, "one", "keep;")
    await store.remove_account("alice@example.test")
    assert await store.list_sieve_scripts(a) == []


async def test_remember_once_with_expiry(store: MailStore) -> None:  # noqa: F811
    now = 1_000_000.0
    assert not await store.is_remembered("k", now)
    assert await store.remember_once("k", 60, now)
    assert await store.is_remembered("k", now + 59)
    assert not await store.remember_once("k", 60, now + 30)
    assert not await store.is_remembered("k", now + 61)
    assert await store.remember_once("k", 60, now + 61)
    assert await store.remember_once("other", 60, now)


async def test_remember_once_is_atomic(store: MailStore) -> None:  # noqa: F811
    results = await asyncio.gather(*(store.remember_once("race", 3600) for _ in range(20)))
    assert results.count(True) == 1
