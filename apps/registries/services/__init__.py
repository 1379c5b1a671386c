"""Domain operations of the registries, called by the REST views, the parser, Celery
tasks and management commands alike."""

from apps.registries.services.assets import (
    PayloadTooLarge,
    delete_asset,
    get_asset,
    open_asset,
    public_url,
    register_external_asset,
    store_asset,
    update_asset,
    versions_of,
)
from apps.registries.services.common import check_url_health, run_policy
from apps.registries.services.components import (
    component_document,
    component_values,
    get_component,
    register_component,
    unregister_component,
    update_component,
    validate_component_values,
)
from apps.registries.services.specs import (
    action_for,
    create_spec,
    create_template,
    envelope_of,
    execute_template,
    get_spec,
    get_template,
    parse_spec_data,
    update_spec,
    update_template,
    validate_spec_data,
)

__all__ = [
    "PayloadTooLarge",
    "action_for",
    "check_url_health",
    "component_document",
    "component_values",
    "create_spec",
    "create_template",
    "delete_asset",
    "envelope_of",
    "execute_template",
    "get_asset",
    "get_component",
    "get_spec",
    "get_template",
    "open_asset",
    "parse_spec_data",
    "public_url",
    "register_component",
    "register_external_asset",
    "run_policy",
    "store_asset",
    "unregister_component",
    "update_asset",
    "update_component",
    "update_spec",
    "update_template",
    "validate_component_values",
    "validate_spec_data",
    "versions_of",
]
