"""Named constants of the inference app."""

from __future__ import annotations

from django.db import models


class DeploymentStatus(models.TextChoices):
    STARTING = "starting"  # workloads created; its gRPC port does not answer yet
    RUNNING = "running"
    FAILED = "failed"
    REMOVING = "removing"


TASK_INFERENCE_SERVER_CREATION = "inference_server_creation"
