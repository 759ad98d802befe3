"""REQUIRETLS (RFC 8689) in the queue, and the ``TLS-Required: No`` header field (§5).

A message received with ``MAIL FROM:<...> REQUIRETLS`` carries ``(REQUIRETLS)`` in the
Received: field we added (``pochta.services.delivery``; forged copies further down are
never read: only our own, first, Received: field counts). The queue then sends it only
over TLS that MTA-STS or DANE validated (or a static route with a verified certificate),
to a next hop that offers REQUIRETLS, with REQUIRETLS on its MAIL FROM; anything else
fails the recipient with 5.7.30 (§5.1).

``TLS-Required: No`` asks the opposite: deliver even if the recipient domain's MTA-STS or
DANE policy cannot be met. Such a message (unless it also requested REQUIRETLS, which
wins, §4.2.2) goes to the domain's MX hosts as if it had no policy; an admin's
``[[queue.tls_policies]]`` still applies.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from pochta.mail.headers import split_header
from pochta.proto.smtp.client import ServerReply, local_reply
from pochta.queue.routing import Destination, RouteFailure, Router
from pochta.services.delivery import REQUIRETLS_MARK
from pochta.storage.interfaces import QueueItem

_RECEIVED = re.compile(rb"(?im)^Received:((?:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*))")
_TLS_REQUIRED_NO = re.compile(rb"(?im)^TLS-Required:[ \t]*No[ \t]*\r?$")


def requested(data: bytes, hostname: str) -> bool:
    """Whether the message was received with REQUIRETLS (our first Received: field)."""
    m = _RECEIVED.search(split_header(data)[0])
    if m is None:
        return False
    field = m.group(1).decode("utf-8", "replace")
    return REQUIRETLS_MARK in field and f"by {hostname} (Pochta)" in field


def tls_required_no(data: bytes) -> bool:
    return _TLS_REQUIRED_NO.search(split_header(data)[0]) is not None


def refusal(conn: Any) -> ServerReply | None:
    """Why this connection may not carry a REQUIRETLS message, or None."""
    if not getattr(conn, "tls_validated", False):
        return local_reply(550, "5.7.30", f"REQUIRETLS: TLS to {conn.remote} is not "
                           "validated by MTA-STS or DANE")
    if not conn.session.supports("REQUIRETLS"):
        return local_reply(550, "5.7.30", f"REQUIRETLS: {conn.remote} does not support "
                           "REQUIRETLS")
    return None


MessagePolicy = Callable[[QueueItem, Destination], Awaitable[Destination]]


def message_policy(store: Any, plain_router: Router, hostname: str) -> MessagePolicy:
    """For the queue worker: the destination of one message, relaxed for
    ``TLS-Required: No`` when the domain has an MTA-STS or DANE policy."""
    cache: dict[int, bool] = {}

    async def policy(item: QueueItem, dest: Destination) -> Destination:
        if dest.tls.policy not in ("sts", "dane") and not dest.tls.dane_hosts:
            return dest  # the common case: no blob read
        relaxed = cache.get(item.blob_id)
        if relaxed is None:
            data = await store.read_blob(item.blob_id)
            relaxed = tls_required_no(data) and not requested(data, hostname)
            if len(cache) > 10_000:
                cache.clear()
            cache[item.blob_id] = relaxed
        if not relaxed:
            return dest
        try:
            plain = await plain_router.destination(dest.domain)
        except RouteFailure:
            return dest
        return Destination(f"{plain.key}:tls-required-no", plain.domain, plain.hops,
                           plain.tls, plain.username, plain.password_file, plain.via_route,
                           plain.implicit_mx)

    return policy
