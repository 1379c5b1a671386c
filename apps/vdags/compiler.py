"""The control plane's use of the data plane's vDAG compiler (``block_sdk.vdag.graph``).

One definition of a valid vDAG serves both planes: this module only builds the compiler's
input from a spec and the assigned blocks, refreshes executor addresses, and translates the
compiler's findings (a ``GraphError`` with a JSON pointer into the spec values; protocol
problems per edge) into spec errors with paths the parser reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from apps.vdags import blocks as block_lookup
from apps.vdags.choices import NodeType
from block_sdk.vdag.graph import (
    NESTED_SEPARATOR,
    CompiledGraph,
    GraphError,
    GraphNode,
    check_protocols,
    compile_graph,
)


class SpecGraphError(Exception):
    """A graph problem of a spec: ``path`` is relative to the spec values."""

    def __init__(self, path: list[Any], message: str, expected: str = "", **extra: Any) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.expected = expected or "a valid vDAG graph"
        self.extra = extra


def pointer_path(pointer: str) -> list[Any]:
    """RFC 6901 pointer -> path (digit tokens become list indices)."""
    if not pointer:
        return []
    tokens = pointer.lstrip("/").split("/")
    out: list[Any] = []
    for token in tokens:
        token = token.replace("~1", "/").replace("~0", "~")
        out.append(int(token) if token.isdigit() else token)
    return out


def graph_nodes(values: dict[str, Any], blocks: dict[str, Any]) -> list[GraphNode]:
    """The spec's nodes as compiler nodes; block nodes carry their assigned block and its
    executor address (None while a node is not assigned yet)."""
    nodes = []
    for node in values.get("nodes") or []:
        label = node["nodeLabel"]
        node_type = node.get("nodeType") or NodeType.BLOCK
        block = blocks.get(label)
        nodes.append(
            GraphNode(
                label=label,
                node_type=node_type,
                block_id=block.pk if block is not None else None,
                vdag_uri=node.get("vdagURI") if node_type == NodeType.VDAG else None,
                pre_policy=node.get("preprocessingPolicyRule"),
                post_policy=node.get("postprocessingPolicyRule"),
                model_parameters=dict(node.get("modelParameters") or {}),
                executor=block_lookup.executor_address(block) if block is not None else {},
            )
        )
    return nodes


def compile_spec(
    values: dict[str, Any],
    *,
    blocks: dict[str, Any],
    nested: dict[str, Any],
) -> CompiledGraph:
    """Compile the spec with its assignment; nested vDAGs are their stored compiled graphs.
    Executor addresses of every block (nested ones too) are refreshed from the blocks
    registry. Raises :class:`SpecGraphError`."""
    by_uri = {vdag.pk: vdag for vdag in nested.values()}

    def resolve(uri: str) -> dict[str, Any]:
        vdag = by_uri.get(uri)
        if vdag is None or not vdag.compiled_graph:
            raise LookupError(f"vDAG {uri!r} is not available")
        return vdag.compiled_graph

    graph = values.get("graph") or {}
    try:
        compiled = compile_graph(
            graph_nodes(values, blocks),
            graph.get("connections"),
            graph.get("inputs"),
            graph.get("outputs"),
            resolve_vdag=resolve,
        )
    except GraphError as exc:
        extra = {"facts": exc.details} if exc.details else {}
        raise SpecGraphError(pointer_path(exc.pointer), exc.message, **extra) from None
    return refresh_executors(compiled)


def refresh_executors(compiled: CompiledGraph) -> CompiledGraph:
    """The graph with the current executor address of each of its blocks."""
    current = block_lookup.get_blocks(compiled.block_ids())
    return compiled.with_executors(
        {block_id: block_lookup.executor_address(block) for block_id, block in current.items()}
    )


def _outer(label: str) -> str:
    return label.split(NESTED_SEPARATOR, 1)[0]


def protocol_problems(
    values: dict[str, Any],
    compiled: CompiledGraph,
    *,
    blocks: dict[str, Any],
    nested: dict[str, Any],
) -> Iterator[tuple[list[Any], str, str, dict[str, Any]]]:
    """``(path, message, expected, extra)`` for each edge whose producer's output protocol
    does not satisfy the consumer's input protocol (blocks of nested vDAGs included)."""
    all_blocks = block_lookup.get_blocks(compiled.block_ids())
    protocols = {bid: block_lookup.block_protocols(block) for bid, block in all_blocks.items()}
    index_of = {node["nodeLabel"]: i for i, node in enumerate(values.get("nodes") or [])}
    connections = (values.get("graph") or {}).get("connections") or []
    for problem in check_protocols(compiled, protocols):
        dst = _outer(str(problem.get("to", "")))
        sources = problem.get("from")
        src = _outer(sources if isinstance(sources, str) else "")
        path: list[Any] = ["nodes", index_of[dst]] if dst in index_of else ["graph"]
        for ci, connection in enumerate(connections):
            if connection.get("nodeLabel") != dst:
                continue
            path = ["graph", "connections", ci]
            for ii, ref in enumerate(connection.get("inputs") or []):
                if src and ref.get("nodeLabel") == src:
                    path = ["graph", "connections", ci, "inputs", ii]
            break
        extra = {k: v for k, v in problem.items() if k != "message"}
        yield (
            path,
            f"incompatible protocols: {problem.get('message', '')}",
            "a producer whose output protocol satisfies the consumer's input protocol",
            {"protocol": extra},
        )
