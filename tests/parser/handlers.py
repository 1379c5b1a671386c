"""Parser handlers used by tests through ``settings.AIOS_PARSER_HANDLERS``."""

from apps.core.actions import ActionRequest, ActionResult
from apps.core.errors import Conflict
from apps.registries import services as registries
from apps.tasks import services as tasks
from apps.tasks.tasks import selftest
from tests.registries.factories import component_values


def echo(request: ActionRequest) -> ActionResult:
    return ActionResult(
        200,
        {
            "action": request.action,
            "values": request.values,
            "user": getattr(request.user, "username", None),
            "templateUri": request.header["templateUri"],
        },
    )


def block_target(request: ActionRequest) -> ActionResult:
    return ActionResult(200, {"target": "block", "blockId": request.values["blockId"]})


def cluster_target(request: ActionRequest) -> ActionResult:
    return ActionResult(200, {"target": "cluster", "clusterId": request.values["clusterId"]})


def writes_then_fails(request: ActionRequest) -> ActionResult:
    registries.register_component(component_values(name="half-done"), owner=request.user)
    raise Conflict("the block id is taken")


def crashes(request: ActionRequest) -> ActionResult:
    raise RuntimeError("bug in a handler")


def not_a_result(request: ActionRequest):
    return {"status": 200}


def long_action(request: ActionRequest) -> ActionResult:
    """A long action: queue the tasks app's self-test and answer 202 like createBlock will."""
    steps = request.values.get("maxInstances", 3)
    fail = request.values.get("minInstances", 1) == 0
    task = tasks.submit(
        "selftest",
        selftest,
        owner=request.user,
        steps=steps,
        delay=0.2,
        fail_at=1 if fail else -1,
    )
    return ActionResult(
        202, {"task_id": str(task.task_id), "status_url": f"/api/v1/tasks/{task.task_id}/"}
    )


not_callable = 42
