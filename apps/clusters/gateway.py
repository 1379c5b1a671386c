"""The network gateway (DESIGN §6; reference §1.6): the entry for cluster and node operations.

Each operation validates its input, runs the network pre-check (``GatewayConfig``), then the
cluster controller's pre-check, registers what it must, and hands the slow part to a Celery
task recorded in the tasks DB (``cluster_infra_creation``, ``node_addition``, ...). The
parser handlers, the REST views, the admin and the node agent's ``--create`` all call these.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from apps.clusters import services
from apps.clusters.choices import (
    TASK_CLUSTER_INFRA_CREATION,
    TASK_CLUSTER_INFRA_REMOVE,
    TASK_NODE_ADDITION,
    TASK_NODE_REMOVAL,
    ClusterStatus,
    NodeStatus,
)
from apps.clusters.controller import ClusterController, cluster_metrics_snapshot
from apps.clusters.drivers import ensure_available
from apps.clusters.models import Cluster, GatewayConfig, Node
from apps.clusters.precheck import run_precheck
from apps.clusters.specs import (
    CLUSTER_SCHEMA,
    GATEWAY_MAP_KEYS,
    UPDATABLE_CLUSTER_KEYS,
    check_schema,
    clean_cluster_values,
    clean_node_values,
    validate_policy_map,
)
from apps.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from apps.tasks.models import Task

log = logging.getLogger("aios.clusters.gateway")


@dataclass
class Accepted:
    """A long operation was accepted: what a 202 answers."""

    task: Task | None
    cluster_id: str
    node_id: str | None = None
    result: dict[str, Any] | None = None  # filled when run synchronously

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"cluster_id": self.cluster_id}
        if self.task is not None:
            body.update(
                task_id=str(self.task.task_id),
                status_url=f"/api/v1/tasks/{self.task.task_id}/",
                task_type=self.task.task_type,
            )
        if self.node_id is not None:
            body["node_id"] = self.node_id
        if self.result is not None:
            body["result"] = self.result
        return body


# -- network pre-checks --------------------------------------------------------------------
def precheck(action: str, input_data: dict[str, Any], *, user=None) -> dict[str, Any]:
    config = services.gateway_config()
    return run_precheck(
        action,
        input_data,
        policy_map={k: v for k, v in (config.actions_policy_map or {}).items() if v},
        scope="network",
        user=user,
        execution_mode=config.policy_execution_mode,
        executor_id=config.policy_executor_id,
    )


def update_precheck_policies(changes: dict[str, Any], *, replace: bool = False) -> GatewayConfig:
    """AIOS ``/pre-check-policies/update``: an empty string removes a rule; keys left out are
    unchanged (``replace`` sets the whole map)."""
    changes = validate_policy_map(changes, GATEWAY_MAP_KEYS, "actions_policy_map")
    with transaction.atomic():
        services.gateway_config()
        config = GatewayConfig.objects.select_for_update().get(pk=GatewayConfig.SINGLETON_ID)
        current = {} if replace else dict(config.actions_policy_map or {})
        for action, uri in changes.items():
            if uri:
                current[action] = uri
            else:
                current.pop(action, None)
        config.actions_policy_map = current
        config.save()
    return config


def ensure_can_manage(cluster: Cluster, user, *, allow_external_nodes: bool = False) -> None:
    """Writes to a cluster are its owner's or staff's (an ownerless cluster is the system's
    and open to any authenticated user, like every ownerless object)."""
    if user is None:  # internal callers: the node agent, Celery tasks
        return
    if not getattr(user, "is_authenticated", False):
        raise Forbidden("authentication is required to change clusters")
    if user.is_staff or cluster.owner_id in (None, user.pk):
        return
    if allow_external_nodes and (cluster.config or {}).get("allowExternalNodes") is True:
        return
    raise Forbidden(f"only the owner of cluster {cluster.id!r} or staff may do this")


def _submit(task_type: str, runner_name: str, *, user, task_data: dict, **kwargs) -> Task:
    from apps.clusters import tasks
    from apps.tasks.services import submit

    return submit(
        task_type,
        getattr(tasks, runner_name),
        owner=user,
        task_data=task_data,
        **kwargs,
    )


# -- clusters ----------------------------------------------------------------------------
def create_cluster(
    values: dict[str, Any],
    *,
    user=None,
    kubeconfig: str | None = None,
    run_async: bool = True,
) -> Accepted:
    """createCluster: validate, ``add_cluster`` pre-check, register, provision (a task)."""
    clean = clean_cluster_values(values)
    if kubeconfig is None and clean.get("kube_config_data"):
        kubeconfig = _kubeconfig_text(clean.pop("kube_config_data"))
    clean.pop("kube_config_data", None)
    ensure_available(clean["config"]["driver"])
    if Cluster.objects.filter(pk=clean["id"]).exists():
        raise Conflict(f"cluster {clean['id']!r} already exists")
    checked = precheck("add_cluster", {"cluster_data": clean}, user=user)
    clean = clean_cluster_values(checked.get("cluster_data") or clean)  # policies may rewrite
    ensure_available(clean["config"]["driver"])
    with transaction.atomic():
        cluster = services.register_cluster(clean, owner=user, kubeconfig=kubeconfig)
        if not run_async:
            result = ClusterController(cluster).provision()
            return Accepted(None, cluster.id, result=result)
        task = _submit(
            TASK_CLUSTER_INFRA_CREATION,
            "cluster_infra_creation",
            user=user,
            task_data={"cluster_id": cluster.id, "driver": cluster.driver},
            cluster_id=cluster.id,
        )
    return Accepted(task, cluster.id)


def _kubeconfig_text(value: Any) -> str:
    if isinstance(value, dict):
        import json

        return json.dumps(value) if value else ""
    return str(value or "")


def set_kubeconfig(cluster_id: str, kubeconfig: Any, *, user=None) -> Cluster:
    cluster = services.get_cluster(cluster_id)
    ensure_can_manage(cluster, user)
    cluster.set_kubeconfig(_kubeconfig_text(kubeconfig))
    cluster.save(update_fields=["kubeconfig_encrypted", "updated_at"])
    return cluster


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes a key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _apply_changes(doc: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Apply ``changes``: dotted keys (``"clusterMetadata.creator"``) set one value, others
    merge-patch the top-level key."""
    doc = copy.deepcopy(doc)
    for key, value in changes.items():
        root = key.split(".", 1)[0]
        if root not in UPDATABLE_CLUSTER_KEYS:
            raise ValidationFailed(
                f"field {root!r} cannot be updated",
                details=[{"field": key, "allowed": list(UPDATABLE_CLUSTER_KEYS)}],
            )
        if "." in key:
            parts = key.split(".")
            cursor = doc
            for part in parts[:-1]:
                if not isinstance(cursor.get(part), dict):
                    cursor[part] = {}
                cursor = cursor[part]
            cursor[parts[-1]] = value
        else:
            doc[key] = _merge_patch(doc.get(key), value)
    return doc


