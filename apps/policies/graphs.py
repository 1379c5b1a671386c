"""Structure of policy graphs (T5): validation and topological order, with no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apps.core.errors import ValidationFailed

MAX_NODES = 200


def normalise_connections(function_ids: Any, connections: Any) -> tuple[list[str], dict[str, list]]:
    """Check the shapes and return ``(nodes in declared order, adjacency map)``.

    ``function_ids`` lists the graph's functions (empty: the names used in ``connections``);
    ``connections`` maps a function to the functions its output feeds.
    """
    if connections is None:
        connections = {}
    if not isinstance(connections, Mapping):
        raise ValidationFailed(
            "graph_connection_data must be an adjacency map {function: [successors]}"
        )
    if function_ids is None:
        function_ids = []
    if not isinstance(function_ids, list) or not all(isinstance(f, str) for f in function_ids):
        raise ValidationFailed("graph_function_ids must be a list of function names")
    if len(set(function_ids)) != len(function_ids):
        dupes = sorted({f for f in function_ids if function_ids.count(f) > 1})
        raise ValidationFailed(f"graph_function_ids lists {dupes} more than once")

    adjacency: dict[str, list[str]] = {}
    for parent, children in connections.items():
        if isinstance(children, str):
            children = [children]
        if not isinstance(children, list) or not all(isinstance(c, str) for c in children):
            raise ValidationFailed(f"graph_connection_data[{parent!r}] must be a list of names")
        adjacency[str(parent)] = list(dict.fromkeys(children))

    nodes = list(function_ids)
    if not nodes:
        for parent, children in adjacency.items():
            for name in (parent, *children):
                if name not in nodes:
                    nodes.append(name)
    else:
        declared = set(nodes)
        unknown = sorted({n for p, cs in adjacency.items() for n in (p, *cs) if n not in declared})
        if unknown:
            raise ValidationFailed(
                f"graph_connection_data names functions not in graph_function_ids: {unknown}",
                details=[{"field": "graph_connection_data", "unknown": unknown}],
            )
    if not nodes:
        raise ValidationFailed("a graph needs at least one function")
    if len(nodes) > MAX_NODES:
        raise ValidationFailed(f"a graph has at most {MAX_NODES} functions")
    for node in nodes:
        adjacency.setdefault(node, [])
    for node, children in adjacency.items():
        if node in children:
            raise ValidationFailed(
                f"graph has a cycle: {node} -> {node}", details=[{"cycle": [node, node]}]
            )
    return nodes, adjacency


def find_cycle(nodes: list[str], adjacency: dict[str, list[str]]) -> list[str] | None:
    """A cycle as a closed path ``[a, b, …, a]``, or ``None``."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(nodes, white)
    for start in nodes:
        if colour[start] != white:
            continue
        path: list[str] = [start]
        stack: list[tuple[str, int]] = [(start, 0)]
        colour[start] = grey
        while stack:
            node, child_index = stack[-1]
            children = adjacency.get(node, [])
            if child_index < len(children):
                stack[-1] = (node, child_index + 1)
                child = children[child_index]
                if colour[child] == grey:
                    return [*path[path.index(child) :], child]
                if colour[child] == white:
                    colour[child] = grey
                    path.append(child)
                    stack.append((child, 0))
            else:
                colour[node] = black
                stack.pop()
                path.pop()
    return None


def topological_order(nodes: list[str], adjacency: dict[str, list[str]]) -> list[str]:
    """Kahn's order, ties broken by declaration order; raises naming a cycle if there is one."""
    cycle = find_cycle(nodes, adjacency)
    if cycle is not None:
        raise ValidationFailed(
            f"graph has a cycle: {' -> '.join(cycle)}", details=[{"cycle": cycle}]
        )
    indegree = dict.fromkeys(nodes, 0)
    for children in adjacency.values():
        for child in children:
            indegree[child] += 1
    position = {name: i for i, name in enumerate(nodes)}
    ready = sorted((n for n in nodes if indegree[n] == 0), key=position.__getitem__)
    order: list[str] = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for child in adjacency[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
                ready.sort(key=position.__getitem__)
    return order


def parents_of(nodes: list[str], adjacency: dict[str, list[str]]) -> dict[str, list[str]]:
    parents: dict[str, list[str]] = {n: [] for n in nodes}
    for parent in nodes:
        for child in adjacency[parent]:
            parents[child].append(parent)
    return parents


def sinks(nodes: list[str], adjacency: dict[str, list[str]]) -> list[str]:
    return [n for n in nodes if not adjacency[n]]
