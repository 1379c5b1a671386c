"""The lifecycle of a vDAG record: create (quick check, then the ``vdag_creation`` task
assigns, compiles and activates), dry run, lookups and deletion."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from apps.core.errors import Conflict, NotFound
from apps.core.query import QueryFields
from apps.parser.validation import SpecValidationError
from apps.vdags.choices import TASK_VDAG_CREATION, VDagStatus
from apps.vdags.models import VDag
from apps.vdags.services.specs import VALUES_BASE, VDagPlan, plan_vdag

log = logging.getLogger("aios.vdags")

VDAG_QUERY_FIELDS = QueryFields(
    fields={
        "vdagURI": "vdag_uri",
        "vdag_uri": "vdag_uri",
        "id": "vdag_uri",
        "vdagName": "name",
        "vdag_name": "name",
        "name": "name",
        "version": "version",
        "releaseTag": "release_tag",
        "release_tag": "release_tag",
        "status": "status",
        "owner": "owner__username",
        "createdAt": "created_at",
        "updatedAt": "updated_at",
    },
    json_fields={
        "discoveryTags": "discovery_tags",
        "discovery_tags": "discovery_tags",
        "controller": "controller",
        "assignment": "assignment",
        "assignment_info": "assignment",
        "metadata": "metadata",
        "blockIds": "block_ids",
        "block_ids": "block_ids",
        "nestedVdags": "nested_vdags",
        "spec": "spec",
        "graph": "graph",
    },
)


def get_vdag(vdag_uri: str, *, for_update: bool = False) -> VDag:
    queryset = VDag.objects.select_for_update() if for_update else VDag.objects
    vdag = queryset.filter(pk=vdag_uri).first() if isinstance(vdag_uri, str) else None
    if vdag is None:
        raise NotFound(f"vDAG {vdag_uri!r} does not exist")
    return vdag


def dry_run(values: dict[str, Any], *, base: tuple | list = VALUES_BASE) -> VDagPlan:
    """Everything createvDAG would decide (assignment policies included), stored nowhere."""
    return plan_vdag(values, base=base, run_assignment_policies=True)


def create_vdag(values: dict[str, Any], *, user=None, base: tuple | list = VALUES_BASE):
    """Check the spec (structure, nested vDAGs, manual blocks, their protocols), record the
    vDAG as ``pending`` and queue ``vdag_creation``. Returns ``(vdag, task)``.

    A vDAG URI is unique; a ``failed`` vDAG of the same URI is replaced (the spec is being
    fixed), any other is a 409.
    """
    from apps.tasks.services import submit
    from apps.vdags import tasks

    plan = plan_vdag(values, base=base, run_assignment_policies=False)
    with transaction.atomic():
        existing = VDag.objects.select_for_update().filter(pk=plan.vdag_uri).first()
        if existing is not None:
            if existing.status != VDagStatus.FAILED:
                raise Conflict(
                    f"vDAG {plan.vdag_uri!r} already exists ({existing.status}); "
                    "use a new version or release tag",
                    details=[{"vdagURI": plan.vdag_uri, "status": existing.status}],
                )
            if existing.controllers.exists():
                raise Conflict(
                    f"failed vDAG {plan.vdag_uri!r} still has controllers; remove them first"
                )
            existing.delete()
        vdag = VDag.objects.create(
            vdag_uri=plan.vdag_uri,
            name=plan.name,
            version=plan.version,
            release_tag=plan.release_tag,
            status=VDagStatus.PENDING,
            spec=plan.values,
            discovery_tags=list(values.get("discoveryTags") or []),
            controller=dict(values.get("controller") or {}),
            nodes=plan.nodes,
            graph=dict(values.get("graph") or {}),
            assignment=plan.assignment,
            nested_vdags=plan.nested_vdags,
            metadata=dict(values.get("metadata") or {}),
            owner=user if getattr(user, "is_authenticated", False) else None,
        )
        task = submit(
            TASK_VDAG_CREATION,
            tasks.vdag_creation,
            owner=user,
            task_data={"vdagURI": vdag.vdag_uri},
            vdag_uri=vdag.vdag_uri,
        )
        VDag.objects.filter(pk=vdag.pk).update(last_task_id=task.task_id)
        vdag.last_task_id = task.task_id
    log.info(
        "event=vdag_accepted vdag=%s task_id=%s unassigned=%s",
        vdag.vdag_uri,
        task.task_id,
        ",".join(plan.unassigned) or "-",
    )
    return vdag, task


def process_vdag(vdag_uri: str, progress=None) -> dict[str, Any]:
    """The ``vdag_creation`` task body: assign every node (policies run here), compile,
    check protocols and activate. Idempotent: an active vDAG is left as it is. A spec
    problem marks the vDAG ``failed`` with the reason and re-raises."""
    progress = progress or (lambda *a, **k: None)
    vdag = get_vdag(vdag_uri)
    if vdag.status == VDagStatus.ACTIVE:
        return {"vdagURI": vdag.vdag_uri, "status": vdag.status, "assignment": vdag.assignment}
    progress(10, "assigning nodes to blocks")
    try:
        plan = plan_vdag(vdag.spec, run_assignment_policies=True)
    except SpecValidationError as exc:
        mark_failed(vdag_uri, exc.message)
        raise
    except Exception as exc:
        mark_failed(vdag_uri, f"{type(exc).__name__}: {exc}")
        raise
    progress(80, "compiled", assignment=plan.assignment)
    VDag.objects.filter(pk=vdag_uri).update(
        status=VDagStatus.ACTIVE,
        status_reason="",
        nodes=plan.nodes,
        assignment=plan.assignment,
        compiled_graph=plan.compiled_graph,
        block_ids=plan.block_ids,
        nested_vdags=plan.nested_vdags,
    )
    log.info(
        "event=vdag_active vdag=%s blocks=%s assignment=%s",
        vdag_uri,
        ",".join(plan.block_ids),
        plan.assignment,
    )
    return {
        "vdagURI": vdag_uri,
        "status": VDagStatus.ACTIVE,
        "assignment": plan.assignment,
        "block_ids": plan.block_ids,
    }


def mark_failed(vdag_uri: str, reason: str) -> None:
    VDag.objects.filter(pk=vdag_uri).update(status=VDagStatus.FAILED, status_reason=reason[:5000])
    log.warning("event=vdag_failed vdag=%s reason=%r", vdag_uri, reason[:300])


def recompile(vdag: VDag) -> VDag:
    """Refresh the executor addresses in an active vDAG's compiled graph (a block's
    executor moved). The assignment is kept."""
    from apps.vdags.compiler import refresh_executors
    from block_sdk.vdag.graph import CompiledGraph

    if not vdag.compiled_graph:
        return vdag
    graph = refresh_executors(CompiledGraph.from_dict(vdag.compiled_graph))
    vdag.compiled_graph = graph.to_dict()
    VDag.objects.filter(pk=vdag.pk).update(compiled_graph=vdag.compiled_graph)
    return vdag


def vdags_using_block(block_id: str) -> list[str]:
    """URIs of the vDAGs whose compiled graph routes through ``block_id``."""
    return list(
        VDag.objects.filter(block_ids__contains=[block_id]).values_list("vdag_uri", flat=True)
    )


def on_block_removed(block_id: str) -> list[str]:
    """A block left the network: every active vDAG routing through it can no longer serve
    (its controllers would fail each request); mark them ``failed`` saying why. Returns
    their URIs. Recreating the vDAG (same URI) replaces a failed one."""
    affected = list(
        VDag.objects.filter(block_ids__contains=[block_id], status=VDagStatus.ACTIVE).values_list(
            "pk", flat=True
        )
    )
    if affected:
        VDag.objects.filter(pk__in=affected).update(
            status=VDagStatus.FAILED,
            status_reason=f"block {block_id} was removed; create the vDAG again to reassign",
        )
        log.warning("event=vdags_lost_block block_id=%s vdags=%s", block_id, ",".join(affected))
    return affected


def missing_blocks(vdag: VDag) -> dict[str, str]:
    """Blocks of the compiled graph that do not run: ``{block_id: status or "missing"}``."""
    from apps.vdags import blocks as block_lookup

    found = block_lookup.get_blocks(list(vdag.block_ids or []))
    out = {}
    for block_id in vdag.block_ids or []:
        block = found.get(block_id)
        if block is None:
            out[block_id] = "missing"
        elif not block_lookup.is_assignable(block):
            out[block_id] = str(block.status)
    return out


def delete_vdag(vdag: VDag) -> None:
    """Remove a vDAG record. Refused (409) while a controller serves it or another vDAG
    nests it."""
    controllers = list(vdag.controllers.values_list("pk", flat=True)[:20])
    if controllers:
        raise Conflict(
            f"vDAG {vdag.vdag_uri!r} is served by controllers {', '.join(controllers)}; "
            "remove them first",
            details=[{"vdag_controllers": controllers}],
        )
    users = list(
        VDag.objects.filter(nested_vdags__contains=[vdag.vdag_uri])
        .exclude(pk=vdag.pk)
        .values_list("pk", flat=True)[:20]
    )
    if users:
        raise Conflict(
            f"vDAG {vdag.vdag_uri!r} is nested in {', '.join(users)}; delete those first",
            details=[{"nested_in": users}],
        )
    vdag.delete()
    log.info("event=vdag_deleted vdag=%s", vdag.vdag_uri)
