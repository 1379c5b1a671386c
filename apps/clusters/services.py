"""Domain operations on the cluster registry: register, render, update, heartbeat, remove.

Plain functions called by the gateway, the controller, the node agent, the REST views and
the admin alike. Pre-checks and provisioning live in ``gateway.py`` / ``controller.py``;
this module only keeps the registry consistent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Prefetch, Sum
from django.utils import timezone

from apps.clusters.choices import (
    ACTIVE_WORKLOAD_STATUSES,
    ClusterStatus,
    DesiredState,
    NodeStatus,
)
from apps.clusters.models import GPU, Cluster, GatewayConfig, Node, Workload
from apps.clusters.specs import gpu_rows_from_spec
from apps.core.errors import Conflict, NotFound

log = logging.getLogger("aios.clusters")


# -- lookups ----------------------------------------------------------------------
def get_cluster(cluster_id: str, *, for_update: bool = False) -> Cluster:
    queryset = Cluster.objects.select_for_update() if for_update else Cluster.objects
    cluster = queryset.filter(pk=cluster_id).first()
    if cluster is None:
        raise NotFound(f"cluster {cluster_id!r} does not exist")
    return cluster


def get_node(node_id: str) -> Node:
    node = Node.objects.select_related("cluster").filter(pk=node_id).first()
    if node is None:
        raise NotFound(f"node {node_id!r} does not exist")
    return node


def gateway_config() -> GatewayConfig:
    """The gateway's singleton; created on first use from the environment
    (``CLUSTER_CONTROLLER_GATEWAY_ACTIONS_MAP``, ``POLICY_EXECUTION_MODE``)."""
    config = GatewayConfig.objects.filter(pk=GatewayConfig.SINGLETON_ID).first()
    if config is not None:
        return config
    import json
    import os

    from apps.clusters.specs import GATEWAY_MAP_KEYS, validate_policy_map

    initial: dict[str, str] = {}
    raw = os.environ.get("CLUSTER_CONTROLLER_GATEWAY_ACTIONS_MAP", "").strip()
    if raw:
        try:
            initial = validate_policy_map(
                json.loads(raw), GATEWAY_MAP_KEYS, "CLUSTER_CONTROLLER_GATEWAY_ACTIONS_MAP"
            )
        except Exception as exc:  # a bad env var must not break the API
            log.error("event=gateway_actions_map_invalid error=%r", exc)
    mode = os.environ.get("POLICY_EXECUTION_MODE", "local")
    config, _ = GatewayConfig.objects.get_or_create(
        pk=GatewayConfig.SINGLETON_ID,
        defaults={
            "actions_policy_map": {k: v for k, v in initial.items() if v},
            "policy_execution_mode": "remote" if mode in ("remote", "distributed") else "local",
            "policy_executor_id": os.environ.get("POLICY_SYSTEM_EXECUTOR_ID", ""),
        },
    )
    return config


# -- documents (the reference shapes) ----------------------------------------------
def gpu_document(gpu: GPU) -> dict[str, Any]:
    return {
        "index": gpu.index,
        "modelName": gpu.model,
        "memory": gpu.memory_mb,
        "shared": gpu.shared,
        "uuid": gpu.uuid,
        "declared": gpu.declared,
        "features": gpu.features,
    }


def node_document(node: Node) -> dict[str, Any]:
    gpus = list(node.gpus.all())
    info = node.gpu_info or {}
    model_names = sorted({g.model for g in gpus if g.model}) or info.get("modelNames", [])
    return {
        "id": node.id,
        "clusterId": node.cluster_id,
        "status": node.effective_status,
        "statusMessage": node.status_message,
        "schedulable": node.schedulable,
        "gpus": {
            "count": len(gpus),
            "memory": sum(g.memory_mb for g in gpus),
            "gpus": [gpu_document(g) for g in gpus],
            "modelNames": model_names,
            "features": info.get("features", []),
        },
        "vcpus": node.vcpus or {"count": 0},
        "memory": node.memory,
        "swap": node.swap,
        "storage": node.storage,
        "network": node.network,
        "tags": node.tags,
        "nodeMetadata": node.node_metadata,
        "lastHeartbeat": node.last_heartbeat.isoformat() if node.last_heartbeat else None,
        "agent": node.agent_info,
        "createdAt": node.created_at.isoformat() if node.created_at else None,
        "updatedAt": node.updated_at.isoformat() if node.updated_at else None,
    }


def nodes_with_gpus(queryset=None):
    queryset = queryset if queryset is not None else Node.objects.all()
    return queryset.prefetch_related(Prefetch("gpus", queryset=GPU.objects.order_by("index")))


def cluster_document(cluster: Cluster, *, include_nodes: bool = True) -> dict[str, Any]:
    nodes = list(nodes_with_gpus(cluster.nodes.all())) if include_nodes else []
    doc: dict[str, Any] = {
        "id": cluster.id,
        "regionId": cluster.region_id,
        "status": cluster.status,
        "statusMessage": cluster.status_message,
        "driver": cluster.driver,
        "nodes": {
            "count": len(nodes) if include_nodes else cluster.nodes.count(),
            "nodeData": [node_document(n) for n in nodes],
        },
        "gpus": cluster.gpus,
        "vcpus": cluster.vcpus,
        "memory": cluster.memory,
        "swap": cluster.swap,
        "storage": cluster.storage,
        "network": cluster.network,
        "config": {**(cluster.config or {}), "driver": cluster.driver},
        "tags": cluster.tags,
        "clusterMetadata": cluster.cluster_metadata,
        "reputation": cluster.reputation,
        "hasKubeconfig": cluster.has_kubeconfig,
        "owner": cluster.owner.get_username() if cluster.owner_id else None,
        "createdAt": cluster.created_at.isoformat() if cluster.created_at else None,
        "updatedAt": cluster.updated_at.isoformat() if cluster.updated_at else None,
    }
    return doc


# -- registration -------------------------------------------------------------------
def _node_fields(values: dict[str, Any]) -> dict[str, Any]:
    gpus = values.get("gpus") or {}
    return {
        "gpu_info": {k: v for k, v in gpus.items() if k in ("features", "modelNames")},
        "vcpus": values.get("vcpus") or {"count": 0},
        "memory": int(values.get("memory") or 0),
        "swap": int(values.get("swap") or 0),
        "storage": values.get("storage") or {},
        "network": values.get("network") or {},
        "tags": values.get("tags") or [],
        "node_metadata": values.get("nodeMetadata") or {},
    }


def set_node_gpus(node: Node, rows: Iterable[dict[str, Any]], *, declared: bool = True) -> None:
    """Replace the node's GPU rows (kept rows keep their ids so allocations survive)."""
    rows = list(rows)
    keep = {row["index"] for row in rows}
    node.gpus.exclude(index__in=keep).delete()
    for row in rows:
        GPU.objects.update_or_create(
            node=node,
            index=row["index"],
            defaults={
                "model": row.get("model", ""),
                "memory_mb": int(row.get("memory_mb", 0)),
                "shared": bool(row.get("shared", False)),
                "uuid": row.get("uuid", ""),
                "features": row.get("features", []),
                "declared": declared,
            },
        )


