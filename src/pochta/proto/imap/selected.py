"""The selected mailbox as one session sees it (RFC 9051 §7.5.1, §5.2).

Sequence numbers are positions in ``uids``. Changes from the store are folded in by
``apply``; expunges stay pending (the message keeps its number) until the session may
announce them: never during FETCH, STORE or SEARCH (RFC 9051 §7.5.1).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from pochta.mail.flags import SYSTEM_FLAGS
from pochta.mail.model import Changes, MailboxInfo, MessageMeta
from pochta.proto.imap.response import flags as fmt_flags
from pochta.proto.imap.response import seq_set


@dataclass(slots=True)
class Selected:
    info: MailboxInfo
    readonly: bool
    uids: list[int] = field(default_factory=list)
    meta: dict[int, MessageMeta] = field(default_factory=dict)
    recent: set[int] = field(default_factory=set)
    modseq: int = 0  # highest modseq this session has seen
    pending_expunge: set[int] = field(default_factory=set)
    saved_uids: frozenset[int] = frozenset()  # SEARCH RETURN (SAVE), RFC 5182
    keywords: set[str] = field(default_factory=set)  # keywords announced in FLAGS
    uidonly: bool = False  # ENABLE UIDONLY (RFC 9586): UIDFETCH and VANISHED responses

    @classmethod
    def load(
        cls, info: MailboxInfo, readonly: bool, messages: list[MessageMeta], first_recent: int
    ) -> Selected:
        sel = cls(info, readonly)
        sel.uids = [m.uid for m in messages]
        sel.meta = {m.uid: m for m in messages}
        sel.recent = {m.uid for m in messages if m.uid >= first_recent}
        sel.modseq = max([info.highestmodseq, *(m.modseq for m in messages)], default=0)
        sel.keywords = {f for m in messages for f in m.flags if not f.startswith("\\")}
        return sel

    def flags_lines(self) -> bytes:
        """FLAGS and PERMANENTFLAGS for the keywords known so far (§7.3.5, §7.1)."""
        flags = [*SYSTEM_FLAGS, *sorted(self.keywords)]
        perm = b"()" if self.readonly else fmt_flags([*flags, "\\*"])
        return (b"* FLAGS " + fmt_flags(flags) + b"\r\n"
                + b"* OK [PERMANENTFLAGS " + perm + b"] Flags permitted\r\n")

    def announce(self, names: frozenset[str]) -> bytes:
        """A new FLAGS response before the first FETCH that shows a keyword the client
        has not seen in FLAGS yet (RFC 9051 §7.3.5: FLAGS lists the flags in use)."""
        new = {f for f in names if not f.startswith("\\")} - self.keywords
        if not new:
            return b""
        self.keywords |= new
        return self.flags_lines()

    @property
    def count(self) -> int:
        return len(self.uids)

    @property
    def top_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def seq_of(self, uid: int) -> int:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else 0

    def messages(self) -> list[tuple[int, MessageMeta]]:
        return [(i + 1, self.meta[u]) for i, u in enumerate(self.uids)]

    def update(self, meta: MessageMeta) -> None:
        if meta.uid in self.meta:
            self.meta[meta.uid] = meta

    def flags_fetch(self, uid: int, rev1_recent: bool, condstore: bool) -> bytes:
        m = self.meta[uid]
        announce = self.announce(m.flags)
        names = set(m.flags)
        if rev1_recent and uid in self.recent:
            names.add("\\Recent")
        extra = b" MODSEQ (%d)" % m.modseq if condstore else b""
        if self.uidonly:
            return announce + b"* %d UIDFETCH (FLAGS %s%s)\r\n" % (uid, fmt_flags(names), extra)
        return announce + b"* %d FETCH (UID %d FLAGS %s%s)\r\n" % (
            self.seq_of(uid), uid, fmt_flags(names), extra)

    def apply(
        self, changes: Changes, first_recent: int | None, rev1_recent: bool, condstore: bool,
        flush: bool = False, qresync: bool = False,
    ) -> tuple[list[bytes], bool]:
        """Fold in changes; returns the untagged responses and whether new messages arrived.
        Expunges stay pending unless ``flush``; then they are announced first, so that the
        FETCH and EXISTS responses after them use the new numbering (§7.5.1)."""
        out: list[bytes] = []
        gone = set(changes.expunged)
        for uid in gone:
            if uid in self.meta:
                self.pending_expunge.add(uid)
        if flush:
            out += self.flush_expunges(qresync)
        old_count = len(self.uids)
        top = self.top_uid
        new: list[MessageMeta] = []
        for m in changes.changed:
            known = self.meta.get(m.uid)
            if known is not None:
                if m.uid in self.pending_expunge:
                    continue
                differs = known.flags != m.flags or (condstore and known.modseq != m.modseq)
                self.meta[m.uid] = m
                if differs:
                    out.append(self.flags_fetch(m.uid, rev1_recent, condstore))
            elif m.uid > top and m.uid not in gone:
                new.append(m)
        for m in sorted(new, key=lambda x: x.uid):
            self.uids.append(m.uid)
            self.meta[m.uid] = m
            if first_recent is not None and m.uid >= first_recent:
                self.recent.add(m.uid)
        self.modseq = max(self.modseq, changes.highestmodseq)
        if len(self.uids) != old_count:
            for m in new:
                line = self.announce(m.flags)
                if line:
                    out.append(line)
            out.append(b"* %d EXISTS\r\n" % len(self.uids))
            if rev1_recent:
                out.append(b"* %d RECENT\r\n" % len(self.recent))
        return out, bool(new)

    def flush_expunges(self, qresync: bool) -> list[bytes]:
        """Announce pending expunges: EXPUNGE by descending number (so that earlier
        responses do not renumber later ones), or one VANISHED (RFC 7162 §3.2.10)."""
        if not self.pending_expunge:
            return []
        gone = sorted(self.pending_expunge)
        self.pending_expunge.clear()
        out: list[bytes] = []
        if qresync or self.uidonly:
            out.append(b"* VANISHED " + seq_set(gone) + b"\r\n")
            for uid in gone:
                self._remove(uid)
            return out
        for uid in reversed(gone):
            seq = self.seq_of(uid)
            if seq:
                out.append(b"* %d EXPUNGE\r\n" % seq)
                self._remove(uid)
        return out

    def _remove(self, uid: int) -> None:
        seq = self.seq_of(uid)
        if seq:
            del self.uids[seq - 1]
        self.meta.pop(uid, None)
        self.recent.discard(uid)
