"""Helpers of the vdags tests: unique ids, vDAG spec envelopes, block rows without
processes, and the composed functions the real blocks compute."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from apps.clusters.models import Cluster


def uid(prefix: str) -> str:
    """Ids unique across runs: Redis is shared between engineers and runs."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def envelope(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "header": {"templateUri": "Parser/V1", "parameters": {}},
        "body": {"spec": {"values": copy.deepcopy(values)}},
    }


def node(label: str, block_id: str | None = None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"nodeLabel": label, **extra}
    if block_id:
        doc["manualBlockId"] = block_id
    return doc


def vdag_values(
    name: str,
    nodes: list[dict[str, Any]],
    edges: list[tuple[str, str]],
    inputs: list[str],
    outputs: list[str],
    *,
    version: str = "1.0",
    tag: str = "stable",
    **extra: Any,
) -> dict[str, Any]:
    """A createvDAG spec; ``edges`` are ``(src, dst)`` pairs."""
    connections: dict[str, list[dict[str, str]]] = {}
    for src, dst in edges:
        connections.setdefault(dst, []).append({"nodeLabel": src})
    return {
        "vdagName": name,
        "vdagVersion": {"version": version, "release-tag": tag},
        "nodes": nodes,
        "graph": {
            "connections": [{"nodeLabel": d, "inputs": s} for d, s in connections.items()],
            "inputs": [{"nodeLabel": label} for label in inputs],
            "outputs": [{"nodeLabel": label} for label in outputs],
        },
        **extra,
    }


def make_block(
    block_id: str,
    cluster: Cluster | None = None,
    *,
    status: str = "running",
    grpc: str = "127.0.0.1:1",
    input_protocol: dict | None = None,
    output_protocol: dict | None = None,
    tags: list[str] | None = None,
    metadata: dict | None = None,
):
    """A block row (no processes): enough for specs, assignment and compilation."""
    from apps.blocks.models import Block

    return Block.objects.create(
        id=block_id,
        component_uri="utility.test:1.0-stable",
        cluster=cluster,
        status=status,
        endpoints={"grpc": grpc},
        input_protocol=input_protocol or {},
        output_protocol=output_protocol or {},
        tags=tags or [],
        block_metadata=metadata or {},
    )


# The functions the test blocks compute (tests.vdags.blocks.AffineBlock): x -> x*mul + add.
def affine(x: float, mul: float = 1.0, add: float = 0.0) -> float:
    return x * mul + add
