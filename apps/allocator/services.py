"""Placement of block instances (DESIGN §6; reference §1.2 flow, §1.7, §3.3 #4-#6).

``allocate`` runs the whole flow: candidate clusters from the search engine
(``clusterAllocator.parameters.filter``: ``clusterQuery`` / ``clusterMetricsQuery``) →
``clusterAllocator`` ``selection`` → ``resourceAllocator`` ``dry_run`` per candidate (score
0..1 with node and GPUs) → ``clusterAllocator`` ``post_dry_run`` → ``resourceAllocator``
``allocation`` on the winner, inside a transaction that locks the winner's node rows, so the
reservation (``Allocation`` + ``GPUAllocation`` rows) is made against what is really free.
Dry-run stops before the last step and writes nothing. Policies default to the built-in
best fit (``aios.allocator_best_fit:1.0-stable``).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Q, Sum

from apps.allocator.models import Allocation, GPUAllocation
from apps.clusters import policy_calls
from apps.clusters.choices import ClusterStatus, DriverName, NodeStatus
from apps.clusters.models import GPU, Cluster, Node
from apps.core.errors import ApiError, Conflict, ValidationFailed

log = logging.getLogger("aios.allocator")

DEFAULT_POLICY = policy_calls.builtin_uri("allocator_best_fit")
MAX_INSTANCES = 256
COMMIT_ATTEMPTS = 3  # the winner, then the next best candidates if it filled up meanwhile


class AllocationError(Conflict):
    """Nothing fits (409): the message says why, ``details`` what each candidate said."""

    code = "no_capacity"


@dataclass
class PolicySpec:
    uri: str = DEFAULT_POLICY
    parameters: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class InstancePlacement:
    instance_id: str | None
    node_id: str
    gpus: list[int]
    score: float
    allocation_id: int | None = None


@dataclass
class AllocationDecision:
    cluster_id: str
    node_id: str
    gpus: list[int]
    score: float
    instances: list[InstancePlacement]
    dry_run: bool
    block_id: str = ""
    requirements: dict[str, Any] = field(default_factory=dict)
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- reading the block spec -------------------------------------------------------------------
def spec_values(block_spec: Any) -> dict[str, Any]:
    """A block spec's values from the values themselves or the parser envelope."""
    if not isinstance(block_spec, dict):
        raise ValidationFailed("the block spec must be a JSON object")
    body = block_spec.get("body")
    if isinstance(body, dict):
        values = (body.get("spec") or {}).get("values", body.get("values"))
        if not isinstance(values, dict):
            raise ValidationFailed("body.spec.values must be a JSON object")
        return values
    return block_spec


def policy_specs(values: dict[str, Any]) -> dict[str, PolicySpec]:
    """``policyRulesSpec`` entries by name (``{"values": {...}}`` or flat)."""
    found: dict[str, PolicySpec] = {}
    rules = values.get("policyRulesSpec") or []
    if not isinstance(rules, list):
        raise ValidationFailed("policyRulesSpec must be a list")
    for entry in rules:
        if not isinstance(entry, dict):
            raise ValidationFailed("each policyRulesSpec entry is an object")
        rule = entry.get("values", entry)
        name = rule.get("name")
        if name not in ("clusterAllocator", "resourceAllocator"):
            continue
        uri = rule.get("policyRuleURI") or rule.get("policy_rule_uri") or DEFAULT_POLICY
        parameters, settings_ = rule.get("parameters") or {}, rule.get("settings") or {}
        if not isinstance(parameters, dict) or not isinstance(settings_, dict):
            raise ValidationFailed(f"{name}: parameters and settings must be objects")
        found[name] = PolicySpec(str(uri), dict(parameters), dict(settings_))
    found.setdefault("clusterAllocator", PolicySpec())
    found.setdefault("resourceAllocator", PolicySpec())
    return found


def _number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValidationFailed(f"{what} must be a number, got {value!r}") from None
    if number < 0:
        raise ValidationFailed(f"{what} cannot be negative")
    return number


