"""What the search engine indexes for the clusters app: the ``cluster`` entity
(``clusterQuery``), narrowed by ``clusterMetricsQuery`` (registered by the metrics app)."""

from __future__ import annotations

from typing import Any

from apps.core.query import QueryFields

CLUSTER_QUERY_FIELDS = QueryFields(
    fields={
        "id": "id",
        "regionId": "region_id",
        "status": "status",
        "driver": "driver",
        "memory": "memory",
        "swap": "swap",
        "reputation": "reputation",
        "createdAt": "created_at",
        "owner": "owner__username",
    },
    json_fields={
        "gpus": "gpus",
        "vcpus": "vcpus",
        "storage": "storage",
        "network": "network",
        "config": "config",
        "tags": "tags",
        "clusterMetadata": "cluster_metadata",
    },
)

NODE_QUERY_FIELDS = QueryFields(
    fields={
        "id": "id",
        "clusterId": "cluster_id",
        "status": "status",
        "schedulable": "schedulable",
        "memory": "memory",
        "swap": "swap",
        "lastHeartbeat": "last_heartbeat",
    },
    json_fields={
        "vcpus": "vcpus",
        "storage": "storage",
        "network": "network",
        "tags": "tags",
        "nodeMetadata": "node_metadata",
    },
)


def _cluster_queryset():
    from apps.clusters.models import Cluster

    return Cluster.objects.select_related("owner")


def _cluster_document(cluster) -> dict[str, Any]:
    from apps.clusters.services import cluster_document

    return cluster_document(cluster)


def register() -> None:
    try:
        from apps.search.registry import register as register_entity
    except ImportError:  # pragma: no cover - the search app is always installed
        return
    register_entity(
        "cluster",
        _cluster_queryset,
        CLUSTER_QUERY_FIELDS,
        _cluster_document,
        id_key="id",
        ordering=("id",),
    )