def update_cluster(cluster_id: str, changes: dict[str, Any], *, user=None) -> Cluster:
    """update_cluster: apply changes, run both ``update_cluster`` pre-checks on the result,
    then save what the policies returned."""
    if not isinstance(changes, dict):
        raise ValidationFailed("changes must be a JSON object")
    changes = dict(changes)
    kubeconfig = changes.pop("kube_config_data", None)
    cluster = services.get_cluster(cluster_id)
    ensure_can_manage(cluster, user)
    if cluster.status == ClusterStatus.REMOVING:
        raise Conflict(f"cluster {cluster_id!r} is being removed")
    current = services.cluster_document(cluster, include_nodes=False)
    proposed = _apply_changes({k: current[k] for k in ("id", *UPDATABLE_CLUSTER_KEYS)}, changes)
    proposed["id"] = cluster.id  # not changeable
    check_schema(CLUSTER_SCHEMA, proposed, "cluster update")
    if "actionsPolicyMap" in (proposed.get("config") or {}):
        from apps.clusters.specs import CLUSTER_MAP_KEYS

        proposed["config"]["actionsPolicyMap"] = {
            k: v
            for k, v in validate_policy_map(
                proposed["config"]["actionsPolicyMap"], CLUSTER_MAP_KEYS, "config.actionsPolicyMap"
            ).items()
            if v
        }
    checked = precheck("update_cluster", {"cluster_data": proposed}, user=user)
    checked = ClusterController(cluster).precheck("update_cluster", checked, user=user)
    final = checked.get("cluster_data") or proposed
    check_schema(CLUSTER_SCHEMA, {**final, "id": cluster.id}, "cluster update")
    with transaction.atomic():
        services.apply_cluster_document(cluster, final)
        if kubeconfig is not None:
            cluster.set_kubeconfig(_kubeconfig_text(kubeconfig))
            cluster.save(update_fields=["kubeconfig_encrypted", "updated_at"])
    log.info("event=cluster_updated cluster_id=%s keys=%s", cluster.id, sorted(changes))
    return cluster


