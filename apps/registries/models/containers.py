"""Container registry index (reference inventory §1.11)."""

from __future__ import annotations

import uuid

from django.db import models

from apps.core.models import OwnedModel


class ContainerRegistry(OwnedModel):
    """An OCI registry anyone runs and lists here; component images are pulled from it."""

    container_registry_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    public_url = models.URLField(max_length=500)
    image_prefix = models.CharField(max_length=300, blank=True, default="")
    config = models.JSONField(
        default=dict, blank=True, help_text="auth_required, mirror_enabled, max_layer_size_mb…"
    )
    storage_info = models.JSONField(
        default=dict, blank=True, help_text="storage_type, storage_size, memory_size, registry_type"
    )

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "container registries"

    def __str__(self) -> str:
        return f"{self.name} ({self.public_url})"
