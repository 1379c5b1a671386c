"""What the registries make searchable (matchType ``component``)."""

from __future__ import annotations

from apps.registries.models import Component
from apps.registries.queries import COMPONENT_FIELDS
from apps.registries.services import component_document
from apps.search.registry import register


def register_search_entities() -> None:
    register(
        "component",
        lambda: Component.objects.select_related("owner"),
        COMPONENT_FIELDS,
        component_document,
        id_key="componentURI",
        ordering=("component_uri",),
    )
