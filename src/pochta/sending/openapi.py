"""The OpenAPI 3.1 description the server serves at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from ..storage.interfaces_sending import EventKind
from .settings import SendingSettings


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"description": description or "OK",
            "content": {"application/json": {"schema": schema}}}


ERRORS = {str(code): {"$ref": "#/components/responses/Error"}
          for code in (400, 401, 403, 404, 409, 413, 415, 422)}


def _op(summary: str, scope: str | None, responses: dict[str, Any],
        body: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None
        ) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **ERRORS}}
    if scope:
        op["description"] = f"Needs an API key with the `{scope}` scope."
    else:
        op["security"] = []
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if params:
        op["parameters"] = params
    return op


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _p(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_document(settings: SendingSettings) -> dict[str, Any]:
    address = {"oneOf": [{"type": "string", "examples": ["Ann <ann@example.org>"]},
                         {"type": "object", "properties": {"email": {"type": "string"},
                                                           "name": {"type": "string"}},
                          "required": ["email"], "additionalProperties": False}]}
    addresses = {"oneOf": [address, {"type": "array", "items": address}]}
    message = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "from": address, "to": addresses, "cc": addresses, "bcc": addresses,
            "reply_to": addresses, "subject": {"type": "string"},
            "text": {"type": "string"}, "html": {"type": "string"},
            "raw": {"type": "string", "description": "a whole RFC 5322 message instead of "
                    "from/subject/text/html/attachments/headers; to names the recipients"},
            "attachments": {"type": "array", "items": {
                "type": "object", "additionalProperties": False,
                "properties": {"filename": {"type": "string"},
                               "content_type": {"type": "string"},
                               "content": {"type": "string", "contentEncoding": "base64"}},
                "required": ["filename", "content"]}},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
            "metadata": {"type": "object"},
            "stream": {"enum": settings.all_streams()},
            "variables": {"type": "object", "description": "{{name}} in subject, text and "
                          "html is replaced by the value (HTML-escaped in html)"},
            "track": {"description": "open/click tracking of the HTML part (default: "
                      "[[sending.tracking]])", "oneOf": [
                          {"type": "boolean"},
                          {"type": "object", "additionalProperties": False, "properties": {
                              "opens": {"type": "boolean"},
                              "clicks": {"type": "boolean"}}}]},
        },
    }
    recipient_result = {"type": "object", "properties": {
        "to": {"type": "string"}, "id": {"type": "string"},
        "status": {"enum": ["queued", "suppressed", "failed"]},
        "error": {"type": "string"}}}
    event = {"type": "object", "properties": {
        "id": {"type": "integer"}, "time": {"type": "number"},
        "event": {"enum": [k.value for k in EventKind]}, "message_id": {"type": "string"},
        "recipient": {"type": "string"}, "stream": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}}, "detail": {"type": "object"}}}
    idem = {"name": "Idempotency-Key", "in": "header", "required": False,
            "schema": {"type": "string", "maxLength": 200},
            "description": "a retried call with the same key and body gets the first reply "
                           "and sends nothing"}
    paths: dict[str, Any] = {
        "/v1/messages": {"post": _op(
            "Send one message", "send",
            {"202": _json({"type": "object", "properties": {
                "recipients": {"type": "array", "items": recipient_result}}},
                "queued (fsynced): one id per recipient")},
            {"application/json": {"schema": _ref("Message")}}, [idem])},
        "/v1/messages/batch": {"post": _op(
            f"Send up to {settings.max_batch} messages", "send",
            {"202": _json({"type": "object", "properties": {"messages": {
                "type": "array", "items": {"type": "object", "properties": {
                    "index": {"type": "integer"},
                    "recipients": {"type": "array", "items": recipient_result}}}}}})},
            {"application/json": {"schema": {"oneOf": [
                {"type": "object", "properties": {"messages": {
                    "type": "array", "items": _ref("Message"),
                    "maxItems": settings.max_batch}}, "additionalProperties": False},
                {"type": "object", "properties": {
                    "template": _ref("Message"),
                    "recipients": {"type": "array", "maxItems": settings.max_batch,
                                   "items": {"type": "object", "properties": {
                                       "to": addresses, "variables": {"type": "object"},
                                       "metadata": {"type": "object"},
                                       "tags": {"type": "array"}}}}},
                 "additionalProperties": False}]}}}, [idem])},
        "/v1/messages/{id}": {"get": _op(
            "A message (one recipient's copy): its status and events", "events",
            {"200": _json({"type": "object"})}, params=[_p("id")])},
        "/v1/events": {"get": _op(
            "Events, oldest first, paged", "events",
            {"200": _json({"type": "object", "properties": {
                "events": {"type": "array", "items": event},
                "next": {"type": ["integer", "null"], "description": "pass as after"}}})},
            params=[_q("since", {"type": "number"}, "POSIX seconds, inclusive"),
                    _q("until", {"type": "number"}, "POSIX seconds, exclusive"),
                    _q("tag", {"type": "string"}, ""), _q("recipient", {"type": "string"}, ""),
                    _q("message_id", {"type": "string"}, ""),
                    _q("event", {"type": "string"}, "comma-separated kinds"),
                    _q("after", {"type": "integer"}, "event id cursor"),
                    _q("limit", {"type": "integer", "maximum": 1000}, "")])},
        "/v1/stats": {"get": _op(
            "Counts per hour or day, stream and event", "stats",
            {"200": _json({"type": "object"})},
            params=[_q("period", {"enum": ["hour", "day"]}, ""),
                    _q("since", {"type": "number"}, ""), _q("until", {"type": "number"}, ""),
                    _q("tag", {"type": "string"}, "")])},
        "/v1/suppressions": {
            "get": _op("Suppressed addresses, paged by address", "suppressions",
                       {"200": _json({"type": "object"})},
                       params=[_q("stream", {"type": "string"}, ""),
                               _q("after", {"type": "string"}, "address cursor"),
                               _q("limit", {"type": "integer"}, "")]),
            "post": _op("Add suppressions", "suppressions", {"200": _json({"type": "object"})},
                        {"application/json": {"schema": {"type": "object", "properties": {
                            "suppressions": {"type": "array", "items": {
                                "type": "object", "properties": {
                                    "address": {"type": "string"},
                                    "stream": {"type": "string"},
                                    "reason": {"type": "string"}}}}}}}})},
        "/v1/suppressions/{address}": {"delete": _op(
            "Remove a suppression", "suppressions", {"200": _json({"type": "object"})},
            params=[_p("address"), _q("stream", {"type": "string"}, "default *")])},
        "/v1/suppressions/export": {"get": _op(
            "All suppressions as CSV", "suppressions",
            {"200": {"description": "CSV", "content": {"text/csv": {}}}})},
        "/v1/suppressions/import": {"post": _op(
            "Add suppressions from CSV (header row with address[,stream,reason])",
            "suppressions", {"200": _json({"type": "object"})}, {"text/csv": {}})},
        "/v1/webhooks": {
            "get": _op("Webhooks of the key's domain", "webhooks",
                       {"200": _json({"type": "object"})}),
            "post": _op("Add a webhook (the reply carries its signing secret, once)",
                        "webhooks", {"201": _json({"type": "object"})},
                        {"application/json": {"schema": {"type": "object", "properties": {
                            "url": {"type": "string"}}}}})},
        "/v1/webhooks/{id}": {"delete": _op("Remove a webhook", "webhooks",
                                            {"200": _json({"type": "object"})},
                                            params=[_p("id")])},
        "/v1/webhooks/{id}/log": {"get": _op("Delivery attempts, newest first", "webhooks",
                                             {"200": _json({"type": "object"})},
                                             params=[_p("id")])},
        "/v1/webhooks/{id}/replay": {"post": _op(
            "Send every event after an event id again", "webhooks",
            {"200": _json({"type": "object"})},
            {"application/json": {"schema": {"type": "object", "properties": {
                "after": {"type": "integer"}}}}}, [_p("id")])},
        "/unsubscribe/{token}": {
            "get": _op("Confirmation page (does not unsubscribe)", None,
                       {"200": {"description": "HTML"}}, params=[_p("token")]),
            "post": _op("One-click unsubscribe (RFC 8058)", None,
                        {"200": {"description": "HTML"}},
                        {"application/x-www-form-urlencoded": {}}, [_p("token")])},
        "/t/o/{token}": {"get": _op("Tracking pixel: records an opened event", None,
                                    {"200": {"description": "image/gif"}},
                                    params=[_p("token")])},
        "/t/c/{token}": {"get": _op("Tracked link: records a clicked event and redirects to "
                                    "the signed original URL (404 for any other token)",
                                    None, {"302": {"description": "redirect"}},
                                    params=[_p("token")])},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Pochta sending API", "version": "1",
                 "description": "Transactional and bulk sending: see docs/api.md"},
        "security": [{"bearer": []}, {"basic": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "the API key (pochta apikey add)"},
                "basic": {"type": "http", "scheme": "basic",
                          "description": "any user name, the API key as password"}},
            "schemas": {"Message": message, "Error": {
                "type": "object", "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"},
                                   "message": {"type": "string"}}}}}},
            "responses": {"Error": _json(_ref("Error"), "an error with a stable code")},
        },
    }
