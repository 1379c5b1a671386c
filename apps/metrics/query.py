"""The core query language over live metrics (``clusterMetricsQuery`` and friends).

Variables may carry the prefixes the reference uses in its examples
(``cluster.vcpu.load_15m``, ``cluster.gpu.totalFreeMem``, ``metrics.resource.node.vcpu.load_15m``,
``node.memory.freeMem``); they are stripped before the allow-list resolves them. Numeric
strings compared with ``< <= > >=`` become numbers (the reference writes ``"value": "10"``),
so comparisons are numeric and not jsonb type-order comparisons.
"""

from __future__ import annotations

import re
from typing import Any

from django.db.models import Q, QuerySet

from apps.core.query import QueryFields, compile_query
from apps.metrics.models import LiveClusterMetrics, LiveEntityMetrics, LiveNodeMetrics
from apps.metrics.services import ENTITY_TTL_S, fresh_cutoff

PREFIXES = (
    "metrics.resource.cluster.",
    "metrics.resource.node.",
    "metrics.resource.",
    "metrics.",
    "cluster.",
    "node.",
    "block.",
    "vdag.",
)
NUMBER_RE = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")
COMPARISONS = {">", ">=", "<", "<="}
MONGO_COMPARISONS = {"$gt", "$gte", "$lt", "$lte"}

NODE_FIELDS = QueryFields(
    fields={
        "node_id": "node_id",
        "nodeId": "node_id",
        "cluster_id": "cluster_id",
        "clusterId": "cluster_id",
        "id": "node_id",
    },
    json_fields={g: g for g in ("vcpu", "memory", "gpus", "disk", "storage", "network")}
    | {"gpu": "gpus", "node": "doc"},
)
CLUSTER_FIELDS = QueryFields(
    fields={"cluster_id": "cluster_id", "clusterId": "cluster_id", "id": "cluster_id"},
    json_fields={g: g for g in ("nodes", "vcpu", "memory", "gpus", "storage", "network")}
    | {"gpu": "gpus", "cluster": "doc"},
)
ENTITY_FIELDS = QueryFields(
    fields={
        "entity_type": "entity_type",
        "entity_id": "entity_id",
        "id": "entity_id",
        "blockId": "entity_id",
        "vdagId": "entity_id",
    },
    json_fields={"values": "values", "labels": "labels"},
)


def _strip(variable: Any, keep: set[str]) -> Any:
    if not isinstance(variable, str):
        return variable
    for prefix in PREFIXES:
        if variable.startswith(prefix) and variable.split(".", 1)[0] not in keep:
            return variable[len(prefix) :]
    return variable


def _number(value: Any) -> Any:
    if isinstance(value, str) and NUMBER_RE.match(value.strip()):
        number = float(value)
        return int(number) if number.is_integer() and "." not in value else number
    return value


def normalize(query: Any, keep: set[str] = frozenset(), depth: int = 0) -> Any:
    """Strip reference prefixes from variable names and coerce numeric comparison values."""
    if depth > 32:
        return query
    if isinstance(query, list):
        return [normalize(q, keep, depth + 1) for q in query]
    if not isinstance(query, dict):
        return query
    if "variable" in query:
        out = dict(query)
        out["variable"] = _strip(query["variable"], keep)
        if str(query.get("operator", "")).upper() in COMPARISONS:
            out["value"] = _number(query.get("value"))
        return out
    out = {}
    for key, value in query.items():
        if key.startswith("$"):
            if key in MONGO_COMPARISONS:
                out[key] = _number(value)
            else:
                out[key] = normalize(value, keep, depth + 1)
        else:
            out[_strip(key, keep)] = normalize(value, keep, depth + 1)
    return out


def query_nodes(query: Any, *, fresh_only: bool = True) -> QuerySet:
    queryset = LiveNodeMetrics.objects.all()
    if fresh_only:
        queryset = queryset.filter(ts__gte=fresh_cutoff())
    return queryset.filter(compile_query(normalize(query), NODE_FIELDS))


def query_clusters(query: Any, *, fresh_only: bool = True) -> QuerySet:
    queryset = LiveClusterMetrics.objects.all()
    if fresh_only:
        queryset = queryset.filter(ts__gte=fresh_cutoff())
    return queryset.filter(compile_query(normalize(query), CLUSTER_FIELDS))


def query_entities(entity_type: str, query: Any, *, fresh_only: bool = True) -> QuerySet:
    queryset = LiveEntityMetrics.objects.filter(entity_type=entity_type)
    if fresh_only:
        queryset = queryset.filter(ts__gte=fresh_cutoff(ENTITY_TTL_S))
    normalized = normalize(query)
    if normalized in (None, {}):
        return queryset
    return queryset.filter(_entity_q(normalized))


def _entity_q(query: Any) -> Q:
    # Bare metric names (``latency < 5``) read from ``values``.
    def rename(node: Any) -> Any:
        if isinstance(node, list):
            return [rename(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "variable" in node:
            var = node["variable"]
            root = var.split(".", 1)[0] if isinstance(var, str) else var
            if (
                isinstance(var, str)
                and root not in ENTITY_FIELDS.fields
                and root
                not in (
                    "values",
                    "labels",
                )
            ):
                node = {**node, "variable": f"values.{var}"}
            return node
        out = {}
        for key, value in node.items():
            if key.startswith("$"):
                out[key] = rename(value)
            else:
                root = key.split(".", 1)[0]
                new = key
                if root not in ENTITY_FIELDS.fields and root not in ("values", "labels"):
                    new = f"values.{key}"
                out[new] = value
        return out

    return compile_query(rename(query), ENTITY_FIELDS)
