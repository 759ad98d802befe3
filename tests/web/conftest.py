from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Instance
from tests.web.helpers import WebServer, web_server


@pytest.fixture
async def web(instance: Instance) -> AsyncIterator[WebServer]:
    async for s in web_server(instance):
        yield s
