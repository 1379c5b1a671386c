"""Helpers shared by the clusters, allocator and metrics tests: unique ids, clusters and
nodes registered straight through the services, and cleanup of per-node Redis keys."""

from __future__ import annotations

import uuid
from typing import Any

from django.utils import timezone

from apps.clusters import services
from apps.clusters.choices import ClusterStatus, NodeStatus
from apps.clusters.models import Cluster, Node
from apps.clusters.specs import clean_cluster_values


def uid(prefix: str) -> str:
    """Ids unique across test runs: Redis is shared between engineers and runs."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def node_spec(
    node_id: str,
    gpus: list[tuple[str, int]] | None = None,
    *,
    vcpus: int = 16,
    memory: int = 65536,
    shared: bool = False,
) -> dict[str, Any]:
    gpus = gpus or []
    return {
        "id": node_id,
        "gpus": {
            "count": len(gpus),
            "memory": sum(m for _, m in gpus),
            "gpus": [{"modelName": model, "memory": mem, "shared": shared} for model, mem in gpus],
        },
        "vcpus": {"count": vcpus},
        "memory": memory,
        "swap": 0,
        "storage": {"disks": 1, "size": 100000},
        "network": {"interfaces": 1, "txBandwidth": 0, "rxBandwidth": 0},
    }


def make_cluster(
    cluster_id: str | None = None,
    nodes: list[dict[str, Any]] | None = None,
    *,
    owner=None,
    live: bool = True,
    ready: bool = True,
    **extra: Any,
) -> Cluster:
    """A registered cluster (no provisioning task); nodes ready with a fresh heartbeat."""
    cluster_id = cluster_id or uid("c")
    values = clean_cluster_values(
        {"id": cluster_id, "regionId": "test", "nodes": {"nodeData": nodes or []}, **extra}
    )
    cluster = services.register_cluster(values, owner=owner)
    if live:
        services.set_cluster_status(cluster, ClusterStatus.LIVE)
    if ready:
        Node.objects.filter(cluster=cluster).update(
            status=NodeStatus.READY, last_heartbeat=timezone.now()
        )
    cluster.refresh_from_db()
    return cluster


def forget_redis(*node_ids: str, cluster_ids: tuple[str, ...] = ()) -> None:
    from apps.metrics.services import CLUSTER_KEY, HISTORY_GATE_KEY, NODE_KEY, _redis

    keys = [NODE_KEY.format(n) for n in node_ids] + [HISTORY_GATE_KEY.format(n) for n in node_ids]
    keys += [CLUSTER_KEY.format(c) for c in cluster_ids]
    if keys:
        _redis().delete(*keys)
