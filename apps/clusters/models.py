"""Clusters, their nodes and GPUs, the workloads placed on nodes, and the gateway's config.

Field names follow the AIOS cluster and node specs (reference §1.4); sizes are in MB. The
API renders these rows back into the reference document shape (``services.cluster_document``).
"""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from apps.clusters import conf
from apps.clusters.choices import (
    ClusterStatus,
    DesiredState,
    DriverName,
    NodeStatus,
    PolicyExecutionMode,
    RestartPolicy,
    WorkloadKind,
    WorkloadStatus,
)
from apps.clusters.secrets import decrypt_text, encrypt_text
from apps.core.models import OwnedModel, TimeStampedModel
from apps.core.uris import URIError, validate_slug_id


def validate_slug(value: str) -> None:
    try:
        validate_slug_id(value)
    except URIError as exc:
        raise ValidationError(str(exc)) from None


class Cluster(OwnedModel):
    id = models.CharField(primary_key=True, max_length=63, validators=[validate_slug])
    region_id = models.CharField(max_length=200, db_index=True)
    status = models.CharField(
        max_length=16, choices=ClusterStatus.choices, default=ClusterStatus.PENDING, db_index=True
    )
    status_message = models.CharField(max_length=500, blank=True, default="")
    driver = models.CharField(
        max_length=16, choices=DriverName.choices, default=DriverName.LOCAL, db_index=True
    )
    # Resource totals as the spec declared them; recomputed from the nodes once it has some.
    gpus = models.JSONField(default=dict, blank=True, help_text='{"count", "memory" (MB)}')
    vcpus = models.JSONField(default=dict, blank=True, help_text='{"count"}')
    memory = models.BigIntegerField(default=0, help_text="MB")
    swap = models.BigIntegerField(default=0, help_text="MB")
    storage = models.JSONField(default=dict, blank=True, help_text='{"disks", "size" (MB)}')
    network = models.JSONField(
        default=dict, blank=True, help_text='{"interfaces", "txBandwidth", "rxBandwidth"}'
    )
    config = models.JSONField(
        default=dict,
        blank=True,
        help_text="policyExecutionMode, policyExecutorId, publicHostname, actionsPolicyMap, "
        "urlMap, allowExternalNodes, useGateway, customPolicySystem, driver",
    )
    tags = models.JSONField(default=list, blank=True)
    cluster_metadata = models.JSONField(default=dict, blank=True)
    reputation = models.PositiveSmallIntegerField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    # Fernet token; the plaintext kubeconfig is never stored and never serialized.
    kubeconfig_encrypted = models.TextField(blank=True, default="", editable=False)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.id

    # -- secrets ------------------------------------------------------------------
    @property
    def has_kubeconfig(self) -> bool:
        return bool(self.kubeconfig_encrypted)

    def set_kubeconfig(self, plaintext: str | None) -> None:
        self.kubeconfig_encrypted = encrypt_text(plaintext or "")

    def get_kubeconfig(self) -> str:
        return decrypt_text(self.kubeconfig_encrypted)

    # -- config helpers -----------------------------------------------------------
    @property
    def actions_policy_map(self) -> dict[str, str]:
        value = (self.config or {}).get("actionsPolicyMap") or {}
        return {k: v for k, v in value.items() if isinstance(v, str) and v}

    @property
    def policy_execution_mode(self) -> str:
        mode = (self.config or {}).get("policyExecutionMode") or PolicyExecutionMode.LOCAL
        return PolicyExecutionMode.REMOTE if mode in ("remote", "distributed") else mode

    @property
    def policy_executor_id(self) -> str:
        return str((self.config or {}).get("policyExecutorId") or "")


class Node(TimeStampedModel):
    # Node ids are unique in the whole network: /api/v1/nodes/<id>/ names one node.
    id = models.CharField(primary_key=True, max_length=63, validators=[validate_slug])
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="nodes")
    status = models.CharField(
        max_length=16, choices=NodeStatus.choices, default=NodeStatus.PENDING, db_index=True
    )
    status_message = models.CharField(max_length=500, blank=True, default="")
    # A cordoned node keeps its workloads but receives no new placements.
    schedulable = models.BooleanField(default=True)
    # GPU spec keys other than the per-GPU list (features, modelNames); GPUs are rows.
    gpu_info = models.JSONField(default=dict, blank=True)
    vcpus = models.JSONField(default=dict, blank=True, help_text='{"count"}')
    memory = models.BigIntegerField(default=0, help_text="MB")
    swap = models.BigIntegerField(default=0, help_text="MB")
    storage = models.JSONField(default=dict, blank=True)
    network = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    node_metadata = models.JSONField(default=dict, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True, db_index=True)
    agent_info = models.JSONField(
        default=dict, blank=True, help_text="hostname, pid, started_at of the node agent"
    )

    class Meta:
        ordering = ["cluster_id", "id"]

    def __str__(self) -> str:
        return f"{self.cluster_id}/{self.id}"

    @property
    def vcpu_count(self) -> float:
        try:
            return float((self.vcpus or {}).get("count") or 0)
        except (TypeError, ValueError):
            return 0.0

    @property
    def heartbeat_fresh(self) -> bool:
        if self.last_heartbeat is None:
            return False
        return timezone.now() - self.last_heartbeat <= timedelta(seconds=conf.NODE_STALE_S)

    @property
    def effective_status(self) -> str:
        """The stored status, corrected for an agent that stopped reporting."""
        if self.status == NodeStatus.READY and not self.heartbeat_fresh:
            return NodeStatus.NOT_READY
        return self.status

    @property
    def is_healthy(self) -> bool:
        return self.effective_status == NodeStatus.READY


