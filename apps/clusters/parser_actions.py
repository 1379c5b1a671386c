"""Parser handlers for the cluster actions: ``createCluster``, ``addNode``,
``executeMgmtCommand`` (see ``apps.core.actions``). They call the gateway and shape the reply."""

from __future__ import annotations

from apps.clusters import gateway
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
