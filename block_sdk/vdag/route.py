"""The vDAG route: what a packet carries in `AIOSPacket.output_ptr` while it travels a graph.

    {"kind": "aios.vdag/1",
     "vdag": "<vdag uri>",              # for policies and logs
     "rid": "<request id>",             # unique per request: keys fan-in state and results
     "node": "<label>",                 # the node this packet is addressed to
     "from": "<label>",                 # the node that sent it ("" at a head)
     "deadline": 1712345678.25,         # absolute, epoch seconds (0: none)
     "frame_ptr": "...",                # the request's frame_ptr, carried to every hop
     "skip": true,                      # only on skip markers (a pruned branch), see forwarder
     "final": {"redis_list": "...", "cluster_id": "...", "grpc": "host:port", "redis_url"?},
     "gid": "<graph digest>",
     "graph": <CompiledGraph.to_dict()>}

Results reach the `final` target as an `AIOSPacket` whose `output_ptr` is the small document

    {"kind": "aios.vdag.final/1", "rid": ..., "node": "<tail label>", "list": "<redis list>",
     "error": {"code": ..., "message": <JSON error document>}?, "skipped": true?}

Parsing is cached by graph digest, so a hop re-reads only the small header.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from block_sdk.vdag.graph import CompiledGraph, GraphError

ROUTE_KIND = "aios.vdag/1"
FINAL_KIND = "aios.vdag.final/1"
_GRAPH_CACHE_MAX = 256

# digest -> (graph, its JSON text): hops re-emit the same graph text without re-encoding it.
_graphs: OrderedDict[str, tuple[CompiledGraph, str]] = OrderedDict()


def _graph_entry(gid: str | None, doc: Any) -> tuple[CompiledGraph, str]:
    if gid:
        hit = _graphs.get(gid)
        if hit is not None:
            _graphs.move_to_end(gid)
            return hit
    graph = CompiledGraph.from_dict(doc)
    entry = (graph, json.dumps(graph.to_dict(), separators=(",", ":")))
    key = gid or graph.digest
    _graphs[key] = entry
    while len(_graphs) > _GRAPH_CACHE_MAX:
        _graphs.popitem(last=False)
    return entry


def graph_json(graph: CompiledGraph) -> str:
    """The graph's JSON text, cached by digest (what every route of this graph embeds)."""
    gid = graph.digest
    hit = _graphs.get(gid)
    if hit is None:
        hit = (graph, json.dumps(graph.to_dict(), separators=(",", ":")))
        _graphs[gid] = hit
        while len(_graphs) > _GRAPH_CACHE_MAX:
            _graphs.popitem(last=False)
    return hit[1]


class RouteError(ValueError):
    """`output_ptr` claims to be a vDAG route but is not a usable one."""


@dataclass(slots=True)
class VdagRoute:
    graph: CompiledGraph
    rid: str
    node: str
    sender: str = ""
    deadline: float = 0.0
    final: dict[str, Any] = field(default_factory=dict)
    vdag: str = ""
    frame_ptr: str = ""
    skipped: bool = False

    def ptr(self, node: str, sender: str = "", *, skipped: bool = False) -> str:
        """The `output_ptr` of a packet addressed to `node` (sent by `sender`)."""
        header: dict[str, Any] = {
            "kind": ROUTE_KIND,
            "vdag": self.vdag,
            "rid": self.rid,
            "node": node,
            "from": sender,
            "deadline": self.deadline,
            "final": self.final,
            "gid": self.graph.digest,
        }
        if self.frame_ptr:
            header["frame_ptr"] = self.frame_ptr
        if skipped:
            header["skip"] = True
        head = json.dumps(header, separators=(",", ":"))
        return f'{head[:-1]},"graph":{graph_json(self.graph)}}}'

    def final_ptr(
        self, node: str, *, error: dict[str, Any] | None = None, skipped: bool = False
    ) -> str:
        doc: dict[str, Any] = {
            "kind": FINAL_KIND,
            "rid": self.rid,
            "node": node,
            "list": self.final.get("redis_list", ""),
        }
        if error is not None:
            doc["error"] = error
        if skipped:
            doc["skipped"] = True
        return json.dumps(doc, separators=(",", ":"))


def parse_doc(output_ptr: str) -> dict[str, Any] | None:
    """The JSON object in `output_ptr`, or None (empty, not JSON, not an object)."""
    if not output_ptr or output_ptr[0] != "{":
        return None
    try:
        doc = json.loads(output_ptr)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def is_vdag_route(doc: dict[str, Any] | None) -> bool:
    return bool(doc) and doc.get("kind") == ROUTE_KIND


def route_from_doc(doc: dict[str, Any]) -> VdagRoute:
    """Build a `VdagRoute` from a parsed route document; raises RouteError."""
    try:
        graph, _ = _graph_entry(doc.get("gid"), doc.get("graph"))
    except GraphError as exc:
        raise RouteError(f"output_ptr carries an invalid graph: {exc.message}") from None
    node = doc.get("node")
    if not isinstance(node, str) or node not in graph.nodes:
        raise RouteError(f"output_ptr names node {node!r}, which is not in its graph")
    rid = doc.get("rid")
    if not isinstance(rid, str) or not rid:
        raise RouteError("output_ptr has no request id (rid)")
    final = doc.get("final")
    try:
        deadline = float(doc.get("deadline") or 0.0)
    except (TypeError, ValueError):
        raise RouteError("output_ptr deadline is not a number") from None
    return VdagRoute(
        graph=graph,
        rid=rid,
        node=node,
        sender=str(doc.get("from") or ""),
        deadline=deadline,
        final=dict(final) if isinstance(final, dict) else {},
        vdag=str(doc.get("vdag") or ""),
        frame_ptr=str(doc.get("frame_ptr") or ""),
        skipped=bool(doc.get("skip")),
    )


_parsed: OrderedDict[str, VdagRoute] = OrderedDict()
_PARSED_MAX = 512


def parse_route(output_ptr: str) -> VdagRoute | None:
    """The vDAG route in `output_ptr`, or None when it holds none. Raises RouteError when it
    claims to be one but is broken. Recent results are cached by the exact text (a packet's
    route is read before and after its block runs)."""
    hit = _parsed.get(output_ptr)
    if hit is not None:
        return hit
    doc = parse_doc(output_ptr)
    if not is_vdag_route(doc):
        return None
    route = route_from_doc(doc)  # type: ignore[arg-type]
    _parsed[output_ptr] = route
    while len(_parsed) > _PARSED_MAX:
        _parsed.popitem(last=False)
    return route


def new_route(
    graph: CompiledGraph,
    rid: str,
    *,
    final: dict[str, Any],
    deadline: float = 0.0,
    vdag: str = "",
    frame_ptr: bytes | str = b"",
) -> VdagRoute:
    """A route for a new request (the controller's or adhoc server's side)."""
    if isinstance(frame_ptr, bytes):
        frame_ptr = frame_ptr.decode("utf-8", "replace")
    return VdagRoute(
        graph=graph,
        rid=rid,
        node=graph.heads[0],
        deadline=deadline,
        final=final,
        vdag=vdag,
        frame_ptr=frame_ptr,
    )
