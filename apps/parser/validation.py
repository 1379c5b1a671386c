"""Validation of Parser/V1 specs against the built-in JSON Schemas in ``schemas/``.

Every error is reported, each with a JSON pointer to the bad field (relative to the
envelope, e.g. ``/body/spec/values/componentId/name``) and what was expected, so a user
can fix a spec in one pass. Besides the schemas, a few cross-field rules that JSON Schema
cannot say well (``minInstances <= maxInstances``, vDAG graph labels and cycles, exactly
one target of a management command) are checked here and reported the same way.

This module imports no models: registries (the spec store) use it too.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError
from referencing import Registry, Resource

from apps.core.errors import ValidationFailed

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SCHEMA_BASE = "https://aios.local/schemas/"
MAX_ERRORS = 100

# Actions whose spec lives in body.values (the others use body.spec.values).
VALUES_AT_BODY = frozenset({"search", "filter"})
SCHEMA_ACTIONS = (
    "createCluster",
    "addNode",
    "createComponent",
    "createBlock",
    "createvDAG",
    "search",
    "filter",
    "executeMgmtCommand",
)


class SpecValidationError(ValidationFailed):
    """A spec that does not match its action's schema; ``details`` lists every error."""

    code = "spec_validation_error"


@lru_cache(maxsize=1)
def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        contents = json.loads(path.read_text())
        Draft202012Validator.check_schema(contents)
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


@lru_cache(maxsize=32)
def validator_for(name: str) -> Draft202012Validator:
    """The validator of ``schemas/<name>.json`` (an action name, or ``envelope``)."""
    registry = _registry()
    resource = registry.get(f"{SCHEMA_BASE}{name}.json")
    if resource is None:
        raise KeyError(f"no built-in schema named {name!r}")
    return Draft202012Validator(resource.contents, registry=registry)


def schema_for(name: str) -> dict:
    return validator_for(name).schema


def pointer(parts: Iterable[Any]) -> str:
    """RFC 6901 JSON pointer of a path."""
    escaped = [str(p).replace("~", "~0").replace("/", "~1") for p in parts]
    return "/" + "/".join(escaped) if escaped else ""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _leaf_errors(error: SchemaError) -> list[SchemaError]:
    """``oneOf``/``anyOf``/``allOf`` wrap the useful errors in ``context``; unwrap them."""
    if error.context and error.validator in {"anyOf", "oneOf"}:
        # Report the branch that got furthest (deepest path), as the user most likely meant it.
        deepest = max(len(e.absolute_path) for e in error.context)
        return [e for e in error.context if len(e.absolute_path) == deepest] or [error]
    return [error]


def _describe(error: SchemaError, base: list[Any]) -> list[dict[str, Any]]:
    path = [*base, *error.absolute_path]
    validator = error.validator
    value = error.validator_value
    if validator == "required":
        missing = [name for name in value if name not in (error.instance or {})]
        return [
            {
                "pointer": pointer([*path, name]),
                "message": f"'{name}' is required",
                "expected": "a value",
                "validator": "required",
            }
            for name in missing
        ]
    if validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        extras = [
            key
            for key in error.instance
            if key not in error.schema.get("properties", {})
            and not any(re.search(p, key) for p in patterns)
        ]
        if value is False:
            return [
                {
                    "pointer": pointer([*path, key]),
                    "message": f"unknown field '{key}'",
                    "expected": f"one of {allowed}" if allowed else "no fields",
                    "validator": "additionalProperties",
                }
                for key in extras
            ]
    expected: Any
    message = error.message
    if validator == "type":
        expected = value if isinstance(value, str) else " or ".join(value)
        message = f"expected {expected}, got {_type_name(error.instance)}"
    elif validator in {"enum", "const"}:
        expected = f"one of {value}" if validator == "enum" else repr(value)
        message = f"{error.instance!r} is not {expected}"
    elif validator == "pattern":
        expected = f"a string matching {value}"
        message = f"{error.instance!r} does not match {value}"
    elif validator in {"minimum", "exclusiveMinimum"}:
        expected = f">= {value}" if validator == "minimum" else f"> {value}"
    elif validator in {"maximum", "exclusiveMaximum"}:
        expected = f"<= {value}" if validator == "maximum" else f"< {value}"
    elif validator in {"minLength", "maxLength", "minItems", "maxItems"}:
        expected = f"{validator} {value}"
    else:
        expected = f"{validator}: {json.dumps(value, default=str)[:200]}"
    if validator in {"minItems"} and value == 1:
        message = "must not be empty"
    return [
        {
            "pointer": pointer(path),
            "message": message[:500],
            "expected": expected,
            "validator": validator,
        }
    ]


# -- cross-field rules -------------------------------------------------------------------


def _check_block(values: dict) -> list[tuple[list, str, str]]:
    low, high = values.get("minInstances"), values.get("maxInstances")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        return [
            (
                ["maxInstances"],
                f"maxInstances ({high}) is below minInstances ({low})",
                f">= minInstances ({low})",
            )
        ]
    return []


