"""Prometheus metrics: what the engine did (ticks, decisions, sends, events) and the queue now.

Every metric lives in the module's ``REGISTRY``; ``exposition()`` renders it for ``GET /metrics``.
The engine reports a batch at a time (``count_decisions``, ``record_sends``): one counter update
per distinct label set, never one per touchpoint, so the tick's hot path stays cheap. The queue
gauges are read from the database when scraped, through the probe the daemon sets with
``set_queue_probe``.

- ``tact_ticks_total``, ``tact_tick_duration_seconds``: completed ticks and how long each took.
- ``tact_decisions_total{decision,reason}``: decided touchpoints, as the send_log records them.
- ``tact_sends_total{adapter,status}``: adapter calls by outcome (sent, retryable, rejected).
- ``tact_send_latency_seconds{adapter}``: how long each adapter call took.
- ``tact_events_ingested_total{type}``: events applied to journeys and attention, each once.
- ``tact_queue_depth``, ``tact_oldest_due_age_seconds``: pending touchpoints due now, and how
  long the oldest of them has waited (0 when none is due).
- ``tact_info{version}``: always 1.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

log = structlog.get_logger("tact.metrics")

QueueProbe = Callable[[], tuple[int, float | None]]
"""Returns (pending touchpoints due now, age in seconds of the oldest of them or None)."""

TICK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
SEND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BatchHistogram(Collector):
    """A histogram with one label, fed a batch of observations at a time (one lock per batch)."""

    def __init__(self, name: str, documentation: str, label: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.bounds = (*sorted(float(bound) for bound in buckets), math.inf)
        self._lock = threading.Lock()
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe_many(self, label_value: str, values: Iterable[float]) -> None:
        """Add the observations ``values`` under ``label_value``."""
        tallies = [0] * len(self.bounds)
        total = 0.0
        for value in values:
            tallies[bisect_left(self.bounds, value)] += 1
            total += value
        with self._lock:
            counts = self._counts.setdefault(label_value, [0] * len(self.bounds))
            for index, tally in enumerate(tallies):
                counts[index] += tally
            self._sums[label_value] = self._sums.get(label_value, 0.0) + total

    def describe(self) -> Iterable[Metric]:
        """The family without samples, for the registry's name checks."""
        return [HistogramMetricFamily(self.name, self.documentation, labels=[self.label])]

    def collect(self) -> Iterable[Metric]:
        """The cumulative buckets, count and sum of every label value."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        with self._lock:
            snapshot = [(label, list(counts), self._sums[label]) for label, counts in self._counts.items()]
        for label_value, counts, total in snapshot:
            cumulative, buckets = 0, []
            for bound, count in zip(self.bounds, counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == math.inf else repr(bound), float(cumulative)))
            family.add_metric([label_value], buckets, total)
        return [family]


class QueueCollector(Collector):
    """``tact_queue_depth`` and ``tact_oldest_due_age_seconds``, asked of the probe on each scrape."""

    def __init__(self) -> None:
        self.probe: QueueProbe | None = None

    def describe(self) -> Iterable[Metric]:
        """The two gauge families without samples."""
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        """Both gauges from the probe; neither when no probe is set or it fails."""
        probe = self.probe
        if probe is None:
            return []
        try:
            depth, oldest_age = probe()
        except Exception as exc:  # a scrape must still answer when the database does not
            log.warning("metrics_queue_probe_failed", error=f"{type(exc).__name__}: {exc}")
            return []
        return list(self._families((depth, oldest_age)))

    @staticmethod
    def _families(values: tuple[int, float | None] | None) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("tact_queue_depth", "Pending touchpoints due now.")
        age = GaugeMetricFamily(
            "tact_oldest_due_age_seconds", "Seconds the oldest due pending touchpoint has waited (0 when none)."
        )
        if values is not None:
            depth.add_metric([], float(values[0]))
            age.add_metric([], max(values[1] or 0.0, 0.0))
        yield depth
        yield age


def _tact_version() -> str:
    try:
        return version("tact")
    except PackageNotFoundError:
        return "unknown"


REGISTRY = CollectorRegistry()

TICKS = Counter("tact_ticks", "Ticks completed.", registry=REGISTRY)
TICK_DURATION = Histogram(
    "tact_tick_duration_seconds", "Duration of one tick.", buckets=TICK_BUCKETS, registry=REGISTRY
)
DECISIONS = Counter(
    "tact_decisions", "Touchpoints decided, by decision and reason.", ["decision", "reason"], registry=REGISTRY
)
SENDS = Counter("tact_sends", "Adapter calls, by adapter and outcome.", ["adapter", "status"], registry=REGISTRY)
SEND_LATENCY = BatchHistogram("tact_send_latency_seconds", "Duration of one adapter call.", "adapter", SEND_BUCKETS)
REGISTRY.register(SEND_LATENCY)
EVENTS_INGESTED = Counter(
    "tact_events_ingested", "Events applied to journeys and attention, by type.", ["type"], registry=REGISTRY
)
QUEUE = QueueCollector()
REGISTRY.register(QUEUE)
INFO = Gauge("tact_info", "Tact's version; the value is always 1.", ["version"], registry=REGISTRY)
INFO.labels(_tact_version()).set(1)


def set_queue_probe(probe: QueueProbe | None) -> None:
    """Read the queue gauges from ``probe`` on each scrape (None: leave them out)."""
    QUEUE.probe = probe


def observe_tick(seconds: float) -> None:
    """Count one completed tick that took ``seconds``."""
    TICKS.inc()
    TICK_DURATION.observe(seconds)


def count_decisions(counts: Mapping[str, int]) -> None:
    """Count a batch's decisions, given as ``{"decision:reason": count}``."""
    for key, count in counts.items():
        decision, _, reason = key.partition(":")
        DECISIONS.labels(decision, reason).inc(count)


def record_sends(sends: Iterable[tuple[str, str, float]]) -> None:
    """Count a batch's adapter calls, each given as (adapter, status, latency in milliseconds)."""
    outcomes: Tally[tuple[str, str]] = Tally()
    latencies: dict[str, list[float]] = {}
    for adapter, status, latency_ms in sends:
        outcomes[adapter, status] += 1
        latencies.setdefault(adapter, []).append(latency_ms / 1000)
    for (adapter, status), count in outcomes.items():
        SENDS.labels(adapter, str(status)).inc(count)
    for adapter, seconds in latencies.items():
        SEND_LATENCY.observe_many(adapter, seconds)


def count_events(types: Iterable[str]) -> None:
    """Count applied events by type."""
    for event_type, count in Tally(types).items():
        EVENTS_INGESTED.labels(event_type).inc(count)


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
