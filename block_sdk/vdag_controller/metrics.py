"""Controller metrics: Prometheus exposition and the live hash the metrics app reads.

Prometheus (`GET /metrics`): `inference_requests_total{code}`, `inference_latency_seconds`
(histogram), `inference_fps` (completed requests per second over the last push interval),
`inference_inflight`, `vdag_quota_denied_total`, `vdag_quality_recorded_total`,
`vdag_quality_dropped_total`.

Every `interval_s` the same numbers go to the Redis hashes `aios:metrics:live:vdag:<vdag_uri>`
and `aios:metrics:live:vdag_controller:<controller_id>` (the metrics app's
`ENTITY_KEY`; field -> number, `_ts`; TTL `ttl_s`, so a stopped controller disappears).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from redis.exceptions import RedisError

from block_sdk.metrics import LATENCY_BUCKETS

log = logging.getLogger("block_sdk.vdag_controller.metrics")

LIVE_KEY = "aios:metrics:live:{}:{}"


class ControllerMetrics:
    def __init__(self, labels: dict[str, str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        names = sorted(labels)
        self._labels = labels
        self.requests = Counter(
            "inference_requests_total",
            "vDAG requests answered",
            [*names, "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "inference_latency_seconds",
            "vDAG request latency",
            names,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fps = Gauge(
            "inference_fps", "Completed requests per second", names, registry=self.registry
        )
        self.inflight_gauge = Gauge(
            "inference_inflight", "Requests in flight", names, registry=self.registry
        )
        self.denied = Counter(
            "vdag_quota_denied_total",
            "Requests refused by the quota policy",
            names,
            registry=self.registry,
        )
        self.quality_recorded = Gauge(
            "vdag_quality_recorded_total",
            "Request/response pairs recorded",
            names,
            registry=self.registry,
        )
        self.quality_dropped = Gauge(
            "vdag_quality_dropped_total",
            "Pairs dropped because the quality queue was full",
            names,
            registry=self.registry,
        )
        self.total = 0
        self.errors = 0
        self.ok = 0
        self.inflight = 0
        self._recent: deque[float] = deque(maxlen=2048)  # latencies since the last push
        self._last_ok = 0
        self._last_push = time.monotonic()
        self.current_fps = 0.0

    def observe(self, code: str, seconds: float) -> None:
        self.total += 1
        if code == "OK":
            self.ok += 1
            self.latency.labels(**self._labels).observe(seconds)
            self._recent.append(seconds)
        else:
            self.errors += 1
        if code == "RESOURCE_EXHAUSTED":
            self.denied.labels(**self._labels).inc()
        self.requests.labels(**self._labels, code=code).inc()

    def exposition(self, quality: dict[str, Any] | None = None) -> bytes:
        self.inflight_gauge.labels(**self._labels).set(self.inflight)
        if quality:
            self.quality_recorded.labels(**self._labels).set(quality.get("recorded", 0))
            self.quality_dropped.labels(**self._labels).set(quality.get("dropped", 0))
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, float]:
        """Numbers for the live hash; also rolls the FPS window."""
        now = time.monotonic()
        elapsed = max(1e-6, now - self._last_push)
        self.current_fps = (self.ok - self._last_ok) / elapsed
        self._last_ok, self._last_push = self.ok, now
        self.fps.labels(**self._labels).set(self.current_fps)
        recent = sorted(self._recent)
        self._recent.clear()
        snap = {
            "requests_total": float(self.total),
            "errors_total": float(self.errors),
            "fps": self.current_fps,
            "inflight": float(self.inflight),
        }
        if recent:
            snap["latency_p50_s"] = recent[len(recent) // 2]
            snap["latency_p99_s"] = recent[min(len(recent) - 1, int(len(recent) * 0.99))]
            snap["latency_avg_s"] = sum(recent) / len(recent)
        return snap


async def push_loop(
    metrics: ControllerMetrics,
    redis: aioredis.Redis,
    entities: list[tuple[str, str]],
    interval_s: float,
    ttl_s: int,
    extra: Any = None,
) -> None:
    """Every `interval_s`: the snapshot into each live hash (with its TTL)."""
    while True:
        await asyncio.sleep(interval_s)
        values = metrics.snapshot()
        if extra is not None:
            with contextlib.suppress(Exception):
                values.update(extra())
        values["_ts"] = time.time()
        try:
            pipe = redis.pipeline(transaction=False)
            for entity_type, entity_id in entities:
                key = LIVE_KEY.format(entity_type, entity_id)
                pipe.hset(key, mapping=values)
                pipe.expire(key, ttl_s)
            await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("metrics push failed", extra={"error": str(exc)})
