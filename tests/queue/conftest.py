from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pochta.config import from_dict
from pochta.storage.factory import open_store
from pochta.storage.interfaces import MailStore


class FakeClock:
    def __init__(self, now: float | None = None) -> None:
        # The store stamps items with the real time; start just after it.
        self.now = time.time() + 1 if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, storage_settings: dict[str, Any]
                ) -> AsyncIterator[MailStore]:
    """SQLite in tmp_path, or PostgreSQL with POCHTA_TEST_BACKEND=postgresql."""
    config = from_dict({"hostname": "mail.example.test", "base_dir": str(tmp_path),
                        "storage": storage_settings})
    s = await open_store(config)
    yield s
    await s.close()
