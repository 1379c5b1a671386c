"""Assets: the index of asset DBs, and the built-in asset store (reference inventory §1.12)."""

from __future__ import annotations

import uuid

from django.db import models

from apps.core.models import OwnedModel
from apps.registries.choices import AssetSource


class AssetRegistry(OwnedModel):
    """An asset DB (object storage with metadata) listed in the network's index."""

    asset_registry_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    public_url = models.URLField(max_length=500)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "asset registries"

    def __str__(self) -> str:
        return f"{self.name} ({self.public_url})"


class Asset(OwnedModel):
    """A file in the built-in store (content addressed by sha256) or an external URL."""

    asset_uri = models.CharField(max_length=300, unique=True)
    asset_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200, db_index=True)
    version = models.CharField(max_length=64)
    tag = models.CharField(max_length=64)
    assets_db = models.ForeignKey(
        AssetRegistry,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assets",
        help_text="The asset DB it lives in; empty for the built-in store.",
    )
    source = models.CharField(max_length=16, choices=AssetSource.choices, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    storage_name = models.CharField(
        max_length=300, blank=True, default="", help_text="Path in the default storage."
    )
    external_url = models.URLField(max_length=1000, blank=True, default="")
    sha256 = models.CharField(max_length=64, blank=True, default="", db_index=True)
    size = models.BigIntegerField(null=True, blank=True)
    content_type = models.CharField(max_length=200, blank=True, default="")
    filename = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["name", "version", "tag"]

    def __str__(self) -> str:
        return self.asset_uri
