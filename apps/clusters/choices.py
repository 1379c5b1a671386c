"""Named constants of the clusters app: statuses, drivers, workload kinds, pre-check actions."""

from __future__ import annotations

from django.db import models


class ClusterStatus(models.TextChoices):
    PENDING = "pending"  # registered, infrastructure not created yet
    PROVISIONING = "provisioning"
    LIVE = "live"
    FAILED = "failed"
    REMOVING = "removing"


class NodeStatus(models.TextChoices):
    PENDING = "pending"  # registered; its agent has not reported yet
    READY = "ready"  # its agent heartbeats
    NOT_READY = "not_ready"  # the agent stopped reporting
    REMOVING = "removing"


class DriverName(models.TextChoices):
    LOCAL = "local"
    KUBERNETES = "kubernetes"


class PolicyExecutionMode(models.TextChoices):
    LOCAL = "local"
    REMOTE = "remote"


class WorkloadKind(models.TextChoices):
    EXECUTOR = "executor"
    INSTANCE = "instance"
    VDAG_CONTROLLER = "vdag_controller"
    FUNCTION = "function"
    JOB = "job"
    INFERENCE_SERVER = "inference_server"
    THIRD_PARTY_INIT = "third_party_init"
    SIDECAR = "sidecar"
    SERVICE = "service"


class DesiredState(models.TextChoices):
    RUNNING = "running"
    STOPPED = "stopped"


class RestartPolicy(models.TextChoices):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


class WorkloadStatus(models.TextChoices):
    PENDING = "pending"  # no process yet
    STARTING = "starting"  # spawned, not yet through its first second
    RUNNING = "running"
    BACKOFF = "backoff"  # died; waiting before the next restart
    EXITED = "exited"  # ended with code 0 and is not restarted
    FAILED = "failed"  # ended with an error and is not restarted (any more)
    STOPPED = "stopped"  # stopped because it was asked to


# Workload states in which a process may be alive (or about to be) on its node.
ACTIVE_WORKLOAD_STATUSES = (
    WorkloadStatus.PENDING,
    WorkloadStatus.STARTING,
    WorkloadStatus.RUNNING,
    WorkloadStatus.BACKOFF,
)

# Pre-check hooks of the network gateway (reference §1.6) ...
GATEWAY_PRECHECK_ACTIONS = (
    "add_node",
    "remove_node",
    "add_cluster",
    "remove_cluster",
    "add_block",
    "remove_block",
    "update_cluster",
    "scale_block",
    "block_mgmt",
    "cluster_mgmt",
)
# ... and of each cluster's controller (reference §1.5), read from config.actionsPolicyMap.
CONTROLLER_PRECHECK_ACTIONS = (
    "add_node",
    "remove_node",
    "update_cluster",
    "scale_block",
    "add_block",
    "remove_block",
    "add_vdag_controller",
    "remove_vdag_controller",
    "block_mgmt",
    "cluster_mgmt",
)
# config.actionsPolicyMap also carries the controller's action hooks (reference §1.4).
CLUSTER_ACTION_HOOKS = (
    "create_block",
    "parameter_update",
    "scale",
    "dry_run",
    "remove_instance",
    "init_create_status_update",
    "query_init_container_data",
    "reassign-instances",
)

# Task types recorded in the global tasks DB.
TASK_CLUSTER_INFRA_CREATION = "cluster_infra_creation"
TASK_CLUSTER_INFRA_REMOVE = "cluster_infra_remove"
TASK_NODE_ADDITION = "node_addition"
TASK_NODE_REMOVAL = "node_removal"
