"""Parser handlers for the cluster actions: ``createCluster``, ``addNode``,
``executeMgmtCommand`` (see ``apps.core.actions``), and ``removeCluster``, ``removeNode``,
``updateCluster`` for a parser that maps them. They call the gateway and shape the reply."""

from __future__ import annotations

from apps.clusters import gateway, services
from apps.core.actions import ActionRequest, ActionResult
from apps.core.errors import NotImplementedYet, ValidationFailed


def create_cluster(request: ActionRequest) -> ActionResult:
    """202 ``{"task_id", "status_url", "cluster_id"}``; the task provisions the cluster."""
    accepted = gateway.create_cluster(request.values, user=request.user)
    return ActionResult(202, accepted.body())


def add_node(request: ActionRequest) -> ActionResult:
    """202 ``{"task_id", "status_url", "cluster_id", "node_id"}``."""
    accepted = gateway.add_node(request.values, user=request.user)
    return ActionResult(202, accepted.body())


def execute_mgmt_command(request: ActionRequest) -> ActionResult:
    """``{clusterId | blockId, service, mgmtCommand, mgmtData}``: cluster commands run here;
    block commands go to the blocks app once it provides them."""
    values = request.values
    if values.get("clusterId") and values.get("blockId"):
        raise ValidationFailed("give either clusterId or blockId, not both")
    if values.get("clusterId"):
        result = gateway.execute_cluster_mgmt(
            values["clusterId"],
            service=values.get("service") or "controller",
            action=values.get("mgmtCommand") or "",
            payload=values.get("mgmtData"),
            user=request.user,
        )
        return ActionResult(200, result)
    if values.get("blockId"):
        try:
            from apps.blocks.parser_actions import execute_mgmt_command as block_mgmt
        except ImportError:
            raise NotImplementedYet(
                "block management commands are not available in this build yet"
            ) from None
        return block_mgmt(request)
    raise ValidationFailed("a management command names a clusterId or a blockId")


def _target(values: dict, *keys: str) -> str:
    for key in keys:
        if isinstance(values.get(key), str) and values[key]:
            return values[key]
    raise ValidationFailed(f"the spec needs {keys[0]!r}", details=[{"field": keys[0]}])


def remove_cluster(request: ActionRequest) -> ActionResult:
    """``{clusterId, force?}`` → 202 with a ``cluster_infra_remove`` task (409 while
    workloads run there, unless ``force``)."""
    values = request.values
    accepted = gateway.remove_cluster(
        _target(values, "clusterId", "id"), user=request.user, force=values.get("force") is True
    )
    return ActionResult(202, accepted.body())


def remove_node(request: ActionRequest) -> ActionResult:
    """``{nodeId, force?}`` → 202 with a ``node_removal`` task."""
    values = request.values
    accepted = gateway.remove_node(
        _target(values, "nodeId", "id"), user=request.user, force=values.get("force") is True
    )
    return ActionResult(202, accepted.body())


def update_cluster(request: ActionRequest) -> ActionResult:
    """``{clusterId, changes: {...}}`` (dotted keys allowed) → 200 with the cluster."""
    values = request.values
    changes = values.get("changes")
    if not isinstance(changes, dict):
        raise ValidationFailed("the spec needs 'changes', an object of fields to update")
    cluster = gateway.update_cluster(_target(values, "clusterId", "id"), changes, user=request.user)
    return ActionResult(200, services.cluster_document(cluster))
