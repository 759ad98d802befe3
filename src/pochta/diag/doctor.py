"""placeholder"""

from __future__ import annotations

from typing import Any


def register_doctor(sub: Any) -> None:
    pass
