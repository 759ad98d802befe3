"""Vacation replies (RFC 5230, RFC 6131) and mailto notifications (RFC 5436) as pure
functions: whether to answer at all (RFC 3834 §2, RFC 5230 §4.5/§4.6), and the reply's
bytes. The service (services/sieve.py) adds the once-per-sender memory and sends."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.header import Header, decode_header, make_header
from email.utils import formataddr, getaddresses

from ..mail.addresses import AddressError, base_address, normalize_address, normalize_login
from ..mail.headers import fold
from ..maildate import mail_date
from .interpreter import Notify, Vacation, parse_mailto
from .message import SieveMessage

# RFC 5230 §4.6: never answer these senders (lists and daemons).
_NO_REPLY_LOCAL = re.compile(
    r"^(owner-.*|.*-request|mailer-daemon|listserv|majordomo|.*-owner|"
    r"no-?reply|.*-bounces(\+.*)?)$", re.IGNORECASE)
_LIST_FIELDS = ("list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post",
                "list-owner", "list-archive")
_RECIPIENT_FIELDS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")


def _base(address: str) -> str:
    """The lookup key of an address without its +tag, to compare with the user's own."""
    try:
        return base_address(normalize_address(address))
    except AddressError:
        return normalize_login(address)


@dataclass(frozen=True, slots=True)
class VacationRules:
    """The admin's vacation settings ([sieve] vacation_*) the reply depends on."""

    default_subject: str = "Automated reply"  # the original has no Subject
    subject_template: str = "Auto: %{subject}"  # %{subject}: the original's
    check_recipient: bool = True  # RFC 5230 §4.5: only mail naming the user is answered
    to_ignore_envelope: bool = False  # To: shows the From even when the envelope differs


def vacation_refusal(msg: SieveMessage, sender: str, own: set[str],
                     check_recipient: bool = True) -> str | None:
    """Why no vacation reply may be sent, or None when one may (RFC 3834, RFC 5230)."""
    if not sender:
        return "null sender"
    local = sender.rpartition("@")[0]
    if _NO_REPLY_LOCAL.match(local):
        return f"sender <{sender}> is a list or daemon address"
    own_bases = {_base(a) for a in own}
    if _base(sender) in own_bases:
        return "message from the user"
    for value in msg.headers("auto-submitted"):
        if value.split(";")[0].strip().lower() != "no":
            return f"Auto-Submitted: {value}"
    for value in msg.headers("precedence"):
        if value.strip().lower() in ("bulk", "list", "junk"):
            return f"Precedence: {value}"
    for name in _LIST_FIELDS:
        if msg.headers(name):
            return f"mailing list ({name})"
    for value in msg.headers("x-auto-response-suppress"):
        if any(v.strip().lower() in ("oof", "all") for v in value.split(",")):
            return "X-Auto-Response-Suppress"
    if check_recipient and reply_address(msg, own) is None:
        return "none of the user's addresses is in To/Cc"
    return None


def vacation_plan(msg: SieveMessage, sender: str, mine: Sequence[str], action: Vacation,
                  check_recipient: bool = True) -> tuple[str | None, str]:
    """(why not to answer or None, the address the reply comes from). ``mine``: the
    user's addresses, the account's first (then the RCPT address when it counts); the
    reply comes from the first of them or of ``:addresses`` the message names, else
    from the account's (RFC 5230 §4.5)."""
    candidates = [*mine, *action.addresses]
    why = vacation_refusal(msg, sender, set(candidates), check_recipient)
    return why, reply_address(msg, candidates) or (mine[0] if mine else "")


def reply_address(msg: SieveMessage, candidates: Iterable[str]) -> str | None:
    """The first of the user's addresses (in the caller's order: the recipient, its
    alias, ``:addresses``) that To/Cc/Bcc/Resent-* name: the reply comes from it
    (RFC 5230 §4.5), None when the message names none of them."""
    named = {_base(a) for f in _RECIPIENT_FIELDS for a in msg.addresses(f) if a}
    return next((a for a in candidates if a and _base(a) in named), None)


def _header(name: str, value: str) -> str:
    return fold(name, " ".join(value.split())) + "\r\n"


def _text_header(name: str, value: str) -> str:
    """An unstructured field (Subject); non-ASCII text as RFC 2047 encoded words, so the
    header stays 7-bit (RFC 5230 §5: no 8bit header material)."""
    value = " ".join(value.split())
    if value.isascii():
        return _header(name, value)
    encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n"


