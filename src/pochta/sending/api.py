"""The sending API's routes (registered on the http role's router; docs/api.md).

Every ``/v1`` route needs an API key (``Authorization: Bearer KEY``, or HTTP Basic with
the key as password) with the route's scope; a key only ever sees and sends as its own
domain. Errors are JSON ``{"error": {"code", "message"}}`` with stable codes.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import secrets
import time
from typing import Any

from ..http.core import Request, Response
from ..http.router import ApiError, Router, json_response
from ..mail.addresses import AddressError, normalize_address
from ..storage.interfaces_sending import (
    ALL_STREAMS,
    ApiKey,
    EventKind,
    EventQuery,
    SendingEvent,
    Suppression,
)
from .compose import InvalidRequest, Outgoing, parse_message
from .openapi import openapi_document
from .service import SendingService
from .tokens import parse_unsubscribe_token
from .tracking import PIXEL, parse_click_token, parse_open_token
from .urlguard import UrlGuard, UrlRefused

MAX_PAGE = 1000
MAX_IDEMPOTENCY_KEY = 200


def register(router: Router, service: SendingService) -> None:
    api = SendingAPI(service)
    router.add("GET", "/openapi.json", api.openapi)
    router.add("POST", "/v1/messages", api.send_one)
    router.add("POST", "/v1/messages/batch", api.send_batch)
    router.add("GET", "/v1/messages/{id}", api.message)
    router.add("GET", "/v1/events", api.events)
    router.add("GET", "/v1/stats", api.stats)
    router.add("GET", "/v1/suppressions", api.suppressions)
    router.add("POST", "/v1/suppressions", api.add_suppressions)
    router.add("GET", "/v1/suppressions/export", api.export_suppressions)
    router.add("POST", "/v1/suppressions/import", api.import_suppressions)
    router.add("DELETE", "/v1/suppressions/{address}", api.remove_suppression)
    router.add("GET", "/v1/webhooks", api.webhooks)
    router.add("POST", "/v1/webhooks", api.add_webhook)
    router.add("DELETE", "/v1/webhooks/{id}", api.remove_webhook)
    router.add("GET", "/v1/webhooks/{id}/log", api.webhook_log)
    router.add("POST", "/v1/webhooks/{id}/replay", api.replay_webhook)
    router.add("GET", "/unsubscribe/{token}", api.unsubscribe_page)
    router.add("POST", "/unsubscribe/{token}", api.unsubscribe)
    router.add("GET", "/t/o/{token}", api.track_open)  # tracking.py
    router.add("GET", "/t/c/{token}", api.track_click)


def _json_body(request: Request) -> Any:
    ctype = (request.header("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    try:
        return json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from None


def _int(request: Request, name: str, default: int, low: int = 0, high: int = 2**62) -> int:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name}: an integer") from None
    if not low <= n <= high:
        raise ApiError(400, "invalid_parameter", f"{name}: from {low} to {high}")
    return n


def _time(request: Request, name: str) -> float | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name}: POSIX seconds") from None


def _event_json(e: SendingEvent) -> dict[str, Any]:
    return {"id": e.id, "time": e.time, "event": str(e.kind), "message_id": e.message_id,
            "recipient": e.recipient, "stream": e.stream, "tags": list(e.tags),
            "detail": json.loads(e.detail)}


def _address_param(value: str, where: str) -> str:
    try:
        return normalize_address(value)
    except AddressError as exc:
        raise ApiError(400, "invalid_address", f"{where}: {value!r}: {exc}") from None


class SendingAPI:
    def __init__(self, service: SendingService) -> None:
        self.service = service
        self.store = service.store
        self.settings = service.settings

    async def _key(self, request: Request, scope: str) -> ApiKey:
        auth = request.header("authorization") or ""
        scheme, _, value = auth.partition(" ")
        presented = ""
        if scheme.lower() == "bearer":
            presented = value.strip()
        elif scheme.lower() == "basic":
            try:
                presented = base64.b64decode(value.strip()).decode("utf-8").partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                presented = ""
        key = await self.service.authenticate(presented) if presented else None
        if key is None:
            raise ApiError(401, "unauthorized", "a valid API key is required "
                           "(Authorization: Bearer KEY)")
        if scope not in key.scopes:
            raise ApiError(403, "forbidden_scope", f"this key lacks the {scope!r} scope")
        return key

    async def openapi(self, request: Request, _: dict[str, str]) -> Response:
        return json_response(200, openapi_document(self.settings))

    # --- sending ------------------------------------------------------------------------

    def _check_domain(self, key: ApiKey, out: Outgoing, where: str) -> None:
        if out.domain != key.domain:
            raise ApiError(403, "domain_mismatch",
                           f"{where}: this key sends as {key.domain}, not {out.domain}")

    async def send_one(self, request: Request, _: dict[str, str]) -> Response:
        key = await self._key(request, "send")
        body = _json_body(request)

        def parse() -> list[Outgoing]:
            out = parse_message(body, self.settings.streams_of(key.domain),
                                self.settings.max_recipients)
            self._check_domain(key, out, "message")
            return [out]

        return await self._send(request, key, parse, batch=False)

    async def send_batch(self, request: Request, _: dict[str, str]) -> Response:
        key = await self._key(request, "send")
        body = _json_body(request)

        def parse() -> list[Outgoing]:
            if not isinstance(body, dict):
                raise InvalidRequest("invalid_batch", "expected an object")
            unknown = set(body) - {"messages", "template", "recipients"}
            if unknown:
                raise InvalidRequest("unknown_field", f"unknown field {sorted(unknown)[0]!r}")
            specs = self._batch_specs(body)
            if not specs:
                raise InvalidRequest("invalid_batch", "no messages")
            if len(specs) > self.settings.max_batch:
                raise InvalidRequest("batch_too_large",
                                     f"at most {self.settings.max_batch} messages per call")
            outs = []
            for i, spec in enumerate(specs):
                out = parse_message(spec, self.settings.streams_of(key.domain),
                                    self.settings.max_recipients, f"messages[{i}]")
                self._check_domain(key, out, f"messages[{i}]")
                outs.append(out)
            return outs

        return await self._send(request, key, parse, batch=True)

    @staticmethod
    def _batch_specs(body: dict[str, Any]) -> list[Any]:
        if "messages" in body:
            if "template" in body or "recipients" in body:
                raise InvalidRequest("invalid_batch", "messages, or template and recipients")
            if not isinstance(body["messages"], list):
                raise InvalidRequest("invalid_batch", "messages: a list")
            return list(body["messages"])
        template, recipients = body.get("template"), body.get("recipients")
        if not isinstance(template, dict) or not isinstance(recipients, list):
            raise InvalidRequest("invalid_batch", "messages, or template and recipients")
        for bad in ("to", "cc", "bcc", "variables"):
            if bad in template:
                raise InvalidRequest("invalid_batch", f"template.{bad}: give it per recipient")
        specs: list[Any] = []
        for i, r in enumerate(recipients):
            if not isinstance(r, dict):
                raise InvalidRequest("invalid_batch", f"recipients[{i}]: an object")
            unknown = set(r) - {"to", "variables", "metadata", "tags"}
            if unknown:
                raise InvalidRequest("unknown_field",
                                     f"recipients[{i}]: unknown field {sorted(unknown)[0]!r}")
            spec = dict(template)
            spec["to"] = r.get("to")
            if "variables" in r:
                spec["variables"] = r["variables"]
            if "metadata" in r:
                spec["metadata"] = {**template.get("metadata", {}), **r["metadata"]} \
                    if isinstance(r["metadata"], dict) else r["metadata"]
            if "tags" in r:
                spec["tags"] = r["tags"]
            specs.append(spec)
        return specs

    async def _send(self, request: Request, key: ApiKey, parse: Any, batch: bool) -> Response:
        idem = request.header("idempotency-key")
        digest = hashlib.sha256(request.body).hexdigest()
        if idem is not None and not 0 < len(idem) <= MAX_IDEMPOTENCY_KEY:
            raise ApiError(400, "invalid_idempotency_key",
                               f"Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} characters")
        try:
            outs: list[Outgoing] = parse()
        except InvalidRequest as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        if idem is not None:
            stored = await self.store.reserve_idempotency_key(key.domain, idem, time.time())
            if stored == "":
                raise ApiError(409, "idempotency_in_progress",
                               "a request with this Idempotency-Key is still being processed")
            if stored is not None:
                saved = json.loads(stored)
                if saved["hash"] != digest:
                    raise ApiError(422, "idempotency_key_reused",
                                   "this Idempotency-Key was used with another request body")
                return Response(saved["status"], saved["body"].encode("utf-8"),
                                headers=[("Idempotent-Replayed", "true")])
        try:
            results = await self.service.send(key, key.domain, outs, request.peer_ip,
                                              authenticated_as=f"api:{key.key_id}")
        except BaseException:
            if idem is not None:
                await self.store.release_idempotency_key(key.domain, idem)
            raise
        if batch:
            payload: dict[str, Any] = {"messages": [
                {"index": i, "recipients": [r.as_json() for r in rs]}
                for i, rs in enumerate(results)]}
        else:
            payload = {"recipients": [r.as_json() for r in results[0]]}
        response = json_response(202, payload)
        if idem is not None:
            await self.store.finish_idempotency_key(key.domain, idem, json.dumps(
                {"hash": digest, "status": 202, "body": response.body.decode("utf-8")}))
        return response

    # --- events and stats ---------------------------------------------------------------

    async def message(self, request: Request, params: dict[str, str]) -> Response:
        key = await self._key(request, "events")
        sent = await self.store.get_sent(params["id"].upper())
        if sent is None or sent.domain != key.domain:
            raise ApiError(404, "message_not_found", f"no message {params['id']}")
        events = await self.store.query_events(EventQuery(key.domain, message_id=sent.message_id,
                                                          limit=MAX_PAGE))
        status = "accepted"
        for e in events:
            if e.kind in (EventKind.OPENED, EventKind.CLICKED):
                continue  # engagement, not where the copy is
            if e.kind is not EventKind.ACCEPTED or status == "accepted":
                status = str(e.kind)
        return json_response(200, {
            "id": sent.message_id, "to": sent.recipient, "from": sent.sender,
            "subject": sent.subject, "stream": sent.stream, "tags": list(sent.tags),
            "metadata": json.loads(sent.metadata), "created": sent.created, "status": status,
            "events": [_event_json(e) for e in events]})

    async def events(self, request: Request, _: dict[str, str]) -> Response:
        key = await self._key(request, "events")
        kinds: tuple[EventKind, ...] = ()
        if request.query.get("event"):
            try:
                kinds = tuple(EventKind(k) for k in request.query["event"].split(","))
            except ValueError:
                raise ApiError(400, "invalid_parameter", "event: one of " + ", ".join(
                    k.value for k in EventKind)) from None
        recipient = request.query.get("recipient")
        limit = _int(request, "limit", 100, 1, MAX_PAGE)
        query = EventQuery(
            key.domain, message_id=(request.query.get("message_id") or "").upper() or None,
            recipient=_address_param(recipient, "recipient") if recipient else None,
            tag=request.query.get("tag") or None, kinds=kinds,
            since=_time(request, "since"), until=_time(request, "until"),
            after_id=_int(request, "after", 0), limit=limit)
        events = await self.store.query_events(query)
        page: dict[str, Any] = {"events": [_event_json(e) for e in events]}
        page["next"] = events[-1].id if len(events) == limit else None
        return json_response(200, page)

    async def stats(self, request: Request, _: dict[str, str]) -> Response:
        key = await self._key(request, "stats")
        period = request.query.get("period", "hour")
        if period not in ("hour", "day"):
            raise ApiError(400, "invalid_parameter", "period: hour or day")
        bucket = 3600 if period == "hour" else 86400
        until = _time(request, "until") or time.time() + 1
        since = _time(request, "since") or until - 7 * 86400
        rows = await self.store.event_stats(key.domain, since, until, bucket,
                                            tag=request.query.get("tag") or None)
        table: dict[tuple[float, str], dict[str, int]] = {}
        for r in rows:
            table.setdefault((r.bucket, r.stream), {k.value: 0 for k in EventKind})[
                r.kind.value] = r.count
        tag = request.query.get("tag") or None
        times = await self.store.delivery_times(key.domain, since, until, tag=tag)
        by_stream = {stream: percentiles(await self.store.delivery_times(
                         key.domain, since, until, tag=tag, stream=stream))
                     for stream in sorted({s for _, s in table})}
        return json_response(200, {"period": period, "domain": key.domain,
                                   "delivery_seconds": percentiles(times),
                                   "delivery_seconds_by_stream": by_stream, "stats": [
            {"start": b, "stream": s, **counts} for (b, s), counts in sorted(table.items())]})

    # --- suppressions -------------------------------------------------------------------

    async def suppressions(self, request: Request, _: dict[str, str]) -> Response:
        key = await self._key(request, "suppressions")
        limit = _int(request, "limit", 100, 1, MAX_PAGE)
        rows = await self.store.list_suppressions(
            key.domain, request.query.get("stream") or None, request.query.get("after", ""),
            limit)
        return json_response(200, {
            "suppressions": [{"address": s.address, "stream": s.stream, "reason": s.reason,
                              "created": s.created, "detail": s.detail} for s in rows],
            "next": rows[-1].address if len(rows) == limit else None})

    def _stream(self, value: Any, where: str) -> str:
        stream = ALL_STREAMS if value in (None, "") else value
        streams = self.settings.all_streams()
        if stream != ALL_STREAMS and stream not in streams:
            raise ApiError(400, "invalid_stream",
                           f"{where}: one of {', '.join(streams)} or *")
        return str(stream)

    async def add_suppressions(self, request: Request, _: dict[str, str]) -> Response:
        key = await self._key(request, "suppressions")
        body = _json_body(request)
        items = body.get("suppressions") if isinstance(body, dict) else None
        if not isinstance(items, list) or set(body) != {"suppressions"}:
            raise ApiError(400, "invalid_request", 'expected {"suppressions": [...]}')
        entries = []
        now = time.time()
        for i, item in enumerate(items):
            if not isinstance(item, dict) or set(item) - {"address", "stream", "reason"}:
                raise ApiError(400, "unknown_field", f"suppressions[{i}]: address, stream, "
                               "reason")
            address = _address_param(str(item.get("address", "")), f"suppressions[{i}]")
            entries.append(Suppression(key.domain, self._stream(item.get("stream"),
                                                                f"suppressions[{i}]"),
                                       address, str(item.get("reason") or "manual"), now))
        added = await self.store.add_suppressions(entries)
        return json_response(200, {"added": added})

    async def remove_suppression(self, request: Request, params: dict[str, str]) -> Response:
        key = await self._key(request, "suppressions")
        address = _address_param(params["address"], "address")
        stream = self._stream(request.query.get("stream"), "stream")
        if not await self.store.remove_suppression(key.domain, stream, address):
            raise ApiError(404, "suppression_not_found", f"{address} is not suppressed on "
                           f"stream {stream}")
        return json_response(200, {"removed": address, "stream": stream})

    async def export_suppressions(self, request: Request, _: dict[str, str]) -> Response:
        key = await self._key(request, "suppressions")
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow(["address", "stream", "reason", "created", "detail"])
        after = ""
        while True:
            rows = await self.store.list_suppressions(key.domain, None, after, 5000)
            for s in rows:
                writer.writerow([s.address, s.stream, s.reason, f"{s.created:.0f}", s.detail])
            if len(rows) < 5000:
                break
            after = rows[-1].address
        return Response(200, buf.getvalue().encode("utf-8"), "text/csv; charset=utf-8",
                        [("Content-Disposition",
                          f'attachment; filename="suppressions-{key.domain}.csv"')])

    async def import_suppressions(self, request: Request, _: dict[str, str]) -> Response:
        """CSV with a header row naming at least ``address`` (``stream``, ``reason``
        optional): the format export writes."""
        key = await self._key(request, "suppressions")
        try:
            text = request.body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_csv", "the CSV must be UTF-8") from None
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "address" not in reader.fieldnames:
            raise ApiError(400, "invalid_csv", "the first row must name the columns, "
                           "including address")
        entries = []
        now = time.time()
        for n, row in enumerate(reader, start=2):
            address = _address_param(row.get("address") or "", f"line {n}")
            entries.append(Suppression(key.domain, self._stream(row.get("stream"), f"line {n}"),
                                       address, row.get("reason") or "import", now,
                                       row.get("detail") or ""))
        added = await self.store.add_suppressions(entries)
        return json_response(200, {"read": len(entries), "added": added})

    # --- webhooks -----------------------------------------------------------------------

    async def webhooks(self, request: Request, _: dict[str, str]) -> Response:
        key = await self._key(request, "webhooks")
        hooks = await self.store.list_webhooks(key.domain)
        return json_response(200, {"webhooks": [
            {"id": h.id, "url": h.url, "cursor": h.cursor, "created": h.created}
            for h in hooks]})

    async def add_webhook(self, request: Request, _: dict[str, str]) -> Response:
        key = await self._key(request, "webhooks")
        body = _json_body(request)
        if not isinstance(body, dict) or set(body) - {"url"} or not isinstance(
                body.get("url"), str):
            raise ApiError(400, "invalid_request", 'expected {"url": "https://..."}')
        url = body["url"]
        if not url.startswith(("https://", "http://")) or len(url) > 2000:
            raise ApiError(400, "invalid_url", "url: http:// or https://")
        try:  # checked again before every request (urlguard.py)
            await UrlGuard(self.service.ctx.resolver,
                           self.settings.webhook_allow_networks).target(url)
        except UrlRefused as exc:
            raise ApiError(400, "forbidden_url", f"url: {exc}") from None
        secret = secrets.token_urlsafe(32)
        hook = await self.store.add_webhook(key.domain, url, secret, time.time(),
                                            await self.store.last_event_id())
        self.service.webhooks_wakeup.set()
        return json_response(201, {"id": hook.id, "url": hook.url, "secret": secret,
                                   "cursor": hook.cursor})

    async def _hook(self, key: ApiKey, hook_id: str) -> int:
        try:
            n = int(hook_id)
        except ValueError:
            raise ApiError(404, "webhook_not_found", f"no webhook {hook_id}") from None
        if not any(h.id == n for h in await self.store.list_webhooks(key.domain)):
            raise ApiError(404, "webhook_not_found", f"no webhook {hook_id}")
        return n

    async def remove_webhook(self, request: Request, params: dict[str, str]) -> Response:
        key = await self._key(request, "webhooks")
        n = await self._hook(key, params["id"])
        await self.store.remove_webhook(key.domain, n)
        return json_response(200, {"removed": n})

    async def webhook_log(self, request: Request, params: dict[str, str]) -> Response:
        key = await self._key(request, "webhooks")
        n = await self._hook(key, params["id"])
        attempts = await self.store.webhook_attempts(n, _int(request, "limit", 100, 1, MAX_PAGE))
        return json_response(200, {"attempts": [
            {"time": a.time, "first_event": a.first_event, "last_event": a.last_event,
             "status": a.status, "detail": a.detail} for a in attempts]})

    async def replay_webhook(self, request: Request, params: dict[str, str]) -> Response:
        """Send again every event after ``after`` (an event id; 0: from the start)."""
        key = await self._key(request, "webhooks")
        n = await self._hook(key, params["id"])
        body = _json_body(request)
        if not isinstance(body, dict) or set(body) != {"after"} or not isinstance(
                body["after"], int) or body["after"] < 0:
            raise ApiError(400, "invalid_request", 'expected {"after": EVENT_ID}')
        await self.store.set_webhook_cursor(n, body["after"])
        self.service.webhooks_wakeup.set()
        return json_response(200, {"id": n, "cursor": body["after"]})

    # --- unsubscribe (no API key: the signed token is the authority) -------------------

    async def unsubscribe_page(self, request: Request, params: dict[str, str]) -> Response:
        """A link followed in a browser (or by a link scanner): nothing happens until the
        person presses the button (RFC 8058 §4: GET must not unsubscribe)."""
        parsed = parse_unsubscribe_token(self.service.secret, params["token"])
        if parsed is None:
            return _page(404, "This unsubscribe link is not valid.")
        domain, _stream, address, _mid = parsed
        return _page(200, f"Stop mail from {html.escape(domain)} to "
                     f"{html.escape(address)}?", form=True)

    async def unsubscribe(self, request: Request, params: dict[str, str]) -> Response:
        """RFC 8058 one-click (``List-Unsubscribe=One-Click`` in the body) and the page's
        button: both suppress at once, no login, no confirmation."""
        one_click = b"List-Unsubscribe=One-Click" in request.body
        done = await self.service.unsubscribe(params["token"],
                                              "one-click" if one_click else "page")
        if done is None:
            return _page(404, "This unsubscribe link is not valid.")
        return _page(200, f"{html.escape(done[2])} will get no more of this mail from "
                     f"{html.escape(done[0])}.")


    # --- tracking (no API key: the signed token is the authority) --------------------

    async def track_open(self, request: Request, params: dict[str, str]) -> Response:
        message_id = parse_open_token(self.service.secret, params["token"])
        if message_id is None:
            return _page(404, "Not found.")
        await self.service.track(message_id, EventKind.OPENED, {
            "user_agent": (request.header("user-agent") or "")[:200]})
        return Response(200, PIXEL, "image/gif",
                        [("Cache-Control", "no-store, max-age=0")])

    async def track_click(self, request: Request, params: dict[str, str]) -> Response:
        """Redirect to the URL inside a genuine token, and only there (no open
        redirect: any other token is a 404)."""
        parsed = parse_click_token(self.service.secret, params["token"])
        if parsed is None:
            return _page(404, "This link is not valid.")
        message_id, url = parsed
        await self.service.track(message_id, EventKind.CLICKED, {
            "url": url, "user_agent": (request.header("user-agent") or "")[:200]})
        return Response(302, b"", "text/plain",
                        [("Location", url), ("Cache-Control", "no-store")])


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """p50/p90/p99 (nearest rank) of accepted-to-delivered seconds, and how many."""
    ordered = sorted(values)

    def rank(p: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, max(0, int(p * len(ordered) + 0.5) - 1))], 3)

    return {"count": len(ordered), "p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99)}




def _page(status: int, text: str, form: bool = False) -> Response:
    button = ('<form method="post"><input type="hidden" name="confirm" value="1">'
              '<button type="submit">Unsubscribe</button></form>') if form else ""
    body = (f'<!doctype html><html lang="en"><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width">'
            f"<title>Unsubscribe</title><body><p>{text}</p>{button}</body></html>")
    return Response(status, body.encode("utf-8"), "text/html; charset=utf-8")
