"""The block spec: validation against its component, and the inheritance and merge rules.

Reference §1.2: ``blockInitData`` defaults to ``componentInitData``, ``initSettings`` to
``componentInitSettings``, ``parameters`` to ``componentParameters``; ``blockMetadata``,
protocols, tags and policies come from the component. Two decisions (docs/blocks.md):

* the three data objects are merged key by key (component defaults, block keys win), so a
  block can change one parameter without repeating the others;
* policies merge by ``name``: a ``policyRulesSpec`` entry replaces the component's policy of
  that name, a new name is added, and without ``policyRulesSpec`` the component's policies
  apply unchanged.

Everything here is a pure function of the spec and the component row.
"""

from __future__ import annotations

import copy
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from apps.core.errors import ValidationFailed
from apps.core.uris import URIError, validate_slug_id

# module.path:ClassName, what the local driver runs (issue 6's acceptance contract).
ENTRYPOINT_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
DRY_RUN_MODES = ("dry_run", "dry-run", "dryrun")
BUILTIN_LB = {
    "round_robin": ("round_robin", "round-robin", "roundrobin", "lb_round_robin"),
    "least_queue": ("least_queue", "least-queue", "leastqueue", "lb_least_queue"),
}


def _problem(pointer: str, message: str) -> dict[str, str]:
    return {"pointer": pointer, "message": message}


@dataclass
class BlockValues:
    """A block spec after validation and merging: what is stored and run."""

    block_id: str
    component_uri: str
    min_instances: int
    max_instances: int
    block_init_data: dict[str, Any]
    init_settings: dict[str, Any]
    parameters: dict[str, Any]
    policies: dict[str, dict[str, Any]]
    block_metadata: dict[str, Any]
    input_protocol: dict[str, Any]
    output_protocol: dict[str, Any]
    tags: list[Any]
    entrypoint: str
    image: str
    component_mode: str
    init_container: dict[str, Any] = field(default_factory=dict)
    resource_requirements: dict[str, Any] = field(default_factory=dict)

    def policy(self, name: str) -> dict[str, Any] | None:
        return self.policies.get(name)

    def policy_rules_spec(self) -> list[dict[str, Any]]:
        """The merged policies in the spec's list form (what the allocator reads)."""
        return [{"values": {"name": name, **rule}} for name, rule in self.policies.items()]

    def allocator_spec(self) -> dict[str, Any]:
        spec = {
            "blockId": self.block_id,
            "blockComponentURI": self.component_uri,
            "minInstances": self.min_instances,
            "maxInstances": self.max_instances,
            "blockInitData": self.block_init_data,
            "initSettings": self.init_settings,
            "parameters": self.parameters,
            "policyRulesSpec": self.policy_rules_spec(),
        }
        if self.resource_requirements:
            spec["resourceRequirements"] = self.resource_requirements
        return spec


def is_dry_run(values: dict[str, Any], header_parameters: dict[str, Any] | None = None) -> bool:
    mode = values.get("mode")
    if mode is None and isinstance(header_parameters, dict):
        mode = header_parameters.get("mode")
    return isinstance(mode, str) and mode.strip().lower() in DRY_RUN_MODES


