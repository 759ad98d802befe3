from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Instance
from tests.sending.helpers import SendingServer, sending_server


@pytest.fixture
async def api(instance: Instance) -> AsyncIterator[SendingServer]:
    async for s in sending_server(instance):
        yield s
