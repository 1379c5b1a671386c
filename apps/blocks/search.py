"""What the search engine indexes for the blocks app: ``block`` (``blockQuery``), narrowed by
``blockMetrics`` (the live block metrics the metrics app keeps; registered here as a default
so the metrics app's own registration, when present, wins)."""

from __future__ import annotations

from typing import Any

from apps.core.query import QueryFields

BLOCK_QUERY_FIELDS = QueryFields(
    fields={
        "id": "id",
        "blockId": "id",
        "blockComponentURI": "component_uri",
        "componentURI": "component_uri",
        "clusterId": "cluster_id",
        "cluster": "cluster_id",
        "status": "status",
        "minInstances": "min_instances",
        "maxInstances": "max_instances",
        "createdAt": "created_at",
        "owner": "owner__username",
    },
    json_fields={
        "blockMetadata": "block_metadata",
        "blockInitData": "block_init_data",
        "initSettings": "init_settings",
        "parameters": "parameters",
        "policies": "policies",
        "tags": "tags",
        "endpoints": "endpoints",
        "inputProtocol": "input_protocol",
        "outputProtocol": "output_protocol",
    },
)


def _block_queryset():
    from apps.blocks.models import Block

    return Block.objects.select_related("owner", "cluster").prefetch_related("instances")


def _block_document(block) -> dict[str, Any]:
    from apps.blocks.api.serializers import block_document

    return block_document(block)


def _block_metrics_queryset():
    from apps.metrics.models import LiveEntityMetrics

    return LiveEntityMetrics.objects.filter(entity_type="block")


def _metrics_document(row) -> dict[str, Any]:
    return {
        "entity_type": row.entity_type,
        "entity_id": row.entity_id,
        "blockId": row.entity_id,
        "ts": row.ts.isoformat() if row.ts else None,
        "values": row.values,
        "labels": row.labels,
    }


BLOCK_METRICS_FIELDS = QueryFields(
    fields={"blockId": "entity_id", "entity_id": "entity_id", "ts": "ts"},
    json_fields={"values": "values", "metrics": "values", "labels": "labels"},
)


def register() -> None:
    try:
        from apps.search.registry import Relation
        from apps.search.registry import register as register_entity
    except ImportError:  # pragma: no cover - the search app is always installed
        return
    register_entity(
        "block",
        _block_queryset,
        BLOCK_QUERY_FIELDS,
        _block_document,
        relations=[
            Relation("cluster", "cluster_id", "pk"),
            Relation("component", "component_uri", "component_uri"),
            Relation("blockMetrics", "pk", "entity_id"),
        ],
        id_key="id",
        ordering=("id",),
    )
    register_entity(
        "blockMetrics",
        _block_metrics_queryset,
        BLOCK_METRICS_FIELDS,
        _metrics_document,
        id_key="entity_id",
        default=True,
    )