def remove_cluster(
    cluster_id: str, *, user=None, force: bool = False, run_async: bool = True
) -> Accepted:
    """remove_cluster: refused (409) while workloads still run there, unless ``force``."""
    cluster = services.get_cluster(cluster_id)
    ensure_can_manage(cluster, user)
    blocks = services.blocks_on(cluster=cluster)
    active = services.active_workloads(cluster=cluster).count()
    precheck(
        "remove_cluster",
        {
            "cluster_data": services.cluster_document(cluster),
            "cluster_metrics": cluster_metrics_snapshot(cluster.id),
            "cluster_blocks": blocks,
        },
        user=user,
    )
    if active and not force:
        raise Conflict(
            f"cluster {cluster_id!r} still runs {active} workload(s)"
            + (f" of blocks {', '.join(blocks[:10])}" if blocks else "")
            + "; remove them first or repeat with force=true",
            code="cluster_in_use",
            details=[{"active_workloads": active, "blocks": blocks}],
        )
    if cluster.status == ClusterStatus.REMOVING and not force:
        raise Conflict(f"cluster {cluster_id!r} is already being removed")
    services.set_cluster_status(cluster, ClusterStatus.REMOVING, "removal requested")
    if not run_async:
        from apps.clusters import conf

        result = ClusterController(cluster).teardown(timeout_s=conf.REMOVAL_WAIT_S)
        return Accepted(None, cluster_id, result=result)
    task = _submit(
        TASK_CLUSTER_INFRA_REMOVE,
        "cluster_infra_remove",
        user=user,
        task_data={"cluster_id": cluster_id, "force": force},
        cluster_id=cluster_id,
    )
    return Accepted(task, cluster_id)


# -- nodes -----------------------------------------------------------------------------------
def add_node(values: dict[str, Any], *, user=None, run_async: bool = True) -> Accepted:
    """addNode: validate, ``add_node`` pre-checks (network, then cluster), register, join."""
    clean = clean_node_values(values)
    cluster_id = clean.get("clusterId")
    if not cluster_id:
        raise ValidationFailed("clusterId is required", details=[{"field": "clusterId"}])
    cluster = services.get_cluster(cluster_id)
    ensure_can_manage(cluster, user, allow_external_nodes=True)
    if cluster.status == ClusterStatus.REMOVING:
        raise Conflict(f"cluster {cluster_id!r} is being removed")
    if Node.objects.filter(pk=clean["id"]).exists():
        raise Conflict(f"node {clean['id']!r} already exists")
    input_data = {
        "node_data": clean,
        "cluster_data": services.cluster_document(cluster),
        "cluster_metrics": cluster_metrics_snapshot(cluster.id),
    }
    checked = precheck("add_node", input_data, user=user)
    checked = ClusterController(cluster).precheck("add_node", checked, user=user)
    clean = clean_node_values(checked.get("node_data") or clean, cluster_id=cluster_id)
    if clean.get("clusterId") != cluster_id:
        raise Forbidden("a pre-check policy may not move a node to another cluster")
    with transaction.atomic():
        node = services.register_node(cluster, clean)
        services.refresh_cluster_totals(cluster)
        if not run_async:
            result = ClusterController(cluster).add_node(node)
            return Accepted(None, cluster.id, node.id, result=result)
        task = _submit(
            TASK_NODE_ADDITION,
            "node_addition",
            user=user,
            task_data={"cluster_id": cluster.id, "node_id": node.id},
            node_id=node.id,
        )
    return Accepted(task, cluster.id, node.id)


