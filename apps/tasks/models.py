"""The global tasks DB: every long operation is a task with status and progress."""

import uuid

from django.db import models

from apps.core.models import OwnedModel
from apps.tasks.choices import TaskStatus


class Task(OwnedModel):
    task_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task_type = models.CharField(max_length=64, db_index=True)
    task_status = models.CharField(
        max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING, db_index=True
    )
    task_data = models.JSONField(
        default=dict, blank=True, help_text="What the task was asked to do."
    )
    task_status_data = models.JSONField(
        default=dict, blank=True, help_text="What the task reports: partial results, the result."
    )
    progress = models.PositiveSmallIntegerField(default=0, help_text="0 to 100")
    progress_message = models.CharField(max_length=500, blank=True, default="")
    error = models.TextField(blank=True, default="")
    # How to run it again: the Celery task name and its keyword arguments (JSON).
    runner = models.CharField(max_length=200, blank=True, default="")
    runner_kwargs = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["task_type", "task_status"])]

    def __str__(self) -> str:
        return f"{self.task_type} {self.task_id} ({self.task_status})"

    @property
    def is_finished(self) -> bool:
        return self.task_status in {TaskStatus.COMPLETED, TaskStatus.FAILED}
