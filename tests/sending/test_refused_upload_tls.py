"""A refused over-large upload over HTTPS ends promptly with its 413, every time. The
connection's flow control pauses the TCP transport under TLS, not uvloop's TLS transport:
pausing that one wedged about one upload in 12 under load (after resume_reading it
delivered nothing more; the client's write hung until its 30 s timeout)."""

from __future__ import annotations

import time

from tests.sending.helpers import SendingServer
from tests.sending.test_api_errors import GOOD


async def test_refused_uploads_over_tls_never_wedge(api: SendingServer) -> None:
    huge = {**GOOD, "text": "x" * (21 * 1024 * 1024)}
    for _ in range(12):
        started = time.monotonic()
        r = await api.call("POST", "/v1/messages", huge)
        assert r.status == 413 and r.json()["error"]["code"] == "body_too_large"
        assert time.monotonic() - started < 20, "the refused upload hung"
