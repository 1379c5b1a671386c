"""vDAGs (virtual DAGs over running blocks, possibly nested and spanning clusters) and the
vDAG controllers that serve them (reference §1.13-§1.14).

A ``VDag`` keeps the spec as submitted, the node objects completed by the system
(``inputProtocol``/``outputProtocol``/``IOMap``), the node assignment
(``{nodeLabel: block_id}``) and the compiled graph (the data plane's stored form, also the
route carried in packets). A ``VDagController`` is one deployed gRPC gateway of a vDAG on
one cluster: a workload (or several replicas) run by the cluster's driver.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from apps.core.models import OwnedModel
from apps.core.uris import URIError, validate_slug_id
from apps.vdags.choices import ControllerStatus, VDagStatus


def validate_controller_id(value: str) -> None:
    try:
        validate_slug_id(value, "vdag_controller_id")
    except URIError as exc:
        raise ValidationError(str(exc)) from None


class VDag(OwnedModel):
    vdag_uri = models.CharField(
        primary_key=True, max_length=300, help_text="vdagName:version-release-tag"
    )
    name = models.CharField(max_length=200, db_index=True)
    version = models.CharField(max_length=64)
    release_tag = models.CharField(max_length=64)
    status = models.CharField(
        max_length=16, choices=VDagStatus.choices, default=VDagStatus.PENDING, db_index=True
    )
    status_reason = models.TextField(blank=True, default="")
    spec = models.JSONField(default=dict, blank=True, help_text="the spec values as submitted")
    discovery_tags = models.JSONField(default=list, blank=True)
    controller = models.JSONField(
        default=dict,
        blank=True,
        help_text="inputSources, initParameters, initSettings, policies",
    )
    nodes = models.JSONField(
        default=list,
        blank=True,
        help_text="node objects, completed with inputProtocol, outputProtocol and IOMap",
    )
    graph = models.JSONField(default=dict, blank=True, help_text="connections, inputs, outputs")
    assignment = models.JSONField(
        default=dict, blank=True, help_text="nodeLabel -> block_id (nested nodes: outer/inner)"
    )
    compiled_graph = models.JSONField(
        default=dict, blank=True, help_text="the data plane's compiled route"
    )
    # Denormalized for "which vDAGs use this block / that vDAG" without walking graphs.
    block_ids = models.JSONField(default=list, blank=True)
    nested_vdags = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    last_task_id = models.UUIDField(null=True, blank=True)

    class Meta:
        ordering = ["vdag_uri"]
        verbose_name = "vDAG"
        verbose_name_plural = "vDAGs"

    def __str__(self) -> str:
        return self.vdag_uri


class VDagController(OwnedModel):
    vdag_controller_id = models.CharField(
        primary_key=True, max_length=63, validators=[validate_controller_id]
    )
    vdag = models.ForeignKey(
        VDag,
        on_delete=models.PROTECT,
        related_name="controllers",
        db_column="vdag_uri",
    )
    cluster = models.ForeignKey(
        "clusters.Cluster", on_delete=models.CASCADE, related_name="vdag_controllers"
    )
    config = models.JSONField(
        default=dict, blank=True, help_text="policy_execution_mode, replicas, policies, ..."
    )
    status = models.CharField(
        max_length=16,
        choices=ControllerStatus.choices,
        default=ControllerStatus.STARTING,
        db_index=True,
    )
    status_reason = models.TextField(blank=True, default="")
    public_url = models.CharField(
        max_length=300, blank=True, default="", help_text="gRPC host:port of vDAGInferenceService"
    )
    management_url = models.CharField(
        max_length=300, blank=True, default="", help_text="REST management base URL"
    )
    endpoints = models.JSONField(
        default=list, blank=True, help_text="per replica: workload_id, grpc, http"
    )
    metadata = models.JSONField(default=dict, blank=True)
    search_tags = models.JSONField(default=list, blank=True)
    last_task_id = models.UUIDField(null=True, blank=True)
    # The last quality-stream entry copied into QualitySample (Redis stream id).
    quality_cursor = models.CharField(max_length=40, blank=True, default="0-0", editable=False)

    class Meta:
        ordering = ["vdag_controller_id"]
        verbose_name = "vDAG controller"
        verbose_name_plural = "vDAG controllers"

    def __str__(self) -> str:
        return self.vdag_controller_id

    @property
    def vdag_uri(self) -> str:
        return self.vdag_id


class QualitySample(models.Model):
    """A request/response pair the controller's ``qualityChecker`` chose to record, copied
    from the controller's bounded Redis stream for audit. Samples outlive the controller."""

    id = models.BigAutoField(primary_key=True)
    vdag_controller_id = models.CharField(max_length=63, db_index=True)
    vdag_uri = models.CharField(max_length=300, db_index=True)
    stream_id = models.CharField(max_length=40)
    ts = models.DateTimeField(db_index=True)
    session_id = models.CharField(max_length=255, db_index=True, blank=True, default="")
    seq_no = models.BigIntegerField(default=0)
    request = models.JSONField(default=dict, blank=True)
    response = models.JSONField(default=dict, blank=True)
    policy = models.CharField(max_length=300, blank=True, default="")
    policy_result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["ts", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["vdag_controller_id", "stream_id"], name="vdags_quality_sample_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.vdag_controller_id} {self.session_id}/{self.seq_no}"
