"""The web part of the storage contract (interfaces_web.py), on every backend of the
conformance suite: admin accounts and web sessions."""

from __future__ import annotations

import hashlib

import pytest

from pochta.storage.interfaces import AlreadyExists, MailStore, NotFound
from pochta.storage.interfaces_web import WebSession
from tests.storage.test_conformance import Factory, factory, store  # noqa: F401


def session(n: int, principal: str, expires: float = 2000.0) -> WebSession:
    return WebSession(hashlib.sha256(str(n).encode()).digest(), principal, f"csrf{n}", 1000.0,
                      expires)


async def test_admins(store: MailStore) -> None:  # noqa: F811
    assert await store.list_admins() == []
    await store.add_admin("root", "$argon2id$one", 1.0)
    await store.add_admin("Ops Team", "$argon2id$two", 2.0)
    with pytest.raises(AlreadyExists):
        await store.add_admin("root", "$argon2id$three", 3.0)
    assert [a.name for a in await store.list_admins()] == ["Ops Team", "root"]
    admin = await store.get_admin("root")
    assert admin is not None and admin.password_hash == "$argon2id$one" and admin.created == 1.0
    assert await store.get_admin("ROOT") is None
    await store.set_admin_password("root", "$argon2id$new")
    admin = await store.get_admin("root")
    assert admin is not None and admin.password_hash == "$argon2id$new"
    with pytest.raises(NotFound):
        await store.set_admin_password("nobody", "x")
    await store.remove_admin("Ops Team")
    with pytest.raises(NotFound):
        await store.remove_admin("Ops Team")
    assert [a.name for a in await store.list_admins()] == ["root"]


async def test_sessions(store: MailStore) -> None:  # noqa: F811
    await store.add_admin("root", "h", 1.0)
    s1, s2, s3 = session(1, "admin:root"), session(2, "admin:root"), session(
        3, "user:alice@example.test", expires=1500.0)
    for s in (s1, s2, s3):
        await store.create_web_session(s)
    assert await store.get_web_session(s1.id_hash, 1200.0) == s1
    assert await store.get_web_session(s3.id_hash, 1499.0) == s3
    assert await store.get_web_session(s3.id_hash, 1500.0) is None  # expired
    assert await store.get_web_session(b"\0" * 32, 1200.0) is None
    await store.delete_web_session(s2.id_hash)
    assert await store.get_web_session(s2.id_hash, 1200.0) is None
    assert await store.purge_web_sessions(1600.0) == 1  # s3
    assert await store.delete_web_sessions_of("user:alice@example.test") == 0
    # a new password or removal ends the admin's sessions
    await store.create_web_session(s2)
    await store.set_admin_password("root", "h2")
    assert await store.get_web_session(s1.id_hash, 1200.0) is None
    assert await store.get_web_session(s2.id_hash, 1200.0) is None
    await store.create_web_session(s1)
    await store.remove_admin("root")
    assert await store.get_web_session(s1.id_hash, 1200.0) is None
    await store.create_web_session(session(4, "user:bob@example.test"))
    await store.create_web_session(session(5, "user:bob@example.test"))
    assert await store.delete_web_sessions_of("user:bob@example.test") == 2


async def test_sessions_shared_between_store_instances(
    factory: Factory, tmp_path: object,  # noqa: F811
) -> None:
    """Two processes (``--workers``) see each other's sessions."""
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    first = await factory(tmp_path)
    second = await factory(tmp_path)
    try:
        await first.create_web_session(session(9, "admin:x"))
        assert await second.get_web_session(session(9, "admin:x").id_hash, 1200.0) is not None
    finally:
        await first.close()
        await second.close()
