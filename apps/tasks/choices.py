"""Names used by the global tasks DB."""

from django.db import models


class TaskStatus(models.TextChoices):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


FINISHED = {TaskStatus.COMPLETED, TaskStatus.FAILED}

# Task types named by AIOS; later apps add their own freely (the column is not an enum).
KNOWN_TASK_TYPES = (
    "vdag_creation",
    "block_alloc",
    "block_removal",
    "cluster_infra_creation",
    "cluster_infra_remove",
    "node_addition",
    "node_removal",
    "model_splits",
    "policy_job",
    "selftest",
)
