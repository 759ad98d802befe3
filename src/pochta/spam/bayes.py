"""The learning filter: a per-account statistical classifier over tokens of the headers and
body (Robinson's token probabilities combined with Fisher's chi-square method, as in
SpamBayes), with its counts in the store (``SpamStore.bayes_*``).

``tokenize`` and ``classify`` are pure; ``LearningFilter`` adds the store.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import html
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message

from ..mail.headers import field_value, header_end, header_fields
from ..storage.interfaces_spam import SpamStore

# Headers we add or that every message has in a different form teach nothing.
_SKIP_HEADERS = {
    "received", "return-path", "authentication-results", "dkim-signature", "message-id",
    "date", "x-spam-status", "x-spam-screening", "x-spam-bayes", "x-spam-score",
    "x-spam-flag", "x-rspamd-action", "x-rspamd-score", "x-rspamd-symbols", "arc-seal",
    "arc-message-signature", "arc-authentication-results", "delivered-to",
}
# Words of 3 to 40 characters (trailing punctuation is stripped by _words); a simple
# pattern: a regex with backtracking cost 4 times as much on a plain body.
_WORD = re.compile(r"\w[\w'.$€£-]{2,39}")
_URL = re.compile(r"https?://([A-Za-z0-9.-]+)", re.I)
_TAG = re.compile(r"<[^>]{0,2000}>")
MAX_BODY = 200_000  # bytes of text looked at
MAX_TOKENS = 3000
# Robinson's f(w): strength of the prior and its value (SpamBayes defaults).
_S, _X = 0.45, 0.5
# Tokens whose probability is this close to 0.5 say nothing and are left out.
_MIN_DISTANCE = 0.1
_MAX_DISCRIMINATORS = 150


def message_key(message: bytes) -> str:
    """Which message was learnt (the same bytes moved twice are learnt once)."""
    return hashlib.sha256(message).hexdigest()[:32]


def _texts(msg: Message) -> list[str]:
    out: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if not ctype.startswith("text/"):
            out.append(f"part:{ctype}")
            continue
        try:
            payload = part.get_payload(decode=True)
        except Exception:  # a broken transfer encoding: use what is there
            payload = None
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            text = payload[:MAX_BODY].decode(charset, "replace")
        except LookupError:
            text = payload[:MAX_BODY].decode("utf-8", "replace")
        if ctype == "text/html":
            out.extend(f"url:{d.lower()}" for d in _URL.findall(text))
            text = html.unescape(_TAG.sub(" ", text))
            out.append("html")
        out.append(text)
    return out


_SIMPLE_CTE = (b"", b"7bit", b"8bit", b"binary")


def _simple_parts(message: bytes) -> tuple[list[tuple[str, str]], list[str]] | None:
    """Headers and text of a single-part message without a transfer encoding (most mail
    from bots and most of ours): parsed here, 3 times faster than the email package.
    None when the message needs the full MIME parser."""
    cut, start = header_end(message)
    body = message[start:MAX_BODY]
    headers = [(name.decode("ascii", "replace"), field_value(raw).decode("utf-8", "replace"))
               for name, raw in header_fields(message[:cut]) if name]
    ctype, cte = "text/plain", b""
    charset = "utf-8"
    for name, value in headers:
        lname = name.lower()
        if lname == "content-type":
            ctype = value.split(";", 1)[0].strip().lower()
            m = re.search(r'charset="?([\w.-]+)', value, re.I)
            if m:
                charset = m.group(1)
        elif lname == "content-transfer-encoding":
            cte = value.strip().lower().encode()
        elif "=?" in value and lname in ("subject", "from", "to"):
            return None  # RFC 2047 encoded words: the email package decodes them
    if ctype.startswith("multipart/") or cte not in _SIMPLE_CTE:
        return None
    if not ctype.startswith("text/"):
        return headers, [f"part:{ctype}"]
    try:
        text = body.decode(charset, "replace")
    except LookupError:
        text = body.decode("utf-8", "replace")
    texts = [text]
    if ctype == "text/html":
        texts = [f"url:{d.lower()}" for d in _URL.findall(text)]
        texts += ["html", html.unescape(_TAG.sub(" ", text))]
    return headers, texts


def tokenize(message: bytes) -> list[str]:
    """Distinct tokens: words of chosen headers (prefixed with the header name), words of
    the text parts, URL host names, and the MIME types of other parts."""
    simple = _simple_parts(message)
    if simple is not None:
        headers, texts = simple
    else:
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
            message[: MAX_BODY * 2])
        headers = [(name, str(value)) for name, value in msg.items()]
        texts = _texts(msg)
    tokens: dict[str, None] = {}

    def add(tok: str) -> None:
        if len(tokens) < MAX_TOKENS:
            tokens[tok] = None

    for name, text in headers:
        lname = name.lower()
        if lname in _SKIP_HEADERS:
            continue
        if lname in ("from", "reply-to", "return-path", "sender", "to", "cc"):
            for addr in re.findall(r"[\w.+-]+@([\w.-]+)", text):
                add(f"{lname}-domain:{addr.lower()}")
        if lname in ("subject", "from", "content-type", "x-mailer", "user-agent", "to"):
            for word in _words(text):
                add(f"{lname}:{word}")
        else:
            add(f"header:{lname}")
    for text in texts:
        if text.startswith(("part:", "url:")) or text == "html":
            add(text)
            continue
        for url in _URL.findall(text):
            add(f"url:{url.lower()}")
        for word in _words(text):
            add(word)
    return list(tokens)


def _words(text: str) -> list[str]:
    out = []
    for word in _WORD.findall(text):
        word = word.rstrip(".-'$")
        if len(word) >= 3:
            out.append(word.lower())
    return out


def chi2q(x2: float, v: int) -> float:
    """P(chi-square with v (even) degrees of freedom >= x2)."""
    m = x2 / 2.0
    term = math.exp(-m)
    total = term
    for i in range(1, v // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


@dataclass(frozen=True, slots=True)
class Classification:
    score: float  # 0 ham .. 1 spam
    clues: tuple[tuple[str, float], ...]  # the tokens that decided, most telling first


def classify(tokens: Sequence[str], counts: Mapping[str, tuple[int, int]],
             nspam: int, nham: int) -> Classification:
    if nspam == 0 or nham == 0:
        return Classification(0.5, ())
    probs: list[tuple[str, float]] = []
    for tok in tokens:
        spam, ham = counts.get(tok, (0, 0))
        if spam + ham == 0:
            continue
        sr, hr = spam / nspam, ham / nham
        p = sr / (sr + hr) if sr + hr else 0.5
        n = spam + ham
        f = (_S * _X + n * p) / (_S + n)
        if abs(f - 0.5) >= _MIN_DISTANCE:
            probs.append((tok, f))
    probs.sort(key=lambda tp: -abs(tp[1] - 0.5))
    clues = probs[:_MAX_DISCRIMINATORS]
    if not clues:
        return Classification(0.5, ())
    s_log = sum(math.log(max(1.0 - f, 1e-200)) for _, f in clues)
    h_log = sum(math.log(max(f, 1e-200)) for _, f in clues)
    n = len(clues)
    s = 1.0 - chi2q(-2.0 * s_log, 2 * n)
    h = 1.0 - chi2q(-2.0 * h_log, 2 * n)
    return Classification((s - h + 1.0) / 2.0, tuple(clues))


@dataclass(frozen=True, slots=True)
class Verdict:
    score: float | None  # None: the account's filter has not learnt enough yet
    classification: Classification | None


class LearningFilter:
    """``totals_ttl``: an account's (spam, ham) totals are cached this long in memory (a
    training in another process is seen after it; one here at once)."""

    def __init__(self, store: SpamStore, min_trained: int, totals_ttl: float = 5.0) -> None:
        self.store = store
        self.min_trained = min_trained
        self.totals_ttl = totals_ttl
        self._totals: dict[int, tuple[float, tuple[int, int]]] = {}

    async def totals(self, account_id: int) -> tuple[int, int]:
        now = time.monotonic()
        hit = self._totals.get(account_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        totals = await self.store.bayes_totals(account_id)
        if len(self._totals) > 100_000:
            self._totals.clear()
        self._totals[account_id] = (now + self.totals_ttl, totals)
        return totals

    async def ready(self, account_id: int) -> bool:
        nspam, nham = await self.totals(account_id)
        return nspam >= self.min_trained and nham >= self.min_trained

    async def score(self, account_id: int, message: bytes,
                    tokens: Sequence[str] | None = None) -> Verdict:
        nspam, nham = await self.totals(account_id)
        if nspam < self.min_trained or nham < self.min_trained:
            return Verdict(None, None)
        toks = tokenize(message) if tokens is None else tokens
        counts = await self.store.bayes_tokens(account_id, toks)
        result = classify(toks, counts, nspam, nham)
        return Verdict(result.score, result)

    async def train(self, account_id: int, message: bytes, spam: bool) -> bool:
        self._totals.pop(account_id, None)
        changed = await self.store.bayes_train(account_id, message_key(message),
                                               tokenize(message), spam)
        self._totals.pop(account_id, None)
        return changed
