"""Validation of cluster and node specs (``body.spec.values`` of createCluster / addNode).

The parser validates the envelope with its own JSON Schemas; these checks run again in the
services so that the REST endpoints, the node agent's ``--create`` and the parser all get the
same rules and the same 400 messages. Sizes are in MB (reference §0).
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from apps.clusters.choices import (
    CLUSTER_ACTION_HOOKS,
    CONTROLLER_PRECHECK_ACTIONS,
    GATEWAY_PRECHECK_ACTIONS,
    DriverName,
)
from apps.core.errors import ValidationFailed
from apps.core.uris import URIError, parse_uri, validate_slug_id

_MB = {"type": "number", "minimum": 0}
_COUNT = {"type": "object", "properties": {"count": {"type": "number", "minimum": 0}}}
_GPU_ITEM = {
    "type": "object",
    "properties": {
        "modelName": {"type": "string", "maxLength": 128},
        "model": {"type": "string", "maxLength": 128},
        "memory": _MB,
        "memory_mb": _MB,
        "shared": {"type": "boolean"},
        "uuid": {"type": "string", "maxLength": 128},
        "features": {"type": "array"},
    },
}
_NODE_GPUS = {
    "type": "object",
    "properties": {
        "count": {"type": "integer", "minimum": 0, "maximum": 1024},
        "memory": _MB,
        "gpus": {"type": "array", "items": _GPU_ITEM, "maxItems": 1024},
        "modelNames": {"type": "array", "items": {"type": "string"}},
        "features": {"type": "array"},
        "shared": {"type": "boolean"},
    },
}
_STORAGE = {"type": "object", "properties": {"disks": {"type": "number"}, "size": _MB}}
_NETWORK = {"type": "object"}
_TAGS = {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 200}

NODE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": "string"},
        "clusterId": {"type": "string"},
        "gpus": _NODE_GPUS,
        "vcpus": _COUNT,
        "memory": _MB,
        "swap": _MB,
        "storage": _STORAGE,
        "network": _NETWORK,
        "tags": _TAGS,
        "nodeMetadata": {"type": "object"},
    },
}

CLUSTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "regionId"],
    "properties": {
        "id": {"type": "string"},
        "regionId": {"type": "string", "minLength": 1, "maxLength": 200},
        "status": {"type": "string"},
        "driver": {"enum": list(DriverName.values)},
        "nodes": {
            "type": "object",
            "properties": {
                "count": {"type": "integer", "minimum": 0},
                "nodeData": {"type": "array", "items": NODE_SCHEMA, "maxItems": 10000},
            },
        },
        "gpus": {"type": "object", "properties": {"count": {"type": "number"}, "memory": _MB}},
        "vcpus": _COUNT,
        "memory": _MB,
        "swap": _MB,
        "storage": _STORAGE,
        "network": _NETWORK,
        "config": {
            "type": "object",
            "properties": {
                "driver": {"enum": list(DriverName.values)},
                "allowExternalNodes": {"type": "boolean"},
                "policyExecutorId": {"type": "string"},
                "policyExecutionMode": {"enum": ["local", "remote", "distributed"]},
                "publicHostname": {"type": "string"},
                "useGateway": {"type": "boolean"},
                "actionsPolicyMap": {"type": "object", "additionalProperties": {"type": "string"}},
                "urlMap": {"type": "object"},
            },
        },
        "tags": _TAGS,
        "clusterMetadata": {"type": "object"},
        "reputation": {"type": "number", "minimum": 0, "maximum": 100},
        "kube_config_data": {"type": ["string", "object"]},
    },
}

# Keys an operator may change through update_cluster (status, urlMap and kubeconfig are not
# among them: the system owns the first two, the kubeconfig has its own field).
UPDATABLE_CLUSTER_KEYS = (
    "regionId",
    "gpus",
    "vcpus",
    "memory",
    "swap",
    "storage",
    "network",
    "config",
    "tags",
    "clusterMetadata",
    "reputation",
)
CLUSTER_MAP_KEYS = frozenset(CONTROLLER_PRECHECK_ACTIONS) | frozenset(CLUSTER_ACTION_HOOKS)
GATEWAY_MAP_KEYS = frozenset(GATEWAY_PRECHECK_ACTIONS)


def check_schema(schema: dict, values: Any, what: str) -> None:
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(values), key=lambda e: list(e.absolute_path))
    if errors:
        details = [
            {
                "field": ".".join(str(p) for p in err.absolute_path) or None,
                "message": err.message,
            }
            for err in errors[:20]
        ]
        first = details[0]
        where = f"{first['field']}: " if first["field"] else ""
        raise ValidationFailed(f"invalid {what}: {where}{first['message']}", details=details)


def _slug(value: Any, what: str) -> str:
    try:
        return validate_slug_id(value, what)
    except URIError as exc:
        raise ValidationFailed(str(exc), details=[{"field": what, "message": str(exc)}]) from None


def validate_policy_map(mapping: Any, allowed: frozenset[str], what: str) -> dict[str, str]:
    """An action -> policy URI map; an empty string means "no policy" (the check is skipped)."""
    if not isinstance(mapping, dict):
        raise ValidationFailed(f"{what} must be an object of action -> policy rule URI")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ValidationFailed(
            f"unknown action {unknown[0]!r} in {what}",
            details=[{"field": what, "unknown": unknown, "allowed": sorted(allowed)}],
        )
    clean: dict[str, str] = {}
    for action, uri in mapping.items():
        if uri in (None, ""):
            clean[action] = ""
            continue
        if not isinstance(uri, str):
            raise ValidationFailed(f"{what}.{action} must be a policy rule URI string")
        try:
            parse_uri(uri, "policy")
        except URIError as exc:
            raise ValidationFailed(
                f"{what}.{action}: {exc}", details=[{"field": f"{what}.{action}"}]
            ) from None
        clean[action] = uri
    return clean


def clean_node_values(values: Any, *, cluster_id: str | None = None) -> dict[str, Any]:
    """Validate a node spec; returns a copy with ``id`` and ``clusterId`` checked."""
    if not isinstance(values, dict):
        raise ValidationFailed("the node spec must be a JSON object")
    check_schema(NODE_SCHEMA, values, "node spec")
    clean = dict(values)
    clean["id"] = _slug(values["id"], "node id")
    cid = values.get("clusterId") or cluster_id
    if cid is not None:
        clean["clusterId"] = _slug(cid, "clusterId")
    gpu_rows_from_spec(clean.get("gpus") or {})  # raises on an inconsistent GPU list
    return clean


def clean_cluster_values(values: Any) -> dict[str, Any]:
    """Validate a cluster spec; returns a copy with the driver settled in ``config.driver``."""
    if not isinstance(values, dict):
        raise ValidationFailed("the cluster spec must be a JSON object")
    check_schema(CLUSTER_SCHEMA, values, "cluster spec")
    clean = dict(values)
    clean["id"] = _slug(values["id"], "cluster id")
    config = dict(values.get("config") or {})
    config["driver"] = config.get("driver") or values.get("driver") or DriverName.LOCAL
    if "actionsPolicyMap" in config:
        config["actionsPolicyMap"] = validate_policy_map(
            config["actionsPolicyMap"], CLUSTER_MAP_KEYS, "config.actionsPolicyMap"
        )
    clean["config"] = config
    seen: set[str] = set()
    nodes = []
    for node in (values.get("nodes") or {}).get("nodeData") or []:
        node = clean_node_values(node, cluster_id=clean["id"])
        if node["clusterId"] != clean["id"]:
            raise ValidationFailed(
                f"node {node['id']!r} names cluster {node['clusterId']!r}, not {clean['id']!r}"
            )
        if node["id"] in seen:
            raise ValidationFailed(f"node id {node['id']!r} appears twice in nodes.nodeData")
        seen.add(node["id"])
        nodes.append(node)
    clean["nodes"] = {**(values.get("nodes") or {}), "nodeData": nodes}
    return clean


def gpu_rows_from_spec(gpus: dict[str, Any]) -> list[dict[str, Any]]:
    """The GPU rows a node spec declares: one per ``gpus.gpus[]`` entry, else ``count`` alike.

    ``gpus.memory`` without a per-GPU list is the node's total GPU memory, split evenly.
    """
    items = gpus.get("gpus") or []
    shared_default = bool(gpus.get("shared", False))
    model_names = gpus.get("modelNames") or []
    rows: list[dict[str, Any]] = []
    if items:
        count = gpus.get("count")
        if count not in (None, len(items)):
            raise ValidationFailed(
                f"gpus.count is {count} but gpus.gpus lists {len(items)} GPUs",
                details=[{"field": "gpus.count"}],
            )
        for index, item in enumerate(items):
            rows.append(
                {
                    "index": index,
                    "model": str(item.get("modelName") or item.get("model") or ""),
                    "memory_mb": int(item.get("memory", item.get("memory_mb", 0)) or 0),
                    "shared": bool(item.get("shared", shared_default)),
                    "uuid": str(item.get("uuid") or ""),
                    "features": list(item.get("features") or []),
                }
            )
        return rows
    count = int(gpus.get("count") or 0)
    total = int(gpus.get("memory") or 0)
    for index in range(count):
        rows.append(
            {
                "index": index,
                "model": str(model_names[index] if index < len(model_names) else "")
                or (str(model_names[0]) if model_names else ""),
                "memory_mb": total // count if count else 0,
                "shared": shared_default,
                "uuid": "",
                "features": [],
            }
        )
    return rows


def parse_declared_gpus(text_or_list: Any) -> list[dict[str, Any]]:
    """``--declare-gpus`` of the node agent: ``[{"model": "A100", "memory_mb": 40960}, ...]``."""
    items = text_or_list
    if not isinstance(items, list):
        raise ValidationFailed("declared GPUs must be a JSON list of {model, memory_mb}")
    for item in items:
        if not isinstance(item, dict):
            raise ValidationFailed("each declared GPU is an object {model, memory_mb, shared?}")
    return gpu_rows_from_spec({"gpus": items})
