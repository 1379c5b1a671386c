"""The metrics system: record and read node, cluster, block and vDAG metrics.

- **Live** values are in Redis with a TTL: a node whose agent stops reporting simply has no
  live metrics after the TTL (and is not healthy). Keys:
  ``aios:metrics:node:<node_id>`` (JSON document), ``aios:metrics:cluster:<cluster_id>``
  (JSON aggregate), ``aios:metrics:live:<entity_type>:<entity_id>`` (hash name -> value).
- The **latest** value of each node/cluster/entity is also one PostgreSQL row, so the core
  query language (``clusterMetricsQuery``, ``POST /api/v1/metrics/query/``) runs over real
  numbers.
- **History** goes to PostgreSQL, throttled per node, downsampled to five-minute averages
  after ``RAW_RETENTION`` and deleted after ``RETENTION`` (a periodic task).

Names follow the reference (§1.16): ``vcpu.load_15m``, ``memory.freeMem``,
``gpus.totalFreeMem``, per GPU ``usedMem/freeMem/totalMem/memUtilization/cudaUtilization/
temperature``; sizes in MB.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.core.errors import ValidationFailed
from apps.metrics.models import (
    LiveClusterMetrics,
    LiveEntityMetrics,
    LiveNodeMetrics,
    MetricSample,
    NodeMetricSample,
)

log = logging.getLogger("aios.metrics")


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


NODE_TTL_S = _env_float("AIOS_NODE_METRICS_TTL_S", 30.0)
ENTITY_TTL_S = _env_float("AIOS_ENTITY_METRICS_TTL_S", 120.0)
HISTORY_INTERVAL_S = _env_float("AIOS_METRICS_HISTORY_INTERVAL_S", 15.0)
ENTITY_HISTORY_INTERVAL_S = _env_float("AIOS_ENTITY_METRICS_HISTORY_INTERVAL_S", 10.0)
RAW_RETENTION = timedelta(hours=_env_float("AIOS_METRICS_RAW_RETENTION_H", 2.0))
RETENTION = timedelta(days=_env_float("AIOS_METRICS_RETENTION_DAYS", 7.0))
ENTITY_RETENTION = timedelta(days=_env_float("AIOS_ENTITY_METRICS_RETENTION_DAYS", 3.0))
BUCKET_S = NodeMetricSample.FIVE_MINUTES
MAX_HISTORY_POINTS = 5000
MAX_VALUES_PER_PUSH = 200

NODE_KEY = "aios:metrics:node:{}"
CLUSTER_KEY = "aios:metrics:cluster:{}"
ENTITY_KEY = "aios:metrics:live:{}:{}"
HISTORY_GATE_KEY = "aios:metrics:history-gate:{}"
ENTITY_TYPES = ("block", "instance", "executor", "vdag", "vdag_controller", "inference_server")
METRIC_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,127}$")
GROUPS = ("vcpu", "memory", "gpus", "disk", "storage", "network")


@functools.lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def _ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    return timezone.now()


# -- nodes ------------------------------------------------------------------------------------
def record_node_metrics(
    node_id: str, cluster_id: str, doc: dict[str, Any], *, ttl_s: float | None = None
) -> dict[str, Any]:
    """Store a node's report: live in Redis (TTL), latest row, throttled history, and the
    cluster aggregate. ``doc`` is what ``HardwareSampler.sample()`` returns."""
    ts = _ts(doc.get("ts"))
    ttl = int(max(ttl_s or NODE_TTL_S, 5))
    live = {**doc, "node_id": node_id, "cluster_id": cluster_id, "ts": ts.timestamp()}
    client = _redis()
    client.set(NODE_KEY.format(node_id), json.dumps(live), ex=ttl)
    LiveNodeMetrics.objects.update_or_create(
        node_id=node_id,
        defaults={
            "cluster_id": cluster_id,
            "ts": ts,
            "doc": {g: doc.get(g) or {} for g in GROUPS},
            **{g: doc.get(g) or {} for g in GROUPS},
        },
    )
    if client.set(HISTORY_GATE_KEY.format(node_id), "1", nx=True, ex=int(HISTORY_INTERVAL_S)):
        NodeMetricSample.objects.create(
            node_id=node_id, cluster_id=cluster_id, ts=ts, values=flatten(doc)
        )
    refresh_cluster_metrics(cluster_id, ttl_s=ttl)
    return live


def node_live_metrics(node_id: str) -> dict[str, Any] | None:
    raw = _redis().get(NODE_KEY.format(node_id))
    return json.loads(raw) if raw else None


def nodes_live_metrics(node_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    if not node_ids:
        return {}
    raws = _redis().mget([NODE_KEY.format(n) for n in node_ids])
    return {n: (json.loads(r) if r else None) for n, r in zip(node_ids, raws, strict=True)}


def flatten(doc: dict[str, Any]) -> dict[str, float]:
    """Numeric leaves of a node document as ``group.name`` (per GPU: ``gpu.<id>.name``)."""
    out: dict[str, float] = {}
    for group in GROUPS:
        section = doc.get(group) or {}
        for key, value in section.items():
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                out[f"{group}.{key}"] = float(value)
            elif isinstance(value, dict) and group == "disk":
                for sub, val in value.items():
                    if isinstance(val, int | float) and not isinstance(val, bool):
                        out[f"disk.{key}.{sub}"] = float(val)
    for gpu in (doc.get("gpus") or {}).get("gpus", []) or []:
        gid = gpu.get("gpu_id")
        for key in (
            "usedMem",
            "freeMem",
            "totalMem",
            "memUtilization",
            "cudaUtilization",
            "temperature",
        ):
            if isinstance(gpu.get(key), int | float):
                out[f"gpu.{gid}.{key}"] = float(gpu[key])
    return out


# -- clusters --------------------------------------------------------------------------------
def _avg(values: list[float]) -> float:
    return round(sum(values) / len(values), 3) if values else 0.0


def aggregate(cluster_id: str, docs: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """Sum/average the live node documents of a cluster (reporting nodes only)."""
    live = [d for d in docs.values() if d]

    def vals(group: str, key: str) -> list[float]:
        return [float((d.get(group) or {}).get(key) or 0) for d in live]

    gpus = [g for d in live for g in (d.get("gpus") or {}).get("gpus", []) or []]
    vcpu = {
        "count": sum(vals("vcpu", "count")),
        "utilization": _avg(vals("vcpu", "utilization")),
    }
    for window in ("1m", "5m", "15m"):
        vcpu[f"load_{window}"] = _avg(vals("vcpu", f"load_{window}"))
        vcpu[f"load{window}"] = vcpu[f"load_{window}"]
    gpu_agg = {
        "count": len(gpus),
        "totalMem": sum(int(g.get("totalMem") or 0) for g in gpus),
        "totalUsedMem": sum(int(g.get("usedMem") or 0) for g in gpus),
        "totalFreeMem": sum(int(g.get("freeMem") or 0) for g in gpus),
        "maxFreeMem": max((int(g.get("freeMem") or 0) for g in gpus), default=0),
        "avgMemUtilization": _avg([float(g.get("memUtilization") or 0) for g in gpus]),
        "avgCudaUtilization": _avg([float(g.get("cudaUtilization") or 0) for g in gpus]),
        "avgPowerUtilization": _avg([float(g.get("powerUtilization") or 0) for g in gpus]),
        "avgTemperature": _avg([float(g.get("temperature") or 0) for g in gpus]),
    }
    return {
        "cluster_id": cluster_id,
        "ts": max((float(d.get("ts") or 0) for d in live), default=None),
        "nodes": {"count": len(docs), "reporting": len(live)},
        "vcpu": vcpu,
        "memory": {
            "totalMem": sum(vals("memory", "totalMem")),
            "freeMem": sum(vals("memory", "freeMem")),
            "usedMem": sum(vals("memory", "usedMem")),
            "averageUtil": _avg(vals("memory", "averageUtil")),
            "totalSwap": sum(vals("memory", "totalSwap")),
            "usedSwap": sum(vals("memory", "usedSwap")),
            "freeSwap": sum(vals("memory", "freeSwap")),
        },
        "storage": {
            "totalMem": sum(vals("storage", "totalMem")),
            "freeMem": sum(vals("storage", "freeMem")),
            "usedMem": sum(vals("storage", "usedMem")),
        },
        "network": {
            "txBytesTotal": sum(vals("network", "txBytesTotal")),
            "rxBytesTotal": sum(vals("network", "rxBytesTotal")),
        },
        "gpus": gpu_agg,
        # The reference's filter examples say ``cluster.gpu.totalFreeMem``: same numbers.
        "gpu": gpu_agg,
    }


def _cluster_node_ids(cluster_id: str) -> list[str]:
    from apps.clusters.models import Node

    return list(Node.objects.filter(cluster_id=cluster_id).values_list("id", flat=True))


def refresh_cluster_metrics(cluster_id: str, *, ttl_s: float | None = None) -> dict[str, Any]:
    agg = aggregate(cluster_id, nodes_live_metrics(_cluster_node_ids(cluster_id)))
    ttl = int(max(ttl_s or NODE_TTL_S, 5))
    _redis().set(CLUSTER_KEY.format(cluster_id), json.dumps(agg), ex=ttl)
    if agg["nodes"]["reporting"]:
        LiveClusterMetrics.objects.update_or_create(
            cluster_id=cluster_id,
            defaults={
                "ts": _ts(agg["ts"]),
                "nodes": agg["nodes"],
                "vcpu": agg["vcpu"],
                "memory": agg["memory"],
                "gpus": agg["gpus"],
                "storage": agg["storage"],
                "network": agg["network"],
                "doc": {k: v for k, v in agg.items() if k not in ("cluster_id", "ts")},
            },
        )
    return agg


def cluster_metrics(cluster_id: str, *, include_nodes: bool = False) -> dict[str, Any]:
    """The cluster's live aggregate, computed from its nodes' live metrics."""
    docs = nodes_live_metrics(_cluster_node_ids(cluster_id))
    agg = aggregate(cluster_id, docs)
    if include_nodes:
        agg["node_metrics"] = docs
    return agg


def clusters_metrics(cluster_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Aggregates of many clusters with two round trips (one SQL query, one MGET)."""
    from apps.clusters.models import Node

    nodes_by_cluster: dict[str, list[str]] = defaultdict(list)
    for node_id, cluster_id in Node.objects.filter(cluster_id__in=cluster_ids).values_list(
        "id", "cluster_id"
    ):
        nodes_by_cluster[cluster_id].append(node_id)
    all_nodes = [n for ids in nodes_by_cluster.values() for n in ids]
    live = nodes_live_metrics(all_nodes)
    return {
        cid: aggregate(cid, {n: live.get(n) for n in nodes_by_cluster.get(cid, [])})
        for cid in cluster_ids
    }


