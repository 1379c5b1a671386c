"""vDAGs in the data plane: the graph compiler (`graph`), the route carried in packets
(`route`), hops between blocks (`hops`), fan-in (`fanin`), node policies (`policies`), the
instance-side forwarder (`forwarder`) and the request runner used by the vDAG controller and
the adhoc inference server (`runner`).

Only the compiler is imported here, so the control plane can use it without pulling in Redis
or gRPC clients.
"""

from block_sdk.vdag.graph import (
    NESTED_SEPARATOR,
    NODE_BLOCK,
    NODE_VDAG,
    CompiledGraph,
    GraphError,
    GraphNode,
    check_protocols,
    compile_dynamic_graph,
    compile_graph,
    compile_spec,
)

__all__ = [
    "NESTED_SEPARATOR",
    "NODE_BLOCK",
    "NODE_VDAG",
    "CompiledGraph",
    "GraphError",
    "GraphNode",
    "check_protocols",
    "compile_dynamic_graph",
    "compile_graph",
    "compile_spec",
]
