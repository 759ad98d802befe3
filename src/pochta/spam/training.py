"""Training the learning filter from what users do, at the store level: a message moved or
copied into the account's ``\\Junk`` mailbox (or given ``$Junk``) is learnt as spam; one
moved out of Junk to anything but Trash (or given ``$NotJunk``) as ham. Deleting never
counts (expunge is not hooked), so POP3 deletions teach nothing.

``TrainingStore`` wraps the ``MailStore`` the servers use (any backend): every method is
the wrapped store's, and ``move_messages``, ``copy_messages`` and ``store_flags`` train
after they succeeded. IMAP needs no change.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from ..storage.interfaces import FlagMode, FlagUpdate, MailStore, SpecialUse, StoreError
from .bayes import LearningFilter

log = logging.getLogger("pochta.spam")

# (account id, message bytes, is spam): an extra learner, e.g. rspamd's learnspam/learnham
Learner = Callable[[int, bytes, bool], Awaitable[None]]


class TrainingStore:
    def __init__(self, store: MailStore, learner: LearningFilter,
                 extra: Learner | None = None) -> None:
        self._store = store
        self._learner = learner
        self._extra = extra
        self.trained = 0  # messages learnt through this wrapper (tests, stats)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @property
    def wrapped(self) -> MailStore:
        return self._store

    async def move_messages(self, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int
                            ) -> list[tuple[int, int]]:
        verdict = await self._direction(mailbox_id, target_mailbox_id)
        blobs = await self._store.message_blobs(mailbox_id, uids) if verdict else {}
        result = await self._store.move_messages(mailbox_id, uids, target_mailbox_id)
        if verdict is not None:
            await self._train(verdict[0], [blobs[u] for u, _ in result if u in blobs],
                              verdict[1])
        return result

    async def copy_messages(self, mailbox_id: int, uids: Sequence[int], target_mailbox_id: int
                            ) -> list[tuple[int, int]]:
        result = await self._store.copy_messages(mailbox_id, uids, target_mailbox_id)
        verdict = await self._direction(mailbox_id, target_mailbox_id)
        if verdict is not None and verdict[1]:  # a copy out of Junk is not a verdict
            blobs = await self._store.message_blobs(mailbox_id, [u for u, _ in result])
            await self._train(verdict[0], list(blobs.values()), True)
        return result

    async def store_flags(self, mailbox_id: int, uids: Sequence[int], flags: frozenset[str],
                          mode: FlagMode, unchanged_since: int | None = None) -> FlagUpdate:
        result = await self._store.store_flags(mailbox_id, uids, flags, mode, unchanged_since)
        lowered = {f.lower() for f in flags}
        spam = "$junk" in lowered
        ham = "$notjunk" in lowered
        if mode != FlagMode.REMOVE and result.changed and spam != ham:
            owner = await self._store.mailbox_owner(mailbox_id)
            if owner is not None:
                await self._train(owner[0], [m.blob_id for m in result.changed], spam)
        return result

    async def _direction(self, source: int, target: int) -> tuple[int, bool] | None:
        """(account, spam?) when a move from ``source`` to ``target`` is a verdict."""
        src = await self._store.mailbox_owner(source)
        dst = await self._store.mailbox_owner(target)
        if src is None or dst is None or src[0] != dst[0]:
            return None
        into_junk = dst[1] == SpecialUse.JUNK and src[1] != SpecialUse.JUNK
        out_of_junk = src[1] == SpecialUse.JUNK and dst[1] not in (SpecialUse.JUNK,
                                                                  SpecialUse.TRASH)
        if into_junk:
            return src[0], True
        if out_of_junk:
            return src[0], False
        return None

    async def _train(self, account_id: int, blob_ids: Sequence[int], spam: bool) -> None:
        # Training must never fail the user's command: the move already happened.
        for blob_id in blob_ids:
            try:
                data = await self._store.read_blob(blob_id)
                if await self._learner.train(account_id, data, spam):
                    self.trained += 1
                if self._extra is not None:
                    await self._extra(account_id, data, spam)
            except (StoreError, ValueError) as exc:
                log.warning("learning filter: training account %d failed: %s", account_id, exc)
        if blob_ids:
            log.info("learning filter: account=%d learnt %d message(s) as %s", account_id,
                     len(blob_ids), "spam" if spam else "ham")


def wrap(store: MailStore, learner: LearningFilter, extra: Learner | None = None
         ) -> MailStore:
    """The store with training hooks, typed as the contract it fulfils (the other methods
    are reached through ``__getattr__``)."""
    return cast(MailStore, TrainingStore(store, learner, extra))