def _from(display: str | None, address: str) -> str:
    if display is None:
        return address
    # :from may be a full address ("Alice <alice@example.test>") or a bare one
    pairs = getaddresses([display])
    if pairs and "@" in pairs[0][1]:
        name, addr = pairs[0]
        if "=?" in name:  # RFC 2047 words in the phrase: their text, encoded once again
            with contextlib.suppress(ValueError, LookupError):
                name = str(make_header(decode_header(name)))
        return formataddr((str(Header(name, "utf-8").encode()) if name and not name.isascii()
                           else name, addr))
    return address


MAX_SUBJECT = 256  # characters of a reply's Subject


_SENDER_FIELDS = ("sender", "resent-from", "from")  # who the message says sent it


def _to(msg: SieveMessage, sender: str, ignore_envelope: bool = False) -> str:
    """The envelope sender, with the display name of the Sender/Resent-From/From that
    names the same address ("Stephan Bosch" <stephan@example.org>); with
    ``ignore_envelope``, the first of those fields whatever it names (the envelope
    sender is an SRS or VERP address the person never wrote from)."""
    for field_name in _SENDER_FIELDS:
        for value in msg.headers(field_name)[:1]:
            for name, addr in getaddresses([value]):
                if "@" not in addr or not (ignore_envelope or addr.lower() == sender.lower()):
                    continue
                if not name:
                    return f"<{addr}>"
                if not name.isascii():  # RFC 2047 encoded word, outside the quotes
                    return f"{Header(name, 'utf-8').encode()} <{addr}>"
                quoted = name.replace("\\", "\\\\").replace('"', '\\"')
                return f'"{quoted}" <{addr}>'
    return f"<{sender}>"


def _subject(msg: SieveMessage, rules: VacationRules) -> str:
    """RFC 5230 §5.3: "Auto: " and the original Subject, else a fixed one ("Automated
    reply"); both are the admin's to change ([sieve] vacation_subject_template,
    vacation_default_subject)."""
    original = (msg.headers("subject") or [""])[0].strip()
    if not original:
        return rules.default_subject or "Automated reply"
    # the original's encoded words stay encoded: the reply's header stays 7-bit
    template = rules.subject_template or "Auto: %{subject}"
    return " ".join(template.replace("%{subject}", original).split())


def build_vacation(action: Vacation, msg: SieveMessage, user: str, sender: str,
                   hostname: str, now: float, rules: VacationRules = VacationRules()
                   ) -> bytes:
    """The reply (CRLF line ends), addressed to the envelope sender (RFC 5230 §4.5),
    from ``user`` (the address the message named) unless ``:from`` says otherwise."""
    subject = action.subject or _subject(msg, rules)
    if len(subject) > MAX_SUBJECT:  # a reply's subject stays short, marked as cut
        subject = subject[:MAX_SUBJECT - 1].rstrip() + "\u2026"
    domain = user.rpartition("@")[2] or hostname
    lines = [
        _header("From", _from(action.from_, user)),
        _header("To", _to(msg, sender, rules.to_ignore_envelope)),
        _text_header("Subject", subject),
        _header("Date", mail_date(now)),
        _header("Message-ID", f"<vacation.{secrets.token_hex(12)}@{domain}>"),
        "Auto-Submitted: auto-replied (vacation)\r\n",  # RFC 3834 §5, RFC 5230 §5
    ]
    message_ids = msg.headers("message-id")
    if message_ids:
        mid = message_ids[0].strip()
        refs = " ".join([*(msg.headers("references") or [""])[0].split(), mid])
        lines.append(_header("In-Reply-To", mid))
        lines.append(_header("References", refs.strip()))
    lines.append("MIME-Version: 1.0\r\n")
    head = "".join(lines).encode("utf-8")
    reason = action.reason.replace("\r\n", "\n").replace("\n", "\r\n")
    if action.mime:
        # :mime: the reason is a MIME entity (its own header, blank line, body)
        return head + reason.encode("utf-8") + (b"" if reason.endswith("\r\n") else b"\r\n")
    body = reason if reason.endswith("\r\n") else reason + "\r\n"
    ctype = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    return head + ctype.encode() + b"\r\n" + body.encode("utf-8")


def notify_refusal(msg: SieveMessage) -> str | None:
    """RFC 5436 §2.7: never notify about an automatically submitted message."""
    for value in msg.headers("auto-submitted"):
        if value.split(";")[0].strip().lower() != "no":
            return f"Auto-Submitted: {value}"
    return None


# RFC 5436 §2.7 (and Pigeonhole's list): URI header fields a notification never takes
# from the script; the server sets them or they would make it look like another message
_RESERVED = frozenset({
    "auto-submitted", "received", "message-id", "date", "bcc", "in-reply-to",
    "references", "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc",
    "resent-bcc", "resent-msg-id", "from", "sender", "to", "cc", "subject", "body",
    "mime-version", "content-type", "content-transfer-encoding", "x-priority",
    "importance", "precedence", "return-path"})
