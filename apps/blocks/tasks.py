"""Celery tasks of the blocks app: thin, recorded in the tasks DB, calling ``services``."""

from __future__ import annotations

from typing import Any

from apps.blocks import services
from apps.blocks.choices import TASK_BLOCK_ALLOC, TASK_BLOCK_REMOVAL
from apps.tasks.services import TaskRecorder, tracked_task


@tracked_task(name="blocks.block_alloc")
def block_alloc(recorder: TaskRecorder, *, block_id: str) -> dict[str, Any]:
    """Allocate and start a block (task type ``block_alloc``)."""
    return services.run_allocation(recorder.progress, block_id)


@tracked_task(name="blocks.block_removal")
def block_removal(recorder: TaskRecorder, *, block_id: str) -> dict[str, Any]:
    """Stop a block's processes and release what it holds (task type ``block_removal``)."""
    return services.run_removal(recorder.progress, block_id)


TASK_TYPES = {TASK_BLOCK_ALLOC: block_alloc, TASK_BLOCK_REMOVAL: block_removal}
