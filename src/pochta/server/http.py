"""The asyncio driver of the ``http`` listener role: moves bytes between the socket and
the sans-IO core (http/core.py), enforces the clock (request and idle timeouts), and
dispatches requests to the routes that applications registered.

Applications are modules listed in ``APPS``, each with ``register(router, ctx)``: the
sending API (issue 18) now, the web admin (issue 19) later. A route handler gets the
``Request`` and returns a ``Response``; an ``ApiError`` it raises becomes a JSON error
with a stable code.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import Listener
from ..metrics import METRICS
from ..server.listener import Connection
from .core import CLOSED, NEED_DATA, HTTPError, Request, Response, ServerCore
from .settings import HTTPSettings

if TYPE_CHECKING:
    from ..server.app import ServerContext

log = logging.getLogger("pochta.http")

# Modules that contribute routes (``register(router, ctx)``), in this order.
APPS = ("pochta.sending.api",
        # issue 19: metrics and health, autoconfig and MTA-STS, web admin, ACME challenges
        "pochta.web.health", "pochta.web.autoconfig", "pochta.web.admin", "pochta.web.acme")

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]


class ApiError(Exception):
    """An error answered as ``{"error": {"code": ..., "message": ...}}``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None
                  ) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(status, body, "application/json", headers or [])


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    return json_response(status, {"error": {"code": code, "message": message, **extra}})


# Stable codes for the errors the transport itself answers.
TRANSPORT_CODES = {400: "bad_request", 408: "request_timeout", 413: "body_too_large",
                   431: "headers_too_large", 404: "not_found", 405: "method_not_allowed"}


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


class Router:
    """Routes by method and path pattern (``/v1/messages/{id}``: one path segment)."""

    def __init__(self) -> None:
        self.routes: list[_Route] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", re.escape(path).replace(r"\{", "{")
                       .replace(r"\}", "}"))
        self.routes.append(_Route(method, re.compile(f"^{regex}$"), handler))

    async def dispatch(self, request: Request) -> Response:
        allowed = False
        for route in self.routes:
            match = route.pattern.match(request.path)
            if match is None:
                continue
            if route.method != request.method and not (
                    route.method == "GET" and request.method == "HEAD"):
                allowed = True
                continue
            try:
                return await route.handler(request, match.groupdict())
            except ApiError as exc:
                return error_response(exc.status, exc.code, exc.message, **exc.extra)
        if allowed:
            return error_response(405, "method_not_allowed",
                                  f"{request.method} is not allowed on {request.path}")
        return error_response(404, "not_found", f"no such resource: {request.path}")


def build_router(ctx: ServerContext) -> Router:
    router: Router | None = ctx.extras.get("http_router")
    if router is None:
        router = Router()
        for name in APPS:
            importlib.import_module(name).register(router, ctx)
        ctx.extras["http_router"] = router
    return router


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


async def handle_http(conn: Connection, ctx: ServerContext, listener: Listener) -> None:
    router = build_router(ctx)
    settings: HTTPSettings = ctx.config.http
    await serve_connection(conn, router, settings,
                           "https" if listener.tls == "implicit" else "http")
