"""Parser handler of ``createvDAG`` (see ``apps.core.actions``)."""

from __future__ import annotations

from apps.core.actions import ActionRequest, ActionResult
from apps.parser.validation import BUILTIN_TEMPLATE
from apps.vdags.choices import SpecMode
from apps.vdags.services import vdags
from apps.vdags.services.specs import VALUES_BASE, mode_of


def _base(request: ActionRequest) -> tuple:
    # A custom template's output is reported relative to "templateOutput", as the parser does.
    template = (request.header or {}).get("templateUri") or BUILTIN_TEMPLATE
    return VALUES_BASE if template == BUILTIN_TEMPLATE else ("templateOutput",)


def create_vdag(request: ActionRequest) -> ActionResult:
    """``mode: create`` (default): 202 ``{"task_id", "status_url", "vdagURI", "status"}``;
    the ``vdag_creation`` task assigns, compiles and activates. ``mode: dry-run``: 200 with
    the assignment and the compiled graph; nothing is stored."""
    values = request.values
    if mode_of(values) == SpecMode.DRY_RUN:
        plan = vdags.dry_run(values, base=_base(request))
        return ActionResult(200, plan.document())
    vdag, task = vdags.create_vdag(values, user=request.user, base=_base(request))
    return ActionResult(
        202,
        {
            "task_id": str(task.task_id),
            "status_url": f"/api/v1/tasks/{task.task_id}/",
            "task_type": task.task_type,
            "vdagURI": vdag.vdag_uri,
            "status": vdag.status,
            "vdag_url": f"/api/v1/vdags/{vdag.vdag_uri}/",
        },
    )
