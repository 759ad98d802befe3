from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from pochta.passwords import hash_password
from tests.conftest import CHEAP_HASHER, Instance
from tests.web.helpers import Client, WebServer, web_server

ADMIN = ("root", "root-password")


@pytest.fixture
async def web(instance: Instance) -> AsyncIterator[WebServer]:
    async for s in web_server(instance):
        await s.store.add_admin(ADMIN[0], hash_password(ADMIN[1], hasher=CHEAP_HASHER), time.time())
        yield s


@pytest.fixture
async def admin(web: WebServer) -> Client:
    client = Client(web)
    reply = await client.login(*ADMIN)
    assert reply.status == 303 and reply.headers["location"] == "/admin"
    return client
