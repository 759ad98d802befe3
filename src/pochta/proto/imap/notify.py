"""NOTIFY (RFC 5465), pure: the NOTIFY command's grammar and what to say when a watched
mailbox changed. The driver side (which mailboxes, when) is server/imap_notify.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from pochta.proto.imap.parser import ParseError, Reader

# the events this server reports (RFC 5465 §5); others get NO [BADEVENT (...)] (§6)
SUPPORTED = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName",
             "SubscriptionChange")
KNOWN = {e.upper(): e for e in (*SUPPORTED, "AnnotationChange", "MailboxMetadataChange",
                                "ServerMetadataChange")}
FILTERS = ("SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE",
           "MAILBOXES")
MAX_GROUPS = 50
MAX_NAMES = 1000


class BadEvent(Exception):
    """An event this server does not report (RFC 5465 §6: NO [BADEVENT (...)])."""


@dataclass(frozen=True, slots=True)
class EventGroup:
    filter: str  # one of FILTERS
    names: tuple[str, ...] = ()  # SUBTREE / MAILBOXES
    events: frozenset[str] = frozenset()  # empty: NONE


@dataclass(frozen=True, slots=True)
class NotifySpec:
    status: bool = False  # SET STATUS: an initial STATUS for each watched mailbox
    groups: tuple[EventGroup, ...] = field(default_factory=tuple)

    def for_mailbox(self, name: str, *, inbox: bool, subscribed: bool) -> frozenset[str]:
        """The events of the first group whose filter names this (non-selected) mailbox."""
        for g in self.groups:
            if ((g.filter == "PERSONAL")
                    or (g.filter == "INBOXES" and inbox)
                    or (g.filter == "SUBSCRIBED" and subscribed)
                    or (g.filter == "MAILBOXES" and name in g.names)
                    or (g.filter == "SUBTREE" and any(
                        name == n or name.startswith(n + "/") for n in g.names))):
                return g.events
        return frozenset()

    @property
    def selected_events(self) -> frozenset[str] | None:
        """Events for the selected mailbox, None when no SELECTED filter was given."""
        for g in self.groups:
            if g.filter in ("SELECTED", "SELECTED-DELAYED"):
                return g.events
        return None


def _names(r: Reader) -> tuple[str, ...]:
    if not r.accept("("):
        return (r.mailbox(),)
    out = [r.mailbox()]
    while not r.accept(")"):
        r.sp()
        out.append(r.mailbox())
        if len(out) > MAX_NAMES:
            raise ParseError("too many mailboxes")
    return tuple(out)


def _events(r: Reader) -> frozenset[str]:
    if r.accept("NONE"):
        return frozenset()
    r.expect("(")
    out: set[str] = set()
    while True:
        word = r.atom().upper()
        if word not in KNOWN:
            raise ParseError(f"unknown event {word}")
        if KNOWN[word] not in SUPPORTED:
            raise BadEvent(KNOWN[word])
        if word == "MESSAGENEW" and r.peek(2) == " (":
            raise BadEvent("MessageNew with fetch attributes")
        out.add(KNOWN[word])
        if r.accept(")"):
            return frozenset(out)
        r.sp()


def parse_notify(r: Reader) -> NotifySpec | None:
    """After "NOTIFY SP": NONE (None) or SET [STATUS] event-groups (RFC 5465 §8)."""
    if r.accept("NONE"):
        r.end()
        return None
    r.expect("SET")
    r.sp()
    status = r.accept("STATUS ")
    groups: list[EventGroup] = []
    while True:
        r.expect("(")
        kind = r.atom().upper()
        if kind not in FILTERS:
            raise ParseError(f"unknown filter {kind}")
        names: tuple[str, ...] = ()
        if kind in ("SUBTREE", "MAILBOXES"):
            r.sp()
            names = _names(r)
        r.sp()
        events = _events(r)
        r.expect(")")
        groups.append(EventGroup(kind, names, events))
        if len(groups) > MAX_GROUPS:
            raise ParseError("too many event groups")
        if not r.maybe_sp():
            break
    r.end()
    return NotifySpec(status, tuple(groups))


def status_items(events: frozenset[str]) -> list[str]:
    """STATUS items that tell a client about these events in a mailbox it has not
    selected (RFC 5465 §5.1-5.3): counts for new and expunged messages, HIGHESTMODSEQ for
    flag changes."""
    items: list[str] = []
    if "MessageNew" in events:
        items += ["MESSAGES", "UIDNEXT", "UIDVALIDITY"]
    elif "MessageExpunge" in events:
        items.append("MESSAGES")
    if "FlagChange" in events:
        if "UIDVALIDITY" not in items:
            items.append("UIDVALIDITY")
        items.append("HIGHESTMODSEQ")
    return items
