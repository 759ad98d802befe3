from __future__ import annotations

from tests.sending.helpers import api  # noqa: F401