def new_block_id(component_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", component_name.lower()).strip("-")[:50] or "block"
    return f"{base}-{uuid.uuid4().hex[:6]}"


def _rule(raw: Any, pointer: str, problems: list[dict[str, str]]) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        problems.append(_problem(pointer, "a policy rule is an object"))
        return None
    uri = raw.get("policyRuleURI") or raw.get("policy_rule_uri")
    if not isinstance(uri, str) or not uri.strip():
        problems.append(_problem(pointer, "policyRuleURI is required"))
        return None
    rule: dict[str, Any] = {"policyRuleURI": uri.strip()}
    for key in ("parameters", "settings"):
        value = raw.get(key, {})
        if value is None:
            value = {}
        if not isinstance(value, dict):
            problems.append(_problem(f"{pointer}/{key}", f"{key} must be an object"))
            return None
        rule[key] = copy.deepcopy(value)
    for key in ("executionMode", "filter"):
        if key in raw:
            rule[key] = copy.deepcopy(raw[key])
    return rule


def component_policies(policies: Any, problems: list[dict[str, str]]) -> dict[str, dict]:
    """A component's ``policies``: a map name -> rule, or a list of ``{"values": {...}}``."""
    out: dict[str, dict] = {}
    if not policies:
        return out
    if isinstance(policies, dict):
        for name, raw in policies.items():
            rule = _rule(raw, f"/component/policies/{name}", problems)
            if rule is not None:
                out[str(name)] = rule
        return out
    if isinstance(policies, list):
        for index, entry in enumerate(policies):
            raw = entry.get("values", entry) if isinstance(entry, dict) else entry
            name = raw.get("name") if isinstance(raw, dict) else None
            if not isinstance(name, str) or not name:
                problems.append(_problem(f"/component/policies/{index}", "a policy needs a name"))
                continue
            rule = _rule(raw, f"/component/policies/{index}", problems)
            if rule is not None:
                out[name] = rule
        return out
    problems.append(_problem("/component/policies", "policies must be an object or a list"))
    return out


def merge_policies(
    component: dict[str, dict], rules_spec: Any, problems: list[dict[str, str]]
) -> dict[str, dict]:
    """Reference §1.2's merge: match by ``name``; a block entry replaces, a new one is added."""
    merged = copy.deepcopy(component)
    if rules_spec is None:
        return merged
    if not isinstance(rules_spec, list):
        problems.append(_problem("/policyRulesSpec", "policyRulesSpec must be a list"))
        return merged
    seen: set[str] = set()
    for index, entry in enumerate(rules_spec):
        pointer = f"/policyRulesSpec/{index}/values"
        raw = entry.get("values", entry) if isinstance(entry, dict) else entry
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str) or not name:
            problems.append(_problem(f"{pointer}/name", "each policy rule needs a name"))
            continue
        if name in seen:
            problems.append(_problem(f"{pointer}/name", f"policy {name!r} is given twice"))
            continue
        seen.add(name)
        rule = _rule(raw, pointer, problems)
        if rule is not None:
            merged[name] = rule
    return merged


def _merged_object(base: Any, override: Any, pointer: str, problems: list) -> dict[str, Any]:
    base = copy.deepcopy(base) if isinstance(base, dict) else {}
    if override is None:
        return base
    if not isinstance(override, dict):
        problems.append(_problem(pointer, "must be an object"))
        return base
    return {**base, **copy.deepcopy(override)}


def lb_policy_name(rule: dict[str, Any] | None) -> str:
    """The executor's load-balancer name for a ``loadBalancer`` rule: the built-ins by name
    (``aios.lb_round_robin:1.0-stable``, ``...round-robin...``), else ``""`` (a registry
    policy, loaded by URI through the block controller's adapter)."""
    if not rule:
        return "round_robin"
    uri = str(rule.get("policyRuleURI", "")).lower()
    name = uri.split(":", 1)[0].rsplit(".", 1)[-1]
    for builtin, spellings in BUILTIN_LB.items():
        if name in spellings or any(s in uri for s in spellings if "_" in s or "-" in s):
            return builtin
    return ""


