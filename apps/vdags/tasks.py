"""Celery tasks of the vdags app: thin, idempotent, recorded in the tasks DB
(``vdag_creation``, ``vdag_controller_creation``)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from apps.parser.validation import SpecValidationError
from apps.tasks.services import TaskRecorder, tracked_task


@tracked_task(name="aios.vdags.vdag_creation")
def vdag_creation(recorder: TaskRecorder, vdag_uri: str) -> dict[str, Any]:
    from apps.vdags.services import vdags

    try:
        return vdags.process_vdag(vdag_uri, recorder.progress)
    except SpecValidationError as exc:
        # The task record shows every problem with its pointer, as the parser would.
        recorder.status_data.update(vdagURI=vdag_uri, errors=exc.details)
        raise


@tracked_task(name="aios.vdags.vdag_controller_creation")
def vdag_controller_creation(recorder: TaskRecorder, vdag_controller_id: str) -> dict[str, Any]:
    from apps.vdags.services import controllers

    return controllers.wait_until_running(vdag_controller_id, recorder.progress)


@shared_task(name="aios.vdags.collect_controller_data", ignore_result=True)
def collect_controller_data() -> dict[str, int]:
    """Periodic (beat): quality samples and metrics history of every vDAG controller."""
    from apps.vdags.services import telemetry

    return telemetry.collect_all()
