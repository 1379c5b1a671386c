"""Parser handlers of the blocks app: ``createBlock`` and ``executeMgmtCommand`` (blockId)."""

from __future__ import annotations

from apps.blocks import services
from apps.core.actions import ActionRequest, ActionResult


def create_block(request: ActionRequest) -> ActionResult:
    """202 ``{"task_id", "status_url", "block_id", ...}``; ``mode: dry_run`` → 200 with the
    placement and nothing created."""
    status, body = services.create_block(
        request.values,
        user=request.user,
        header_parameters=(request.header or {}).get("parameters") or {},
    )
    return ActionResult(status, body)


def execute_mgmt_command(request: ActionRequest) -> ActionResult:
    values = request.values
    result = services.execute_mgmt(
        values["blockId"],
        service=values.get("service", ""),
        action=values.get("mgmtCommand", ""),
        data=values.get("mgmtData"),
        user=request.user,
    )
    return ActionResult(200, result)
