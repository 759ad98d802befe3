"""IMAP and POP3 sessions in the web admin's mail log (services/eventlog.py), beside the
SMTP sessions server/smtp.py records: one ``session`` event when a logged-in session
ends, with the account as its address (so a search for the address finds it), the
client's IP, the TLS version and how long it lasted. Sessions that never logged in are
port scans and health checks: not logged here (the text log has them)."""

from __future__ import annotations

import time

from ..services import eventlog
from ..storage.interfaces_ops import SESSION, NewMailEvent
from .listener import Connection


def record_session(store: object, role: str, user: str, conn: Connection,
                   started: float) -> None:
    tls = conn.tls_info()
    eventlog.record(store, NewMailEvent(
        time.time(), SESSION, sender=user, client_ip=conn.peer_ip,
        detail=(f"{role} user={user} tls={tls.version if tls else 'none'} "
                f"time={time.monotonic() - started:.1f}s")[:1000]))