def requirements_of(values: dict[str, Any], resource: PolicySpec) -> dict[str, Any]:
    """What one instance needs and reserves, from ``resourceAllocator.parameters`` and the
    optional ``resourceRequirements`` of the spec. Names: ``gpus``, ``min_gpu_free_memory``
    (MB per GPU), ``max_gpu_utilization`` (0..1 or a percentage), ``gpu_model``,
    ``shared_gpu``, ``vcpus``, ``memory`` (MB) — the same as the built-in policy reads."""
    extra = values.get("resourceRequirements") or {}
    if not isinstance(extra, dict):
        raise ValidationFailed("resourceRequirements must be an object")
    source = {**resource.parameters, **extra}

    def first(*names: str, default: Any = None) -> Any:
        for name in names:
            if source.get(name) is not None:
                return source[name]
        return default

    util = first("max_gpu_utilization", "maxGpuUtilization")
    util = _number(util, "max_gpu_utilization") if util is not None else None
    if util is not None and util > 1:
        util /= 100.0
    gpus = _number(first("gpus", "gpu_count", "gpuCount", default=0), "gpus")
    if gpus != int(gpus) or gpus > 64:
        raise ValidationFailed("gpus must be a whole number of GPUs (at most 64)")
    model = first("gpu_model", "gpuModel")
    return {
        "gpus": int(gpus),
        "gpu_memory_mb": int(
            _number(
                first("min_gpu_free_memory", "gpu_memory_mb", "gpuMemory", default=0),
                "min_gpu_free_memory",
            )
        ),
        "max_gpu_utilization": util,
        "gpu_model": str(model) if model else None,
        "shared_gpu": bool(first("shared_gpu", "sharedGpu", default=False)),
        "vcpus": _number(first("vcpus", "cpus", "cpu", default=0), "vcpus"),
        "memory_mb": int(_number(first("memory_mb", "memory", default=0), "memory")),
    }


def instances_of(values: dict[str, Any], instances: int | None) -> int:
    count = instances if instances is not None else values.get("minInstances") or 1
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_INSTANCES:
        raise ValidationFailed(f"the number of instances must be 1 to {MAX_INSTANCES}")
    return count


# -- snapshots: what the policies see -----------------------------------------------------------
CLUSTER_DOC_FIELDS = (
    "id",
    "region_id",
    "status",
    "driver",
    "gpus",
    "vcpus",
    "memory",
    "config",
    "tags",
    "cluster_metadata",
    "reputation",
    "policy_fields",
)


def cluster_light_doc(row: dict[str, Any]) -> dict[str, Any]:
    """A cluster as the allocation policies see it (no nodes: they come separately)."""
    return {
        "id": row["id"],
        "regionId": row["region_id"],
        "status": row["status"],
        "driver": row["driver"],
        "gpus": row["gpus"],
        "vcpus": row["vcpus"],
        "memory": row["memory"],
        "config": {k: v for k, v in (row["config"] or {}).items() if k != "urlMap"},
        "tags": row["tags"],
        "clusterMetadata": row["cluster_metadata"],
        "reputation": row["reputation"],
    }


def _cluster_rows(cluster_ids) -> dict[str, dict[str, Any]]:
    fields = [f for f in CLUSTER_DOC_FIELDS if f != "policy_fields"]
    return {row["id"]: row for row in Cluster.objects.filter(pk__in=cluster_ids).values(*fields)}


def _healthy_nodes(cluster_ids):
    """Nodes placements may use: ready, schedulable, and (local driver) heartbeating."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.clusters import conf

    cutoff = timezone.now() - timedelta(seconds=conf.NODE_STALE_S)
    return Node.objects.filter(
        cluster_id__in=cluster_ids, schedulable=True, status=NodeStatus.READY
    ).filter(Q(last_heartbeat__gte=cutoff) | ~Q(cluster__driver=DriverName.LOCAL))


def _reservations(node_ids) -> dict[str, tuple[float, int]]:
    return {
        node_id: (float(vcpus or 0), int(memory or 0))
        for node_id, vcpus, memory in Allocation.objects.filter(node_id__in=node_ids)
        .values("node_id")
        .annotate(held_vcpus=Sum("vcpus"), held_memory=Sum("memory_mb"))
        .values_list("node_id", "held_vcpus", "held_memory")
    }


_CAPACITY_SQL = """
WITH healthy AS ({healthy}),
held AS (
    SELECT node_id, SUM(vcpus) AS vcpus, SUM(memory_mb) AS memory_mb
    FROM allocator_allocation GROUP BY node_id
),
gpu_held AS (
    SELECT gpu_id, BOOL_OR(exclusive) AS exclusive,
           COALESCE(SUM(memory_mb) FILTER (WHERE NOT exclusive), 0) AS shared_mb
    FROM allocator_gpuallocation GROUP BY gpu_id
),
node_caps AS (
    SELECT h.cluster_id, COUNT(*) AS healthy_nodes,
           MAX(COALESCE((h.vcpus ->> 'count')::float, 0) - COALESCE(held.vcpus, 0))
               AS max_free_vcpus,
           MAX(h.memory - COALESCE(held.memory_mb, 0)) AS max_free_memory_mb
    FROM healthy h LEFT JOIN held ON held.node_id = h.id
    GROUP BY h.cluster_id
),
gpu_caps AS (
    SELECT h.cluster_id, COUNT(*) AS usable_gpus,
           MAX(g.memory_mb - COALESCE(gh.shared_mb, 0)) AS max_gpu_free_mb
    FROM clusters_gpu g
    JOIN healthy h ON h.id = g.node_id
    LEFT JOIN gpu_held gh ON gh.gpu_id = g.id
    WHERE gh.exclusive IS NOT TRUE
    GROUP BY h.cluster_id
)
SELECT n.cluster_id, n.healthy_nodes, n.max_free_vcpus, n.max_free_memory_mb,
       COALESCE(g.usable_gpus, 0), COALESCE(g.max_gpu_free_mb, 0)
