"""Named constants of the blocks app: block and instance states, task types, services."""

from __future__ import annotations

from django.db import models


class BlockStatus(models.TextChoices):
    PENDING = "pending"  # accepted; the block_alloc task has not started
    ALLOCATING = "allocating"  # choosing cluster, node and GPUs
    STARTING = "starting"  # workloads created; waiting for the executor and minInstances
    RUNNING = "running"
    FAILED = "failed"  # status_reason says why; nothing of it runs any more
    REMOVING = "removing"


class InstanceStatus(models.TextChoices):
    STARTING = "starting"  # workload created, not yet seen alive
    RUNNING = "running"
    REMOVING = "removing"  # asked to go (scale down, replacement, block removal)
    FAILED = "failed"


class InstanceHealth(models.TextChoices):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


# Statuses in which a block holds (or is about to hold) workloads and reservations.
ACTIVE_BLOCK_STATUSES = (BlockStatus.ALLOCATING, BlockStatus.STARTING, BlockStatus.RUNNING)

# Tasks recorded in the global tasks DB.
TASK_BLOCK_ALLOC = "block_alloc"
TASK_BLOCK_REMOVAL = "block_removal"

# Management-command services of a block (reference §1.20).
MGMT_SERVICES = ("executor", "autoscaler", "health", "instances")

# Standard policy names of a block spec (reference §1.2).
POLICY_NAMES = (
    "clusterAllocator",
    "resourceAllocator",
    "loadBalancer",
    "stabilityChecker",
    "autoscaler",
)
