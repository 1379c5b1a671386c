"""The vDAG graph compiler: spec `graph{connections, inputs, outputs}` + nodes -> `CompiledGraph`.

Pure Python (no Django, no Redis, no gRPC), so the control plane (`createvDAG`, dry-run) and
every data-plane process (controller, instance router, adhoc server) share one definition of
what a valid vDAG is and how nested vDAGs expand.

Semantics (reference §1.14): every label must exist in `nodes`; the graph is acyclic; nodes
with no incoming edge are heads and must be the declared `graph.inputs`; nodes with no
outgoing edge are tails and must be the declared `graph.outputs`; every node is reachable from
the inputs. A node of type `vdag` is replaced by the compiled graph of that vDAG, its labels
prefixed with `<outer label>/`: every head of the inner graph receives the outer predecessors,
every tail of the inner graph feeds the outer successors.

`CompiledGraph.to_dict()` is both the stored form and what travels in packets (see
`block_sdk.vdag.route`); `docs/inference.md` documents it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

NODE_BLOCK = "block"
NODE_VDAG = "vdag"
NODE_TYPES = (NODE_BLOCK, NODE_VDAG)
NESTED_SEPARATOR = "/"
GRAPH_FORMAT_VERSION = 1

PolicyRef = str | dict[str, Any] | None


class GraphError(ValueError):
    """An invalid vDAG graph. `pointer` is a JSON Pointer into the vDAG spec values (e.g.
    `/graph/connections/1/inputs/0/nodeLabel`); `details` a list of JSON-able facts."""

    def __init__(
        self, message: str, pointer: str = "", details: Sequence[Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.pointer = pointer
        self.details = list(details or [])

    def to_dict(self) -> dict[str, Any]:
        """The project's error shape; the pointer leads the details."""
        details = [{"pointer": self.pointer}, *self.details] if self.pointer else self.details
        return {"error": {"code": "invalid_graph", "message": self.message, "details": details}}

    def __repr__(self) -> str:
        return f"GraphError({self.message!r}, pointer={self.pointer!r})"


