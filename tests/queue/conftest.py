from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pochta.storage.sqlite import SQLiteStore


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
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "data")
    yield s
    await s.close()
