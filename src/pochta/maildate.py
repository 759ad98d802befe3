"""Dates for mail headers (RFC 5322 §3.3), with the real UTC offset.

``email.utils.formatdate(localtime=False)`` writes ``-0000``, which RFC 5322 reserves
for "the local offset is unknown"; we always know it: ``+0000`` on a UTC machine.
"""

from __future__ import annotations

import email.utils


def mail_date(now: float) -> str:
    """``Tue, 01 Dec 2026 07:15:00 +0000``: ``now`` in this host's zone, with its offset."""
    return email.utils.formatdate(now, localtime=True)
