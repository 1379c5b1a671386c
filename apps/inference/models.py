"""The control side of adhoc inference servers, and their request logs.

An ``InferenceServerDeployment`` is one adhoc inference server (``python -m
block_sdk.inference_server``) run as a workload on a cluster and listed in the
inference-server registry (``apps.registries`` ``InferenceServer``) with its public URL.
``RequestLog`` is the table the servers write request logs into with psycopg, in batches
(reference §1.15: ``request_id, session_id, block_id, seq_no, ts, data, query_parameters,
output_ptr``); the control plane only reads it.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Now

from apps.core.models import OwnedModel
from apps.core.uris import URIError, validate_slug_id
from apps.inference.choices import DeploymentStatus


def validate_deployment_id(value: str) -> None:
    try:
        validate_slug_id(value, "deployment_id")
    except URIError as exc:
        raise ValidationError(str(exc)) from None


class InferenceServerDeployment(OwnedModel):
    deployment_id = models.CharField(
        primary_key=True, max_length=63, validators=[validate_deployment_id]
    )
    name = models.CharField(max_length=200, db_index=True)
    cluster = models.ForeignKey(
        "clusters.Cluster", on_delete=models.CASCADE, related_name="inference_servers"
    )
    server = models.OneToOneField(
        "registries.InferenceServer",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="deployment",
        help_text="the registry entry clients discover it by",
    )
    config = models.JSONField(
        default=dict, blank=True, help_text="quota policy, request logging, replicas, ..."
    )
    metadata = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    status = models.CharField(
        max_length=16,
        choices=DeploymentStatus.choices,
        default=DeploymentStatus.STARTING,
        db_index=True,
    )
    status_reason = models.TextField(blank=True, default="")
    public_url = models.CharField(max_length=300, blank=True, default="", help_text="gRPC")
    management_url = models.CharField(max_length=300, blank=True, default="")
    endpoints = models.JSONField(default=list, blank=True)
    last_task_id = models.UUIDField(null=True, blank=True)

    class Meta:
        ordering = ["deployment_id"]

    def __str__(self) -> str:
        return self.deployment_id


class RequestLog(models.Model):
    """One logged request (reference §1.15 ``block_inference``). Written by the data plane
    with ``COPY`` in batches (``block_sdk.inference_server.request_log``), never by Django;
    the column set and defaults are that contract."""

    request_id = models.UUIDField(primary_key=True)
    # Database defaults: the data plane's writes may leave optional columns out.
    session_id = models.CharField(max_length=255, blank=True, db_default="")
    block_id = models.CharField(max_length=255, blank=True, db_default="")
    seq_no = models.BigIntegerField(db_default=0)
    ts = models.DateTimeField(db_index=True, db_default=Now())
    data = models.TextField(blank=True, db_default="")
    query_parameters = models.TextField(blank=True, db_default="")
    output_ptr = models.TextField(blank=True, db_default="")

    class Meta:
        db_table = "inference_request_log"
        ordering = ["ts", "request_id"]
        indexes = [
            models.Index(fields=["session_id", "ts"], name="inference_log_session_ts"),
            models.Index(fields=["block_id", "ts"], name="inference_log_block_ts"),
            models.Index(fields=["session_id", "block_id", "ts"], name="inference_log_sess_blk_ts"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.session_id}/{self.seq_no} -> {self.block_id}"
