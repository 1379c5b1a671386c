"""Blocks (a deployed component on one cluster) and their instances.

A ``Block`` keeps the spec as submitted and the merged values the runtime uses (component
inheritance and policy merge, reference §1.2), its placement, its endpoints and its status.
An ``Instance`` is one process running the component class on a node (with its GPUs); its
health is what the block's health checker last reported.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from apps.blocks.choices import BlockStatus, InstanceHealth, InstanceStatus
from apps.core.models import OwnedModel, TimeStampedModel
from apps.core.uris import URIError, validate_slug_id


def validate_block_id(value: str) -> None:
    try:
        validate_slug_id(value, "blockId")
    except URIError as exc:
        raise ValidationError(str(exc)) from None


class Block(OwnedModel):
    id = models.CharField(primary_key=True, max_length=63, validators=[validate_block_id])
    # The component may be unregistered later; the block keeps its URI and its copy.
    component = models.ForeignKey(
        "registries.Component",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="blocks",
    )
    component_uri = models.CharField(max_length=400, db_index=True)
    # The component as it was when the block was created: a later edit of the component
    # does not change what this block's new instances run.
    component_data = models.JSONField(default=dict, blank=True)
    cluster = models.ForeignKey(
        "clusters.Cluster",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="blocks",
        help_text="set once the allocator has placed the block",
    )
    status = models.CharField(
        max_length=16, choices=BlockStatus.choices, default=BlockStatus.PENDING, db_index=True
    )
    status_reason = models.TextField(blank=True, default="")
    spec = models.JSONField(default=dict, blank=True, help_text="the spec values as submitted")
    # Merged values (component defaults <- block spec), what the runtime receives.
    block_init_data = models.JSONField(default=dict, blank=True)
    init_settings = models.JSONField(default=dict, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    policies = models.JSONField(
        default=dict, blank=True, help_text="name -> {policyRuleURI, parameters, settings}"
    )
    block_metadata = models.JSONField(default=dict, blank=True)
    input_protocol = models.JSONField(default=dict, blank=True)
    output_protocol = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    min_instances = models.PositiveIntegerField(default=1)
    max_instances = models.PositiveIntegerField(default=1)
    endpoints = models.JSONField(
        default=dict, blank=True, help_text='{"grpc": "host:port", "http": ..., "controller": ...}'
    )
    allocation = models.JSONField(default=dict, blank=True, help_text="the allocator's decision")
    services = models.JSONField(
        default=dict, blank=True, help_text="executor/controller workload ids and ports"
    )
    last_task_id = models.UUIDField(null=True, blank=True)
    last_scale_at = models.DateTimeField(null=True, blank=True)
    # sha256 of the block's service token (the block controller's credential).
    service_token_hash = models.CharField(
        max_length=64, blank=True, default="", editable=False, db_index=True
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(min_instances__lte=models.F("max_instances")),
                name="blocks_min_le_max_instances",
            )
        ]

    def __str__(self) -> str:
        return self.id


class Instance(TimeStampedModel):
    instance_id = models.CharField(primary_key=True, max_length=128)
    block = models.ForeignKey(Block, on_delete=models.CASCADE, related_name="instances")
    node = models.ForeignKey(
        "clusters.Node", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    gpus = models.JSONField(default=list, blank=True, help_text="GPU indices on the node")
    workload_id = models.CharField(max_length=128, blank=True, default="")
    host = models.CharField(max_length=255, blank=True, default="")
    http_port = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(
        max_length=16,
        choices=InstanceStatus.choices,
        default=InstanceStatus.STARTING,
        db_index=True,
    )
    health = models.CharField(
        max_length=16, choices=InstanceHealth.choices, default=InstanceHealth.UNKNOWN
    )
    health_detail = models.JSONField(default=dict, blank=True)
    last_health_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    requests_processed = models.BigIntegerField(default=0)
    requests_failed = models.BigIntegerField(default=0)
    replaces = models.CharField(
        max_length=128, blank=True, default="", help_text="the instance this one replaced"
    )

    class Meta:
        ordering = ["block_id", "created_at", "instance_id"]

    def __str__(self) -> str:
        return self.instance_id
