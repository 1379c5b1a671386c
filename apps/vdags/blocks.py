"""What the vdags app needs to know about blocks, in one place: lookups, the running
candidates of a node assignment, and the executor address the data plane routes to.

The blocks app owns ``Block``; this module only reads it (imported lazily, so the vdags
app loads even while the blocks app is being migrated).
"""

from __future__ import annotations

import logging
from typing import Any

from apps.vdags.choices import ASSIGNABLE_BLOCK_STATUSES

log = logging.getLogger("aios.vdags")


def block_model():
    from apps.blocks.models import Block

    return Block


def get_blocks(block_ids: list[str]) -> dict[str, Any]:
    """The Block rows of ``block_ids`` that exist, by id."""
    if not block_ids:
        return {}
    rows = block_model().objects.select_related("cluster").filter(pk__in=set(block_ids))
    return {row.pk: row for row in rows}


def is_assignable(block: Any) -> bool:
    return str(block.status) in ASSIGNABLE_BLOCK_STATUSES


def executor_address(block: Any) -> dict[str, Any]:
    """Where hops reach the block: its executor's gRPC ``host:port`` (BlockInferenceService
    and InferenceProxy share it) plus the cluster, so a hop in the same cluster can use
    Redis and one across clusters uses gRPC."""
    endpoints = dict(block.endpoints or {})
    address: dict[str, Any] = {
        "grpc": str(endpoints.get("grpc") or ""),
        "cluster_id": block.cluster_id or "",
    }
    if endpoints.get("http"):
        address["http"] = str(endpoints["http"])
    return address


def block_protocols(block: Any) -> dict[str, Any]:
    return {"input": block.input_protocol or {}, "output": block.output_protocol or {}}


def block_document(block: Any) -> dict[str, Any]:
    """The candidate document an assignment policy receives (the search engine's block
    document when the blocks app registers one, else the plain columns)."""
    from apps.search import registry

    entity = registry.registered().get("block")
    if entity is not None:
        try:
            return entity.serializer_fn(block)
        except Exception:  # a broken adapter must not break assignment
            log.warning("event=block_document_failed block_id=%s", block.pk, exc_info=True)
    return {
        "id": block.pk,
        "blockId": block.pk,
        "componentUri": block.component_uri,
        "cluster": block.cluster_id,
        "status": block.status,
        "endpoints": block.endpoints,
        "inputProtocol": block.input_protocol,
        "outputProtocol": block.output_protocol,
        "blockMetadata": block.block_metadata,
        "tags": block.tags,
    }


def running_candidates(filter_: dict[str, Any] | None, *, limit: int = 1000) -> list[Any]:
    """Running blocks matching a search filter (``blockQuery``, ``clusterQuery``,
    ``blockMetricsQuery`` ...), through the search engine."""
    from apps.search import engine

    queryset = engine.filter_queryset("block", filter_ or {})
    return list(queryset.filter(status__in=ASSIGNABLE_BLOCK_STATUSES)[:limit])
