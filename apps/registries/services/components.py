"""Component registry: register, read, update and unregister components.

The component spec (``body.spec.values`` of ``createComponent``) is validated with the
parser's built-in schema, so the REST API and the parser accept exactly the same shape
and report errors the same way.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from apps.core.errors import NotFound, ValidationFailed
from apps.core.uris import URIError, build_component_uri
from apps.parser import validation
from apps.registries.models import Component
from apps.registries.services.common import create_unique, lookup_value

log = logging.getLogger("aios.registries")

# camelCase key of the spec -> model column (besides componentId/componentType).
SPEC_COLUMNS: dict[str, str] = {
    "containerRegistryInfo": "container_registry_info",
    "componentMetadata": "component_metadata",
    "componentInitData": "component_init_data",
    "componentInputProtocol": "component_input_protocol",
    "componentOutputProtocol": "component_output_protocol",
    "policies": "policies",
    "componentManagementCommandsTemplate": "component_management_commands_template",
    "componentInitSettings": "component_init_settings",
    "componentInitParameters": "component_init_parameters",
    "componentParametersProtocol": "component_parameters_protocol",
    "componentInitSettingsProtocol": "component_init_settings_protocol",
    "tags": "tags",
}
# The AIOS docs spell two keys two ways; the second spelling is accepted on input.
ALIASES: dict[str, str] = {
    "componentParameters": "componentInitParameters",
    "componentInitParametersProtocol": "componentParametersProtocol",
}


def _normalize(values: dict, base: list[Any]) -> dict:
    values = copy.deepcopy(values)
    for alias, canonical in ALIASES.items():
        if alias in values:
            if canonical in values and values[canonical] != values[alias]:
                raise ValidationFailed(
                    f"give {canonical!r} or its alias {alias!r}, not both",
                    details=[
                        {
                            "pointer": validation.pointer([*base, alias]),
                            "message": f"conflicts with {canonical!r}",
                            "expected": f"only {canonical!r}",
                        }
                    ],
                )
            values[canonical] = values.pop(alias)
    return values


def component_uri_of(values: dict) -> str:
    component_id = values["componentId"]
    try:
        return build_component_uri(
            values["componentType"],
            component_id["name"],
            component_id["version"],
            component_id["releaseTag"],
        )
    except URIError as exc:
        raise ValidationFailed(
            str(exc), details=[{"pointer": "/componentId", "message": str(exc)}]
        ) from None


def validate_component_values(values: Any, base: list[Any] | None = None) -> dict:
    """Validate and normalize a component spec; raises a 400 listing every problem."""
    base = list(base or [])
    if not isinstance(values, dict):
        validation.validate_values("createComponent", values, base)  # raises a type error
    values = _normalize(values, base)
    return validation.validate_values("createComponent", values, base)


def _columns(values: dict) -> dict[str, Any]:
    columns: dict[str, Any] = {
        "component_type": values["componentType"],
        "name": values["componentId"]["name"],
        "version": values["componentId"]["version"],
        "release_tag": values["componentId"]["releaseTag"],
    }
    for key, column in SPEC_COLUMNS.items():
        if key in values:
            columns[column] = values[key]
    return columns


def register_component(values: Any, *, owner=None, base: list[Any] | None = None) -> Component:
    """Register a component from its spec values; the URI is generated. A URI that
    exists already is a 409."""
    values = validate_component_values(values, base)
    uri = component_uri_of(values)
    component = create_unique(
        "component",
        uri,
        lambda: Component.objects.filter(component_uri=uri).exists(),
        lambda: Component.objects.create(
            component_uri=uri,
            owner=owner if owner is not None and owner.is_authenticated else None,
            **_columns(values),
        ),
    )
    log.info("event=component_registered uri=%s mode=%s", uri, component.component_mode)
    return component


def get_component(uri: str) -> Component:
    component = Component.objects.filter(component_uri=uri).first() if lookup_value(uri) else None
    if component is None:
        raise NotFound(f"component {uri!r} not found", details=[{"componentURI": uri}])
    return component


def component_values(component: Component) -> dict[str, Any]:
    """The component as its spec values (what ``createComponent`` would take)."""
    values: dict[str, Any] = {
        "componentId": {
            "name": component.name,
            "version": component.version,
            "releaseTag": component.release_tag,
        },
        "componentType": component.component_type,
    }
    for key, column in SPEC_COLUMNS.items():
        values[key] = getattr(component, column)
    return values


def component_document(component: Component) -> dict[str, Any]:
    """The registry document: spec values + ``componentURI`` and timestamps (AIOS keys)."""
    return {
        "componentURI": component.component_uri,
        **component_values(component),
        "owner": component.owner.username if component.owner_id else None,
        "createdAt": component.created_at.isoformat() if component.created_at else None,
        "lastModifiedAt": component.updated_at.isoformat() if component.updated_at else None,
    }


def update_component(component: Component, values: Any, *, partial: bool) -> Component:
    """Replace (``partial=False``) or merge top-level keys of a component's spec. The
    identity (componentId, componentType) cannot change: that is a new component."""
    if not isinstance(values, dict):
        raise ValidationFailed("the body must be a JSON object")
    values = {
        k: v
        for k, v in values.items()
        if k not in {"componentURI", "owner", "createdAt", "lastModifiedAt"}
    }
    merged = {**component_values(component), **values} if partial else values
    merged = validate_component_values(merged)
    if component_uri_of(merged) != component.component_uri:
        raise ValidationFailed(
            "componentId and componentType cannot change; register a new version instead",
            details=[
                {"pointer": "/componentId", "message": "differs from the registered component"}
            ],
        )
    for column, value in _columns(merged).items():
        setattr(component, column, value)
    if not partial:
        # Keys left out of a full replacement go back to their empty defaults.
        for key, column in SPEC_COLUMNS.items():
            if key not in merged:
                setattr(component, column, [] if column == "tags" else {})
    component.save()
    log.info("event=component_updated uri=%s", component.component_uri)
    return component


def unregister_component(component: Component) -> None:
    uri = component.component_uri
    component.delete()
    log.info("event=component_unregistered uri=%s", uri)
