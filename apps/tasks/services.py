"""Create, advance and finish task records; every Celery task reports through here.

Each change is saved, then broadcast to the Channels group ``task.<id>`` so websocket
clients (``/ws/tasks/<id>/``) see progress live.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from celery import shared_task
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from apps.core.errors import Conflict
from apps.tasks.choices import TaskStatus
from apps.tasks.models import Task

log = logging.getLogger("aios.tasks")

MAX_MESSAGE = 500


def group_name(task_id) -> str:
    return f"task.{task_id}"


def snapshot(task: Task) -> dict[str, Any]:
    return {
        "task_id": str(task.task_id),
        "task_type": task.task_type,
        "task_status": task.task_status,
        "progress": task.progress,
        "progress_message": task.progress_message,
        "task_status_data": task.task_status_data,
        "error": task.error,
        "updated_at": task.updated_at.isoformat() if task.updated_at else None,
    }


def broadcast(task: Task) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            group_name(task.task_id), {"type": "task.update", "task": snapshot(task)}
        )
    except Exception:  # progress pushes are best effort; the record is the truth
        log.warning("event=task_broadcast_failed task_id=%s", task.task_id, exc_info=True)


def create_task(
    task_type: str,
    task_data: dict | None = None,
    *,
    owner=None,
    runner: str = "",
    runner_kwargs: dict | None = None,
) -> Task:
    return Task.objects.create(
        task_type=task_type,
        task_data=task_data or {},
        owner=owner if owner is not None and owner.is_authenticated else None,
        runner=runner,
        runner_kwargs=runner_kwargs or {},
    )


def _update(task_id, **fields) -> Task:
    fields["updated_at"] = timezone.now()
    Task.objects.filter(pk=task_id).update(**fields)
    task = Task.objects.get(pk=task_id)
    broadcast(task)
    return task


def start(task_id, message: str = "started") -> Task:
    return _update(
        task_id,
        task_status=TaskStatus.IN_PROGRESS,
        started_at=timezone.now(),
        progress_message=message[:MAX_MESSAGE],
        error="",
    )


def set_progress(task_id, percent: int, message: str = "", status_data: dict | None = None) -> Task:
    fields: dict[str, Any] = {
        "progress": max(0, min(100, int(percent))),
        "progress_message": message[:MAX_MESSAGE],
        "task_status": TaskStatus.IN_PROGRESS,
    }
    if status_data is not None:
        fields["task_status_data"] = status_data
    return _update(task_id, **fields)


def complete(task_id, result: Any = None, message: str = "completed") -> Task:
    fields: dict[str, Any] = {
        "task_status": TaskStatus.COMPLETED,
        "progress": 100,
        "progress_message": message[:MAX_MESSAGE],
        "finished_at": timezone.now(),
    }
    if result is not None:
        fields["task_status_data"] = result if isinstance(result, dict) else {"result": result}
    return _update(task_id, **fields)


def fail(task_id, error: str, status_data: dict | None = None) -> Task:
    fields: dict[str, Any] = {
        "task_status": TaskStatus.FAILED,
        "error": error[:10000],
        "progress_message": error.splitlines()[0][:MAX_MESSAGE] if error else "failed",
        "finished_at": timezone.now(),
    }
    if status_data is not None:
        fields["task_status_data"] = status_data
    return _update(task_id, **fields)


class TaskRecorder:
    """Handed to a tracked task's body: report progress, attach data."""

    def __init__(self, task_id):
        self.task_id = task_id
        self.status_data: dict = {}

    def progress(self, percent: int, message: str = "", **data: Any) -> None:
        self.status_data.update(data)
        set_progress(self.task_id, percent, message, self.status_data if data else None)

    @property
    def record(self) -> Task:
        return Task.objects.get(pk=self.task_id)


def tracked_task(name: str, **celery_options: Any) -> Callable:
    """Declare a Celery task whose run is recorded in the tasks DB.

    The body is ``fn(recorder, **kwargs)``; its return value (JSON) becomes
    ``task_status_data``; an exception marks the task failed with the error. A task that
    is already finished is not run again (a redelivered message after ``acks_late``).
    """

    def decorate(fn: Callable) -> Callable:
        @shared_task(name=name, **celery_options)
        def run(aios_task_id: str, **kwargs: Any) -> Any:
            task = Task.objects.filter(pk=aios_task_id).first()
            if task is None:
                log.warning("event=task_missing task_id=%s runner=%s", aios_task_id, name)
                return None
            if task.is_finished:
                log.info("event=task_already_finished task_id=%s", aios_task_id)
                return None
            Task.objects.filter(pk=aios_task_id).update(attempts=task.attempts + 1)
            start(aios_task_id)
            recorder = TaskRecorder(aios_task_id)
            try:
                result = fn(recorder, **kwargs)
            except Exception as exc:
                log.warning("event=task_failed task_id=%s error=%r", aios_task_id, exc)
                detail = f"{type(exc).__name__}: {exc}"
                fail(
                    aios_task_id,
                    detail,
                    {**recorder.status_data, "traceback": traceback.format_exc(limit=8)},
                )
                return None
            complete(aios_task_id, result if result is not None else recorder.status_data)
            return None

        run.task_type_runner = name
        return run

    return decorate


def submit(
    task_type: str,
    celery_task,
    *,
    owner=None,
    task_data: dict | None = None,
    **kwargs: Any,
) -> Task:
    """Create the record, then queue the Celery task once the transaction commits."""
    task = create_task(
        task_type, task_data, owner=owner, runner=celery_task.name, runner_kwargs=kwargs
    )
    transaction.on_commit(lambda: celery_task.apply_async(args=[str(task.task_id)], kwargs=kwargs))
    return task


def retry(task: Task) -> Task:
    """Run a failed task again with the same arguments."""
    if task.task_status != TaskStatus.FAILED:
        raise Conflict(f"only failed tasks can be retried; this one is {task.task_status}")
    if not task.runner:
        raise Conflict("this task has no runner recorded and cannot be retried")
    from aios_site.celery import app

    Task.objects.filter(pk=task.pk).update(
        task_status=TaskStatus.PENDING, progress=0, progress_message="retry queued", error=""
    )
    task.refresh_from_db()
    broadcast(task)
    kwargs = dict(task.runner_kwargs)
    transaction.on_commit(
        lambda: app.send_task(task.runner, args=[str(task.task_id)], kwargs=kwargs)
    )
    return task
