"""The asyncio driver of the ``http`` listener role: moves bytes between the socket and
the sans-IO core (http/core.py), enforces the clock (request and idle timeouts), and
dispatches requests to the routes of http/router.py, which the composition root
(server/app.py) fills with the applications' routes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..config import Listener
from ..http.core import CLOSED, NEED_DATA, HTTPError, Request, Response, ServerCore
from ..http.router import TRANSPORT_CODES, Router, error_response
from ..http.settings import HTTPSettings
from ..metrics import METRICS
from .listener import Connection

log = logging.getLogger("pochta.http")


async def serve_connection(conn: Connection, router: Router, settings: HTTPSettings,
                           scheme: str) -> None:
    """Answer requests on one connection until it closes or must be closed."""
    core = ServerCore(settings.max_header_bytes, settings.max_body_bytes)
    served = 0
    loop = asyncio.get_running_loop()
    while served < settings.max_requests_per_connection:
        deadline: float | None = None
        request: Request | None = None
        try:
            while True:
                got = core.next_request()
                if isinstance(got, Request):
                    request = got
                    break
                if got is CLOSED:
                    return
                assert got is NEED_DATA
                out = core.data_to_send()  # 100 Continue
                if out:
                    conn.write(out)
                if core.idle and deadline is None:
                    timeout = settings.idle_timeout
                else:
                    if deadline is None:
                        deadline = loop.time() + settings.request_timeout
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        raise HTTPError(408, "request not complete in time")
                try:
                    data = await conn.read(timeout)
                except TimeoutError:
                    if core.idle and deadline is None:
                        return  # idle keep-alive connection: just close
                    raise HTTPError(408, "request not complete in time") from None
                if data and deadline is None:
                    deadline = loop.time() + settings.request_timeout
                core.receive_data(data)
        except HTTPError as exc:
            log.info("http refused %d: %s", exc.status, exc.message)
            core.respond(error_response(exc.status, TRANSPORT_CODES.get(exc.status, "bad_request"),
                                        exc.message), close=True)
            conn.write(core.data_to_send())
            await conn.drain()
            await _linger(conn)
            return
        request.scheme = scheme
        request.peer_ip = conn.peer_ip
        started = time.monotonic()
        try:
            response = await router.dispatch(request)
        except Exception:
            log.exception("http handler failed for %s %s", request.method, request.path)
            response = error_response(500, "internal_error", "internal server error")
        if request.method == "HEAD":
            response = Response(response.status, b"", response.content_type, response.headers)
        served += 1
        last = served >= settings.max_requests_per_connection
        core.respond(response, close=last)
        conn.write(core.data_to_send())
        await conn.drain()
        METRICS.inc("pochta_http_requests_total", status=f"{response.status // 100}xx")
        log.info("http %s %s %d %.1fms", request.method, request.path, response.status,
                 (time.monotonic() - started) * 1000)
        if last or core.must_close:
            return


# After refusing a request whose body is still arriving (413, 408, 400), keep reading and
# discarding for a while before closing, as nginx's lingering_close does: closing a socket
# with unread data makes the kernel send RST, and the client then loses our answer
# (RFC 9112 §9.6: a server SHOULD NOT close while the client may still be sending).
LINGER_SECONDS = 5.0
LINGER_READ_TIMEOUT = 1.0
LINGER_BYTES = 64 * 1024 * 1024


async def _linger(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_SECONDS
    discarded = 0
    while discarded < LINGER_BYTES:
        left = deadline - loop.time()
        if left <= 0:
            return
        try:
            data = await conn.read(min(LINGER_READ_TIMEOUT, left))
        except (TimeoutError, OSError, ConnectionError):
            return
        if not data:
            return
        discarded += len(data)


async def handle_http(conn: Connection, router: Router, settings: HTTPSettings,
                      listener: Listener) -> None:
    await serve_connection(conn, router, settings,
                           "https" if listener.tls == "implicit" else "http")
