"""The kept SORT orders of one server process (``ServerContext.imap_sortorders``; used by
server/imap_sortorder.py)."""

from __future__ import annotations

from array import array
from collections import OrderedDict
from dataclasses import dataclass, field

from ..storage.interfaces import MailboxInfo
from ..storage.interfaces_imap import SortKeys


@dataclass
class SortOrder:
    uids: array[int]  # in SORT order
    upto: int  # the highest UID among them
    # the same UIDs ascending (the view they were sorted for), when known: a later view
    # that starts with them lost none (no need to look for expunged ones)
    covers: list[int] | None = None
    # their sequence numbers in that view (the answer of SORT, not UID SORT), when known
    nums: array[int] | None = None


@dataclass
class SortBox:
    orders: OrderedDict[str, SortOrder] = field(default_factory=OrderedDict)
    # the snapshot each criteria has in the store, as this process knows it:
    # (highest UID, rows); absent: not looked for yet
    snapshots: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    keys: dict[int, SortKeys] = field(default_factory=dict)  # by UID, visited lately


class SortOrders:
    """The kept SORT orders of the last few mailboxes sorted (``ServerContext.
    imap_sortorders``): for a mailbox of 100,000 messages 400 KB per criteria list (800
    KB with sequence numbers), plus the view's UIDs (0.8-3.6 MB), one list for every
    order of the same view."""

    def __init__(self, mailboxes: int = 4, per_mailbox: int = 8, keys: int = 4096) -> None:
        self.mailboxes = mailboxes
        self.per_mailbox = per_mailbox
        self.max_keys = keys
        self.boxes: OrderedDict[tuple[int, int], SortBox] = OrderedDict()

    def box(self, info: MailboxInfo) -> SortBox:
        key = (info.id, info.uidvalidity)
        box = self.boxes.get(key)
        if box is None:
            box = self.boxes[key] = SortBox()
            while len(self.boxes) > self.mailboxes:
                self.boxes.popitem(last=False)
        self.boxes.move_to_end(key)
        return box

    def get(self, info: MailboxInfo, name: str) -> SortOrder | None:
        order = self.box(info).orders.get(name)
        if order is not None:
            self.box(info).orders.move_to_end(name)
        return order

    def put(self, info: MailboxInfo, name: str, uids: list[int], covers: list[int],
            nums: list[int] | None = None) -> None:
        """Keep the order of these UIDs (``covers``: the same ascending), unless the kept
        one already covers later arrivals (a session whose view is behind does not undo
        another's)."""
        box = self.box(info)
        upto = covers[-1] if covers else 0
        kept = box.orders.get(name)
        if kept is not None and kept.upto > upto:
            return
        for other in box.orders.values():  # (the same view: one list of its UIDs)
            if other.covers is not None and other.covers == covers:
                covers = other.covers
                break
        box.orders[name] = SortOrder(array("I", uids), upto, covers,
                                     None if nums is None else array("I", nums))
        box.orders.move_to_end(name)
        while len(box.orders) > self.per_mailbox:
            box.orders.popitem(last=False)

    def remember_keys(self, info: MailboxInfo, keys: dict[int, SortKeys]) -> None:
        box = self.box(info)
        if len(box.keys) + len(keys) > self.max_keys:
            box.keys.clear()  # (they are read again when needed)
        box.keys.update(keys)