def build(values: dict[str, Any], component: Any, *, block_id: str | None = None) -> BlockValues:
    """Validate a createBlock spec (already schema-checked by the parser) against its
    component and merge it. Raises one 400 listing every problem."""
    problems: list[dict[str, str]] = []
    if not isinstance(values, dict):
        raise ValidationFailed("the block spec values must be a JSON object")
    block_id = block_id or values.get("blockId") or new_block_id(component.name)
    try:
        validate_slug_id(block_id, "blockId")
    except URIError as exc:
        problems.append(_problem("/blockId", str(exc)))
    low, high = values.get("minInstances"), values.get("maxInstances")
    for key, value in (("minInstances", low), ("maxInstances", high)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(_problem(f"/{key}", "must be a whole number >= 0"))
    if isinstance(high, int) and not isinstance(high, bool) and high < 1:
        problems.append(_problem("/maxInstances", "must be at least 1"))
    if isinstance(low, int) and isinstance(high, int) and low > high:
        problems.append(_problem("/maxInstances", f"maxInstances ({high}) < minInstances ({low})"))

    info = component.container_registry_info or {}
    metadata = info.get("containerImageMetadata") or {}
    entrypoint = str(metadata.get("entrypoint") or "") if isinstance(metadata, dict) else ""
    image = str(info.get("containerImage") or "")
    if entrypoint and not ENTRYPOINT_RE.match(entrypoint):
        problems.append(
            _problem(
                "/component/containerRegistryInfo/containerImageMetadata/entrypoint",
                f"entrypoint {entrypoint!r} is not 'module.path:ClassName'",
            )
        )
    if not entrypoint and not image:
        problems.append(
            _problem(
                "/component/containerRegistryInfo",
                f"component {component.component_uri} has neither "
                "containerImageMetadata.entrypoint (local driver) nor containerImage",
            )
        )
    mode = str(info.get("componentMode") or "aios").replace("-", "_")
    init_container = (
        info.get("initContainer") if isinstance(info.get("initContainer"), dict) else {}
    )
    if init_container:
        init_meta = init_container.get("containerImageMetadata") or {}
        init_entry = init_meta.get("entrypoint") if isinstance(init_meta, dict) else None
        if not isinstance(init_entry, str) or not ENTRYPOINT_RE.match(init_entry):
            problems.append(
                _problem(
                    "/component/containerRegistryInfo/initContainer",
                    "a managed third-party system needs initContainer.containerImageMetadata."
                    "entrypoint ('module.path:ClassName')",
                )
            )

    policies = merge_policies(
        component_policies(component.policies, problems), values.get("policyRulesSpec"), problems
    )
    requirements = values.get("resourceRequirements") or {}
    if not isinstance(requirements, dict):
        problems.append(_problem("/resourceRequirements", "must be an object"))
        requirements = {}
    if problems:
        raise ValidationFailed(
            "; ".join(f"{p['pointer']}: {p['message']}" for p in problems[:5]),
            details=problems,
        )
    metadata_merged = _merged_object(
        component.component_metadata, values.get("blockMetadata"), "/blockMetadata", problems
    )
    tags = list(component.tags or [])
    for tag in values.get("tags") or []:
        if tag not in tags:
            tags.append(tag)
    return BlockValues(
        block_id=block_id,
        component_uri=component.component_uri,
        min_instances=int(low),
        max_instances=int(high),
        block_init_data=_merged_object(
            component.component_init_data, values.get("blockInitData"), "/blockInitData", problems
        ),
        init_settings=_merged_object(
            component.component_init_settings, values.get("initSettings"), "/initSettings", problems
        ),
        parameters=_merged_object(
            component.component_init_parameters, values.get("parameters"), "/parameters", problems
        ),
        policies=policies,
        block_metadata=metadata_merged,
        input_protocol=copy.deepcopy(component.component_input_protocol or {}),
        output_protocol=copy.deepcopy(component.component_output_protocol or {}),
        tags=tags,
        entrypoint=entrypoint,
        image=image,
        component_mode=mode,
        init_container=copy.deepcopy(init_container),
        resource_requirements=copy.deepcopy(requirements),
    )


# Keys of block_data a pre-check policy may rewrite (its answer is used downstream).
REWRITABLE_KEYS = (
    "minInstances",
    "maxInstances",
    "blockInitData",
    "initSettings",
    "parameters",
    "policyRulesSpec",
)


def block_data(values: BlockValues, component_doc: dict[str, Any]) -> dict[str, Any]:
    """The block document pre-check and autoscaler policies receive (the reference's
    block-data sample: ids, component, min/max, init data, settings, parameters, policies)."""
    return {
        "blockId": values.block_id,
        "blockComponentURI": values.component_uri,
        "component": component_doc,
        "minInstances": values.min_instances,
        "maxInstances": values.max_instances,
        "blockInitData": values.block_init_data,
        "initSettings": values.init_settings,
        "parameters": values.parameters,
        "policyRulesSpec": values.policy_rules_spec(),
        "policies": values.policies,
        "blockMetadata": values.block_metadata,
        "tags": values.tags,
    }
