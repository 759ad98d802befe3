"""spamtest/virustest (RFC 5235) values read from the header a content filter in front
of Pochta writes (SpamAssassin's ``X-Spam-Status``, rspamd's ``X-Spam-Score``, a virus
scanner's verdict), configured as in Pigeonhole's ``sieve_spamtest_*`` settings:

* a header spec is ``NAME`` (its whole value) or ``NAME:REGEX`` (the first group of a
  case-insensitive search in the value);
* the value is a ``score`` (a decimal, against a maximum that is a number or read from
  another header), a ``strlen`` (SpamAssassin's ``X-Spam-Level: *****``) or a ``text``
  (one of the configured texts, each naming a value: 1..10 for spam, 1..5 for virus).

The ratio value/maximum (0..1) becomes RFC 5235's scale: 1..10 for spamtest, 1..5 for
virustest, 0..100 for spamtestplus ``:percent``; a missing or unreadable header is
"not tested" (None, the test's 0). Only the first (topmost) field counts: the filter's
own, as filters prepend theirs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .message import SieveMessage

Kind = Literal["spamtest", "virustest"]
TYPES = ("score", "strlen", "text")
_DECIMAL = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\Z")


@dataclass(frozen=True, slots=True)
class HeaderSpec:
    name: str
    pattern: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, text: str) -> HeaderSpec:
        """``NAME`` or ``NAME:REGEX``; ValueError when either is invalid."""
        name, colon, regex = text.strip().partition(":")
        name = name.strip()
        if not name or not re.fullmatch(r"[!-9;-~]+", name):
            raise ValueError(f"invalid header name {name!r}")
        if not colon:
            return cls(name)
        try:
            pattern = re.compile(regex.strip(), re.IGNORECASE | re.ASCII)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {regex.strip()!r}: {exc}") from None
        if pattern.groups < 1:
            raise ValueError(f"regular expression {regex.strip()!r} has no group")
        return cls(name, pattern)

    def read(self, message: SieveMessage) -> str | None:
        values = message.headers(self.name)
        if not values:
            return None
        value = values[0].strip()
        if self.pattern is None:
            return value
        m = self.pattern.search(value)
        return m.group(1) if m is not None and m.group(1) is not None else None


def _decimal(text: str) -> float | None:
    m = _DECIMAL.match(text)
    return float(m.group(1)) if m else None


def _strlen(text: str) -> float | None:
    """The length of a run of one repeated character ("*****" is 5, "" is 0)."""
    if text and text != text[0] * len(text):
        return None
    return float(len(text))


@dataclass(frozen=True, slots=True)
class HeaderVerdict:
    kind: Kind
    status: HeaderSpec
    status_type: str = "score"
    max_header: HeaderSpec | None = None
    max_value: float = 0.0
    texts: Mapping[int, str] = field(default_factory=dict)  # value -> exact text

    @classmethod
    def configure(cls, kind: Kind, header: str, status_type: str = "score",
                  max_header: str = "", max_value: float = 0.0,
                  text_values: list[str] | tuple[str, ...] = ()) -> HeaderVerdict:
        """From settings (``text_values`` as ``N=TEXT`` entries); ValueError says what
        is wrong."""
        if status_type not in TYPES:
            raise ValueError(f"type must be one of {', '.join(TYPES)}")
        top = 10 if kind == "spamtest" else 5
        texts: dict[int, str] = {}
        for entry in text_values:
            number, eq, text = entry.partition("=")
            if not eq or not number.strip().isdigit() or not 0 <= int(number) <= top:
                raise ValueError(f"text value {entry!r}: expected N=TEXT, N from 0 to {top}")
            texts[int(number)] = text
        if status_type == "text" and not texts:
            raise ValueError("type text needs text values")
        spec = HeaderSpec.parse(max_header) if max_header.strip() else None
        if status_type != "text" and spec is None and max_value <= 0:
            raise ValueError("a score or strlen verdict needs a max header or max value > 0")
        return cls(kind, HeaderSpec.parse(header), status_type, spec, max_value, texts)

    def ratio(self, message: SieveMessage) -> float | None:
        """value/maximum clamped to 0..1; None: not tested (no usable header)."""
        top = 10.0 if self.kind == "spamtest" else 5.0
        if self.status_type == "text":
            maximum: float | None = top
        elif self.max_header is not None:
            raw = self.max_header.read(message)
            maximum = None if raw is None else _decimal(raw)
        else:
            maximum = self.max_value
        if not maximum:
            return None
        status = self.status.read(message)
        if status is None:
            return None
        if self.status_type == "score":
            value = _decimal(status)
        elif self.status_type == "strlen":
            value = _strlen(status)
        else:
            value = next((float(n) for n, t in sorted(self.texts.items()) if t == status),
                         None)
        if value is None:
            return None
        return min(max(value / maximum, 0.0), 1.0)


def scaled(ratio: float | None, kind: Kind, percent: bool = False) -> int | None:
    """RFC 5235 §3.2/§3.3 values: 1..10 (spam), 1..5 (virus), 0..100 (:percent)."""
    if ratio is None:
        return None
    if percent:
        return int(ratio * 100 + 0.001)
    return int(ratio * (9 if kind == "spamtest" else 4) + 1.001)


def header_verdict(spam: HeaderVerdict | None, virus: HeaderVerdict | None,
                   message: SieveMessage) -> tuple[int | None, int | None, int | None]:
    """(spam 1..10, spam percent, virus 1..5) of a message; None where untested."""
    r = spam.ratio(message) if spam is not None else None
    v = virus.ratio(message) if virus is not None else None
    return (scaled(r, "spamtest"), scaled(r, "spamtest", percent=True),
            scaled(v, "virustest"))
