"""The one error the transfer commands raise for their own reasons."""

from __future__ import annotations


class TransferError(Exception):
    """An import, export, backup or restore cannot go on; the message says why."""