def register_node(cluster: Cluster, values: dict[str, Any]) -> Node:
    """Create a node row (and its GPU rows) from a cleaned node spec."""
    if Node.objects.filter(pk=values["id"]).exists():
        raise Conflict(f"node {values['id']!r} already exists")
    try:
        with transaction.atomic():
            node = Node.objects.create(id=values["id"], cluster=cluster, **_node_fields(values))
            set_node_gpus(node, gpu_rows_from_spec(values.get("gpus") or {}))
    except IntegrityError:
        raise Conflict(f"node {values['id']!r} already exists") from None
    return node


def register_cluster(
    values: dict[str, Any], *, owner=None, kubeconfig: str | None = None
) -> Cluster:
    """Create a cluster row and the nodes its spec lists, from a cleaned cluster spec."""
    if Cluster.objects.filter(pk=values["id"]).exists():
        raise Conflict(f"cluster {values['id']!r} already exists")
    config = dict(values.get("config") or {})
    driver = config.pop("driver", "local")
    node_ids = [n["id"] for n in (values.get("nodes") or {}).get("nodeData") or []]
    taken = list(Node.objects.filter(pk__in=node_ids).values_list("pk", flat=True))
    if taken:
        raise Conflict(f"node {taken[0]!r} already exists (node ids are network-wide)")
    try:
        with transaction.atomic():
            cluster = Cluster(
                id=values["id"],
                region_id=values["regionId"],
                driver=driver,
                gpus=values.get("gpus") or {},
                vcpus=values.get("vcpus") or {},
                memory=int(values.get("memory") or 0),
                swap=int(values.get("swap") or 0),
                storage=values.get("storage") or {},
                network=values.get("network") or {},
                config=config,
                tags=values.get("tags") or [],
                cluster_metadata=values.get("clusterMetadata") or {},
                reputation=int(values.get("reputation") or 0),
                owner=owner if owner is not None and owner.is_authenticated else None,
            )
            if kubeconfig:
                cluster.set_kubeconfig(kubeconfig)
            cluster.save(force_insert=True)
            for node_values in (values.get("nodes") or {}).get("nodeData") or []:
                register_node(cluster, node_values)
            refresh_cluster_totals(cluster)
    except IntegrityError:
        raise Conflict(f"cluster {values['id']!r} already exists") from None
    log.info("event=cluster_registered cluster_id=%s driver=%s", cluster.id, cluster.driver)
    return cluster


