"""Component registry (reference inventory §1.3)."""

from __future__ import annotations

from django.db import models

from apps.core.models import OwnedModel


class Component(OwnedModel):
    """An onboarded component: image, protocols, defaults and policies. ``component_uri``
    is ``componentType.name:version-releaseTag``, generated on registration."""

    component_uri = models.CharField(max_length=400, unique=True)
    component_type = models.CharField(max_length=64, db_index=True)
    name = models.CharField(max_length=200, db_index=True)
    version = models.CharField(max_length=64)
    release_tag = models.CharField(max_length=64)
    container_registry_info = models.JSONField(default=dict, blank=True)
    component_metadata = models.JSONField(default=dict, blank=True)
    component_init_data = models.JSONField(default=dict, blank=True)
    component_input_protocol = models.JSONField(default=dict, blank=True)
    component_output_protocol = models.JSONField(default=dict, blank=True)
    policies = models.JSONField(default=dict, blank=True)
    component_management_commands_template = models.JSONField(default=dict, blank=True)
    component_init_settings = models.JSONField(default=dict, blank=True)
    component_init_parameters = models.JSONField(default=dict, blank=True)
    component_parameters_protocol = models.JSONField(default=dict, blank=True)
    component_init_settings_protocol = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["component_type", "name", "version", "release_tag"]

    def __str__(self) -> str:
        return self.component_uri

    @property
    def component_mode(self) -> str:
        return str((self.container_registry_info or {}).get("componentMode", ""))

    @property
    def entrypoint(self) -> str:
        """``module.path:ClassName`` of the instance class for the local driver, or ''."""
        metadata = (self.container_registry_info or {}).get("containerImageMetadata") or {}
        return str(metadata.get("entrypoint", "")) if isinstance(metadata, dict) else ""
