"""Inference-server registry (reference inventory §1.15)."""

from __future__ import annotations

import uuid

from django.db import models

from apps.core.models import OwnedModel


class InferenceServer(OwnedModel):
    """An adhoc inference server anyone deploys and lists; its public URL is the gRPC
    endpoint clients call."""

    inference_server_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, db_index=True)
    metadata = models.JSONField(
        default=dict,
        blank=True,
        help_text="region, availability_zone, provider, cluster_id, gpu_available, "
        "quota_management_data",
    )
    tags = models.JSONField(default=list, blank=True)
    public_url = models.CharField(max_length=500, help_text="host:port or URL of the gRPC API")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.public_url})"