_PRIORITY = {"1": ("1 (Highest)", "High"), "3": ("5 (Lowest)", "Low")}


def build_notification(action: Notify, msg: SieveMessage, user: str, hostname: str,
                       now: float, notified: set[str] | None = None
                       ) -> tuple[list[str], bytes] | None:
    """(recipients, message) for a mailto: notification (RFC 5436), None if invalid or
    nobody is left. ``notified``: addresses earlier notifications of this delivery
    reached; they are not sent another (and the set grows with this one's)."""
    uri = parse_mailto(action.method)
    if uri is None:
        return None
    seen = notified if notified is not None else set()
    display = dict(uri.display)
    to: list[str] = []
    cc: list[str] = []
    for bucket, addresses in ((to, uri.to), (cc, uri.cc)):
        for address in addresses:
            key = _base(address)
            if key not in seen:
                seen.add(key)
                bucket.append(address)
    if not to and not cc:
        return None
    subject = None
    body = None
    extra: list[tuple[str, str]] = []
    for name, value in uri.headers:
        lower = name.lower()
        if lower == "subject":
            subject = value
        elif lower == "body":
            body = value
        elif lower not in _RESERVED and not any(n.lower() == lower for n, _ in extra):
            extra.append((name, value))  # e.g. Reply-To, Keywords (once each)
    original_subject = (msg.headers("subject") or [""])[0]
    original_from = (msg.headers("from") or [""])[0]
    if action.message is not None:
        subject = action.message
    elif subject is None:
        subject = f"[SIEVE] New mail from {original_from}: {original_subject}"
    subject = " ".join(subject.split())
    if len(subject) > MAX_SUBJECT:  # as vacation: short, marked as cut
        subject = subject[:MAX_SUBJECT - 1].rstrip() + "\u2026"
    if body is None:
        body = action.message or f"New mail from {original_from}\r\nSubject: {original_subject}"
    body = body.replace("\r\n", "\n").replace("\n", "\r\n")
    x_priority, importance = _PRIORITY.get(action.importance, ("3 (Normal)", "Normal"))
    domain = user.rpartition("@")[2] or hostname
    owner = user.replace("\\", "").replace('"', "")
    lines = [
        _header("From", _from(action.from_, user)),
    ]
    if to:
        lines.append(_header("To", ", ".join(_full(display.get(a, a)) for a in to)))
    if cc:
        lines.append(_header("Cc", ", ".join(_full(display.get(a, a)) for a in cc)))
    lines += [
        _text_header("Subject", subject),
        _header("Date", mail_date(now)),
        _header("Message-ID", f"<notify.{secrets.token_hex(12)}@{domain}>"),
        # RFC 5436 §2.7.1: auto-notified MUST name the script's owner
        f'Auto-Submitted: auto-notified; owner-email="{owner}"\r\n',
        "Precedence: bulk\r\n",
        _header("X-Priority", x_priority),
        _header("Importance", importance),
        "X-Sieve: Pochta\r\n",  # as Pigeonhole's: which filter sent it
    ]
    lines += [_header(name, value) for name, value in extra]
    lines.append("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 "Content-Transfer-Encoding: 8bit\r\n\r\n")
    data = "".join(lines).encode("utf-8") + body.encode("utf-8") + b"\r\n"
    return [*to, *cc], data


def notification_sender(action: Notify, trigger_sender: str, own: Sequence[str],
                        mode: str = "user") -> str:
    """The envelope sender of a notification (RFC 5436 §2.7): <> when
    the message that triggered it came from <> (no loops of automatic mail) or when the
    admin chose ``null``; else ``:from`` when that is one of the user's own addresses,
    or the user's address: our domain (SPF passes) and bounces reach the user."""
    if not trigger_sender or mode == "null" or not own:
        return ""
    if action.from_ is not None:
        pairs = getaddresses([action.from_])
        wanted = pairs[0][1] if pairs else ""
        if wanted and any(_base(wanted) == _base(a) for a in own):
            return wanted
    return own[0]


def _full(written: str) -> str:
    """An address as the URI wrote it, a non-ASCII display name RFC 2047-encoded."""
    name, addr = getaddresses([written])[0]
    if "=?" in name:
        with contextlib.suppress(ValueError, LookupError):
            name = str(make_header(decode_header(name)))
    if not name:
        return f"<{addr}>"
    return formataddr((str(Header(name, "utf-8").encode()) if not name.isascii() else name,
                       addr))
