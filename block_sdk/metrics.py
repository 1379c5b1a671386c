"""Observability for data-plane processes: Prometheus metrics and structured logging.

Every data-plane process (executor, instance) owns one `AIOSMetrics` with its own
`CollectorRegistry`, so two blocks tested in one Python process never collide on metric names
and `/metrics` shows only that process's series. Logs are one JSON object per line.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# AIOS SDK default buckets for user histograms (seconds-ish, coarse).
DEFAULT_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.5, 1, 2, 5, 10)
# Buckets for data-plane latencies: a block hop is sub-millisecond, so the AIOS defaults would
# put every request in the first bucket.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class MetricError(KeyError):
    """A metric was used before registration, or registered twice with another type."""


class AIOSMetrics:
    """The AIOS SDK metrics API (`context.metrics`) over a per-process Prometheus registry.

    `const_labels` (block id, instance id) are attached to every series so that metrics
    scraped from many instances stay distinguishable after aggregation.
    """

    def __init__(
        self,
        block_id: str = "test-block",
        instance_id: str = "instance-001",
        registry: CollectorRegistry | None = None,
        const_labels: dict[str, str] | None = None,
    ) -> None:
        self.block_id = block_id
        self.instance_id = instance_id
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._const = (
            const_labels
            if const_labels is not None
            else {"block_id": block_id, "instance_id": instance_id}
        )
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        self._children: dict[Any, Any] = {}
        self._lock = threading.Lock()

    # -- registration ------------------------------------------------------------------
    def _register(self, kind: type, name: str, documentation: str, labelnames, **kw) -> Any:
        with self._lock:
            existing = self._metrics.get(name)
            if existing is not None:
                if not isinstance(existing, kind):
                    raise MetricError(f"metric {name!r} already registered as another type")
                return existing
            labels = tuple(labelnames or ()) + tuple(self._const)
            metric = kind(name, documentation, labels, registry=self.registry, **kw)
            self._metrics[name] = metric
            return metric

    def register_counter(
        self, name: str, documentation: str = "", labelnames: Sequence[str] | None = None
    ) -> Counter:
        return self._register(Counter, name, documentation or name, labelnames)

    def register_gauge(
        self, name: str, documentation: str = "", labelnames: Sequence[str] | None = None
    ) -> Gauge:
        return self._register(Gauge, name, documentation or name, labelnames)

    def register_histogram(
        self,
        name: str,
        documentation: str = "",
        labelnames: Sequence[str] | None = None,
        buckets: Iterable[float] | None = None,
    ) -> Histogram:
        return self._register(
            Histogram,
            name,
            documentation or name,
            labelnames,
            buckets=tuple(buckets) if buckets is not None else DEFAULT_BUCKETS,
        )

    # -- updates -----------------------------------------------------------------------
    def _child(self, name: str, labels: dict[str, str] | None):
        # Cached: `labels()` costs a lock and dict work, and these calls sit on the hot path.
        key = (name, tuple(labels.items())) if labels else name
        child = self._children.get(key)
        if child is not None:
            return child
        try:
            metric = self._metrics[name]
        except KeyError:
            raise MetricError(f"metric {name!r} is not registered") from None
        values = dict(labels or {})
        values.update(self._const)
        child = self._children[key] = metric.labels(**values)
        return child

    def increment_counter(
        self, name: str, amount: float = 1.0, labels: dict[str, str] | None = None
    ) -> None:
        self._child(name, labels).inc(amount)

    def set_gauge(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        self._child(name, labels).set(value)

    def inc_gauge(self, name: str, amount: float = 1.0, labels: dict[str, str] | None = None):
        self._child(name, labels).inc(amount)

    def observe_histogram(
        self, name: str, value: float, labels: dict[str, str] | None = None
    ) -> None:
        self._child(name, labels).observe(value)

    def get(self, name: str) -> Counter | Gauge | Histogram:
        return self._metrics[name]

    def names(self) -> list[str]:
        return sorted(self._metrics)

    # -- exposition ----------------------------------------------------------------------
    def exposition(self) -> bytes:
        """Prometheus text format of every series in this registry."""
        return generate_latest(self.registry)


# ---------------------------------------------------------------------------------------
# Structured logging
# ---------------------------------------------------------------------------------------

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, plus every `extra=` key."""

    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(self.static)
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class RingBufferHandler(logging.Handler):
    """Keeps the last `capacity` formatted lines in memory for the `logs` management command."""

    def __init__(self, capacity: int = 1000) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a log line must never break the caller
            self.handleError(record)

    def tail(self, n: int = 100) -> list[str]:
        n = max(0, min(int(n), len(self.lines)))
        return list(self.lines)[-n:] if n else []


def configure_logging(
    static: dict[str, Any] | None = None,
    level: str | int = "INFO",
    ring_capacity: int = 1000,
) -> RingBufferHandler:
    """Route the root logger to stderr as JSON lines and into an in-memory ring buffer."""
    formatter = JsonFormatter(static)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    ring = RingBufferHandler(ring_capacity)
    ring.setFormatter(formatter)
    root.addHandler(stream)
    root.addHandler(ring)
    root.setLevel(level if isinstance(level, int) else level.upper())
    # aiohttp's access log is one line per scrape/health probe: noise at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return ring
