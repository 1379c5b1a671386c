"""Spec store and template store: parse, validate and version reusable specs and custom
parser templates."""

from __future__ import annotations

import json
import logging
from typing import Any

import yaml

from apps.core.errors import NotFound, ValidationFailed
from apps.parser import validation
from apps.registries.choices import SPEC_TYPE_ACTIONS, SpecFormat, SpecType
from apps.registries.models import Spec, Template
from apps.registries.services.common import (
    create_unique,
    field_error,
    lookup_value,
    normalize_tags,
    run_policy,
    versioned_uri,
)

log = logging.getLogger("aios.registries")

MAX_SPEC_TEXT = 1024 * 1024  # a spec is a document, not a data set


# -- spec data --------------------------------------------------------------------------


def parse_spec_data(value: Any) -> tuple[dict, str, str]:
    """``specData`` as sent (an object, or a string of JSON or YAML) -> ``(data, format,
    source)``. The result must be a JSON object."""
    if isinstance(value, dict):
        return value, SpecFormat.OBJECT, ""
    if not isinstance(value, str):
        raise field_error("specData", "expected an object or a string holding JSON or YAML")
    if len(value) > MAX_SPEC_TEXT:
        raise field_error("specData", f"the text is longer than {MAX_SPEC_TEXT} characters")
    text = value.strip()
    if not text:
        raise field_error("specData", "the text is empty")
    try:
        data, fmt = json.loads(text), SpecFormat.JSON
    except ValueError:
        data, fmt = _load_yaml(text), SpecFormat.YAML
    if not isinstance(data, dict):
        raise field_error("specData", f"the {fmt} text must hold an object (mapping)")
    return data, fmt, value


def _load_yaml(text: str) -> Any:
    try:
        # Aliases let a few lines expand into gigabytes when serialized (billion laughs);
        # a spec never needs them.
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise field_error("specData", "YAML aliases (*name) are not accepted")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise field_error("specData", f"neither JSON nor YAML: {problem}{where}") from None


def is_envelope(data: dict) -> bool:
    return isinstance(data, dict) and ("body" in data or "header" in data or "head" in data)


def action_for(spec_type: str, data: dict) -> str:
    """The parser action a stored spec of ``spec_type`` is run with by default."""
    actions = SPEC_TYPE_ACTIONS.get(spec_type)
    if not actions:
        raise field_error("specType", f"unknown spec type {spec_type!r}")
    if len(actions) == 1:
        return actions[0]
    values = _values_for_sniffing(data, actions)
    if spec_type == SpecType.CLUSTER:
        return "addNode" if "clusterId" in values and "regionId" not in values else "createCluster"
    return "search" if "rankingPolicyRule" in values else "filter"


def _values_for_sniffing(data: dict, actions: tuple[str, ...]) -> dict:
    if not is_envelope(data):
        return data
    body = data.get("body") if isinstance(data.get("body"), dict) else {}
    node = body.get("values")
    if node is None and isinstance(body.get("spec"), dict):
        node = body["spec"].get("values")
    return node if isinstance(node, dict) else {}


def validate_spec_data(spec_type: str, data: dict) -> str:
    """Validate a stored spec against its action's built-in schema; returns the action.

    A full envelope whose ``templateUri`` is a custom template is only checked for its
    envelope shape: its body is the template's custom format, converted at run time.
    """
    action = action_for(spec_type, data)
    base = ["specData"]
    if is_envelope(data):
        header, body = validation.split_envelope(data, base)
        if header.get("templateUri") != validation.BUILTIN_TEMPLATE:
            return action
        values = validation.values_of(action, body, base)
        validation.validate_values(action, values, [*base, *validation.values_path(action)])
    else:
        validation.validate_values(action, data, base)
    return action


def envelope_of(spec: Spec, action: str) -> dict:
    """The stored spec as a full envelope for ``action`` (bare values are wrapped with
    ``Parser/V1``)."""
    data = spec.spec_data
    if is_envelope(data):
        return data
    body = {"values": data} if action in validation.VALUES_AT_BODY else {"spec": {"values": data}}
    return {"header": {"templateUri": validation.BUILTIN_TEMPLATE, "parameters": {}}, "body": body}


# -- specs ------------------------------------------------------------------------------


def get_spec(spec_uri: str) -> Spec:
    spec = Spec.objects.filter(spec_uri=spec_uri).first() if lookup_value(spec_uri) else None
    if spec is None:
        raise NotFound(f"spec {spec_uri!r} not found", details=[{"specUri": spec_uri}])
    return spec


def _prepared(spec_type: str, raw_data: Any) -> dict[str, Any]:
    data, fmt, source = parse_spec_data(raw_data)
    validate_spec_data(spec_type, data)
    return {"spec_data": data, "spec_format": fmt, "spec_source": source}


