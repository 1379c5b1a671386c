"""vDAG spec processing: identity, node assignment, nested expansion, compilation.

``plan_vdag(values)`` turns the values of a ``createvDAG`` spec (already checked against the
parser's schema) into a :class:`VDagPlan`: the vDAG URI, the node objects completed with the
assigned blocks' protocols, the assignment ``{nodeLabel: block_id}`` and the compiled graph
(the data plane's compiler, ``block_sdk.vdag.graph``). Every problem found is reported at
once, each with the JSON pointer of the spec field it is about, as a
:class:`~apps.parser.validation.SpecValidationError` (a 400 in the parser's error shape).

Assignment of a node: ``manualBlockId`` when given; otherwise the running blocks that the
``assignmentPolicyRule``'s search filter selects are handed to that policy (sandboxed, hook
#3 of the reference), which picks one.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

from apps.core.errors import ApiError
from apps.core.uris import URIError, build_uri
from apps.parser.validation import SpecValidationError, pointer
from apps.vdags import blocks as block_lookup
from apps.vdags import compiler
from apps.vdags.choices import NodeType, SpecMode, VDagStatus
from apps.vdags.models import VDag

log = logging.getLogger("aios.vdags")

VALUES_BASE = ("body", "spec", "values")
DEFAULT_VERSION = ("1.0", "stable")
MAX_CANDIDATES = 1000
# Keys of an assignment rule's parameters that carry the search filter, not policy input.
FILTER_KEYS = ("filter", "filterRule")


@dataclass
class Problem:
    path: list[Any]
    message: str
    expected: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Problems:
    """Collects every problem of a spec, then raises them together."""

    def __init__(self, base: tuple | list) -> None:
        self.base = list(base)
        self.items: list[Problem] = []

    def add(self, path: list[Any], message: str, expected: str = "", **extra: Any) -> None:
        self.items.append(Problem(list(path), message, expected, extra))

    def details(self) -> list[dict[str, Any]]:
        out = []
        for item in self.items:
            detail = {
                "pointer": pointer([*self.base, *item.path]),
                "message": item.message,
                "expected": item.expected or "a valid value",
                "validator": "semantic",
            }
            detail.update(item.extra)
            out.append(detail)
        return out

    def raise_if_any(self, what: str = "the createvDAG spec") -> None:
        if not self.items:
            return
        details = self.details()
        first = details[0]
        raise SpecValidationError(
            f"{what} is invalid: {len(details)} error(s); first: "
            f"{first['pointer'] or '/'}: {first['message']}",
            details=details,
        )


@dataclass
class VDagPlan:
    vdag_uri: str
    name: str
    version: str
    release_tag: str
    mode: str
    values: dict[str, Any]
    nodes: list[dict[str, Any]]
    assignment: dict[str, str]
    compiled_graph: dict[str, Any]
    block_ids: list[str]
    nested_vdags: list[str]
    unassigned: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """What a dry run answers."""
        return {
            "vdagURI": self.vdag_uri,
            "mode": self.mode,
            "assignment": self.assignment,
            "nodes": self.nodes,
            "compiled_graph": self.compiled_graph,
            "block_ids": self.block_ids,
            "nested_vdags": self.nested_vdags,
        }


# -- identity --------------------------------------------------------------------------------
def identity(values: dict[str, Any], base: tuple | list = VALUES_BASE) -> tuple[str, str, str, str]:
    """``(vdagURI, name, version, release_tag)``; the version defaults to ``1.0-stable``."""
    name = values.get("vdagName")
    version_doc = values.get("vdagVersion") or {}
    version = version_doc.get("version") or DEFAULT_VERSION[0]
    tag = version_doc.get("release-tag") or DEFAULT_VERSION[1]
    try:
        return build_uri(name, version, tag), name, version, tag
    except URIError as exc:
        problems = Problems(base)
        problems.add(["vdagName"], str(exc), "name:version-release-tag parts")
        problems.raise_if_any()
        raise  # unreachable: raise_if_any raised


def mode_of(values: dict[str, Any]) -> str:
    return values.get("mode") or SpecMode.CREATE


# -- assignment ------------------------------------------------------------------------------
def _rule_filter(rule: dict[str, Any]) -> dict[str, Any]:
    """The search filter of an assignment rule: ``filter``, ``parameters.filter`` or
    ``parameters.filterRule.filter`` (the reference puts it in each of these places)."""
    if isinstance(rule.get("filter"), dict):
        return rule["filter"]
    params = rule.get("parameters") or {}
    if isinstance(params.get("filter"), dict):
        return params["filter"]
    filter_rule = params.get("filterRule")
    if isinstance(filter_rule, dict) and isinstance(filter_rule.get("filter"), dict):
        return filter_rule["filter"]
    return {}


def _picked_id(output: Any) -> str | None:
    """The block id a policy chose: an id, a block document, or a list of either (first)."""
    if isinstance(output, list):
        return _picked_id(output[0]) if output else None
    if isinstance(output, str):
        return output
    if isinstance(output, dict):
        for key in ("block_id", "blockId", "id", "selected"):
            value = output.get(key)
            if isinstance(value, str | dict | list):
                return _picked_id(value)
    return None


def assign_by_policy(rule: dict[str, Any], *, node_label: str, vdag_uri: str) -> Any:
    """Run the node's ``assignmentPolicyRule`` over the running blocks its filter selects;
    returns the chosen Block. Raises ``ValueError`` with a message for the spec error."""
    from apps.policies.services import evaluate_policy

    filter_ = _rule_filter(rule)
    try:
        candidates = block_lookup.running_candidates(filter_, limit=MAX_CANDIDATES)
    except ApiError as exc:
        raise ValueError(f"the assignment filter is invalid: {exc.message}") from None
    if not candidates:
        raise ValueError("no running block matches the assignment filter")
    by_id = {block.pk: block for block in candidates}
    documents = [block_lookup.block_document(block) for block in candidates]
    parameters = {k: v for k, v in (rule.get("parameters") or {}).items() if k not in FILTER_KEYS}
    settings = {
        **(rule.get("settings") or {}),
        "vdag_uri": vdag_uri,
        "node_label": node_label,
    }
    try:
        output = evaluate_policy(
            rule["policyRuleURI"],
            documents,
            parameters=parameters,
            settings=settings,
            mode="sandbox",
        )
    except ApiError as exc:
        raise ValueError(
            f"assignment policy {rule['policyRuleURI']} failed: {exc.message}"
        ) from None
    chosen = _picked_id(output)
    if chosen is None or chosen not in by_id:
        raise ValueError(
            f"assignment policy {rule['policyRuleURI']} chose {chosen!r}, which is not one of "
            f"the {len(by_id)} running candidates"
        )
    log.info(
        "event=vdag_node_assigned vdag=%s node=%s block_id=%s candidates=%d policy=%s",
        vdag_uri,
        node_label,
        chosen,
        len(by_id),
        rule["policyRuleURI"],
    )
    return by_id[chosen]


# -- planning ---------------------------------------------------------------------------------
def _nested(uri: str, own_uri: str, path: list[Any], problems: Problems) -> VDag | None:
    if uri == own_uri:
        problems.add(path, f"a vDAG cannot contain itself ({uri})", "another vDAG's URI")
        return None
    inner = VDag.objects.filter(pk=uri).first()
    if inner is None:
        problems.add(path, f"vDAG {uri!r} does not exist", "the URI of an existing vDAG")
        return None
    if inner.status != VDagStatus.ACTIVE:
        problems.add(
            path,
            f"vDAG {uri!r} is {inner.status}, not active"
            + (f": {inner.status_reason}" if inner.status_reason else ""),
            "an active vDAG",
        )
        return None
    return inner


def plan_vdag(
    values: dict[str, Any],
    *,
    base: tuple | list = VALUES_BASE,
    run_assignment_policies: bool = True,
) -> VDagPlan:
    """Validate, assign and compile a vDAG spec; raises SpecValidationError listing every
    problem. With ``run_assignment_policies=False`` nodes that need a policy stay unassigned
    (their labels are in ``plan.unassigned``) and the graph is checked without them: the
    quick synchronous check before the ``vdag_creation`` task runs the policies."""
    vdag_uri, name, version, tag = identity(values, base)
    problems = Problems(base)
    spec_nodes = values.get("nodes") or []
    assignment: dict[str, str] = {}
    chosen_blocks: dict[str, Any] = {}
    nested: dict[str, VDag] = {}
    unassigned: list[str] = []

    manual_ids = [
        n["manualBlockId"]
        for n in spec_nodes
        if (n.get("nodeType") or NodeType.BLOCK) == NodeType.BLOCK and n.get("manualBlockId")
    ]
    known_blocks = block_lookup.get_blocks(manual_ids)

    for index, node in enumerate(spec_nodes):
        label = node["nodeLabel"]
        node_type = node.get("nodeType") or NodeType.BLOCK
        if node_type == NodeType.VDAG:
            inner = _nested(node["vdagURI"], vdag_uri, ["nodes", index, "vdagURI"], problems)
            if inner is not None:
                nested[label] = inner
            continue
        manual = node.get("manualBlockId")
        if manual:
            block = known_blocks.get(manual)
            if block is None:
                problems.add(
                    ["nodes", index, "manualBlockId"],
                    f"block {manual!r} does not exist",
                    "the id of a running block",
                )
            elif not block_lookup.is_assignable(block):
                problems.add(
                    ["nodes", index, "manualBlockId"],
                    f"block {manual!r} is {block.status}, not running",
                    "the id of a running block",
                )
            else:
                chosen_blocks[label] = block
            continue
        rule = node.get("assignmentPolicyRule")
        if not rule:
            problems.add(
                ["nodes", index],
                f"node {label!r} has neither manualBlockId nor assignmentPolicyRule",
                "manualBlockId or assignmentPolicyRule",
            )
            continue
        if not run_assignment_policies:
            unassigned.append(label)
            continue
        try:
            chosen_blocks[label] = assign_by_policy(rule, node_label=label, vdag_uri=vdag_uri)
        except ValueError as exc:
            problems.add(
                ["nodes", index, "assignmentPolicyRule"], str(exc), "a policy choosing a block"
            )
    problems.raise_if_any()

    for label, block in chosen_blocks.items():
        assignment[label] = block.pk
    try:
        compiled = compiler.compile_spec(
            values,
            blocks=chosen_blocks,
            nested=nested,
        )
    except compiler.SpecGraphError as exc:
        problems.add(exc.path, exc.message, exc.expected, **exc.extra)
        problems.raise_if_any()
        raise  # unreachable

    for path, message, expected, extra in compiler.protocol_problems(
        values, compiled, blocks=chosen_blocks, nested=nested
    ):
        problems.add(path, message, expected, **extra)
    problems.raise_if_any()

    for label, inner in nested.items():
        for inner_label, block_id in (inner.assignment or {}).items():
            assignment[f"{label}/{inner_label}"] = block_id
    nodes = _completed_nodes(spec_nodes, values.get("graph") or {}, chosen_blocks, nested)
    block_ids = sorted(set(assignment.values()))
    return VDagPlan(
        vdag_uri=vdag_uri,
        name=name,
        version=version,
        release_tag=tag,
        mode=mode_of(values),
        values=copy.deepcopy(values),
        nodes=nodes,
        assignment=assignment,
        compiled_graph=compiled.to_dict() if compiled is not None else {},
        block_ids=block_ids,
        nested_vdags=sorted({inner.pk for inner in nested.values()}),
        unassigned=unassigned,
    )


def _completed_nodes(
    spec_nodes: list[dict[str, Any]],
    graph: dict[str, Any],
    blocks: dict[str, Any],
    nested: dict[str, VDag],
) -> list[dict[str, Any]]:
    """The spec's nodes with what the system fills: ``inputProtocol``, ``outputProtocol``
    (of the assigned block; of the nested vDAG's heads/tails) and ``IOMap`` (which labels
    feed the node and which it feeds)."""
    inputs: dict[str, list[str]] = {}
    outputs: dict[str, list[str]] = {}
    for connection in graph.get("connections") or []:
        dst = connection["nodeLabel"]
        for ref in connection.get("inputs") or []:
            inputs.setdefault(dst, []).append(ref["nodeLabel"])
            outputs.setdefault(ref["nodeLabel"], []).append(dst)
    heads = {ref["nodeLabel"] for ref in graph.get("inputs") or []}
    tails = {ref["nodeLabel"] for ref in graph.get("outputs") or []}
    completed = []
    for node in spec_nodes:
        label = node["nodeLabel"]
        doc = copy.deepcopy(node)
        doc.setdefault("nodeType", NodeType.BLOCK)
        if label in blocks:
            protocols = block_lookup.block_protocols(blocks[label])
            doc["inputProtocol"] = protocols["input"]
            doc["outputProtocol"] = protocols["output"]
            doc["assignedBlockId"] = blocks[label].pk
        elif label in nested:
            doc["inputProtocol"], doc["outputProtocol"] = _vdag_protocols(nested[label])
        doc["IOMap"] = [
            *({"direction": "input", "nodeLabel": src} for src in inputs.get(label, [])),
            *({"direction": "output", "nodeLabel": dst} for dst in outputs.get(label, [])),
            *([{"direction": "input", "nodeLabel": "$input"}] if label in heads else []),
            *([{"direction": "output", "nodeLabel": "$output"}] if label in tails else []),
        ]
        completed.append(doc)
    return completed


def _vdag_protocols(vdag: VDag) -> tuple[dict, dict]:
    """A nested vDAG's input protocol is its (first) head's, its output its (first) tail's."""
    graph = vdag.graph or {}
    by_label = {n.get("nodeLabel"): n for n in vdag.nodes or []}
    heads = [ref.get("nodeLabel") for ref in graph.get("inputs") or []]
    tails = [ref.get("nodeLabel") for ref in graph.get("outputs") or []]
    head = by_label.get(heads[0]) if heads else None
    tail = by_label.get(tails[0]) if tails else None
    return (head or {}).get("inputProtocol") or {}, (tail or {}).get("outputProtocol") or {}
