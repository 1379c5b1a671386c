"""Celery tasks of the policies system: thin wrappers around services."""

from __future__ import annotations

from typing import Any

from apps.policies import services
from apps.policies.models import PolicyFunction
from apps.tasks.services import TaskRecorder, tracked_task


@tracked_task(name="aios.policies.run_policy_job")
def run_policy_job(recorder: TaskRecorder, job_id: str) -> dict[str, Any]:
    """Run a T3 policy job once; its result lands on the job and in the task record."""
    return services.run_job(job_id, recorder)


@tracked_task(name="aios.policies.reconcile_functions")
def reconcile_functions(recorder: TaskRecorder) -> dict[str, Any]:
    """Restart function replicas whose process died (schedule it periodically with beat)."""
    report = {}
    for function in PolicyFunction.objects.all():
        report[function.name] = services.reconcile_function(function).status
    return {"functions": report}
