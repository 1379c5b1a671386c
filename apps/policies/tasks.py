"""Celery tasks of the policies system: thin wrappers around services."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from apps.policies import services
from apps.policies.models import PolicyFunction
from apps.tasks.services import TaskRecorder, tracked_task


@tracked_task(name="aios.policies.run_policy_job")
def run_policy_job(recorder: TaskRecorder, job_id: str) -> dict[str, Any]:
    """Run a T3 policy job once; its result lands on the job and in the task record."""
    return services.run_job(job_id, recorder)


def _reconcile_all() -> dict[str, Any]:
    return {
        function.name: services.reconcile_function(function).status
        for function in PolicyFunction.objects.all()
    }


@tracked_task(name="aios.policies.reconcile_functions")
def reconcile_functions(recorder: TaskRecorder) -> dict[str, Any]:
    """Restart function replicas whose process died, recorded in the tasks DB (on demand)."""
    return {"functions": _reconcile_all()}


@shared_task(name="aios.policies.reconcile_functions_periodic", ignore_result=True)
def reconcile_functions_periodic() -> dict[str, Any]:
    """The same, for Celery beat: no task record, so a periodic run doesn't fill the tasks DB."""
    return {"functions": _reconcile_all()}
