"""Spec store and template store (reference inventory §1.9, §1.10)."""

from __future__ import annotations

from django.db import models

from apps.core.models import OwnedModel
from apps.registries.choices import SpecFormat, SpecType


class Spec(OwnedModel):
    """A reusable spec (``name:version-tag``), run by ``/api/with-spec/<action>``."""

    spec_uri = models.CharField(max_length=300, unique=True)
    spec_type = models.CharField(max_length=32, choices=SpecType.choices, db_index=True)
    name = models.CharField(max_length=200, db_index=True)
    version = models.CharField(max_length=64)
    tag = models.CharField(max_length=64)
    description = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    spec_data = models.JSONField(
        default=dict, help_text="The parsed spec: a full envelope or only its values."
    )
    spec_format = models.CharField(
        max_length=8, choices=SpecFormat.choices, default=SpecFormat.OBJECT
    )
    spec_source = models.TextField(
        blank=True, default="", help_text="The text as sent, when specData was a JSON/YAML string."
    )

    class Meta:
        ordering = ["name", "version", "tag"]

    def __str__(self) -> str:
        return self.spec_uri


class Template(OwnedModel):
    """A custom parser template: its policy turns a custom spec into the internal form."""

    template_uri = models.CharField(max_length=300, unique=True)
    template_policy_rule_uri = models.CharField(max_length=300, db_index=True)
    name = models.CharField(max_length=200, db_index=True)
    version = models.CharField(max_length=64)
    tag = models.CharField(max_length=64)
    description = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    template_data = models.JSONField(
        default=dict,
        blank=True,
        help_text="A JSON-schema-like description of the custom spec (object or string).",
    )

    class Meta:
        ordering = ["name", "version", "tag"]

    def __str__(self) -> str:
        return self.template_uri
