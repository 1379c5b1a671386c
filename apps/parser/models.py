"""The parser task log: every parser call, who made it, with what spec and outcome."""

from __future__ import annotations

import uuid

from django.db import models

from apps.core.models import OwnedModel
from apps.parser.choices import ParserTaskStatus


class ParserTask(OwnedModel):
    """One call of a parser action (``owner`` is the caller). Re-executable: the recorded
    envelope is run again as a new task linked to this one."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    action = models.CharField(max_length=64, db_index=True, help_text="canonical action name")
    requested_action = models.CharField(
        max_length=64, blank=True, default="", help_text="the name as called (aliases kept)"
    )
    template_uri = models.CharField(max_length=300, blank=True, default="", db_index=True)
    spec_uri = models.CharField(
        max_length=300, blank=True, default="", db_index=True, help_text="with-spec calls"
    )
    spec = models.JSONField(default=dict, blank=True, help_text="The envelope as run.")
    status = models.CharField(
        max_length=16,
        choices=ParserTaskStatus.choices,
        default=ParserTaskStatus.RUNNING,
        db_index=True,
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(default=dict, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    re_executed_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="re_executions",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["action", "status"])]

    def __str__(self) -> str:
        return f"{self.action} {self.id} ({self.status} {self.response_status or ''})".strip()
