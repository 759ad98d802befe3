"""Routing of HTTP requests to the applications (the sending API, the web admin, health,
autoconfig, ACME challenges): a route handler gets the ``Request`` and returns a
``Response``; an ``ApiError`` it raises becomes a JSON error with a stable code. The driver
that moves the bytes is ``server/http.py``."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .core import Request, Response

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
