"""Process-wide counters and histograms for ``/metrics`` (the Prometheus text format 0.0.4).

The hooks in the drivers are one line each (``METRICS.inc(...)``) and cost a dict update:
no lock (one event loop per process), no dependency. Gauges that the store knows (queue
depth and age, store size, accounts) are read when ``/metrics`` is scraped, in
web/health.py. With ``pochta serve --workers N`` each process counts its own connections
and messages; Prometheus sums the scrapes when each worker is scraped (or, behind one
port, a scrape reaches one worker: read counters as per-worker samples).
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterable, Sequence

# SMTP acceptance latency (DATA end to the 250/5xx: checks, fsync), seconds
ACCEPT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                     10.0)

Labels = tuple[tuple[str, str], ...]
HOURS = 48
HOURLY = frozenset({"pochta_messages_accepted_total", "pochta_messages_refused_total",
                    "pochta_deliveries_total"})


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    items = list(labels) + ([extra] if extra else [])
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Histogram:
    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.sum += value
        self.count += 1


class Metrics:
    """Named counters and histograms with labels. ``help`` texts are registered once."""

    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = {}
        self._gauges: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, dict[Labels, _Histogram]] = {}
        self._help: dict[str, str] = {}
        self._buckets: dict[str, tuple[float, ...]] = {}
        # per-hour totals of a few counters for the web dashboard's chart (this process,
        # since it started; HOURS kept)
        self._hourly: dict[str, dict[int, float]] = {}

    def describe(self, name: str, text: str, buckets: Sequence[float] | None = None) -> None:
        self._help[name] = text
        if buckets is not None:
            self._buckets[name] = tuple(buckets)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        series = self._counters.setdefault(name, {})
        key = tuple(sorted(labels.items()))
        series[key] = series.get(key, 0.0) + amount
        if name in HOURLY:
            hours = self._hourly.setdefault(name, {})
            hour = int(time.time() // 3600)
            hours[hour] = hours.get(hour, 0.0) + amount
            if len(hours) > HOURS:
                del hours[min(hours)]

    def per_hour(self, name: str, hours: int = 24, now: float | None = None
                 ) -> list[tuple[int, float]]:
        """(hour start as Unix time, total) for the last ``hours`` hours, oldest first."""
        last = int((time.time() if now is None else now) // 3600)
        table = self._hourly.get(name, {})
        return [(h * 3600, table.get(h, 0.0)) for h in range(last - hours + 1, last + 1)]

    def add_gauge(self, name: str, amount: float, **labels: str) -> None:
        """A gauge the process keeps (open connections): +1 on open, -1 on close."""
        series = self._gauges.setdefault(name, {})
        key = tuple(sorted(labels.items()))
        series[key] = series.get(key, 0.0) + amount

    def observe(self, name: str, value: float, **labels: str) -> None:
        series = self._histograms.setdefault(name, {})
        key = tuple(sorted(labels.items()))
        hist = series.get(key)
        if hist is None:
            hist = series[key] = _Histogram(self._buckets.get(name, ACCEPT_BUCKETS))
        hist.observe(value)

    def value(self, name: str, **labels: str) -> float:
        """A counter's or gauge's current value (tests, the dashboard)."""
        key = tuple(sorted(labels.items()))
        for table in (self._counters, self._gauges):
            if name in table:
                return table[name].get(key, 0.0)
        return 0.0

    def total(self, name: str) -> float:
        return sum(self._counters.get(name, {}).values())

    def render(self, gauges: Iterable[tuple[str, str, Labels, float]] = ()) -> str:
        """The text exposition format; ``gauges`` adds (name, help, labels, value) samples
        computed at scrape time."""
        out: list[str] = []
        for name in sorted(self._counters):
            out.append(f"# HELP {name} {self._help.get(name, name)}")
            out.append(f"# TYPE {name} counter")
            for labels, value in sorted(self._counters[name].items()):
                out.append(f"{name}{_labels(labels)} {_number(value)}")
        for name in sorted(self._gauges):
            out.append(f"# HELP {name} {self._help.get(name, name)}")
            out.append(f"# TYPE {name} gauge")
            for labels, value in sorted(self._gauges[name].items()):
                out.append(f"{name}{_labels(labels)} {_number(value)}")
        for name in sorted(self._histograms):
            out.append(f"# HELP {name} {self._help.get(name, name)}")
            out.append(f"# TYPE {name} histogram")
            for labels, hist in sorted(self._histograms[name].items()):
                running = 0
                for bound, count in zip(hist.buckets, hist.counts, strict=True):
                    running += count
                    out.append(f"{name}_bucket{_labels(labels, ('le', _number(bound)))} "
                               f"{running}")
                out.append(f"{name}_bucket{_labels(labels, ('le', '+Inf'))} {hist.count}")
                out.append(f"{name}_sum{_labels(labels)} {_number(hist.sum)}")
                out.append(f"{name}_count{_labels(labels)} {hist.count}")
        seen: set[str] = set()
        for name, text, labels, value in gauges:
            if name not in seen:
                seen.add(name)
                out.append(f"# HELP {name} {text}")
                out.append(f"# TYPE {name} gauge")
            out.append(f"{name}{_labels(labels)} {_number(value)}")
        return "\n".join(out) + "\n"


METRICS = Metrics()
METRICS.describe("pochta_connections_total", "connections admitted, by listener role")
METRICS.describe("pochta_connections_refused_total",
                 "connections refused over the connection limits, by role")
METRICS.describe("pochta_connections_open", "connections open now, by role")
METRICS.describe("pochta_messages_accepted_total",
                 "messages accepted after DATA (250 sent), by role")
METRICS.describe("pochta_messages_refused_total",
                 "messages refused after DATA, by role and reply class (4xx/5xx)")
METRICS.describe("pochta_smtp_accept_seconds",
                 "time from the end of DATA to the reply (checks, signing, fsync)",
                 ACCEPT_BUCKETS)
METRICS.describe("pochta_deliveries_total",
                 "outbound delivery attempts by result (delivered, deferred, bounced)")
METRICS.describe("pochta_auth_failures_total", "failed logins, by protocol role")
METRICS.describe("pochta_http_requests_total", "HTTP requests answered, by status class")