FROM node_caps n LEFT JOIN gpu_caps g ON g.cluster_id = n.cluster_id
"""


def capacity_summaries(cluster_ids) -> dict[str, dict[str, Any]]:
    """Per cluster, from PostgreSQL alone (accounting, not live metrics): healthy nodes,
    GPUs not held exclusively, the largest such GPU's unreserved memory, the most free
    vCPUs and memory on one node. One query, cheap enough to run over every candidate."""
    from django.db import connection

    healthy_sql, params = (
        _healthy_nodes(cluster_ids)
        .values("id", "cluster_id", "vcpus", "memory")
        .query.sql_with_params()
    )
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "healthy_nodes": 0,
            "usable_gpus": 0,
            "max_gpu_free_mb": 0,
            "max_free_vcpus": 0.0,
            "max_free_memory_mb": 0,
        }
    )
    with connection.cursor() as cursor:
        cursor.execute(_CAPACITY_SQL.format(healthy=healthy_sql), params)
        for cluster_id, nodes, vcpus, memory, gpus, gpu_free in cursor.fetchall():
            out[cluster_id] = {
                "healthy_nodes": int(nodes),
                "usable_gpus": int(gpus),
                "max_gpu_free_mb": int(gpu_free or 0),
                "max_free_vcpus": float(vcpus or 0),
                "max_free_memory_mb": int(memory or 0),
            }
    return out


def build_snapshots(cluster_ids: list[str]) -> dict[str, dict[str, Any]]:
    """For each cluster: its document, live metrics, healthy nodes with what is free on
    them (accounting and live metrics combined), and a capacity summary. A fixed number
    of queries whatever the number of clusters; rows are read as tuples, not models."""
    from apps.metrics.services import aggregate, nodes_live_metrics

    clusters = _cluster_rows(cluster_ids)
    node_rows = list(
        _healthy_nodes(list(clusters))
        .order_by("cluster_id", "id")
        .values_list("id", "cluster_id", "vcpus", "memory", "status")
    )
    node_ids = [row[0] for row in node_rows]
    gpus_by_node: dict[str, list[tuple]] = defaultdict(list)
    for row in (
        GPU.objects.filter(node_id__in=node_ids)
        .order_by("node_id", "index")
        .values_list("node_id", "id", "index", "model", "memory_mb", "shared")
    ):
        gpus_by_node[row[0]].append(row)
    held = _reservations(node_ids)
    gpu_state: dict[int, tuple[int, int]] = {
        gpu_id: (int(n_exclusive or 0), int(shared_mb or 0))
        for gpu_id, n_exclusive, shared_mb in GPUAllocation.objects.filter(
            gpu__node_id__in=node_ids
        )
        .values("gpu_id")
        .annotate(
            n_exclusive=Count("id", filter=Q(exclusive=True)),
            shared_mb=Sum("memory_mb", filter=Q(exclusive=False)),
        )
        .values_list("gpu_id", "n_exclusive", "shared_mb")
    }
    live = nodes_live_metrics(node_ids)
    out: dict[str, dict[str, Any]] = {
        cid: {"doc": cluster_light_doc(row), "nodes": [], "node_docs": {}, "row": row}
        for cid, row in clusters.items()
    }
    for node_id, cluster_id, vcpus, memory, status in node_rows:
        metrics = live.get(node_id)
        entry = out[cluster_id]
        entry["node_docs"][node_id] = metrics
        entry["nodes"].append(
            _node_snapshot(
                node_id, status, vcpus, memory, gpus_by_node[node_id], held, gpu_state, metrics
            )
        )
    for cid, entry in out.items():
        entry["metrics"] = aggregate(cid, entry.pop("node_docs"))
        entry["capacity"] = _capacity(entry["nodes"])
    return out


def _node_snapshot(node_id, status, vcpus, memory, gpus, held, gpu_state, metrics) -> dict:
    used_vcpus, used_memory = held.get(node_id, (0.0, 0))
    metric_gpus = {
        g.get("gpu_id"): g for g in ((metrics or {}).get("gpus") or {}).get("gpus", []) or []
    }
    gpu_docs = []
    for _node, gpu_pk, index, model, memory_mb, shared in gpus:
        n_exclusive, shared_reserved = gpu_state.get(gpu_pk, (0, 0))
        free = memory_mb - shared_reserved
        measured = metric_gpus.get(index)
        utilization = None
        if measured and not measured.get("declared"):
            # Memory used outside AIOS counts too: the measured free memory caps it.
            free = min(free, int(measured.get("freeMem") or 0))
            utilization = float(measured.get("cudaUtilization") or 0) / 100.0
        gpu_docs.append(
            {
                "index": index,
                "model": model,
                "memory_mb": memory_mb,
                "shared": shared,
                "exclusive_taken": n_exclusive > 0,
                "shared_reserved_mb": shared_reserved,
                "free_memory_mb": max(0, free),
                "utilization": utilization,
            }
        )
    vcpu_count = float((vcpus or {}).get("count") or 0)
    memory_free = memory - used_memory
    if metrics:
        memory_free = min(memory_free, int((metrics.get("memory") or {}).get("freeMem") or 0))
    return {
        "node_id": node_id,
        "status": status,
        "vcpus": {"count": vcpu_count, "free": vcpu_count - used_vcpus},
        "memory": {"total": memory, "free": max(0, memory_free)},
        "load_15m": ((metrics or {}).get("vcpu") or {}).get("load_15m"),
        "gpus": gpu_docs,
    }


def _capacity(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    usable = [g for n in nodes for g in n["gpus"] if not g["exclusive_taken"]]
    return {
        "healthy_nodes": len(nodes),
        "usable_gpus": len(usable),
        "max_gpu_free_mb": max((g["free_memory_mb"] for g in usable), default=0),
        "max_free_vcpus": max((n["vcpus"]["free"] for n in nodes), default=0),
        "max_free_memory_mb": max((n["memory"]["free"] for n in nodes), default=0),
    }


def _latest_cluster_metrics(cluster_ids) -> dict[str, dict[str, Any]]:
    """The latest fresh aggregate of each cluster (one row per cluster, no Redis)."""
    from apps.metrics.models import LiveClusterMetrics
    from apps.metrics.services import fresh_cutoff

    return dict(
        LiveClusterMetrics.objects.filter(
            cluster_id__in=cluster_ids, ts__gte=fresh_cutoff()
        ).values_list("cluster_id", "doc")
    )


def _execution(row: dict[str, Any]) -> tuple[str, str]:
    config = row.get("config") or {}
    mode = config.get("policyExecutionMode") or "local"
    mode = "remote" if mode in ("remote", "distributed") else "local"
    return mode, str(config.get("policyExecutorId") or "")


# -- candidates ------------------------------------------------------------------------------
def candidate_clusters(cluster_allocator: PolicySpec, *, clusters: list[str] | None = None):
    """Live clusters matching ``clusterAllocator.parameters.filter`` (or the given ids), as
    a queryset: later queries use it as a subquery instead of a long list of ids."""
    queryset = Cluster.objects.filter(status=ClusterStatus.LIVE)
    if clusters is not None:
        if not isinstance(clusters, list) or not all(isinstance(c, str) for c in clusters):
            raise ValidationFailed("clusters must be a list of cluster ids")
        queryset = queryset.filter(pk__in=clusters)
    filter_ = cluster_allocator.parameters.get("filter")
    if filter_:
        queryset = queryset.filter(pk__in=_filtered_cluster_ids(filter_))
    return queryset.order_by("id")


def candidate_cluster_ids(
    cluster_allocator: PolicySpec, *, clusters: list[str] | None = None
) -> list[str]:
    return list(
        candidate_clusters(cluster_allocator, clusters=clusters).values_list("id", flat=True)
    )


def _filtered_cluster_ids(filter_: Any):
    from apps.metrics.query import normalize

    if not isinstance(filter_, dict):
        raise ValidationFailed("clusterAllocator.parameters.filter must be an object")
    # The reference writes numbers as strings ("value": "10"): compare them as numbers.
    filter_ = {key: normalize(query) for key, query in filter_.items()}
    try:
        from apps.search.engine import filter_queryset
    except ImportError:  # pragma: no cover - the search app is always installed
        filter_queryset = None
    if filter_queryset is not None:
        return filter_queryset("cluster", filter_).values("pk")
    from apps.clusters.search import CLUSTER_QUERY_FIELDS
    from apps.core.query import compile_query
    from apps.metrics.query import query_clusters

    queryset = Cluster.objects.all()
    if filter_.get("clusterQuery"):
        queryset = queryset.filter(compile_query(filter_["clusterQuery"], CLUSTER_QUERY_FIELDS))
    if filter_.get("clusterMetricsQuery"):
        queryset = queryset.filter(
            pk__in=query_clusters(filter_["clusterMetricsQuery"]).values("cluster_id")
        )
    return queryset.values("pk")


# -- running the policies ------------------------------------------------------------------------
def _evaluate(spec: PolicySpec, input_data: dict[str, Any], *, cluster: dict | None = None):
    mode, executor = _execution(cluster) if cluster is not None else ("local", "")
    return policy_calls.evaluate(
        spec.uri,
        input_data,
        parameters=spec.parameters,
        settings=spec.settings,
        execution_mode=mode,
        executor_id=executor,
        builtin_in_process=True,
    )


def _payload(values, snapshot, requirements, instances) -> dict[str, Any]:
    return {
        "block": values,
        "cluster": snapshot["doc"],
        "cluster_metrics": snapshot["metrics"],
        "healthy_nodes": snapshot["nodes"],
        "instances": instances,
        "requirements": requirements,
    }


def _score_data(result: Any, uri: str) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise policy_calls.PolicyCallFailed(
            f"resourceAllocator {uri} dry_run returned {type(result).__name__}, expected "
            '{"selection_score_data": {"score", "node_info"}}'
        )
    data = result.get("selection_score_data", result)
    try:
        score = float(data.get("score", 0))
    except (TypeError, ValueError):
        score = 0.0
    return {**data, "score": max(0.0, min(1.0, score))}


def _selected_ids(result: Any, candidates: list[str], uri: str) -> list[str]:
    if not isinstance(result, dict) or not isinstance(result.get("clusters"), list):
        raise policy_calls.PolicyCallFailed(
            f'clusterAllocator {uri} selection must return {{"clusters": [...]}}'
        )
    allowed, out = set(candidates), []
    for item in result["clusters"]:
        cid = (
            item
            if isinstance(item, str)
            else (item or {}).get("id") or (item or {}).get("cluster_id")
        )
        if cid in allowed and cid not in out:
            out.append(cid)
    return out


def allocate(
    block_spec: dict[str, Any],
    *,
    dry_run: bool = False,
    instances: int | None = None,
    instance_ids: list[str] | None = None,
    clusters: list[str] | None = None,
    action: str = "allocation",
    extra_payload: dict[str, Any] | None = None,
) -> AllocationDecision:
    """Choose a cluster, node and GPUs for ``instances`` instances of a block; reserve them
    unless ``dry_run``. Raises :class:`AllocationError` (409) when nothing fits."""
    values = spec_values(block_spec)
    specs = policy_specs(values)
    ca, ra = specs["clusterAllocator"], specs["resourceAllocator"]
    req = requirements_of(values, ra)
    count = instances_of(values, instances)
    if instance_ids is not None and (len(instance_ids) != count or len(set(instance_ids)) != count):
        raise ValidationFailed(f"instance_ids must be {count} distinct ids")
    block_id = str(values.get("blockId") or "")
    candidate_qs = candidate_clusters(ca, clusters=clusters)
    fields = [f for f in CLUSTER_DOC_FIELDS if f != "policy_fields"]
    rows = {row["id"]: row for row in candidate_qs.values(*fields)}
    candidates = list(rows)
    if not candidates:
        raise AllocationError(
            "no live cluster matches the block's clusterAllocator filter"
            if ca.parameters.get("filter")
            else "there is no live cluster to place the block on"
        )
    # Selection sees every candidate with its accounting capacity and latest aggregate
    # metrics (cheap: SQL only); full snapshots are built for the selected clusters alone.
    subquery = candidate_qs.values("pk")
    capacity = capacity_summaries(subquery)
    latest = _latest_cluster_metrics(subquery)
    selection = _evaluate(
        ca,
        {
            "action": "selection",
            "filter_result": [
                {
                    **cluster_light_doc(rows[c]),
                    "cluster_metrics": latest.get(c, {}),
                    "capacity": capacity[c],
                }
                for c in candidates
            ],
            "requirements": req,
            "instances": count,
        },
    )
    selected = _selected_ids(selection, candidates, ca.uri)
    snapshots = build_snapshots(selected)
    scored: list[dict[str, Any]] = []
    for cid in selected:
        snapshot = snapshots[cid]
        result = _evaluate(
            ra,
            {"action": "dry_run", "payload": _payload(values, snapshot, req, count)},
            cluster=snapshot["row"],
        )
        scored.append({"cluster_id": cid, "score_data": _score_data(result, ra.uri)})
    summary = [
        {
            "cluster_id": s["cluster_id"],
            "score": s["score_data"]["score"],
            "node_id": (s["score_data"].get("node_info") or {}).get("node_id"),
            "reason": s["score_data"].get("reason", ""),
        }
        for s in scored
    ]
    feasible = [s for s in scored if s["score_data"]["score"] > 0]
    if not feasible:
        # Say why for the clusters the selection dropped too (failure path only, bounded).
        dropped = [c for c in candidates if c not in selected][:5]
        dropped_snapshots = build_snapshots(dropped)
        for cid in dropped:
            snapshot = dropped_snapshots[cid]
            result = _evaluate(
                ra,
                {"action": "dry_run", "payload": _payload(values, snapshot, req, count)},
                cluster=snapshot["row"],
            )
            data = _score_data(result, ra.uri)
            summary.append(
                {
                    "cluster_id": cid,
                    "score": 0.0,
                    "node_id": None,
                    "reason": "not selected by the clusterAllocator"
                    + (f": {data.get('reason')}" if data.get("reason") else ""),
                }
            )
        reasons = "; ".join(f"{s['cluster_id']}: {s['reason']}" for s in summary[:5])
        raise AllocationError(
            f"no cluster can place {count} instance(s)"
            + (f" of block {block_id}" if block_id else "")
            + (f" ({reasons})" if reasons else f" ({len(candidates)} candidate(s) rejected)"),
            details=summary or [{"candidates": candidates}],
        )
    chosen = _evaluate(ca, {"action": "post_dry_run", "clusters": feasible})
    winner_id = (chosen or {}).get("cluster_id") if isinstance(chosen, dict) else None
    if winner_id not in {s["cluster_id"] for s in feasible}:
        raise policy_calls.PolicyCallFailed(
            f"clusterAllocator {ca.uri} post_dry_run did not return one of the candidates"
        )
    order = [winner_id] + [
        s["cluster_id"]
        for s in sorted(feasible, key=lambda s: -s["score_data"]["score"])
        if s["cluster_id"] != winner_id
    ]
    if dry_run:
        winner = next(s for s in feasible if s["cluster_id"] == winner_id)
        return _decision_from_dry_run(winner, block_id, req, summary)
    last_error: ApiError | None = None
    for cid in order[:COMMIT_ATTEMPTS]:
        try:
            return _commit(
                cid,
                values,
                ra,
                req,
                count,
                instance_ids,
                block_id,
                summary,
                action,
                extra_payload or {},
            )
        except AllocationError as exc:
            last_error = exc
            log.info("event=allocation_retry cluster_id=%s reason=%s", cid, exc.message)
    raise last_error or AllocationError("nothing fits")


def _decision_from_dry_run(winner, block_id, req, summary) -> AllocationDecision:
    data = winner["score_data"]
    placements = data.get("placements") or [data.get("node_info") or {}]
    instances = [
        InstancePlacement(
            None, str(p.get("node_id")), list(p.get("gpus") or []), float(p.get("score", 0))
        )
        for p in placements
    ]
    first = instances[0]
    return AllocationDecision(
        cluster_id=winner["cluster_id"],
        node_id=first.node_id,
        gpus=first.gpus,
        score=data["score"],
        instances=instances,
        dry_run=True,
        block_id=block_id,
        requirements=req,
        candidates=summary,
    )


def _commit(
    cluster_id, values, ra, req, count, instance_ids, block_id, summary, action, extra
) -> AllocationDecision:
    with transaction.atomic():
        # Every allocation on this cluster waits here: the snapshot below is then the truth.
        list(Node.objects.select_for_update().filter(cluster_id=cluster_id).order_by("id"))
        snapshot = build_snapshots([cluster_id])[cluster_id]
        placements = _allocation_placements(snapshot, values, ra, req, count, action, extra)
        ids = list(instance_ids or [])
        while len(ids) < count:
            ids.append(f"{block_id or 'instance'}-{uuid.uuid4().hex[:8]}")
        taken = set(
            Allocation.objects.filter(instance_id__in=ids).values_list("instance_id", flat=True)
        )
        if taken:
            raise Conflict(f"instance {sorted(taken)[0]!r} already holds an allocation")
        gpu_rows = {
            (g.node_id, g.index): g for g in GPU.objects.filter(node__cluster_id=cluster_id)
        }
        result = []
        try:
            for instance_id, placement in zip(ids, placements, strict=True):
                allocation = Allocation.objects.create(
                    instance_id=instance_id,
                    block_id=block_id,
                    cluster_id=cluster_id,
                    node_id=placement["node_id"],
                    vcpus=req["vcpus"],
                    memory_mb=req["memory_mb"],
                    shared_gpus=req["shared_gpu"],
                    policy_rule_uri=ra.uri,
                    score=placement.get("score"),
                    details={"action": action},
                )
                GPUAllocation.objects.bulk_create(
                    [
                        GPUAllocation(
                            allocation=allocation,
                            gpu=gpu_rows[(placement["node_id"], index)],
                            instance_id=instance_id,
                            exclusive=not req["shared_gpu"],
                            memory_mb=req["gpu_memory_mb"] if req["shared_gpu"] else 0,
                        )
                        for index in placement["gpus"]
                    ]
                )
                result.append(
                    InstancePlacement(
                        instance_id,
                        placement["node_id"],
                        list(placement["gpus"]),
                        float(placement.get("score") or 0),
                        allocation.pk,
                    )
                )
        except IntegrityError:
            # The unique index caught a double booking the checks above should have seen.
            raise AllocationError(f"GPUs on cluster {cluster_id} were taken meanwhile") from None
    log.info(
        "event=allocated cluster_id=%s block_id=%s instances=%s",
        cluster_id,
        block_id,
        ",".join(f"{p.instance_id}@{p.node_id}:{p.gpus}" for p in result),
    )
    first = result[0]
    return AllocationDecision(
        cluster_id=cluster_id,
        node_id=first.node_id,
        gpus=first.gpus,
        score=round(sum(p.score for p in result) / len(result), 4),
        instances=result,
        dry_run=False,
        block_id=block_id,
        requirements=req,
        candidates=summary,
    )


def _allocation_placements(snapshot, values, ra, req, count, action, extra) -> list[dict]:
    """Ask the resourceAllocator for ``count`` placements and check each against the fresh
    snapshot (a policy's answer is not trusted to be free, or even to exist)."""
    nodes = {n["node_id"]: n for n in snapshot["nodes"]}
    placements: list[dict] = []
    for _ in range(count):  # bounded: a policy that places one at a time is asked again
        payload = _payload(
            values, {**snapshot, "nodes": list(nodes.values())}, req, count - len(placements)
        )
        payload.update(extra)
        result = _evaluate(ra, {"action": action, "payload": payload}, cluster=snapshot["row"])
        if not isinstance(result, dict):
            raise policy_calls.PolicyCallFailed(
                f"resourceAllocator {ra.uri} {action} returned {type(result).__name__}"
            )
        proposed = result.get("placements") or (
            [result] if result.get("node_id") is not None else []
        )
        if not proposed:
            raise AllocationError(
                f"cluster {snapshot['doc']['id']} cannot place the instance(s) now: "
                f"{result.get('reason') or 'the allocation policy found no node'}"
            )
        for placement in proposed[: count - len(placements)]:
            _check_and_consume(nodes, placement, req, snapshot["doc"]["id"])
            placements.append(placement)
        if len(placements) >= count:
            return placements
    raise AllocationError(f"the allocation policy placed {len(placements)} of {count}")


def _check_and_consume(nodes, placement, req, cluster_id) -> None:
    node_id = placement.get("node_id")
    gpus = placement.get("gpus") or []
    node = nodes.get(node_id)
    if node is None:
        raise AllocationError(
            f"the allocation policy chose node {node_id!r}, which is not a healthy, "
            f"schedulable node of cluster {cluster_id}"
        )
    if not isinstance(gpus, list) or len(set(gpus)) != len(gpus) or len(gpus) != req["gpus"]:
        raise AllocationError(
            f"the allocation policy gave {gpus!r} on {node_id}; the block needs "
            f"{req['gpus']} distinct GPU(s)"
        )
    if node["vcpus"]["free"] + 1e-9 < req["vcpus"] or node["memory"]["free"] < req["memory_mb"]:
        raise AllocationError(f"node {node_id} no longer has the CPU/memory the block needs")
    by_index = {g["index"]: g for g in node["gpus"]}
    for index in gpus:
        gpu = by_index.get(index)
        if gpu is None:
            raise AllocationError(f"node {node_id} has no GPU {index!r}")
        if gpu["exclusive_taken"]:
            raise AllocationError(f"GPU {index} of node {node_id} is already allocated")
        if req["shared_gpu"]:
            if not gpu["shared"]:
                raise AllocationError(f"GPU {index} of node {node_id} is not a shared GPU")
        elif gpu["shared_reserved_mb"] > 0:
            raise AllocationError(f"GPU {index} of node {node_id} is shared by other instances")
        if gpu["free_memory_mb"] < req["gpu_memory_mb"]:
            raise AllocationError(
                f"GPU {index} of node {node_id} has {gpu['free_memory_mb']} MB free, "
                f"< {req['gpu_memory_mb']} MB"
            )
    node["vcpus"] = {**node["vcpus"], "free": node["vcpus"]["free"] - req["vcpus"]}
    node["memory"] = {**node["memory"], "free": node["memory"]["free"] - req["memory_mb"]}
    new_gpus = []
    for gpu in node["gpus"]:
        if gpu["index"] in gpus:
            gpu = dict(gpu)
            if req["shared_gpu"]:
                gpu["free_memory_mb"] -= req["gpu_memory_mb"]
                gpu["shared_reserved_mb"] += req["gpu_memory_mb"]
            else:
                gpu["exclusive_taken"] = True
        new_gpus.append(gpu)
    node["gpus"] = new_gpus


# -- releases and other hooks ----------------------------------------------------------------------
def release(instance_id: str) -> int:
    """Free what an instance holds (idempotent); returns the number of GPUs released."""
    allocation = Allocation.objects.filter(instance_id=instance_id).first()
    if allocation is None:
        return 0
    gpus = allocation.gpu_allocations.count()
    allocation.delete()
    log.info("event=released instance_id=%s gpus=%s", instance_id, gpus)
    return gpus


def release_block(block_id: str) -> int:
    if not block_id:
        return 0
    allocations = Allocation.objects.filter(block_id=block_id)
    count = allocations.count()
    allocations.delete()
    return count


def scale(
    block_spec: dict[str, Any],
    *,
    cluster_id: str,
    instances: int,
    instance_ids: list[str] | None = None,
    block_metrics: dict[str, Any] | None = None,
) -> AllocationDecision:
    """More instances of a block that already runs on ``cluster_id`` (hook ``scale``)."""
    return allocate(
        block_spec,
        instances=instances,
        instance_ids=instance_ids,
        clusters=[cluster_id],
        action="scale",
        extra_payload={"block_metrics": block_metrics or {}},
    )


def reassign(
    block_spec: dict[str, Any],
    *,
    instance_id: str,
    new_instance_id: str | None = None,
    block_metrics: dict[str, Any] | None = None,
) -> AllocationDecision:
    """A new placement for an instance, away from its current node (hook ``reassignment``);
    the old reservation is released once the new one is made."""
    current = Allocation.objects.filter(instance_id=instance_id).first()
    if current is None:
        raise ValidationFailed(f"instance {instance_id!r} holds no allocation")
    decision = allocate(
        block_spec,
        instances=1,
        instance_ids=[new_instance_id or f"{instance_id}-r{uuid.uuid4().hex[:4]}"],
        clusters=[current.cluster_id],
        action="reassignment",
        extra_payload={
            "instance_id": instance_id,
            "current_node_id": current.node_id,
            "block_metrics": block_metrics or {},
        },
    )
    release(instance_id)
    return decision


def allocations_of(*, block_id: str | None = None, instance_id: str | None = None):
    queryset = Allocation.objects.prefetch_related("gpu_allocations__gpu")
    if block_id:
        queryset = queryset.filter(block_id=block_id)
    if instance_id:
        queryset = queryset.filter(instance_id=instance_id)
    return queryset


# -- the ad-hoc allocator (websocket) ------------------------------------------------------------
ADHOC_KEYS = {
    "adhoc",
    "policy_rule_uri",
    "clusters",
    "inputs",
    "filter",
    "search",
    "parameters",
    "settings",
    "request_id",
}


def adhoc(message: Any) -> Any:
    """Reference §1.7: run ``policy_rule_uri`` over candidate clusters and return its answer
    (``{"cluster_id", "node_id"?, "gpus"?}``). Nothing is reserved."""
    if not isinstance(message, dict):
        raise ValidationFailed("the message must be a JSON object")
    unknown = sorted(set(message) - ADHOC_KEYS)
    if unknown:
        raise ValidationFailed(
            f"unknown key {unknown[0]!r}", details=[{"allowed": sorted(ADHOC_KEYS)}]
        )
    if message.get("adhoc") is not True:
        raise ValidationFailed('"adhoc" must be true')
    uri = message.get("policy_rule_uri")
    if not isinstance(uri, str) or not uri:
        raise ValidationFailed('"policy_rule_uri" is required')
    if "inputs" not in message:
        raise ValidationFailed('"inputs" is required')
    spec = PolicySpec(
        uri, dict(message.get("parameters") or {}), dict(message.get("settings") or {})
    )
    filter_ = message.get("filter")
    if message.get("search") and not filter_:
        search = message["search"]
        filter_ = search.get("filter") if isinstance(search, dict) else None
    ids = candidate_cluster_ids(
        PolicySpec(parameters={"filter": filter_} if filter_ else {}),
        clusters=message.get("clusters"),
    )
    snapshots = build_snapshots(ids)
    input_data = {
        "cluster_data": {
            cid: {
                "data": snapshots[cid]["doc"],
                "cluster_metrics": snapshots[cid]["metrics"],
                "nodes": snapshots[cid]["nodes"],
            }
            for cid in ids
        },
        "inputs": message["inputs"],
    }
    return _evaluate(spec, input_data)