@dataclass(slots=True)
class GraphNode:
    """One vDAG node as the compiler and the routers see it.

    `executor` is the address of the block's executor, e.g. `{"cluster_id": "c1", "grpc":
    "10.0.0.5:50051", "http": "10.0.0.5:18000", "redis_url": "redis://...",
    "max_queue_length": 1000}`. `pre_policy` / `post_policy` are a policy rule URI or a
    `{"policyRuleURI", "parameters", "settings"}` object (the spec's shape) or None.
    """

    label: str
    node_type: str = NODE_BLOCK
    block_id: str | None = None
    vdag_uri: str | None = None
    pre_policy: PolicyRef = None
    post_policy: PolicyRef = None
    model_parameters: dict[str, Any] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], label: str | None = None) -> GraphNode:
        """Accepts the compiled form (snake_case) and the spec's node (camelCase:
        `nodeLabel`, `nodeType`, `vdagURI`, `manualBlockId`, `preprocessingPolicyRule`...)."""

        def pick(*names: str, default: Any = None) -> Any:
            for name in names:
                if name in doc and doc[name] is not None:
                    return doc[name]
            return default

        return cls(
            label=label if label is not None else pick("label", "nodeLabel", default=""),
            node_type=pick("node_type", "nodeType", default=NODE_BLOCK),
            block_id=pick("block_id", "blockId", "manualBlockId"),
            vdag_uri=pick("vdag_uri", "vdagURI", "vdagUri"),
            pre_policy=pick("pre_policy", "preprocessingPolicyRule"),
            post_policy=pick("post_policy", "postprocessingPolicyRule"),
            model_parameters=dict(pick("model_parameters", "modelParameters", default={}) or {}),
            executor=dict(pick("executor", default={}) or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """Compact: empty fields are left out (this travels in every packet)."""
        doc: dict[str, Any] = {"node_type": self.node_type}
        for name in ("block_id", "vdag_uri", "pre_policy", "post_policy"):
            value = getattr(self, name)
            if value:
                doc[name] = value
        if self.model_parameters:
            doc["model_parameters"] = self.model_parameters
        if self.executor:
            doc["executor"] = self.executor
        return doc


@dataclass(slots=True)
class CompiledGraph:
    """A validated, fully expanded (no `vdag` nodes left) DAG of block nodes."""

    nodes: dict[str, GraphNode]
    edges: dict[str, list[str]]  # label -> successors, in declaration order
    inputs: dict[str, list[str]]  # label -> predecessors, in declaration order (fan-in order)
    heads: list[str]
    tails: list[str]
    order: list[str]  # a topological order
    version: int = GRAPH_FORMAT_VERSION
    _digest: str | None = field(default=None, repr=False, compare=False)

    def successors(self, label: str) -> list[str]:
        return self.edges.get(label, [])

    def predecessors(self, label: str) -> list[str]:
        return self.inputs.get(label, [])

    def is_fan_in(self, label: str) -> bool:
        return len(self.inputs.get(label, ())) > 1

    def block_ids(self) -> list[str]:
        """Distinct block ids in topological order."""
        seen: dict[str, None] = {}
        for label in self.order:
            block_id = self.nodes[label].block_id
            if block_id:
                seen.setdefault(block_id, None)
        return list(seen)

    def with_executors(self, executors: Mapping[str, Mapping[str, Any]]) -> CompiledGraph:
        """A copy whose nodes carry `executors[block_id]` (those given; others unchanged)."""
        nodes = {
            label: replace(node, executor=dict(executors[node.block_id]))
            if node.block_id in executors
            else node
            for label, node in self.nodes.items()
        }
        return replace(self, nodes=nodes, _digest=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "nodes": {label: self.nodes[label].to_dict() for label in self.order},
            "edges": {label: list(self.edges.get(label, [])) for label in self.order},
            "inputs": {label: list(self.inputs.get(label, [])) for label in self.order},
            "heads": list(self.heads),
            "tails": list(self.tails),
            "order": list(self.order),
        }

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON form: identifies the graph in caches."""
        if self._digest is None:
            text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
            self._digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        return self._digest

    @classmethod
    def from_dict(cls, doc: Any) -> CompiledGraph:
        """Rebuild (and re-check) a stored graph; raises GraphError when malformed."""
        if not isinstance(doc, Mapping):
            raise GraphError("a compiled graph must be a JSON object", "")
        raw_nodes = doc.get("nodes")
        if not isinstance(raw_nodes, Mapping) or not raw_nodes:
            raise GraphError("a compiled graph needs a non-empty 'nodes' object", "/nodes")
        nodes: dict[str, GraphNode] = {}
        for label, node_doc in raw_nodes.items():
            if not isinstance(node_doc, Mapping):
                raise GraphError(f"node {label!r} must be an object", f"/nodes/{_esc(label)}")
            node = GraphNode.from_dict(node_doc, label=str(label))
            if node.node_type != NODE_BLOCK:
                raise GraphError(
                    f"node {label!r} of a compiled graph must be a block node",
                    f"/nodes/{_esc(label)}/node_type",
                )
            nodes[str(label)] = node
        edges = _label_lists(doc.get("edges") or {}, nodes, "/edges")
        inputs = _label_lists(doc.get("inputs") or {}, nodes, "/inputs")
        if not inputs:  # older documents: predecessors derived from edges
            for src, succs in edges.items():
                for dst in succs:
                    inputs.setdefault(dst, []).append(src)
        for src, succs in edges.items():
            for dst in succs:
                if src not in inputs.get(dst, []):
                    raise GraphError(
                        f"edge {src!r} -> {dst!r} is missing from inputs of {dst!r}", "/inputs"
                    )
        heads = [label for label in nodes if not inputs.get(label)]
        tails = [label for label in nodes if not edges.get(label)]
        order = _topological(nodes, edges, inputs)
        if order is None:
            raise GraphError("the compiled graph has a cycle", "/edges")
        # Keep the stored ordering of heads/tails/order when consistent (fan-in/output order).
        for key, computed in (("heads", heads), ("tails", tails), ("order", order)):
            stored = doc.get(key)
            if isinstance(stored, list) and sorted(map(str, stored)) == sorted(computed):
                computed[:] = [str(x) for x in stored]
        return cls(nodes, edges, inputs, heads, tails, order, int(doc.get("version", 1)))


def _esc(label: Any) -> str:
    """JSON Pointer escaping of one reference token."""
    return str(label).replace("~", "~0").replace("/", "~1")


def _label_lists(raw: Any, nodes: Mapping[str, GraphNode], pointer: str) -> dict[str, list[str]]:
    if not isinstance(raw, Mapping):
        raise GraphError(f"{pointer[1:]} must be an object of label -> [labels]", pointer)
    out: dict[str, list[str]] = {}
    for key, values in raw.items():
        if key not in nodes:
            raise GraphError(f"unknown node label {key!r}", f"{pointer}/{_esc(key)}")
        if not isinstance(values, list):
            raise GraphError(f"{pointer[1:]}[{key!r}] must be a list", f"{pointer}/{_esc(key)}")
        for i, value in enumerate(values):
            if value not in nodes:
                raise GraphError(f"unknown node label {value!r}", f"{pointer}/{_esc(key)}/{i}")
        if values:
            out[str(key)] = [str(v) for v in values]
    return out


def _topological(
    nodes: Mapping[str, Any], edges: Mapping[str, list[str]], inputs: Mapping[str, list[str]]
) -> list[str] | None:
    """Kahn's algorithm, stable in node order; None when there is a cycle."""
    indegree = {label: len(inputs.get(label, ())) for label in nodes}
    ready = [label for label in nodes if indegree[label] == 0]
    order: list[str] = []
    while ready:
        label = ready.pop(0)
        order.append(label)
        for succ in edges.get(label, ()):
            indegree[succ] -= 1
            if indegree[succ] == 0:
                ready.append(succ)
    return order if len(order) == len(nodes) else None


def _find_cycle(nodes: Iterable[str], edges: Mapping[str, list[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], found by depth-first search (iterative: no recursion
    limit on long pipelines)."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(nodes, white)
    for start in color:
        if color[start] != white:
            continue
        stack: list[tuple[str, Iterable[str]]] = [(start, iter(edges.get(start, ())))]
        path = [start]
        color[start] = grey
        while stack:
            label, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[label] = black
                stack.pop()
                path.pop()
                continue
            if color.get(nxt) == grey:
                return [*path[path.index(nxt) :], nxt]
            if color.get(nxt) == white:
                color[nxt] = grey
                stack.append((nxt, iter(edges.get(nxt, ()))))
                path.append(nxt)
    return None


def _ref_label(item: Any, pointer: str) -> str:
    """`{"nodeLabel": x}` (the spec) or a bare string."""
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping):
        label = item.get("nodeLabel", item.get("label"))
        if isinstance(label, str) and label:
            return label
        raise GraphError("nodeLabel is required and must be a non-empty string", pointer)
    raise GraphError('expected {"nodeLabel": "<label>"}', pointer)


def _as_list(value: Any, pointer: str, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise GraphError(f"{what} must be a list", pointer)
    return list(value)


VdagResolver = Callable[[str], "CompiledGraph | Mapping[str, Any]"]


def compile_graph(
    nodes: Sequence[GraphNode | Mapping[str, Any]],
    connections: Sequence[Mapping[str, Any]] | None,
    inputs: Sequence[Any] | None,
    outputs: Sequence[Any] | None,
    *,
    resolve_vdag: VdagResolver | None = None,
) -> CompiledGraph:
    """Validate a vDAG's nodes and `graph` and compile them (nested vDAGs expanded).

    `nodes`: `GraphNode`s or dicts (spec or compiled keys). `connections`: the spec's
    `[{"nodeLabel": dst, "inputs": [{"nodeLabel": src}, ...]}]` (several entries for one
    `dst` are merged). `inputs` / `outputs`: `[{"nodeLabel": ...}]` or labels.
    `resolve_vdag(uri)` returns the inner vDAG's `CompiledGraph` (or its dict); it may raise
    anything to say the vDAG does not exist. Raises `GraphError` on the first problem.
    """
    node_list = _as_list(nodes, "/nodes", "nodes")
    if not node_list:
        raise GraphError("a vDAG needs at least one node", "/nodes")
    by_label: dict[str, GraphNode] = {}
    index_of: dict[str, int] = {}
    for i, raw in enumerate(node_list):
        pointer = f"/nodes/{i}"
        if isinstance(raw, GraphNode):
            node = raw
        elif isinstance(raw, Mapping):
            node = GraphNode.from_dict(raw)
        else:
            raise GraphError("a node must be an object", pointer)
        if not isinstance(node.label, str) or not node.label.strip():
            raise GraphError(
                "nodeLabel is required and must be a non-empty string", f"{pointer}/nodeLabel"
            )
        if node.label in by_label:
            raise GraphError(
                f"duplicate nodeLabel {node.label!r} (also node {index_of[node.label]})",
                f"{pointer}/nodeLabel",
                [{"label": node.label, "first": index_of[node.label], "again": i}],
            )
        if node.node_type not in NODE_TYPES:
            raise GraphError(
                f"nodeType of {node.label!r} must be one of {', '.join(NODE_TYPES)}, "
                f"not {node.node_type!r}",
                f"{pointer}/nodeType",
            )
        if node.node_type == NODE_VDAG and not node.vdag_uri:
            raise GraphError(
                f"node {node.label!r} has nodeType 'vdag' but no vdagURI", f"{pointer}/vdagURI"
            )
        by_label[node.label] = node
        index_of[node.label] = i

    def known(label: str, pointer: str) -> str:
        if label not in by_label:
            raise GraphError(
                f"unknown nodeLabel {label!r}: not one of the vDAG's nodes",
                pointer,
                [{"label": label, "known": sorted(by_label)}],
            )
        return label

    edges: dict[str, list[str]] = {label: [] for label in by_label}
    preds: dict[str, list[str]] = {label: [] for label in by_label}
    for ci, conn in enumerate(_as_list(connections, "/graph/connections", "graph.connections")):
        cp = f"/graph/connections/{ci}"
        if not isinstance(conn, Mapping):
            raise GraphError("a connection must be an object", cp)
        dst = known(_ref_label(conn, f"{cp}/nodeLabel"), f"{cp}/nodeLabel")
        for ii, item in enumerate(_as_list(conn.get("inputs"), f"{cp}/inputs", "inputs")):
            ip = f"{cp}/inputs/{ii}/nodeLabel"
            src = known(_ref_label(item, ip), ip)
            if src == dst:
                raise GraphError(
                    f"cycle: {src} -> {dst} (a node cannot be its own input)",
                    ip,
                    [{"cycle": [src, dst]}],
                )
            if src not in preds[dst]:  # a repeated edge means the same thing once
                preds[dst].append(src)
                edges[src].append(dst)

    declared_in = _declared(inputs, "/graph/inputs", "graph.inputs", known)
    declared_out = _declared(outputs, "/graph/outputs", "graph.outputs", known)

    cycle = _find_cycle(by_label, edges)
    if cycle is not None:
        raise GraphError("cycle: " + " -> ".join(cycle), "/graph/connections", [{"cycle": cycle}])
    if not declared_in:
        raise GraphError(
            "graph.inputs is empty: a vDAG needs at least one head (a node that receives the "
            "request)",
            "/graph/inputs",
            [{"heads": [label for label in by_label if not preds[label]]}],
        )
    if not declared_out:
        raise GraphError(
            "graph.outputs is empty: a vDAG needs at least one tail (a node whose output is "
            "the result)",
            "/graph/outputs",
            [{"tails": [label for label in by_label if not edges[label]]}],
        )
    for i, label in enumerate(declared_in):
        if preds[label]:
            raise GraphError(
                f"{label!r} is listed in graph.inputs but has inputs of its own "
                f"({', '.join(preds[label])}); heads are the nodes without inputs",
                f"/graph/inputs/{i}/nodeLabel",
                [{"label": label, "inputs": preds[label]}],
            )
    for i, label in enumerate(declared_out):
        if edges[label]:
            raise GraphError(
                f"{label!r} is listed in graph.outputs but feeds "
                f"{', '.join(edges[label])}; tails are the nodes without successors",
                f"/graph/outputs/{i}/nodeLabel",
                [{"label": label, "successors": edges[label]}],
            )
    reachable = _reachable(declared_in, edges)
    unreachable = [label for label in by_label if label not in reachable]
    if unreachable:
        raise GraphError(
            f"unreachable from graph.inputs: {', '.join(unreachable)} (a node without inputs "
            "must be listed in graph.inputs)",
            f"/nodes/{index_of[unreachable[0]]}",
            [{"unreachable": unreachable}],
        )
    missing_tails = [label for label in by_label if not edges[label] and label not in declared_out]
    if missing_tails:
        raise GraphError(
            f"missing tail: {', '.join(missing_tails)} has no successors but is not in "
            "graph.outputs (its result would be lost)",
            "/graph/outputs",
            [{"missing": missing_tails}],
        )

    return _expand(by_label, index_of, edges, preds, declared_in, declared_out, resolve_vdag)


def _declared(value: Any, pointer: str, what: str, known: Callable[[str, str], str]) -> list[str]:
    out: list[str] = []
    for i, item in enumerate(_as_list(value, pointer, what)):
        label = known(_ref_label(item, f"{pointer}/{i}/nodeLabel"), f"{pointer}/{i}/nodeLabel")
        if label not in out:
            out.append(label)
    return out


def _reachable(start: Iterable[str], edges: Mapping[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        label = todo.pop()
        if label in seen:
            continue
        seen.add(label)
        todo.extend(edges.get(label, ()))
    return seen


def _expand(
    by_label: dict[str, GraphNode],
    index_of: dict[str, int],
    edges: dict[str, list[str]],
    preds: dict[str, list[str]],
    heads: list[str],
    tails: list[str],
    resolve_vdag: VdagResolver | None,
) -> CompiledGraph:
    inner: dict[str, CompiledGraph] = {}
    for label, node in by_label.items():
        if node.node_type != NODE_VDAG:
            continue
        pointer = f"/nodes/{index_of[label]}/vdagURI"
        if resolve_vdag is None:
            raise GraphError(
                f"node {label!r} is a nested vDAG ({node.vdag_uri}) but nested vDAGs cannot "
                "be resolved here",
                pointer,
            )
        try:
            sub = resolve_vdag(str(node.vdag_uri))
        except GraphError as exc:
            raise GraphError(
                f"nested vDAG {node.vdag_uri!r} of node {label!r} is invalid: {exc.message}",
                pointer,
                exc.details,
            ) from None
        except Exception as exc:  # the resolver's way of saying "no such vDAG"
            raise GraphError(
                f"vDAG {node.vdag_uri!r} of node {label!r} does not exist ({exc})",
                pointer,
                [{"vdagURI": node.vdag_uri}],
            ) from None
        if sub is None:
            raise GraphError(
                f"vDAG {node.vdag_uri!r} of node {label!r} does not exist",
                pointer,
                [{"vdagURI": node.vdag_uri}],
            )
        inner[label] = sub if isinstance(sub, CompiledGraph) else CompiledGraph.from_dict(sub)

    def entry(label: str) -> list[str]:
        sub = inner.get(label)
        return [label] if sub is None else [f"{label}{NESTED_SEPARATOR}{h}" for h in sub.heads]

    def exit_(label: str) -> list[str]:
        sub = inner.get(label)
        return [label] if sub is None else [f"{label}{NESTED_SEPARATOR}{t}" for t in sub.tails]

    nodes: dict[str, GraphNode] = {}
    out_edges: dict[str, list[str]] = {}
    in_edges: dict[str, list[str]] = {}

    def add(node: GraphNode) -> None:
        if node.label in nodes:
            raise GraphError(
                f"nested expansion produces the label {node.label!r} twice; rename a node",
                "/nodes",
                [{"label": node.label}],
            )
        nodes[node.label] = node
        out_edges[node.label] = []
        in_edges[node.label] = []

    def link(src: str, dst: str) -> None:
        if dst not in out_edges[src]:
            out_edges[src].append(dst)
            in_edges[dst].append(src)

    for label, node in by_label.items():
        sub = inner.get(label)
        if sub is None:
            add(node)
            continue
        for inner_label in sub.order:
            add(replace(sub.nodes[inner_label], label=f"{label}{NESTED_SEPARATOR}{inner_label}"))
    for label, sub in inner.items():
        prefix = f"{label}{NESTED_SEPARATOR}"
        for src in sub.order:
            for dst in sub.successors(src):
                link(prefix + src, prefix + dst)
    # Outer edges in the order of each destination's declared inputs: that is the fan-in order.
    for dst in by_label:
        for src in preds[dst]:
            for a in exit_(src):
                for b in entry(dst):
                    link(a, b)
    all_heads = [h for label in heads for h in entry(label)]
    all_tails = [t for label in tails for t in exit_(label)]
    order = _topological(nodes, out_edges, in_edges)
    if order is None:  # cannot happen for valid parts; kept as a guard
        raise GraphError("nested expansion produced a cycle", "/graph")
    return CompiledGraph(
        nodes=nodes,
        edges={k: v for k, v in out_edges.items() if v},
        inputs={k: v for k, v in in_edges.items() if v},
        heads=all_heads,
        tails=all_tails,
        order=order,
    )


def compile_spec(
    values: Mapping[str, Any], *, resolve_vdag: VdagResolver | None = None
) -> CompiledGraph:
    """Compile the `nodes` and `graph` of vDAG spec values (`body.spec.values`)."""
    graph = values.get("graph")
    if not isinstance(graph, Mapping):
        raise GraphError("graph is required and must be an object", "/graph")
    return compile_graph(
        values.get("nodes") or [],
        graph.get("connections"),
        graph.get("inputs"),
        graph.get("outputs"),
        resolve_vdag=resolve_vdag,
    )


def compile_dynamic_graph(
    graph_map: Mapping[str, Any],
    head: str,
    executors: Mapping[str, Mapping[str, Any]] | None = None,
) -> CompiledGraph:
    """The adhoc server's dynamic graph (`output_ptr = {"graph": {blk: [children]}}`, `head`
    = the request's block_id) as a compiled graph whose labels are the block ids. Also
    accepts the documented variant `{blk: {"outputs": [children]}}`."""
    if not isinstance(graph_map, Mapping) or not graph_map:
        raise GraphError("graph must be a non-empty object of block_id -> [children]", "/graph")
    children: dict[str, list[str]] = {}
    for parent, value in graph_map.items():
        if isinstance(value, Mapping):
            value = value.get("outputs", [])
        if value is None:
            value = []
        if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
            raise GraphError(
                f"children of {parent!r} must be a list of block ids", f"/graph/{_esc(parent)}"
            )
        children[str(parent)] = list(value)
    labels: list[str] = []
    for parent, kids in children.items():
        for label in (parent, *kids):
            if label not in labels:
                labels.append(label)
    if head not in labels:
        raise GraphError(
            f"the request's block_id {head!r} is not in the graph",
            "/block_id",
            [{"blocks": labels}],
        )
    executors = executors or {}
    nodes = [GraphNode(label=b, block_id=b, executor=dict(executors.get(b) or {})) for b in labels]
    connections: dict[str, list[dict[str, str]]] = {}
    for parent, kids in children.items():
        for kid in kids:
            connections.setdefault(kid, []).append({"nodeLabel": parent})
    tails = [b for b in labels if not children.get(b)]
    return compile_graph(
        nodes,
        [{"nodeLabel": dst, "inputs": srcs} for dst, srcs in connections.items()],
        [head],
        tails,
    )


# -- protocol compatibility ---------------------------------------------------------------
_SCHEMA_WORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "items",
        "additionalProperties",
        "description",
        "title",
        "$schema",
        "enum",
        "oneOf",
        "anyOf",
        "allOf",
        "default",
        "examples",
    }
)


def _protocol_fields(schema: Any) -> tuple[dict[str, str | None] | None, set[str], str | None]:
    """(declared fields name -> type or None (None: open, anything goes), required names,
    top-level type). Understands JSON Schema and the AIOS protocol template
    `{field: {"type", "required"?, ...}}` (a template field is required unless it says
    `"required": false`)."""
    if not isinstance(schema, Mapping) or not schema:
        return None, set(), None
    is_schema = isinstance(schema.get("type"), str | list) and (
        "properties" in schema or set(schema) <= _SCHEMA_WORDS
    )
    if is_schema:
        top = schema.get("type") if isinstance(schema.get("type"), str) else None
        props = schema.get("properties")
        required = {str(r) for r in schema.get("required") or [] if isinstance(r, str)}
        if not isinstance(props, Mapping):
            return None, required, top
        return (
            {str(k): (v.get("type") if isinstance(v, Mapping) else None) for k, v in props.items()},
            required,
            top,
        )
    fields: dict[str, str | None] = {}
    required: set[str] = set()
    for name, spec in schema.items():
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        fields[str(name)] = kind if isinstance(kind, str) else None
        if not (isinstance(spec, Mapping) and spec.get("required") is False):
            required.add(str(name))
    return fields, required, "object"


def _types_compatible(produced: str | None, wanted: str | None) -> bool:
    if not produced or not wanted or "any" in (produced, wanted):
        return True
    if produced == wanted:
        return True
    return produced == "integer" and wanted == "number"


def check_protocols(
    graph: CompiledGraph, protocols: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Problems with edges whose producer cannot satisfy the consumer's input protocol.

    `protocols`: `{block_id: {"input": schema, "output": schema}}`. The rule, per edge A -> B
    (labels of the expanded graph): when A's output declares its fields, every field B's
    input requires must be among them, with a compatible type where both give one (an
    integer satisfies a number). A block without a declared protocol is compatible with
    anything. A fan-in node receives `{"inputs": [...]}`, so its input may require only
    `inputs`. Returns `[]` when everything fits.
    """
    problems: list[dict[str, Any]] = []
    for dst in graph.order:
        dst_block = graph.nodes[dst].block_id
        wanted_fields, required, wanted_top = _protocol_fields(
            (protocols.get(dst_block or "") or {}).get("input")
        )
        if graph.is_fan_in(dst):
            extra = sorted(required - {"inputs"})
            if extra:
                problems.append(
                    {
                        "from": graph.predecessors(dst),
                        "to": dst,
                        "to_block": dst_block,
                        "missing": extra,
                        "message": f"{dst} merges several inputs into {{'inputs': [...]}} but "
                        f"its input protocol requires {', '.join(extra)}",
                    }
                )
            continue
        for src in graph.predecessors(dst):
            src_block = graph.nodes[src].block_id
            produced, _, produced_top = _protocol_fields(
                (protocols.get(src_block or "") or {}).get("output")
            )
            if produced_top and wanted_top and not _types_compatible(produced_top, wanted_top):
                problems.append(
                    {
                        "from": src,
                        "to": dst,
                        "from_block": src_block,
                        "to_block": dst_block,
                        "message": f"{src} produces {produced_top} but {dst} expects {wanted_top}",
                    }
                )
                continue
            if produced is None:
                continue
            missing = sorted(required - set(produced))
            mismatched = sorted(
                name
                for name in required & set(produced)
                if not _types_compatible(produced[name], (wanted_fields or {}).get(name))
            )
            if missing or mismatched:
                parts = []
                if missing:
                    parts.append(f"does not produce {', '.join(missing)}")
                if mismatched:
                    parts.append(f"produces other types for {', '.join(mismatched)}")
                problems.append(
                    {
                        "from": src,
                        "to": dst,
                        "from_block": src_block,
                        "to_block": dst_block,
                        "missing": missing,
                        "type_mismatch": mismatched,
                        "message": f"{src} ({src_block}) {' and '.join(parts)}, required by "
                        f"the input protocol of {dst} ({dst_block})",
                    }
                )
    return problems
