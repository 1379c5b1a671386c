"""GPU and node accounting: what each placed instance holds.

An ``Allocation`` is one instance's reservation on one node (vCPUs, memory, GPUs). Each GPU
it holds is a ``GPUAllocation`` row; a partial unique index makes it impossible for two rows
to hold the same GPU exclusively, whatever the code above does. Shared GPUs are explicit:
the GPU row says ``shared`` and each sharing instance reserves part of its memory.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from apps.clusters.models import GPU, Cluster, Node
from apps.core.models import TimeStampedModel


class Allocation(TimeStampedModel):
    instance_id = models.CharField(max_length=128, unique=True)
    block_id = models.CharField(max_length=63, blank=True, default="", db_index=True)
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="allocations")
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="allocations")
    vcpus = models.FloatField(default=0)
    memory_mb = models.PositiveIntegerField(default=0)
    shared_gpus = models.BooleanField(default=False)
    policy_rule_uri = models.CharField(max_length=300, blank=True, default="")
    score = models.FloatField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["cluster_id", "node_id", "instance_id"]

    def __str__(self) -> str:
        return f"{self.instance_id} on {self.node_id}"


class GPUAllocation(models.Model):
    allocation = models.ForeignKey(
        Allocation, on_delete=models.CASCADE, related_name="gpu_allocations"
    )
    gpu = models.ForeignKey(GPU, on_delete=models.CASCADE, related_name="allocations")
    instance_id = models.CharField(max_length=128, db_index=True)
    exclusive = models.BooleanField(default=True)
    memory_mb = models.PositiveIntegerField(default=0, help_text="reserved on a shared GPU")

    class Meta:
        ordering = ["gpu_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["gpu"], condition=Q(exclusive=True), name="allocator_gpu_exclusive_once"
            ),
            models.UniqueConstraint(fields=["allocation", "gpu"], name="allocator_gpu_once_per"),
        ]

    def __str__(self) -> str:
        mode = "exclusive" if self.exclusive else "shared"
        return f"{self.instance_id} -> gpu {self.gpu_id} ({mode})"