def refresh_cluster_totals(cluster: Cluster) -> None:
    """Once a cluster has nodes, its resource totals are the sums over them."""
    nodes = list(cluster.nodes.all())
    if not nodes:
        return
    gpu = GPU.objects.filter(node__cluster=cluster).aggregate(total=Sum("memory_mb"))
    gpu_count = GPU.objects.filter(node__cluster=cluster).count()
    storage_size = sum(int((n.storage or {}).get("size") or 0) for n in nodes)
    disks = sum(int((n.storage or {}).get("disks") or 0) for n in nodes)
    Cluster.objects.filter(pk=cluster.pk).update(
        gpus={**(cluster.gpus or {}), "count": gpu_count, "memory": int(gpu["total"] or 0)},
        vcpus={**(cluster.vcpus or {}), "count": sum(n.vcpu_count for n in nodes)},
        memory=sum(n.memory for n in nodes),
        swap=sum(n.swap for n in nodes),
        storage={**(cluster.storage or {}), "disks": disks, "size": storage_size},
        updated_at=timezone.now(),
    )
    cluster.refresh_from_db()


def set_cluster_status(cluster: Cluster | str, status: str, message: str = "") -> None:
    cluster_id = cluster.pk if isinstance(cluster, Cluster) else cluster
    Cluster.objects.filter(pk=cluster_id).update(
        status=status, status_message=message[:500], updated_at=timezone.now()
    )
    if isinstance(cluster, Cluster):
        cluster.status, cluster.status_message = status, message[:500]


def set_node_status(node: Node | str, status: str, message: str = "") -> None:
    node_id = node.pk if isinstance(node, Node) else node
    Node.objects.filter(pk=node_id).update(
        status=status, status_message=message[:500], updated_at=timezone.now()
    )


# -- updates --------------------------------------------------------------------------
_DOC_TO_FIELD = {
    "regionId": "region_id",
    "gpus": "gpus",
    "vcpus": "vcpus",
    "memory": "memory",
    "swap": "swap",
    "storage": "storage",
    "network": "network",
    "config": "config",
    "tags": "tags",
    "clusterMetadata": "cluster_metadata",
    "reputation": "reputation",
}


def apply_cluster_document(cluster: Cluster, doc: dict[str, Any]) -> Cluster:
    """Write the updatable keys of a (pre-checked) cluster document back to the row."""
    fields = []
    for key, field in _DOC_TO_FIELD.items():
        if key not in doc:
            continue
        value = doc[key]
        if key == "config":
            value = dict(value or {})
            value.pop("driver", None)  # the driver is fixed at creation
            value["urlMap"] = (cluster.config or {}).get("urlMap", {})  # system-owned
        if key in ("memory", "swap", "reputation"):
            value = int(value or 0)
        setattr(cluster, field, value)
        fields.append(field)
    if fields:
        cluster.save(update_fields=[*fields, "updated_at"])
    return cluster


# -- node agent ----------------------------------------------------------------------
def heartbeat(node_id: str, *, agent_info: dict[str, Any] | None = None) -> Node | None:
    """Record that the node's agent is alive; a pending or not-ready node becomes ready.

    Returns ``None`` when the node no longer exists (it was removed).
    """
    now = timezone.now()
    fields: dict[str, Any] = {"last_heartbeat": now, "updated_at": now}
    if agent_info is not None:
        fields["agent_info"] = agent_info
    updated = Node.objects.filter(pk=node_id).update(**fields)
    if not updated:
        return None
    Node.objects.filter(pk=node_id, status__in=[NodeStatus.PENDING, NodeStatus.NOT_READY]).update(
        status=NodeStatus.READY, status_message=""
    )
    return Node.objects.select_related("cluster").get(pk=node_id)


def mark_stale_nodes() -> int:
    """Store ``not_ready`` on ready nodes whose agent went quiet (the API computes it live too)."""
    from datetime import timedelta

    from apps.clusters import conf

    cutoff = timezone.now() - timedelta(seconds=conf.NODE_STALE_S)
    return Node.objects.filter(status=NodeStatus.READY, last_heartbeat__lt=cutoff).update(
        status=NodeStatus.NOT_READY, status_message="the node agent stopped reporting"
    )


# -- workloads (read side) -------------------------------------------------------------
def active_workloads(*, cluster: Cluster | None = None, node: Node | None = None):
    """Workloads that are (or should be) running: what blocks a removal without force."""
    queryset = Workload.objects.filter(desired_state=DesiredState.RUNNING, remove_requested=False)
    queryset = queryset.filter(status__in=ACTIVE_WORKLOAD_STATUSES)
    if cluster is not None:
        queryset = queryset.filter(cluster=cluster)
    if node is not None:
        queryset = queryset.filter(node=node)
    return queryset


def blocks_on(*, cluster: Cluster | None = None, node: Node | None = None) -> list[str]:
    ids = active_workloads(cluster=cluster, node=node).exclude(block_id="")
    return sorted(set(ids.values_list("block_id", flat=True)))


def live_clusters():
    return Cluster.objects.filter(status=ClusterStatus.LIVE)
