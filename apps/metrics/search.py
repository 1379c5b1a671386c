"""What the search engine indexes for the metrics system: live ``clusterMetrics``,
``blockMetrics`` and ``vdagMetrics`` (fresh values only), each narrowing its entity."""

from __future__ import annotations

from typing import Any

from apps.core.query import QueryFields
from apps.metrics.query import CLUSTER_FIELDS, ENTITY_FIELDS


def _fresh_clusters():
    from apps.metrics.models import LiveClusterMetrics
    from apps.metrics.services import fresh_cutoff

    return LiveClusterMetrics.objects.filter(ts__gte=fresh_cutoff())


def _fresh_entities(entity_type: str):
    def queryset():
        from apps.metrics.models import LiveEntityMetrics
        from apps.metrics.services import ENTITY_TTL_S, fresh_cutoff

        return LiveEntityMetrics.objects.filter(
            entity_type=entity_type, ts__gte=fresh_cutoff(ENTITY_TTL_S)
        )

    return queryset


def _cluster_doc(row) -> dict[str, Any]:
    return {"cluster_id": row.cluster_id, "ts": row.ts.isoformat(), **(row.doc or {})}


def _entity_doc(row) -> dict[str, Any]:
    return {
        "entity_type": row.entity_type,
        "entity_id": row.entity_id,
        "ts": row.ts.isoformat(),
        "values": row.values,
        "labels": row.labels,
    }


# Bare metric names (``latency``) live under ``values``; allow them through ``values.``.
_ENTITY_SEARCH_FIELDS = QueryFields(
    fields=dict(ENTITY_FIELDS.fields),
    json_fields={**ENTITY_FIELDS.json_fields, "metrics": "values"},
)


def register() -> None:
    try:
        from apps.search.registry import Relation, add_relation
        from apps.search.registry import register as register_entity
    except ImportError:  # pragma: no cover - the search app is always installed
        return
    register_entity(
        "clusterMetrics",
        _fresh_clusters,
        CLUSTER_FIELDS,
        _cluster_doc,
        relations=[Relation("cluster", "cluster_id", "pk")],
        id_key="cluster_id",
    )
    add_relation("cluster", "clusterMetrics", "pk", "cluster_id")
    for match_type, entity_type, owner in (
        ("blockMetrics", "block", "block"),
        ("vdagMetrics", "vdag", "vdag"),
    ):
        register_entity(
            match_type,
            _fresh_entities(entity_type),
            _ENTITY_SEARCH_FIELDS,
            _entity_doc,
            id_key="entity_id",
        )
        add_relation(owner, match_type, "pk", "entity_id")