class GPU(models.Model):
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="gpus")
    index = models.PositiveSmallIntegerField()
    model = models.CharField(max_length=128, blank=True, default="")
    memory_mb = models.PositiveIntegerField(default=0)
    # A shared GPU may hold several instances at once (each reserving part of its memory);
    # an exclusive one holds one instance.
    shared = models.BooleanField(default=False)
    uuid = models.CharField(max_length=128, blank=True, default="")
    declared = models.BooleanField(
        default=True, help_text="declared in the spec (not detected through NVML)"
    )
    features = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["node_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["node", "index"], name="clusters_gpu_node_index")
        ]

    def __str__(self) -> str:
        return f"{self.node_id}/gpu{self.index} ({self.model or 'gpu'}, {self.memory_mb} MB)"


class Workload(TimeStampedModel):
    """A process the cluster's driver keeps running (or stopped) on one node.

    On the local driver the node agent turns each row into a child process; on Kubernetes a
    row becomes a Deployment/Job. A block's executor and instances, vDAG controllers, policy
    functions and jobs are all workloads that differ only by ``kind`` and entry point.
    """

    id = models.CharField(primary_key=True, max_length=128)
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="workloads")
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="workloads")
    kind = models.CharField(max_length=32, choices=WorkloadKind.choices, db_index=True)
    # Who the workload serves (block/instance/vDAG controller ids); free-form labels beside.
    block_id = models.CharField(max_length=63, blank=True, default="", db_index=True)
    instance_id = models.CharField(max_length=128, blank=True, default="", db_index=True)
    labels = models.JSONField(default=dict, blank=True)
    # What to run: a python entry point (``pkg.module`` or ``pkg.module:callable``), or an
    # argv in ``command``; ``image`` is for drivers that run containers.
    entry_point = models.CharField(max_length=255, blank=True, default="")
    command = models.JSONField(default=list, blank=True)
    args = models.JSONField(default=list, blank=True)
    env = models.JSONField(default=dict, blank=True)
    image = models.CharField(max_length=500, blank=True, default="")
    ports = models.JSONField(default=dict, blank=True, help_text="name -> port")
    resources = models.JSONField(default=dict, blank=True, help_text="vcpus, memory_mb, gpus")
    gpu_ids = models.JSONField(default=list, blank=True, help_text="GPU indices on the node")
    probes = models.JSONField(default=dict, blank=True)
    desired_state = models.CharField(
        max_length=16, choices=DesiredState.choices, default=DesiredState.RUNNING
    )
    restart_policy = models.CharField(
        max_length=16, choices=RestartPolicy.choices, default=RestartPolicy.ALWAYS
    )
    max_restarts = models.PositiveIntegerField(default=0, help_text="0 = unlimited")
    stop_grace_s = models.FloatField(default=5.0)
    # Bumped to make the agent restart the process with the current spec.
    generation = models.PositiveIntegerField(default=1)
    # Set by a removal: the agent stops the process, then deletes the row.
    remove_requested = models.BooleanField(default=False, db_index=True)
    # Observed state, written by the node agent.
    status = models.CharField(
        max_length=16,
        choices=WorkloadStatus.choices,
        default=WorkloadStatus.PENDING,
        db_index=True,
    )
    pid = models.IntegerField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    log_path = models.CharField(max_length=500, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    next_restart_at = models.DateTimeField(null=True, blank=True)
    observed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["cluster_id", "node_id", "id"]
        indexes = [models.Index(fields=["node", "desired_state"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} on {self.node_id}"


class GatewayConfig(TimeStampedModel):
    """The network gateway's settings (one row): pre-check policy map and execution mode."""

    SINGLETON_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    actions_policy_map = models.JSONField(
        default=dict, blank=True, help_text="pre-check action -> policy rule URI"
    )
    policy_execution_mode = models.CharField(
        max_length=16, choices=PolicyExecutionMode.choices, default=PolicyExecutionMode.LOCAL
    )
    policy_executor_id = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        verbose_name = "gateway config"
        verbose_name_plural = "gateway config"

    def __str__(self) -> str:
        return "gateway config"

    def save(self, *args, **kwargs) -> None:
        self.id = self.SINGLETON_ID
        super().save(*args, **kwargs)
