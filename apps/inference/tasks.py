"""Celery tasks of the inference app: thin wrappers over ``services``."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from apps.tasks.services import TaskRecorder, tracked_task


@tracked_task(name="aios.inference.inference_server_creation")
def inference_server_creation(recorder: TaskRecorder, deployment_id: str) -> dict[str, Any]:
    from apps.inference import services

    return services.wait_until_running(deployment_id, recorder.progress)


@shared_task(name="aios.inference.sync_executor_map", ignore_result=True)
def sync_executor_map() -> int:
    """Periodic (beat): rewrite the block_id -> executor map the adhoc servers read."""
    from apps.inference import services

    return services.sync_executor_map()