def remove_node(node_id: str, *, user=None, force: bool = False) -> Accepted:
    """remove_node: both pre-checks; refused (409) while workloads run there, unless forced."""
    node = Node.objects.select_related("cluster").filter(pk=node_id).first()
    if node is None:
        raise NotFound(f"node {node_id!r} does not exist")
    cluster = node.cluster
    ensure_can_manage(cluster, user)
    blocks = services.blocks_on(node=node)
    active = services.active_workloads(node=node).count()
    input_data = {
        "node_id": node.id,
        "cluster_data": services.cluster_document(cluster),
        "cluster_metrics": cluster_metrics_snapshot(cluster.id),
        "block_instances": blocks,
        "node_instances": blocks,
    }
    checked = precheck("remove_node", input_data, user=user)
    ClusterController(cluster).precheck("remove_node", checked, user=user)
    if active and not force:
        raise Conflict(
            f"node {node_id!r} still runs {active} workload(s)"
            + (f" of blocks {', '.join(blocks[:10])}" if blocks else "")
            + "; remove them first or repeat with force=true",
            code="node_in_use",
            details=[{"active_workloads": active, "blocks": blocks}],
        )
    services.set_node_status(node, NodeStatus.REMOVING, "removal requested")
    task = _submit(
        TASK_NODE_REMOVAL,
        "node_removal",
        user=user,
        task_data={"cluster_id": cluster.id, "node_id": node.id, "force": force},
        node_id=node.id,
    )
    return Accepted(task, cluster.id, node.id)


def update_node(node_id: str, changes: dict[str, Any], *, user=None) -> Node:
    """Operator edits of a node: tags, nodeMetadata, schedulable (placement data only)."""
    node = services.get_node(node_id)
    ensure_can_manage(node.cluster, user)
    allowed = {"tags": "tags", "nodeMetadata": "node_metadata", "schedulable": "schedulable"}
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        raise ValidationFailed(
            f"field {unknown[0]!r} of a node cannot be updated",
            details=[{"allowed": sorted(allowed)}],
        )
    if "tags" in changes and not (
        isinstance(changes["tags"], list) and all(isinstance(t, str) for t in changes["tags"])
    ):
        raise ValidationFailed("tags must be a list of strings")
    if "nodeMetadata" in changes and not isinstance(changes["nodeMetadata"], dict):
        raise ValidationFailed("nodeMetadata must be an object")
    if "schedulable" in changes and not isinstance(changes["schedulable"], bool):
        raise ValidationFailed("schedulable must be true or false")
    for key, value in changes.items():
        setattr(node, allowed[key], value)
    node.save()
    return node


# -- management commands -------------------------------------------------------------------
CLUSTER_MGMT_SERVICES = ("controller", "stability_checker", "driver", "cluster")


def execute_cluster_mgmt(
    cluster_id: str, *, service: str, action: str, payload: Any = None, user=None
) -> dict[str, Any]:
    """cluster_mgmt: both pre-checks, then the controller's management command."""
    service = service or "controller"
    if service not in CLUSTER_MGMT_SERVICES:
        raise ValidationFailed(
            f"unknown cluster service {service!r}",
            details=[{"field": "service", "allowed": list(CLUSTER_MGMT_SERVICES)}],
        )
    if not isinstance(action, str) or not action:
        raise ValidationFailed("a management command needs an action name")
    cluster = services.get_cluster(cluster_id)
    ensure_can_manage(cluster, user)
    input_data = {
        "cluster_data": services.cluster_document(cluster, include_nodes=False),
        "input": {"action": action, "payload": payload, "service": service},
    }
    checked = precheck("cluster_mgmt", input_data, user=user)
    checked = ClusterController(cluster).precheck("cluster_mgmt", checked, user=user)
    command = checked.get("input") or input_data["input"]
    return ClusterController(cluster).management(
        service, command.get("action", action), command.get("payload", payload)
    )
