"""NOTIFY (RFC 5465), pure: the NOTIFY command's grammar and what to say when a watched
mailbox changed. The driver side (which mailboxes, when) is server/imap_notify.py."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pochta.proto.imap.fetch import FetchAtt, parse_att_list
from pochta.proto.imap.parser import ParseError, Reader

# the events this server reports (RFC 5465 §5); others get NO [BADEVENT (...)] (§3.1)
SUPPORTED = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName",
             "SubscriptionChange", "MailboxMetadataChange", "ServerMetadataChange")
KNOWN = {e.upper(): e for e in (*SUPPORTED, "AnnotationChange")}
# <message-event>s: the only ones SELECTED and SELECTED-DELAYED take (§6.1)
MESSAGE_EVENTS = frozenset({"MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange"})
METADATA_EVENTS = frozenset({"MailboxMetadataChange", "ServerMetadataChange"})
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
    fetch: tuple[FetchAtt, ...] = ()  # MessageNew's fetch attributes (§5.2)


@dataclass(frozen=True, slots=True)
class NotifySpec:
    status: bool = False  # SET STATUS: an initial STATUS for each watched mailbox
    groups: tuple[EventGroup, ...] = field(default_factory=tuple)

    def for_mailbox(self, name: str, *, inbox: bool, subscribed: bool,
                    personal: bool = True) -> frozenset[str]:
        """The events of the first group whose filter names this (non-selected) mailbox;
        ``personal``: in the user's own namespace (§6: ``personal`` and ``inboxes`` name
        only those; another user's or a public mailbox is named by ``mailboxes``,
        ``subtree`` or ``subscribed``)."""
        for g in self.groups:
            if ((g.filter == "PERSONAL" and personal)
                    or (g.filter == "INBOXES" and inbox and personal)
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

    @property
    def fetch(self) -> tuple[FetchAtt, ...]:
        """What to FETCH of each new message of the selected mailbox (§5.2): the
        SELECTED group's MessageNew attributes (in other groups they mean nothing, as
        new messages there are told by STATUS)."""
        for g in self.groups:
            if g.filter in ("SELECTED", "SELECTED-DELAYED") and "MessageNew" in g.events:
                return g.fetch
        return ()

    @property
    def server_metadata(self) -> bool:
        """ServerMetadataChange (§5.7) is about no mailbox: any group asks for it."""
        return any("ServerMetadataChange" in g.events for g in self.groups)

    @property
    def wants_metadata(self) -> bool:
        return any(g.events & METADATA_EVENTS for g in self.groups)


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


def _peeked(att: FetchAtt) -> FetchAtt:
    """A notification never sets \\Seen: BODY[...] is sent as BODY.PEEK[...] would be (the
    client SHOULD NOT ask for such attributes, §5.2)."""
    return dataclasses.replace(att, peek=True) if att.section else att


def _events(r: Reader) -> tuple[frozenset[str], tuple[FetchAtt, ...]]:
    if r.accept("NONE"):
        return frozenset(), ()
    r.expect("(")
    out: set[str] = set()
    fetch: tuple[FetchAtt, ...] = ()
    while True:
        word = r.atom().upper()
        if word not in KNOWN:
            raise ParseError(f"unknown event {word}")
        if KNOWN[word] not in SUPPORTED:
            raise BadEvent(KNOWN[word])
        if word == "MESSAGENEW" and r.peek(2) == " (":
            r.sp()
            fetch = tuple(_peeked(a) for a in parse_att_list(r))
        out.add(KNOWN[word])
        if r.accept(")"):
            return frozenset(out), fetch
        r.sp()


def _check_selected(events: frozenset[str]) -> None:
    """SELECTED takes only message events (§6.1); MessageNew and MessageExpunge go
    together, and FlagChange needs both (§5). Checked for SELECTED only, as Dovecot
    does: imaptest's own notify test watches other mailboxes for MessageNew alone."""
    if events - MESSAGE_EVENTS:
        raise ParseError("SELECTED takes message events only")
    new_or_gone = events & {"MessageNew", "MessageExpunge"}
    if new_or_gone and len(new_or_gone) != 2:
        raise ParseError("MessageNew and MessageExpunge go together")
    if "FlagChange" in events and len(new_or_gone) != 2:
        raise ParseError("FlagChange needs MessageNew and MessageExpunge")


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
        events, fetch = _events(r)
        r.expect(")")
        if kind in ("SELECTED", "SELECTED-DELAYED"):
            if any(g.filter in ("SELECTED", "SELECTED-DELAYED") for g in groups):
                raise ParseError("only one SELECTED or SELECTED-DELAYED group")
            _check_selected(events)
        groups.append(EventGroup(kind, names, events, fetch))
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
