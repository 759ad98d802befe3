"""The context the protocol drivers get: the application context (``pochta/context.py``)
plus the features' objects the drivers call. ``server/app.py`` (``build_context``) is the
one place that builds it; every field is typed, none is looked up by name."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..context import AppContext
from ..http.router import Router
from ..queue.worker import QueueWorker
from ..sending.bounces import BounceProcessor
from ..sending.service import SendingService
from ..sending.smtp_keys import SMTPKeys
from ..spam.gate import SpamGate
from ..web.acme import Challenges
from .imap_cache import ColumnCache, PartCache, ThreadCache
from .imap_recent import RecentClaims
from .imap_sortcache import SortOrders


@dataclass(kw_only=True)
class ServerContext(AppContext):
    """Built by ``build_context``, which sets every ``init=False`` field before it
    returns the context."""

    spam: SpamGate = field(init=False)  # screening, greylisting, learning (spam/gate.py)
    sending: SendingService = field(init=False)  # the sending API's service (issue 18)
    bounces: BounceProcessor = field(init=False)  # bounces to the sending return paths
    smtp_keys: SMTPKeys = field(init=False)  # API keys as SMTP AUTH passwords
    acme_challenges: Challenges = field(init=False)  # HTTP-01 answers (web/acme.py)
    router: Router = field(init=False)  # the http role's applications
    queue_worker: QueueWorker | None = None  # set while the outbound queue runs
    pop3_locks: set[int] = field(default_factory=set)  # maildrops in a POP3 session
    imap_parts: PartCache = field(default_factory=PartCache)  # parsed messages (IMAP)
    imap_threads: ThreadCache = field(default_factory=ThreadCache)  # THREAD answers (IMAP)
    imap_columns: ColumnCache = field(default_factory=ColumnCache)  # THREAD keys (IMAP)
    imap_sortorders: SortOrders = field(default_factory=SortOrders)  # SORT orders (IMAP)
    imap_recent: RecentClaims = field(default_factory=RecentClaims)  # \Recent claimed
    # tests shorten the IMAP autologout (the config insists on at least 30 minutes)
    imap_idle_timeout: float | None = None