def fresh_cutoff(ttl_s: float | None = None) -> datetime:
    return timezone.now() - timedelta(seconds=ttl_s or NODE_TTL_S)


# -- history ---------------------------------------------------------------------------------
def node_history(
    node_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Raw samples where kept, five-minute averages further back; oldest first."""
    until = until or timezone.now()
    since = since or until - timedelta(hours=1)
    if since > until:
        raise ValidationFailed("since must be before until")
    limit = max(1, min(int(limit), MAX_HISTORY_POINTS))
    rows = (
        NodeMetricSample.objects.filter(node_id=node_id, ts__gte=since, ts__lte=until)
        .order_by("-ts")
        .values("ts", "resolution_s", "values")[:limit]
    )
    return [
        {"ts": r["ts"].isoformat(), "resolution_s": r["resolution_s"], "values": r["values"]}
        for r in reversed(list(rows))
    ]


def downsample_and_prune(now: datetime | None = None, *, batch: int = 20000) -> dict[str, int]:
    """Five-minute averages replace raw node samples older than ``RAW_RETENTION``; node and
    entity history older than the retention is deleted. Bounded work per call."""
    now = now or timezone.now()
    cutoff = now - RAW_RETENTION
    old = list(
        NodeMetricSample.objects.filter(resolution_s=NodeMetricSample.RAW, ts__lt=cutoff)
        .order_by("ts")
        .values("id", "node_id", "cluster_id", "ts", "values")[:batch]
    )
    buckets: dict[tuple[str, str, int], list[dict[str, float]]] = defaultdict(list)
    for row in old:
        start = int(row["ts"].timestamp()) // BUCKET_S * BUCKET_S
        buckets[(row["node_id"], row["cluster_id"], start)].append(row["values"])
    averaged = []
    for (node_id, cluster_id, start), samples in buckets.items():
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for values in samples:
            for key, value in values.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    sums[key] += value
                    counts[key] += 1
        averaged.append(
            NodeMetricSample(
                node_id=node_id,
                cluster_id=cluster_id,
                ts=datetime.fromtimestamp(start, tz=UTC),
                resolution_s=BUCKET_S,
                values={k: round(sums[k] / counts[k], 4) for k in sums},
            )
        )
    with transaction.atomic():
        NodeMetricSample.objects.bulk_create(averaged)
        NodeMetricSample.objects.filter(id__in=[r["id"] for r in old]).delete()
    expired, _ = NodeMetricSample.objects.filter(ts__lt=now - RETENTION).delete()
    entity_expired, _ = MetricSample.objects.filter(ts__lt=now - ENTITY_RETENTION).delete()
    result = {
        "downsampled": len(old),
        "buckets": len(averaged),
        "expired": expired,
        "entity_expired": entity_expired,
    }
    log.info("event=metrics_downsampled %s", " ".join(f"{k}={v}" for k, v in result.items()))
    return result


# -- blocks, vDAGs and other entities ----------------------------------------------------------
def _check_entity(entity_type: str, entity_id: str) -> None:
    if entity_type not in ENTITY_TYPES:
        raise ValidationFailed(
            f"unknown entity type {entity_type!r}", details=[{"allowed": list(ENTITY_TYPES)}]
        )
    if not isinstance(entity_id, str) or not (0 < len(entity_id) <= 128):
        raise ValidationFailed("entity_id must be a non-empty string of at most 128 characters")


def record_entity_metrics(
    entity_type: str,
    entity_id: str,
    values: dict[str, float],
    *,
    labels: dict[str, Any] | None = None,
    ts: Any = None,
) -> dict[str, float]:
    """Record metric values of a block, instance, vDAG, ...: live hash (TTL), latest row,
    and history (at most one point per name per ``ENTITY_HISTORY_INTERVAL_S``)."""
    _check_entity(entity_type, entity_id)
    if not isinstance(values, dict) or not values or len(values) > MAX_VALUES_PER_PUSH:
        raise ValidationFailed(f"values must map 1 to {MAX_VALUES_PER_PUSH} names to numbers")
    clean: dict[str, float] = {}
    for name, value in values.items():
        if not isinstance(name, str) or not METRIC_NAME_RE.match(name):
            raise ValidationFailed(f"invalid metric name {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationFailed(f"metric {name!r} must be a number")
        if not math.isfinite(value):
            raise ValidationFailed(f"metric {name!r} must be finite")
        clean[name] = float(value)
    labels = labels or {}
    when = _ts(ts)
    client = _redis()
    key = ENTITY_KEY.format(entity_type, entity_id)
    pipe = client.pipeline()
    pipe.hset(key, mapping={**clean, "_ts": when.timestamp()})
    pipe.expire(key, int(ENTITY_TTL_S))
    pipe.execute()
    with transaction.atomic():
        live, created = LiveEntityMetrics.objects.select_for_update().get_or_create(
            entity_type=entity_type,
            entity_id=entity_id,
            defaults={"ts": when, "values": clean, "labels": labels},
        )
        if not created:
            live.values = {**live.values, **clean}
            live.ts = when
            if labels:
                live.labels = labels
            live.save(update_fields=["values", "ts", "labels"])
    gate = HISTORY_GATE_KEY.format(f"{entity_type}:{entity_id}")
    if client.set(gate, "1", nx=True, ex=int(max(1, ENTITY_HISTORY_INTERVAL_S))):
        MetricSample.objects.bulk_create(
            [
                MetricSample(
                    entity_type=entity_type,
                    entity_id=entity_id,
                    name=name,
                    value=value,
                    labels=labels,
                    ts=when,
                )
                for name, value in clean.items()
            ]
        )
    return clean


def entity_live_metrics(entity_type: str, entity_id: str) -> dict[str, float] | None:
    _check_entity(entity_type, entity_id)
    raw = _redis().hgetall(ENTITY_KEY.format(entity_type, entity_id))
    if not raw:
        return None
    return {k.decode(): float(v) for k, v in raw.items()}


def entity_history(
    entity_type: str,
    entity_id: str,
    *,
    name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    _check_entity(entity_type, entity_id)
    until = until or timezone.now()
    since = since or until - timedelta(hours=1)
    queryset = MetricSample.objects.filter(
        entity_type=entity_type, entity_id=entity_id, ts__gte=since, ts__lte=until
    )
    if name:
        queryset = queryset.filter(name=name)
    limit = max(1, min(int(limit), MAX_HISTORY_POINTS))
    rows = queryset.order_by("-ts").values("name", "value", "labels", "ts")[:limit]
    return [
        {"name": r["name"], "value": r["value"], "labels": r["labels"], "ts": r["ts"].isoformat()}
        for r in reversed(list(rows))
    ]


# -- Prometheus ------------------------------------------------------------------------------
def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text() -> str:
    """Node metrics (and live entity metrics) in the Prometheus text exposition format."""
    from apps.clusters.models import Node

    nodes = list(Node.objects.values_list("id", "cluster_id"))
    live = nodes_live_metrics([n for n, _ in nodes])
    series: dict[str, tuple[str, list[str]]] = {}

    def add(name: str, help_text: str, labels: dict[str, Any], value: Any) -> None:
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return
        entry = series.setdefault(name, (help_text, []))
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        entry[1].append(f"{name}{{{text}}} {float(value)!r}")

    for node_id, cluster_id in nodes:
        base = {"cluster": cluster_id, "node": node_id}
        doc = live.get(node_id)
        add("aios_node_up", "1 while the node's live metrics are fresh", base, 1 if doc else 0)
        if not doc:
            continue
        vcpu, memory = doc.get("vcpu") or {}, doc.get("memory") or {}
        add("aios_node_cpu_count", "logical CPUs", base, vcpu.get("count"))
        add("aios_node_cpu_utilization_percent", "CPU utilization", base, vcpu.get("utilization"))
        for window in ("1m", "5m", "15m"):
            add(
                "aios_node_load",
                "load average",
                {**base, "window": window},
                vcpu.get(f"load_{window}"),
            )
        add("aios_node_processes", "processes", base, vcpu.get("totalProcesses"))
        add("aios_node_memory_total_mb", "memory (MB)", base, memory.get("totalMem"))
        add("aios_node_memory_free_mb", "available memory (MB)", base, memory.get("freeMem"))
        add("aios_node_memory_used_mb", "used memory (MB)", base, memory.get("usedMem"))
        add("aios_node_swap_used_mb", "used swap (MB)", base, memory.get("usedSwap"))
        storage = doc.get("storage") or {}
        add("aios_node_storage_free_mb", "free storage (MB)", base, storage.get("freeMem"))
        network = doc.get("network") or {}
        add("aios_node_network_tx_bytes_total", "bytes sent", base, network.get("txBytesTotal"))
        add("aios_node_network_rx_bytes_total", "bytes received", base, network.get("rxBytesTotal"))
        gpus = doc.get("gpus") or {}
        add("aios_node_gpu_count", "GPUs", base, gpus.get("count"))
        for gpu in gpus.get("gpus") or []:
            labels = {**base, "gpu": gpu.get("gpu_id"), "model": gpu.get("modelName", "")}
            add("aios_node_gpu_memory_total_mb", "GPU memory (MB)", labels, gpu.get("totalMem"))
            add("aios_node_gpu_memory_used_mb", "used GPU memory (MB)", labels, gpu.get("usedMem"))
            add("aios_node_gpu_memory_free_mb", "free GPU memory (MB)", labels, gpu.get("freeMem"))
            add(
                "aios_node_gpu_utilization_percent",
                "GPU (CUDA) utilization",
                labels,
                gpu.get("cudaUtilization"),
            )
            add(
                "aios_node_gpu_temperature_celsius",
                "GPU temperature",
                labels,
                gpu.get("temperature"),
            )
    for live_row in LiveEntityMetrics.objects.filter(ts__gte=fresh_cutoff(ENTITY_TTL_S))[:2000]:
        for name, value in (live_row.values or {}).items():
            add(
                "aios_entity_metric",
                "latest block / vDAG metric values",
                {
                    "entity_type": live_row.entity_type,
                    "entity_id": live_row.entity_id,
                    "name": name,
                },
                value,
            )
    lines = []
    for name, (help_text, samples) in series.items():
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(samples)
    return "\n".join(lines) + "\n"


# -- node reports pushed over HTTP (the node-metrics agent, ``block_sdk.node_metrics``) -------
# A report is one sample (what ``HardwareSampler.sample()`` returns) or ``{"samples": [...]}``:
# an agent that could not reach the control plane sends what it buffered, oldest first.
MAX_REPORT_SAMPLES = 120
MAX_FUTURE_SKEW_S = 300.0  # node clocks drift; a sample further ahead than this is refused
MAX_GROUP_KEYS = 64
MAX_GPUS = 64
MAX_TEXT = 200
REPORT_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")


def _bad_sample(index: int, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"sample {index}: {message}", code="invalid_node_report", details=[{"sample": index}]
    )


def _clean_scalar(index: int, where: str, value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _bad_sample(index, f"{where} must be a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise _bad_sample(index, f"{where} is longer than {MAX_TEXT} characters")
        return value
    raise _bad_sample(index, f"{where} must be a number, a string or a boolean")


def _clean_mapping(index: int, where: str, value: Any, *, nested: bool) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad_sample(index, f"{where} must be an object")
    if len(value) > MAX_GROUP_KEYS:
        raise _bad_sample(index, f"{where} has more than {MAX_GROUP_KEYS} keys")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not REPORT_KEY_RE.match(key):
            raise _bad_sample(index, f"{where} has an invalid key {str(key)[:70]!r}")
        here = f"{where}.{key}"
        if nested and isinstance(item, dict):
            out[key] = _clean_mapping(index, here, item, nested=False)
        elif where == "gpus" and key == "gpus":
            if not isinstance(item, list) or len(item) > MAX_GPUS:
                raise _bad_sample(index, f"gpus.gpus must be a list of at most {MAX_GPUS} GPUs")
            out[key] = [
                _clean_mapping(index, f"gpus.gpus[{i}]", gpu, nested=False)
                for i, gpu in enumerate(item)
            ]
        else:
            out[key] = _clean_scalar(index, here, item)
    return out


def clean_node_sample(doc: Any, *, index: int = 0, now: float | None = None) -> dict[str, Any]:
    """One pushed sample, checked and reduced to ``ts`` plus the known groups.

    Unknown top-level keys are ignored (a newer agent may send more); a sample needs at least
    one group, finite numbers, short strings, and a ``ts`` (epoch seconds, default now) no
    further than ``MAX_FUTURE_SKEW_S`` ahead. Raises ``ValidationFailed``.
    """
    now = time_now() if now is None else now
    if not isinstance(doc, dict):
        raise _bad_sample(index, "must be an object")
    ts = doc.get("ts", now)
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts) or ts <= 0:
        raise _bad_sample(index, "ts must be epoch seconds")
    if ts > now + MAX_FUTURE_SKEW_S:
        raise _bad_sample(index, f"ts is more than {MAX_FUTURE_SKEW_S:.0f}s in the future")
    groups = {
        group: _clean_mapping(index, group, doc[group], nested=group == "disk")
        for group in GROUPS
        if doc.get(group) is not None
    }
    if not groups:
        raise _bad_sample(index, f"has none of the metric groups {', '.join(GROUPS)}")
    return {"ts": float(ts), **groups}


def time_now() -> float:
    return timezone.now().timestamp()


def check_node_reporter(user: Any, node: Any) -> None:
    """Only staff or the owner of the node's cluster may report a node's metrics."""
    from apps.core.errors import Forbidden

    if getattr(user, "is_staff", False):
        return
    owner_id = node.cluster.owner_id
    if owner_id is None or owner_id != getattr(user, "pk", None):
        raise Forbidden(
            f"only staff or the owner of cluster {node.cluster_id!r} may report metrics for "
            f"node {node.id!r}"
        )


def record_node_report(node: Any, payload: Any, *, now: float | None = None) -> dict[str, Any]:
    """Store a node report pushed by a node-metrics agent, as the node agent's report would be.

    The newest sample, when fresher than the live TTL, goes through ``record_node_metrics``
    (live value, latest row, throttled history, cluster aggregate) and counts as the node's
    heartbeat. Older samples (what the agent buffered while the control plane was away) only
    fill history, thinned to one per ``HISTORY_INTERVAL_S`` and never before the newest row
    already stored, so a resent batch is not stored twice. Samples past the retention are
    dropped. Raises ``ValidationFailed`` for a bad payload.
    """
    now = time_now() if now is None else now
    if isinstance(payload, dict) and "samples" in payload:
        raw = payload["samples"]
        if not isinstance(raw, list):
            raise ValidationFailed("samples must be a list", code="invalid_node_report")
    else:
        raw = [payload]
    if not raw or len(raw) > MAX_REPORT_SAMPLES:
        raise ValidationFailed(
            f"a report holds 1 to {MAX_REPORT_SAMPLES} samples", code="invalid_node_report"
        )
    if isinstance(payload, dict):
        for key, expected in (("node_id", node.id), ("cluster_id", node.cluster_id)):
            if payload.get(key) not in (None, expected):
                raise ValidationFailed(
                    f"{key} {payload.get(key)!r} does not match the node's {expected!r}",
                    code="invalid_node_report",
                )
    samples = sorted(
        (clean_node_sample(doc, index=i, now=now) for i, doc in enumerate(raw)),
        key=lambda s: s["ts"],
    )
    oldest_kept = now - RETENTION.total_seconds()
    kept = [s for s in samples if s["ts"] >= oldest_kept]
    discarded = len(samples) - len(kept)
    newest = kept[-1] if kept else None
    live = newest is not None and now - newest["ts"] <= NODE_TTL_S
    backfill = kept[:-1] if live else kept

    last = (
        NodeMetricSample.objects.filter(node_id=node.id, resolution_s=NodeMetricSample.RAW)
        .order_by("-ts")
        .values_list("ts", flat=True)
        .first()
    )
    floor = last.timestamp() + HISTORY_INTERVAL_S if last else 0.0
    rows = []
    for sample in backfill:
        if sample["ts"] < floor:
            continue
        rows.append(
            NodeMetricSample(
                node_id=node.id,
                cluster_id=node.cluster_id,
                ts=_ts(sample["ts"]),
                values=flatten(sample),
            )
        )
        floor = sample["ts"] + HISTORY_INTERVAL_S
    if rows:
        NodeMetricSample.objects.bulk_create(rows)
    if live:
        record_node_metrics(node.id, node.cluster_id, newest)
        _note_report_heartbeat(node)
    log.info(
        "event=node_report node_id=%s samples=%s live=%s history=%s discarded=%s",
        node.id,
        len(samples),
        live,
        len(rows),
        discarded,
    )
    return {
        "node_id": node.id,
        "cluster_id": node.cluster_id,
        "accepted": len(samples),
        "live": live,
        "history": len(rows),
        "discarded": discarded,
        "ttl_s": NODE_TTL_S,
    }


def _note_report_heartbeat(node: Any) -> None:
    """A fresh report proves the node is up. On the local driver it is the node agent's
    heartbeat (a pending node becomes ready); elsewhere the driver owns readiness (the
    Kubernetes sync reads the kubelet's), so only the heartbeat time moves."""
    from apps.clusters import services as cluster_services
    from apps.clusters.choices import DriverName
    from apps.clusters.models import Node

    if node.cluster.driver == DriverName.LOCAL:
        cluster_services.heartbeat(node.id)
    else:
        Node.objects.filter(pk=node.pk).update(last_heartbeat=timezone.now())