def create_spec(
    *,
    name: str,
    version: str,
    tag: str,
    spec_type: str,
    spec_data: Any,
    description: str = "",
    metadata: dict | None = None,
    tags: Any = None,
    owner=None,
) -> Spec:
    uri = versioned_uri(
        name, version, tag, fields=("specName", "specVersion.version", "specVersion.tag")
    )
    if spec_type not in SpecType.values:
        raise field_error("specType", f"unknown spec type {spec_type!r}", allowed=SpecType.values)
    prepared = _prepared(spec_type, spec_data)
    spec = create_unique(
        "spec",
        uri,
        lambda: Spec.objects.filter(spec_uri=uri).exists(),
        lambda: Spec.objects.create(
            spec_uri=uri,
            spec_type=spec_type,
            name=name,
            version=version,
            tag=tag,
            description=description or "",
            metadata=metadata or {},
            tags=normalize_tags(tags, "specTags"),
            owner=owner if owner is not None and owner.is_authenticated else None,
            **prepared,
        ),
    )
    log.info("event=spec_created uri=%s type=%s", uri, spec_type)
    return spec


def update_spec(spec: Spec, **changes: Any) -> Spec:
    """Change a spec in place; its URI (name, version, tag) cannot change."""
    for key, label in (
        ("name", "specName"),
        ("version", "specVersion.version"),
        ("tag", "specVersion.tag"),
    ):
        if key in changes and changes[key] != getattr(spec, key):
            raise field_error(label, "the specUri cannot change; create a new version instead")
    spec_type = changes.get("spec_type", spec.spec_type)
    if spec_type not in SpecType.values:
        raise field_error("specType", f"unknown spec type {spec_type!r}", allowed=SpecType.values)
    if "spec_data" in changes:
        changes.update(_prepared(spec_type, changes.pop("spec_data")))
    elif spec_type != spec.spec_type:
        validate_spec_data(spec_type, spec.spec_data)
    if "tags" in changes:
        changes["tags"] = normalize_tags(changes["tags"], "specTags")
    for key in (
        "description",
        "metadata",
        "spec_type",
        "tags",
        "spec_data",
        "spec_format",
        "spec_source",
    ):
        if key in changes:
            setattr(spec, key, changes[key])
    spec.save()
    return spec


# -- templates --------------------------------------------------------------------------


def get_template(template_uri: str) -> Template:
    template = (
        Template.objects.filter(template_uri=template_uri).first()
        if lookup_value(template_uri)
        else None
    )
    if template is None:
        raise NotFound(
            f"template {template_uri!r} not found", details=[{"templateUri": template_uri}]
        )
    return template


def _check_policy_uri(value: Any) -> str:
    # Policy URIs are opaque keys (dotted AIOS examples do not follow name:version-tag).
    if not isinstance(value, str) or not value.strip() or len(value) > 300:
        raise field_error("templatePolicyRuleUri", "expected a policy rule URI")
    return value.strip()


def create_template(
    *,
    name: str,
    version: str,
    tag: str,
    template_policy_rule_uri: str,
    description: str = "",
    metadata: dict | None = None,
    tags: Any = None,
    template_data: Any = None,
    owner=None,
) -> Template:
    uri = versioned_uri(
        name,
        version,
        tag,
        fields=("templateName", "templateVersion.templateVersion", "templateVersion.tag"),
    )
    if uri == validation.BUILTIN_TEMPLATE:  # pragma: no cover - the shapes differ
        raise field_error("templateName", "Parser/V1 is the built-in template")
    policy_uri = _check_policy_uri(template_policy_rule_uri)
    template = create_unique(
        "template",
        uri,
        lambda: Template.objects.filter(template_uri=uri).exists(),
        lambda: Template.objects.create(
            template_uri=uri,
            template_policy_rule_uri=policy_uri,
            name=name,
            version=version,
            tag=tag,
            description=description or "",
            metadata=metadata or {},
            tags=normalize_tags(tags, "templateTags"),
            template_data=template_data if template_data is not None else {},
            owner=owner if owner is not None and owner.is_authenticated else None,
        ),
    )
    log.info("event=template_created uri=%s policy=%s", uri, policy_uri)
    return template


def update_template(template: Template, **changes: Any) -> Template:
    for key, label in (
        ("name", "templateName"),
        ("version", "templateVersion.templateVersion"),
        ("tag", "templateVersion.tag"),
    ):
        if key in changes and changes[key] != getattr(template, key):
            raise field_error(label, "the templateUri cannot change; create a new version instead")
    if "template_policy_rule_uri" in changes:
        changes["template_policy_rule_uri"] = _check_policy_uri(changes["template_policy_rule_uri"])
    if "tags" in changes:
        changes["tags"] = normalize_tags(changes["tags"], "templateTags")
    for key in ("template_policy_rule_uri", "description", "metadata", "tags", "template_data"):
        if key in changes:
            setattr(template, key, changes[key])
    template.save()
    return template


def execute_template(
    template: Template | str,
    input_data: Any,
    parameters: dict | None = None,
    *,
    settings: dict | None = None,
) -> Any:
    """Run the template's policy (sandboxed) on ``input_data``: its result is the
    internal form of the custom spec. Policy errors surface as the policies system's
    ``PolicyExecutionError`` (422); a missing policy as ``NotFound``."""
    if isinstance(template, str):
        template = get_template(template)
    if parameters is not None and not isinstance(parameters, dict):
        raise ValidationFailed("parameters must be an object", details=[{"field": "parameters"}])
    log.info(
        "event=template_execute uri=%s policy=%s",
        template.template_uri,
        template.template_policy_rule_uri,
    )
    return run_policy(
        template.template_policy_rule_uri, input_data, parameters=parameters, settings=settings
    )
