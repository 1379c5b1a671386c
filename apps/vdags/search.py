"""What the search engine indexes for the vdags app: the ``vdag`` entity (``vdagQuery``),
narrowed by ``vdagMetricsQuery`` (registered by the metrics app), and the
``vdagController`` entity (``vdagControllerQuery``), narrowed by ``vdagQuery``."""

from __future__ import annotations

from typing import Any

from apps.core.query import QueryFields


def _vdags():
    from apps.vdags.models import VDag

    return VDag.objects.select_related("owner")


def _controllers():
    from apps.vdags.models import VDagController

    return VDagController.objects.all()


def vdag_document(vdag) -> dict[str, Any]:
    """The registry's vDAGObject (reference §1.13)."""
    return {
        "vdagURI": vdag.vdag_uri,
        "vdag_name": vdag.name,
        "vdag_version": {"version": vdag.version, "release-tag": vdag.release_tag},
        "discoveryTags": vdag.discovery_tags,
        "controller": vdag.controller,
        "nodes": vdag.nodes,
        "graph": vdag.graph,
        "assignment_info": vdag.assignment,
        "status": vdag.status,
        "compiled_graph_data": vdag.compiled_graph,
        "metadata": vdag.metadata,
        "block_ids": vdag.block_ids,
    }


def _controller_document(controller) -> dict[str, Any]:
    from apps.vdags.services.controllers import controller_document

    return controller_document(controller)


def register() -> None:
    try:
        from apps.search.registry import Relation
        from apps.search.registry import register as register_entity
    except ImportError:  # pragma: no cover - the search app is always installed
        return
    from apps.vdags.services.vdags import VDAG_QUERY_FIELDS

    register_entity(
        "vdag",
        _vdags,
        VDAG_QUERY_FIELDS,
        vdag_document,
        id_key="vdagURI",
        ordering=("vdag_uri",),
    )
    register_entity(
        "vdagController",
        _controllers,
        QueryFields(
            fields={
                "vdag_controller_id": "vdag_controller_id",
                "id": "vdag_controller_id",
                "vdag_uri": "vdag_id",
                "cluster_id": "cluster_id",
                "status": "status",
                "public_url": "public_url",
            },
            json_fields={"config": "config", "metadata": "metadata", "search_tags": "search_tags"},
        ),
        _controller_document,
        relations=[Relation("vdag", "vdag_id", "pk"), Relation("cluster", "cluster_id", "pk")],
        id_key="vdag_controller_id",
        ordering=("vdag_controller_id",),
    )
