"""Named constants of the vdags app: vDAG and vDAG-controller states, node types, task types."""

from __future__ import annotations

from django.db import models


class VDagStatus(models.TextChoices):
    PENDING = "pending"  # accepted; the vdag_creation task has not finished
    ACTIVE = "active"  # assigned, compiled, servable by a controller
    FAILED = "failed"  # status_reason (and the task) say why


class NodeType(models.TextChoices):
    BLOCK = "block"
    VDAG = "vdag"


class SpecMode(models.TextChoices):
    CREATE = "create"
    DRY_RUN = "dry-run"


class ControllerStatus(models.TextChoices):
    STARTING = "starting"  # workloads created; its gRPC port does not answer yet
    RUNNING = "running"  # its gRPC port answers
    FAILED = "failed"  # it did not come up (status_reason says why)
    REMOVING = "removing"


class PolicyExecutionMode(models.TextChoices):
    LOCAL = "local"  # in the controller process (trusted policies)
    SANDBOX = "sandbox"  # the controller's sandbox pool
    REMOTE = "remote"  # AIOS's "remote"/"distributed"; runs sandboxed in the controller


# Tasks recorded in the global tasks DB.
TASK_VDAG_CREATION = "vdag_creation"
TASK_VDAG_CONTROLLER_CREATION = "vdag_controller_creation"

# Block statuses a vDAG node may be assigned to (the blocks app's "running").
ASSIGNABLE_BLOCK_STATUSES = ("running",)

# The vDAG controller policies a spec may name (reference §1.14, hooks 17-19).
CONTROLLER_POLICY_NAMES = ("quotaChecker", "qualityChecker", "healthChecker")
