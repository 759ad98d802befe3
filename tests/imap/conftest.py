from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Instance, Server
from tests.imap.helpers import start


@pytest.fixture
async def imap_server(instance: Instance) -> AsyncIterator[Server]:
    """Like running_server, plus an IMAP listener without TLS (tls="none") for
    transcripts, so LOGIN works in clear there."""
    server = await start(instance)
    try:
        yield server
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()