def _check_vdag(values: dict) -> list[tuple[list, str, str]]:
    problems: list[tuple[list, str, str]] = []
    nodes = values.get("nodes")
    graph = values.get("graph")
    if not isinstance(nodes, list) or not isinstance(graph, dict):
        return problems
    labels: dict[str, int] = {}
    for index, node in enumerate(nodes):
        label = node.get("nodeLabel") if isinstance(node, dict) else None
        if not isinstance(label, str):
            continue
        if label in labels:
            problems.append(
                (["nodes", index, "nodeLabel"], f"duplicate nodeLabel '{label}'", "a unique label")
            )
        labels.setdefault(label, index)

    def check_ref(path: list, ref: Any) -> str | None:
        label = ref.get("nodeLabel") if isinstance(ref, dict) else None
        if isinstance(label, str) and label not in labels:
            problems.append(
                (
                    [*path, "nodeLabel"],
                    f"nodeLabel '{label}' is not in nodes",
                    f"one of {sorted(labels)}",
                )
            )
            return None
        return label if isinstance(label, str) else None

    edges: dict[str, set[str]] = {label: set() for label in labels}
    for index, connection in enumerate(graph.get("connections") or []):
        if not isinstance(connection, dict):
            continue
        dst = check_ref(["graph", "connections", index], connection)
        for j, src_ref in enumerate(connection.get("inputs") or []):
            src = check_ref(["graph", "connections", index, "inputs", j], src_ref)
            if src and dst:
                edges[src].add(dst)
    for key in ("inputs", "outputs"):
        for index, ref in enumerate(graph.get(key) or []):
            check_ref(["graph", key, index], ref)
    cycle = _find_cycle(edges)
    if cycle:
        problems.append(
            (
                ["graph", "connections"],
                "the graph has a cycle: " + " -> ".join(cycle),
                "an acyclic graph",
            )
        )
    return problems


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(edges, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if color.get(nxt) == grey:
                return [*stack[stack.index(nxt) :], nxt]
            if color.get(nxt) == white:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return None

    for node in sorted(edges):
        if color[node] == white:
            found = visit(node)
            if found:
                return found
    return None


def _check_mgmt(values: dict) -> list[tuple[list, str, str]]:
    targets = [key for key in ("blockId", "clusterId") if key in values]
    if len(targets) != 1:
        message = (
            "exactly one of 'blockId' or 'clusterId' is required"
            if not targets
            else "give 'blockId' or 'clusterId', not both"
        )
        return [(["clusterId" if targets else "blockId"], message, "exactly one target")]
    return []


def _check_component(values: dict) -> list[tuple[list, str, str]]:
    given = values.get("componentURI")
    component_id = values.get("componentId")
    if not isinstance(given, str) or not isinstance(component_id, dict):
        return []
    expected = (
        f"{values.get('componentType')}.{component_id.get('name')}:"
        f"{component_id.get('version')}-{component_id.get('releaseTag')}"
    )
    if given != expected:
        return [
            (["componentURI"], f"componentURI {given!r} does not match the componentId", expected)
        ]
    return []


CROSS_CHECKS: dict[str, Callable[[dict], list[tuple[list, str, str]]]] = {
    "createBlock": _check_block,
    "createvDAG": _check_vdag,
    "executeMgmtCommand": _check_mgmt,
    "createComponent": _check_component,
}


def _normalize_component(values: dict) -> dict:
    values = copy.deepcopy(values)
    info = values.get("containerRegistryInfo")
    if "componentMode" in values and (info is None or isinstance(info, dict)):
        # Some examples put componentMode next to containerRegistryInfo.
        info = info or {}
        info.setdefault("componentMode", values.pop("componentMode"))
        values["containerRegistryInfo"] = info
    if isinstance(info, dict):
        info.setdefault("componentMode", "aios")
        for node in (info, info.get("initContainer")):
            if isinstance(node, dict) and node.get("componentMode") == "third-party":
                node["componentMode"] = "third_party"  # the AIOS example's spelling
    return values


def normalize_values(action: str, values: Any) -> Any:
    """Accepted spellings rewritten into the canonical form before validation."""
    if action == "createComponent" and isinstance(values, dict):
        values = _normalize_component(values)
    if action in VALUES_AT_BODY and isinstance(values, dict):
        rule = values.get("rankingPolicyRule")
        # The inference doc wraps the rule in an extra {"values": ...}.
        if isinstance(rule, dict) and set(rule) == {"values"} and isinstance(rule["values"], dict):
            values = {**values, "rankingPolicyRule": rule["values"]}
    return values


def find_nul(value: Any, path: tuple = ()) -> list[Any] | None:
    """The path of the first string or key holding a NUL character (PostgreSQL cannot
    store one in text or jsonb), or None."""
    stack: list[tuple[Any, tuple]] = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return list(where)
        elif isinstance(node, dict):
            for key, child in node.items():
                if isinstance(key, str) and "\x00" in key:
                    return [*where, key.replace("\x00", "\\u0000")]
                stack.append((child, (*where, key)))
        elif isinstance(node, list):
            stack.extend((child, (*where, index)) for index, child in enumerate(node))
    return None


def nul_error(path: list[Any]) -> dict[str, Any]:
    return {
        "pointer": pointer(path),
        "message": "NUL characters (\\u0000) are not accepted",
        "expected": "text without NUL characters",
        "validator": "nul",
    }


def reject_nul(value: Any, base: list[Any] | None = None, what: str = "the input") -> None:
    """Raise a 400 naming where a NUL character is."""
    found = find_nul(value)
    if found is not None:
        raise_for_errors([nul_error([*(base or []), *found])], what)


def collect_errors(action: str, values: Any, base: list[Any] | None = None) -> list[dict]:
    """Every problem of ``values`` against the action's schema and cross-field rules."""
    base = list(base or [])
    found = find_nul(values)
    if found is not None:
        return [nul_error([*base, *found])]
    validator = validator_for(action)
    details: list[dict] = []
    for error in validator.iter_errors(values):
        for leaf in _leaf_errors(error):
            details.extend(_describe(leaf, base))
        if len(details) >= MAX_ERRORS:
            break
    if isinstance(values, dict) and action in CROSS_CHECKS:
        for path, message, expected in CROSS_CHECKS[action](values):
            details.append(
                {
                    "pointer": pointer([*base, *path]),
                    "message": message,
                    "expected": expected,
                    "validator": "semantic",
                }
            )
    # Stable order, no duplicates (allOf branches can report the same problem twice).
    unique = {(d["pointer"], d["message"]): d for d in details}
    return sorted(unique.values(), key=lambda d: (d["pointer"], d["message"]))[:MAX_ERRORS]


def raise_for_errors(details: list[dict], what: str) -> None:
    if details:
        first = details[0]
        raise SpecValidationError(
            f"{what} is invalid: {len(details)} error(s); first: "
            f"{first['pointer'] or '/'}: {first['message']}",
            details=details,
        )


def validate_values(action: str, values: Any, base: list[Any] | None = None) -> Any:
    """Validate a spec's values for ``action``; returns the normalized values or raises
    :class:`SpecValidationError` listing every problem."""
    values = normalize_values(action, values)
    raise_for_errors(collect_errors(action, values, base), f"the {action} spec")
    return values


def values_path(action: str) -> list[str]:
    """Where the values sit inside the envelope."""
    return ["body", "values"] if action in VALUES_AT_BODY else ["body", "spec", "values"]


BUILTIN_TEMPLATE = "Parser/V1"


def split_envelope(envelope: Any, base: list[Any] | None = None) -> tuple[dict, dict]:
    """Check the envelope's shape and return ``(header, body)``; ``head`` is an alias of
    ``header`` (the AIOS block sample uses it)."""
    base = list(base or [])
    reject_nul(envelope, base, "the spec")
    if not isinstance(envelope, dict):
        raise SpecValidationError(
            "the spec must be a JSON object with 'header' and 'body'",
            details=[
                {
                    "pointer": pointer(base),
                    "message": f"expected object, got {_type_name(envelope)}",
                    "expected": "object",
                    "validator": "type",
                }
            ],
        )
    if "head" in envelope:
        if "header" in envelope:
            raise_for_errors(
                [
                    {
                        "pointer": pointer([*base, "head"]),
                        "message": "give 'header' or its alias 'head', not both",
                        "expected": "one of header/head",
                        "validator": "semantic",
                    }
                ],
                "the spec envelope",
            )
        envelope = {("header" if k == "head" else k): v for k, v in envelope.items()}
    raise_for_errors(collect_errors("envelope", envelope, base), "the spec envelope")
    return envelope["header"], envelope["body"]


def values_of(action: str, body: dict, base: list[Any] | None = None) -> Any:
    """The spec values inside ``body`` (``body.spec.values``, or ``body.values`` for search
    and filter); a missing level is reported with its pointer."""
    base = list(base or [])
    node: Any = body
    path = values_path(action)[1:]
    walked = [*base, "body"]
    where = "body.values" if action in VALUES_AT_BODY else "body.spec.values"
    for key in path:
        if not isinstance(node, dict):
            raise_for_errors(
                [
                    {
                        "pointer": pointer(walked),
                        "message": f"expected object, got {_type_name(node)}",
                        "expected": "object",
                        "validator": "type",
                    }
                ],
                f"the {action} spec",
            )
        if key not in node:
            raise_for_errors(
                [
                    {
                        "pointer": pointer([*walked, key]),
                        "message": f"'{key}' is required",
                        "expected": f"the spec values at {where}",
                        "validator": "required",
                    }
                ],
                f"the {action} spec",
            )
        node = node[key]
        walked.append(key)
    return node
