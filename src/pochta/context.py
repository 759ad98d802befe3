"""The application context: the services of one server process, built once by the
composition root (``server/app.py``, ``build_context``) and handed to every feature.

It holds only what sits below the features (configuration, store, DNS, the services);
a feature's own objects (the spam gate, the sending service, ...) are built from it by
the root and kept on ``server.app.ServerContext``, a subclass, so that a feature never
imports the server. Typed fields only: no registry of named extras.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from .config import Config, Listener
from .dns import Resolver
from .services.auth import Authenticator
from .services.delivery import DeliveryService
from .services.directory import Directory
from .services.ratelimit import HourlyCounter
from .services.signing import DKIMSigner
from .storage.interfaces import MailStore


@dataclass(kw_only=True)
class AppContext:
    """Everything a feature may use; one per server process."""

    config: Config
    store: MailStore
    ssl_context: ssl.SSLContext | None
    resolver: Resolver
    authenticator: Authenticator
    directory: Directory
    delivery: DeliveryService
    signer: DKIMSigner
    # set when a message is queued for remote delivery: wakes the queue worker
    queue_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # submission rate limits per account (sliding hour; in the store when shared)
    message_rate: HourlyCounter = field(default_factory=lambda: HourlyCounter("msg"))
    recipient_rate: HourlyCounter = field(default_factory=lambda: HourlyCounter("rcpt"))
    # the port each listener really bound (port 0 in tests), for autoconfig and the admin
    bound_ports: dict[Listener, int] = field(default_factory=dict)
