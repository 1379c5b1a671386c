"""Domain operations on blocks, called by the parser, the REST views, Celery tasks, the admin
and management commands alike.

Create (``create_block`` → task ``block_alloc`` → ``run_allocation``), remove
(``remove_block`` → task ``block_removal`` → ``run_removal``), scale (``scale_block``),
replace a failing instance (``replace_instance``), live parameter updates
(``update_parameters``), management commands (``execute_mgmt``) and the block controller's
health reports (``record_health``). Every operation runs the network (gateway) and the
cluster (controller) pre-check of its action first: ``add_block``, ``remove_block``,
``scale_block``, ``block_mgmt``.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.blocks import conf, runtime, specs
from apps.blocks.auth import BlockServicePrincipal
from apps.blocks.choices import (
    MGMT_SERVICES,
    TASK_BLOCK_ALLOC,
    TASK_BLOCK_REMOVAL,
    BlockStatus,
    InstanceHealth,
    InstanceStatus,
)
from apps.blocks.models import Block, Instance
from apps.blocks.signals import block_status_changed
from apps.clusters.choices import WorkloadKind, WorkloadStatus
from apps.clusters.models import Cluster, Node, Workload
from apps.core.errors import ApiError, Conflict, Forbidden, NotFound, ValidationFailed

log = logging.getLogger("aios.blocks")

MAX_SCALE_STEP = 64  # instances added or removed by one request


class BlockServiceUnavailable(ApiError):
    """A block service (executor, controller, instance) did not answer in time."""

    status_code = 503
    code = "block_service_unavailable"


class StartFailed(RuntimeError):
    """The block's processes did not come up; the message says which and why."""


@dataclass
class Accepted:
    """What a 202 answers for a long block operation."""

    block_id: str
    task_id: str | None
    status: str

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"block_id": self.block_id, "status": self.status}
        if self.task_id:
            body.update(task_id=self.task_id, status_url=f"/api/v1/tasks/{self.task_id}/")
        body["block_url"] = f"/api/v1/blocks/{self.block_id}/"
        return body


# -- lookups and permissions -------------------------------------------------------------------
def get_block(block_id: str, *, for_update: bool = False) -> Block:
    queryset = Block.objects.select_for_update() if for_update else Block.objects
    block = queryset.filter(pk=block_id).first() if isinstance(block_id, str) else None
    if block is None:
        raise NotFound(f"block {block_id!r} not found", details=[{"blockId": block_id}])
    return block


def ensure_can_manage(block: Block, user: Any, *, allow_service: bool = False) -> None:
    """Changes to a block are its owner's or staff's; its own controller (service token) may
    scale it and replace its instances; internal callers (``user=None``) may do anything."""
    if user is None:
        return
    if isinstance(user, BlockServicePrincipal):
        if allow_service and user.block_id == block.id:
            return
        raise Forbidden(f"the service token of block {user.block_id!r} cannot do this")
    if not getattr(user, "is_authenticated", False):
        raise Forbidden("authentication is required to change blocks")
    if user.is_staff or block.owner_id in (None, user.pk):
        return
    raise Forbidden(f"only the owner of block {block.id!r} or staff may do this")


def _component(uri: Any):
    from apps.registries.models import Component

    component = (
        Component.objects.filter(component_uri=uri).first()
        if isinstance(uri, str) and uri
        else None
    )
    if component is None:
        raise ValidationFailed(
            f"component {uri!r} is not registered; create it first (POST /api/createComponent)",
            code="component_not_found",
            details=[{"pointer": "/blockComponentURI", "message": "no such component"}],
        )
    return component


def _component_document(component) -> dict[str, Any]:
    from apps.registries.services import component_document

    return component_document(component)


def values_of(block: Block) -> specs.BlockValues:
    """The merged values of a stored block (what its new instances run)."""
    info = (block.component_data or {}).get("containerRegistryInfo") or {}
    meta = info.get("containerImageMetadata") or {}
    init = info.get("initContainer") if isinstance(info.get("initContainer"), dict) else {}
    return specs.BlockValues(
        block_id=block.id,
        component_uri=block.component_uri,
        min_instances=block.min_instances,
        max_instances=block.max_instances,
        block_init_data=dict(block.block_init_data or {}),
        init_settings=dict(block.init_settings or {}),
        parameters=dict(block.parameters or {}),
        policies=dict(block.policies or {}),
        block_metadata=dict(block.block_metadata or {}),
        input_protocol=dict(block.input_protocol or {}),
        output_protocol=dict(block.output_protocol or {}),
        tags=list(block.tags or []),
        entrypoint=str(meta.get("entrypoint") or "") if isinstance(meta, dict) else "",
        image=str(info.get("containerImage") or ""),
        component_mode=str(info.get("componentMode") or "aios").replace("-", "_"),
        init_container=dict(init or {}),
        resource_requirements=dict((block.spec or {}).get("resourceRequirements") or {}),
    )


def block_data(block: Block) -> dict[str, Any]:
    """The block document policies receive (reference §1.6 block-data sample)."""
    doc = specs.block_data(values_of(block), block.component_data or {})
    doc.update(status=block.status, clusterId=block.cluster_id, endpoints=block.endpoints)
    return doc


def _runtime_block_doc(values: specs.BlockValues, cluster: Cluster) -> dict[str, Any]:
    """``BLOCK_DATA`` of an instance: small, without the component's protocols."""
    return {
        "blockId": values.block_id,
        "blockComponentURI": values.component_uri,
        "clusterId": cluster.id,
        "minInstances": values.min_instances,
        "maxInstances": values.max_instances,
        "blockMetadata": values.block_metadata,
        "tags": values.tags,
    }


def _cluster_inputs(cluster: Cluster) -> dict[str, Any]:
    from apps.clusters.controller import cluster_metrics_snapshot
    from apps.clusters.services import cluster_document

    return {
        "cluster_data": cluster_document(cluster, include_nodes=False),
        "cluster_metrics": cluster_metrics_snapshot(cluster.id),
    }


def _prechecks(action: str, block: Block | None, input_data: dict, *, user) -> dict[str, Any]:
    """The network pre-check, then (once the block has a cluster) the cluster's."""
    from apps.clusters import gateway
    from apps.clusters.controller import ClusterController

    checked = gateway.precheck(action, input_data, user=user)
    cluster = block.cluster if block is not None else None
    if cluster is not None:
        checked = ClusterController(cluster).precheck(action, checked, user=user)
    return checked


def _api_url() -> str:
    return settings.AIOS_PUBLIC_URL.rstrip("/")


# -- createBlock ----------------------------------------------------------------------------------
def _rewritten(values: dict[str, Any], checked: Any) -> dict[str, Any]:
    """Apply what a pre-check policy changed in ``block_data`` (its answer is used downstream)."""
    if not isinstance(checked, dict):
        return values
    out = dict(values)
    for key in specs.REWRITABLE_KEYS:
        if key in checked:
            out[key] = checked[key]
    return out


def create_block(
    values: dict[str, Any], *, user=None, header_parameters: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """createBlock: validate against the component, ``add_block`` network pre-check, then
    either a dry run (200 with the placement, nothing created) or the block record plus a
    ``block_alloc`` task (202). Returns ``(status, body)``."""
    from apps.allocator.services import allocate

    if isinstance(user, BlockServicePrincipal):
        raise Forbidden("a block's service token cannot create blocks")
    if not isinstance(values, dict):
        raise ValidationFailed("the block spec values must be a JSON object")
    component = _component(values.get("blockComponentURI"))
    merged = specs.build(values, component)
    dry_run = specs.is_dry_run(values, header_parameters)
    if not dry_run and Block.objects.filter(pk=merged.block_id).exists():
        raise Conflict(f"block {merged.block_id!r} already exists", code="block_exists")
    component_doc = _component_document(component)
    input_data = {
        "block_data": specs.block_data(merged, component_doc),
        "cluster_data": {},
        "cluster_metrics": {},
    }
    checked = _prechecks("add_block", None, input_data, user=user)
    if checked.get("block_data") is not input_data["block_data"]:
        rewritten = _rewritten({**values, "blockId": merged.block_id}, checked.get("block_data"))
        merged = specs.build(rewritten, component, block_id=merged.block_id)
    if dry_run:
        decision = allocate(
            merged.allocator_spec(), dry_run=True, instances=max(1, merged.min_instances)
        )
        return 200, {
            "mode": "dry_run",
            "block_id": merged.block_id,
            "created": False,
            "placement": decision.as_dict(),
        }
    block = Block(
        id=merged.block_id,
        owner=user
        if getattr(user, "is_authenticated", False) and getattr(user, "pk", None)
        else None,
        component=component,
        component_uri=component.component_uri,
        component_data=component_doc,
        status=BlockStatus.PENDING,
        spec={k: v for k, v in values.items() if k != "mode"},
        block_init_data=merged.block_init_data,
        init_settings=merged.init_settings,
        parameters=merged.parameters,
        policies=merged.policies,
        block_metadata=merged.block_metadata,
        input_protocol=merged.input_protocol,
        output_protocol=merged.output_protocol,
        tags=merged.tags,
        min_instances=merged.min_instances,
        max_instances=merged.max_instances,
    )
    try:
        with transaction.atomic():
            block.save(force_insert=True)
    except IntegrityError:
        raise Conflict(f"block {merged.block_id!r} already exists", code="block_exists") from None
    task = _submit(TASK_BLOCK_ALLOC, "block_alloc", block, user=user)
    log.info(
        "event=block_accepted block_id=%s component=%s task_id=%s",
        block.id,
        block.component_uri,
        task.task_id,
    )
    return 202, Accepted(block.id, str(task.task_id), block.status).body()


def _submit(task_type: str, runner: str, block: Block, *, user):
    from apps.blocks import tasks
    from apps.tasks.services import submit

    owner = user if getattr(user, "pk", None) is not None else None
    task = submit(
        task_type,
        getattr(tasks, runner),
        owner=owner,
        task_data={"block_id": block.id, "component": block.component_uri},
        block_id=block.id,
    )
    Block.objects.filter(pk=block.pk).update(last_task_id=task.task_id)
    block.last_task_id = task.task_id
    return task


def set_status(block: Block, status: str, reason: str = "") -> None:
    block.status = status
    block.status_reason = reason[:4000]
    Block.objects.filter(pk=block.pk).update(
        status=status, status_reason=block.status_reason, updated_at=timezone.now()
    )
    log.info("event=block_status block_id=%s status=%s reason=%r", block.pk, status, reason[:200])
    block_status_changed.send(sender=Block, block=block)


def _current_status(block_id: str) -> str | None:
    return Block.objects.filter(pk=block_id).values_list("status", flat=True).first()


def new_instance_id(block_id: str) -> str:
    return f"{block_id}-{uuid.uuid4().hex[:8]}"


def run_allocation(progress, block_id: str) -> dict[str, Any]:
    """The ``block_alloc`` task body: allocate, ``add_block`` cluster pre-check, start the
    third-party system (if any), the executor, ``minInstances`` instances and the block
    controller, and wait until they serve. On failure the block is ``failed`` with the reason
    and nothing of it keeps running or stays reserved."""
    block = Block.objects.filter(pk=block_id).first()
    if block is None:
        return {"block_id": block_id, "skipped": "the block no longer exists"}
    if block.status not in (BlockStatus.PENDING, BlockStatus.ALLOCATING, BlockStatus.STARTING):
        return {"block_id": block_id, "skipped": f"the block is {block.status}"}
    if block.status != BlockStatus.PENDING:
        # A redelivered task (worker lost mid-way): start again from a clean slate.
        _teardown(block, wait=True)
    try:
        return _allocate_and_start(progress, block)
    except Exception as exc:
        reason = exc.message if isinstance(exc, ApiError) else str(exc)
        if _current_status(block.id) == BlockStatus.REMOVING:
            raise StartFailed(f"block {block.id} was removed while starting") from None
        log.warning("event=block_start_failed block_id=%s reason=%r", block.id, reason)
        try:
            _teardown(block, wait=True)
        finally:
            set_status(block, BlockStatus.FAILED, reason)
        raise StartFailed(f"block {block.id} failed: {reason}") from exc


def _check_not_removed(block: Block) -> None:
    if _current_status(block.id) in (BlockStatus.REMOVING, None):
        raise StartFailed(f"block {block.id} is being removed")


def _allocate_and_start(progress, block: Block) -> dict[str, Any]:
    from apps.allocator.services import allocate
    from apps.clusters.controller import ClusterController

    set_status(block, BlockStatus.ALLOCATING)
    progress(10, "choosing cluster, node and GPUs")
    values = values_of(block)
    count = values.min_instances
    ids = [new_instance_id(block.id) for _ in range(count)]
    if count:
        decision = allocate(values.allocator_spec(), instances=count, instance_ids=ids)
    else:  # no instance to reserve for: only the executor's place is chosen
        decision = allocate(values.allocator_spec(), dry_run=True, instances=1)
    _check_not_removed(block)
    cluster = Cluster.objects.get(pk=decision.cluster_id)
    block.cluster = cluster
    block.allocation = decision.as_dict()
    Block.objects.filter(pk=block.pk).update(cluster=cluster, allocation=block.allocation)
    progress(25, f"placed on cluster {cluster.id}", cluster_id=cluster.id)
    ClusterController(cluster).precheck(
        "add_block", {"block_data": block_data(block), **_cluster_inputs(cluster)}, user=block.owner
    )
    set_status(block, BlockStatus.STARTING)
    controller = ClusterController(cluster)
    driver = controller.driver
    nodes = {n.id: n for n in cluster.nodes.all()}
    exec_node = nodes[decision.node_id]
    runtime_doc = _runtime_block_doc(values, cluster)

    init = runtime.init_workload_spec(values, cluster, exec_node, runtime_doc)
    if init is not None:
        progress(30, "starting the third-party system (init workload)")
        driver.create_workload(init)
        finish = _wait_for_init(block, values)
        values.block_init_data["initContainer"] = finish
        block.block_init_data = values.block_init_data
        Block.objects.filter(pk=block.pk).update(block_init_data=block.block_init_data)
        progress(45, "third-party system ready", init_finish=finish)
    _check_not_removed(block)

    progress(50, f"starting the executor and {count} instance(s)")
    api_url = _api_url()
    executor = runtime.executor_spec(values, cluster, exec_node, api_url=api_url)
    instance_specs = []
    rows = []
    for placement in decision.instances if count else []:
        node = nodes[placement.node_id]
        spec = runtime.instance_spec(
            values,
            cluster,
            node,
            instance_id=placement.instance_id,
            gpus=placement.gpus,
            block_doc=runtime_doc,
        )
        instance_specs.append(spec)
        rows.append(
            Instance(
                instance_id=placement.instance_id,
                block=block,
                node=node,
                gpus=list(placement.gpus),
                workload_id=placement.instance_id,
                host=runtime.advertise_host(cluster, node),
                http_port=spec.ports["http"],
            )
        )
    host = runtime.advertise_host(cluster, exec_node)
    executor_http = f"http://{host}:{executor.ports['http']}"
    token, token_hash = runtime.issue_token(block.id)
    del token  # handed over through Redis only
    with transaction.atomic():
        Instance.objects.bulk_create(rows)
        driver.create_block(block.id, executor=executor, instances=instance_specs)
        controller_spec, controller_port = runtime.controller_spec(
            values, cluster, exec_node, api_url=api_url, executor_http=executor_http
        )
        driver.create_workload(controller_spec)
        block.endpoints = {
            "grpc": f"{host}:{executor.ports['grpc']}",
            "http": executor_http,
            "controller": f"http://{host}:{controller_port}",
        }
        block.services = {
            "executor": {"workload_id": executor.id, **executor.ports, "host": host},
            "controller": {
                "workload_id": controller_spec.id,
                "http": controller_port,
                "host": host,
            },
            "init": {"workload_id": init.id} if init is not None else None,
        }
        block.service_token_hash = token_hash
        Block.objects.filter(pk=block.pk).update(
            endpoints=block.endpoints,
            services=block.services,
            service_token_hash=token_hash,
        )
    runtime.register_instances(block.id, rows)
    progress(70, "waiting for the executor and instances to serve")
    _wait_running(block, count)
    set_status(block, BlockStatus.RUNNING)
    progress(100, "running")
    return {
        "block_id": block.id,
        "cluster_id": cluster.id,
        "status": BlockStatus.RUNNING,
        "endpoints": block.endpoints,
        "instances": [{"id": r.instance_id, "node": r.node_id, "gpus": r.gpus} for r in rows],
    }


def _wait_for_init(block: Block, values: specs.BlockValues) -> dict[str, Any]:
    from block_sdk.third_party import InitError, wait_for_finish

    timeout = conf.INIT_TIMEOUT_S
    wanted = values.block_init_data.get("wait_for_init_s")
    if isinstance(wanted, int | float) and not isinstance(wanted, bool) and wanted > 0:
        timeout = min(timeout, float(wanted))
    deadline = time.monotonic() + timeout
    while True:
        _check_not_removed(block)
        _check_workloads(block, kinds=(WorkloadKind.THIRD_PARTY_INIT,))
        try:
            return wait_for_finish(
                block.id,
                min(2.0, max(0.0, deadline - time.monotonic())),
                redis_url=settings.REDIS_URL,
            )
        except InitError as exc:
            if time.monotonic() >= deadline or not isinstance(exc, TimeoutError):
                raise StartFailed(str(exc)) from None


def _log_tail(workload: Workload, limit: int = 1500) -> str:
    if not workload.log_path:
        return ""
    try:
        path = Path(workload.log_path)
        size = path.stat().st_size
        with path.open("rb") as handle:
            handle.seek(max(0, size - limit))
            return handle.read().decode(errors="replace").strip()
    except OSError:  # the log is on another machine (or gone)
        return ""


def _check_workloads(block: Block, kinds: tuple[str, ...] | None = None) -> None:
    """Fail fast when one of the block's processes cannot start (bad entry point, crash)."""
    queryset = Workload.objects.filter(block_id=block.id, remove_requested=False)
    if kinds:
        queryset = queryset.filter(kind__in=kinds)
    for workload in queryset:
        dead = workload.status in (WorkloadStatus.FAILED, WorkloadStatus.EXITED)
        flapping = workload.restarts >= conf.START_MAX_RESTARTS
        if dead or flapping:
            tail = _log_tail(workload)
            what = f"{workload.kind} {workload.id}"
            state = f"{workload.status} after {workload.restarts} restart(s)"
            error = workload.last_error or "no error recorded"
            raise StartFailed(
                f"{what} did not start ({state}: {error})"
                + (f"; log tail: {tail[-800:]}" if tail else "")
            )


def http_json(
    method: str, url: str, body: Any = None, *, timeout: float | None = None
) -> tuple[int, Any]:
    """One bounded HTTP call to a block service; ``(status, JSON or text)``."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - our own URLs
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=timeout or conf.SERVICE_HTTP_TIMEOUT_S
        ) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")[:2000]


def _executor_health(block: Block) -> dict[str, Any] | None:
    url = (block.endpoints or {}).get("http")
    if not url:
        return None
    try:
        status, body = http_json("GET", f"{url}/health", timeout=2.0)
    except (OSError, urllib.error.URLError):
        return None
    return body if status == 200 and isinstance(body, dict) else None


def _wait_running(block: Block, expected: int) -> None:
    deadline = time.monotonic() + conf.START_TIMEOUT_S
    last: dict[str, Any] | None = None
    while True:
        _check_not_removed(block)
        _check_workloads(block)
        last = _executor_health(block)
        alive = set((last or {}).get("instances") or [])
        if alive:
            Instance.objects.filter(
                block=block, instance_id__in=alive, status=InstanceStatus.STARTING
            ).update(status=InstanceStatus.RUNNING, updated_at=timezone.now())
        if last is not None and len(alive) >= expected:
            return
        if time.monotonic() >= deadline:
            state = (
                "the executor does not answer /health"
                if last is None
                else f"{len(alive)} of {expected} instance(s) alive"
            )
            raise StartFailed(
                f"block {block.id} did not start within {conf.START_TIMEOUT_S:.0f}s: {state}"
            )
        time.sleep(0.3)


def _teardown(block: Block, *, wait: bool) -> dict[str, Any]:
    """Stop every workload of the block, release every reservation, drop its Redis keys."""
    from apps.allocator.services import release_block
    from apps.clusters.drivers import DriverError, get_driver

    runtime.unregister_instances(block.id, list(runtime.registered_instances(block.id)))
    removed = 0
    leftovers: list[str] = []
    clusters = set(Workload.objects.filter(block_id=block.id).values_list("cluster_id", flat=True))
    for cluster in Cluster.objects.filter(pk__in=clusters):
        try:
            removed += get_driver(cluster).remove_block(
                block.id, wait=wait, timeout_s=conf.REMOVAL_WAIT_S
            )
        except DriverError as exc:
            leftovers.append(exc.message)
    released = release_block(block.id)
    Instance.objects.filter(block_id=block.pk).delete()
    runtime.clear_block_keys(block.id)
    if leftovers:
        raise StartFailed("; ".join(leftovers))
    return {"removed_workloads": removed, "released_allocations": released}


# -- removal -----------------------------------------------------------------------------------
def remove_block(block_id: str, *, user=None) -> tuple[int, dict[str, Any]]:
    """remove_block: both pre-checks, then a ``block_removal`` task (202). A block that never
    got anything placed is deleted at once (200)."""
    block = get_block(block_id)
    ensure_can_manage(block, user)
    nodes = sorted(
        set(Workload.objects.filter(block_id=block.id).values_list("node_id", flat=True))
    )
    input_data = {
        "block_data": block_data(block),
        **(
            _cluster_inputs(block.cluster)
            if block.cluster
            else {"cluster_data": {}, "cluster_metrics": {}}
        ),
        "block_metrics": _block_metrics(block.id),
        "block_instance_nodes": nodes,
    }
    _prechecks("remove_block", block, input_data, user=user)
    has_work = Workload.objects.filter(block_id=block.id).exists()
    if not has_work and block.status in (BlockStatus.FAILED, BlockStatus.PENDING):
        _teardown(block, wait=False)
        block.delete()
        log.info("event=block_removed block_id=%s immediate=1", block_id)
        return 200, {"block_id": block_id, "removed": True}
    set_status(block, BlockStatus.REMOVING, "removal requested")
    task = _submit(TASK_BLOCK_REMOVAL, "block_removal", block, user=user)
    return 202, Accepted(block.id, str(task.task_id), BlockStatus.REMOVING).body()


def _block_metrics(block_id: str) -> dict[str, Any]:
    from apps.metrics.services import entity_live_metrics

    try:
        return entity_live_metrics("block", block_id) or {}
    except ApiError:
        return {}


def run_removal(progress, block_id: str) -> dict[str, Any]:
    """The ``block_removal`` task body: every workload stopped, every reservation released,
    every Redis key of the block deleted, then the record."""
    from apps.tasks.models import Task

    block = Block.objects.filter(pk=block_id).first()
    if block is None:
        return {"block_id": block_id, "removed": True, "note": "already gone"}
    # A start still in progress sees the status and gives up within a poll interval.
    deadline = time.monotonic() + 30
    while block.last_task_id and time.monotonic() < deadline:
        alloc = (
            Task.objects.filter(task_type=TASK_BLOCK_ALLOC, task_data__block_id=block_id)
            .exclude(task_status__in=["completed", "failed"])
            .exists()
        )
        if not alloc:
            break
        time.sleep(0.3)
    progress(20, "stopping the block's processes")
    result = _teardown(block, wait=True)
    Block.objects.filter(pk=block_id).delete()
    progress(100, "removed")
    log.info("event=block_removed block_id=%s %s", block_id, result)
    return {"block_id": block_id, "removed": True, **result}


# -- scaling -----------------------------------------------------------------------------------
def _live_instances(block: Block):
    return block.instances.exclude(status=InstanceStatus.REMOVING)


def _pick_victims(block: Block, count: int) -> list[str]:
    """Scale-down order: unhealthy first, then still starting, then the newest."""
    rank = {InstanceHealth.UNHEALTHY: 0, InstanceHealth.UNKNOWN: 1, InstanceHealth.HEALTHY: 2}
    rows = sorted(
        _live_instances(block),
        key=lambda i: (rank.get(i.health, 1), -i.created_at.timestamp()),
    )
    return [row.instance_id for row in rows[:count]]


def _add_instances(block: Block, count: int, *, replaces: str = "") -> list[Instance]:
    from apps.allocator.services import scale as allocate_more
    from apps.clusters.drivers import get_driver

    values = values_of(block)
    cluster = block.cluster
    ids = [new_instance_id(block.id) for _ in range(count)]
    decision = allocate_more(
        values.allocator_spec(),
        cluster_id=cluster.id,
        instances=count,
        instance_ids=ids,
        block_metrics=_block_metrics(block.id),
    )
    nodes = {n.id: n for n in Node.objects.filter(cluster=cluster)}
    runtime_doc = _runtime_block_doc(values, cluster)
    specs_, rows = [], []
    for placement in decision.instances:
        node = nodes[placement.node_id]
        spec = runtime.instance_spec(
            values,
            cluster,
            node,
            instance_id=placement.instance_id,
            gpus=placement.gpus,
            block_doc=runtime_doc,
        )
        specs_.append(spec)
        rows.append(
            Instance(
                instance_id=placement.instance_id,
                block=block,
                node=node,
                gpus=list(placement.gpus),
                workload_id=placement.instance_id,
                host=runtime.advertise_host(cluster, node),
                http_port=spec.ports["http"],
                replaces=replaces,
            )
        )
    Instance.objects.bulk_create(rows)
    get_driver(cluster).scale_block(block.id, add=specs_)
    transaction.on_commit(lambda: runtime.register_instances(block.id, rows))
    return rows


def _remove_instances(block: Block, instance_ids: list[str]) -> None:
    from apps.clusters.drivers import get_driver

    if not instance_ids:
        return
    # Out of the registry first: the executor stops routing to them; what is still queued
    # there moves to the others once the instance stops (its heartbeat goes).
    transaction.on_commit(lambda: runtime.unregister_instances(block.id, instance_ids))
    Instance.objects.filter(block=block, instance_id__in=instance_ids).delete()
    get_driver(block.cluster).scale_block(block.id, remove=instance_ids)


def scale_block(
    block_id: str,
    *,
    instances: int | None = None,
    delta: int | None = None,
    remove: list[str] | None = None,
    force: bool = False,
    user=None,
    source: str = "api",
) -> dict[str, Any]:
    """Scale a running block to ``instances``, by ``delta``, or by removing the named
    instances. The result stays within ``minInstances``..``maxInstances`` unless ``force``
    (never for the block's own controller). Runs the ``scale_block`` pre-checks."""
    given = [x is not None for x in (instances, delta, remove)]
    if sum(given) != 1:
        raise ValidationFailed("give exactly one of 'instances', 'delta' or 'remove'")
    for name, value in (("instances", instances), ("delta", delta)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValidationFailed(f"{name} must be a whole number")
    if remove is not None and (
        not isinstance(remove, list) or not all(isinstance(i, str) for i in remove)
    ):
        raise ValidationFailed("remove must be a list of instance ids")
    with transaction.atomic():
        block = get_block(block_id, for_update=True)
        ensure_can_manage(block, user, allow_service=True)
        if force and isinstance(user, BlockServicePrincipal):
            raise Forbidden("a block's controller cannot force a scale outside its bounds")
        if block.status != BlockStatus.RUNNING:
            raise Conflict(
                f"block {block.id} is {block.status}; only a running block can be scaled",
                code="block_not_running",
            )
        live = list(_live_instances(block).values_list("instance_id", flat=True))
        current = len(live)
        if remove is not None:
            unknown = sorted(set(remove) - set(live))
            if unknown:
                raise NotFound(f"instance {unknown[0]!r} is not a live instance of {block.id}")
            target = current - len(set(remove))
        elif instances is not None:
            target = instances
        else:
            target = current + delta
        if target < 0:
            raise ValidationFailed(f"a block cannot have {target} instances")
        if not force and not (block.min_instances <= target <= block.max_instances):
            raise Conflict(
                f"{target} instance(s) is outside minInstances..maxInstances "
                f"({block.min_instances}..{block.max_instances}) of block {block.id}",
                code="instance_bounds",
                details=[
                    {
                        "requested": target,
                        "current": current,
                        "minInstances": block.min_instances,
                        "maxInstances": block.max_instances,
                    }
                ],
            )
        if abs(target - current) > MAX_SCALE_STEP:
            raise ValidationFailed(f"one request adds or removes at most {MAX_SCALE_STEP}")
        if target == current and not remove:
            return {"block_id": block.id, "instances": current, "added": [], "removed": []}
        victims = list(dict.fromkeys(remove)) if remove is not None else []
        if remove is None and target < current:
            victims = _pick_victims(block, current - target)
        operation = "scale" if target > current else "downscale"
        payload = {
            "operation": operation,
            "block_id": block.id,
            "instances_count": max(0, target - current),
            "instances_list": victims,
            "source": source,
        }
        checked = _prechecks(
            "scale_block", block, {"block_data": block_data(block), "input": payload}, user=user
        )
        payload = checked.get("input") if isinstance(checked.get("input"), dict) else payload
        added = (
            _add_instances(block, int(payload.get("instances_count") or 0))
            if operation == "scale"
            else []
        )
        victims = [v for v in payload.get("instances_list") or [] if v in live] if victims else []
        _remove_instances(block, victims)
        now = timezone.now()
        Block.objects.filter(pk=block.pk).update(last_scale_at=now, updated_at=now)
    result = {
        "block_id": block.id,
        "operation": operation,
        "instances": current + len(added) - len(victims),
        "added": [{"id": r.instance_id, "node": r.node_id, "gpus": r.gpus} for r in added],
        "removed": victims,
        "source": source,
    }
    log.info(
        "event=block_scaled block_id=%s source=%s from=%s to=%s",
        block.id,
        source,
        current,
        result["instances"],
    )
    return result


def replace_instance(
    block_id: str, instance_id: str, *, reason: str = "", user=None
) -> dict[str, Any]:
    """Replace one instance (the health checker's remedy): a new instance with a new id and
    a placement checked again, then the old one goes and its reservation is released. The
    count stays the same, so min/max do not apply."""
    from apps.allocator.services import AllocationError, release

    with transaction.atomic():
        block = get_block(block_id, for_update=True)
        ensure_can_manage(block, user, allow_service=True)
        if block.status != BlockStatus.RUNNING:
            raise Conflict(
                f"block {block.id} is {block.status}; instances of a running block only",
                code="block_not_running",
            )
        old = block.instances.filter(instance_id=instance_id).first()
        if old is None:
            raise NotFound(f"instance {instance_id!r} is not an instance of block {block.id}")
        payload = {
            "operation": "replace",
            "block_id": block.id,
            "instances_count": 1,
            "instances_list": [instance_id],
            "reason": reason,
        }
        _prechecks(
            "scale_block", block, {"block_data": block_data(block), "input": payload}, user=user
        )
        workload = Workload.objects.filter(pk=old.workload_id).first()
        gone = (
            workload is None
            or workload.pid is None
            or workload.status
            in (
                WorkloadStatus.FAILED,
                WorkloadStatus.EXITED,
                WorkloadStatus.STOPPED,
            )
        )
        if gone:
            # Its process is dead: what it reserved is free for its replacement now.
            release(instance_id)
        try:
            with transaction.atomic():
                added = _add_instances(block, 1, replaces=instance_id)
        except AllocationError:
            if gone:
                raise
            release(instance_id)  # a live-but-failing process: give its place to the new one
            added = _add_instances(block, 1, replaces=instance_id)
        _remove_instances(block, [instance_id])
    log.info(
        "event=instance_replaced block_id=%s old=%s new=%s reason=%r",
        block_id,
        instance_id,
        added[0].instance_id,
        reason[:200],
    )
    new = added[0]
    return {
        "block_id": block_id,
        "replaced": instance_id,
        "instance": {"id": new.instance_id, "node": new.node_id, "gpus": new.gpus},
        "reason": reason,
    }


# -- reports from the block controller ---------------------------------------------------
def live_instance_documents(block: Block) -> list[dict[str, Any]]:
    """What the mapper registers: every instance the control plane keeps for the block."""
    return [
        {
            "instance_id": i.instance_id,
            "node_id": i.node_id,
            "gpus": i.gpus,
            "host": i.host,
            "http_port": i.http_port,
            "status": i.status,
            "health": i.health,
            "created_at": i.created_at.timestamp() if i.created_at else None,
        }
        for i in _live_instances(block).order_by("created_at")
    ]


def record_health(block_id: str, report: Any, *, user=None) -> dict[str, Any]:
    """The health checker's report: ``{"instances": {id: {"healthy": bool, "detail"?,
    "processed"?, "errors"?}}, "metrics"?: {name: number}}``."""
    block = get_block(block_id)
    ensure_can_manage(block, user, allow_service=True)
    if not isinstance(report, dict) or not isinstance(report.get("instances", {}), dict):
        raise ValidationFailed('the report is {"instances": {instance_id: {"healthy": bool}}}')
    now = timezone.now()
    updated = 0
    rows = {i.instance_id: i for i in block.instances.all()}
    for iid, entry in (report.get("instances") or {}).items():
        row = rows.get(iid)
        if row is None or not isinstance(entry, dict):
            continue
        healthy = entry.get("healthy")
        if healthy is None:
            continue  # still starting: nothing to say yet
        detail = entry.get("detail")
        fields: dict[str, Any] = {
            "health": InstanceHealth.HEALTHY if healthy is True else InstanceHealth.UNHEALTHY,
            "consecutive_failures": 0 if healthy is True else row.consecutive_failures + 1,
            "last_health_at": now,
            "health_detail": detail if isinstance(detail, dict) else {"detail": detail},
            "updated_at": now,
        }
        for key, column in (("processed", "requests_processed"), ("errors", "requests_failed")):
            if isinstance(entry.get(key), int) and not isinstance(entry.get(key), bool):
                fields[column] = entry[key]
        if healthy is True and row.status == InstanceStatus.STARTING:
            fields["status"] = InstanceStatus.RUNNING
        # An update, not a save: the instance may have been removed since it was read.
        updated += Instance.objects.filter(pk=row.pk).update(**fields)
    metrics = report.get("metrics")
    if isinstance(metrics, dict) and metrics:
        from apps.metrics.services import record_entity_metrics

        numbers = {
            k: v
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if numbers:
            record_entity_metrics(
                "block", block.id, numbers, labels={"cluster_id": block.cluster_id}
            )
    return {"block_id": block.id, "updated": updated}


# -- parameters and management commands -------------------------------------------------
def _service_url(block: Block, service: str) -> str:
    if block.status not in (BlockStatus.RUNNING, BlockStatus.STARTING):
        raise Conflict(
            f"block {block.id} is {block.status}; its services are not running",
            code="block_not_running",
        )
    key = "controller" if service in ("autoscaler", "health") else "http"
    url = (block.endpoints or {}).get(key)
    if not url:
        raise Conflict(f"block {block.id} has no {service} endpoint yet", code="block_not_running")
    return url


def _call(url: str, body: Any, *, what: str, timeout: float | None = None) -> Any:
    try:
        status, answer = http_json("POST", url, body, timeout=timeout)
    except (OSError, urllib.error.URLError) as exc:
        raise BlockServiceUnavailable(f"{what} did not answer: {exc}") from None
    if status >= 500 or status == 404:
        raise BlockServiceUnavailable(
            f"{what} answered {status}", details=[{"status": status, "body": answer}]
        )
    if status >= 400:
        message = answer
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            message = answer["error"].get("message") or answer
        raise ValidationFailed(
            f"{what} refused the command: {message}",
            code="block_command_refused",
            details=[{"status": status, "body": answer}],
        )
    return answer


def update_parameters(
    block_id: str, parameters: Any, *, user=None, wait_s: float = 5.0
) -> dict[str, Any]:
    """Live parameter update: every instance gets it (``on_update``), new instances start
    with it. Answers the executor's acknowledgements per instance."""
    if not isinstance(parameters, dict) or not parameters:
        raise ValidationFailed("parameters must be a non-empty JSON object")
    if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not 0 <= wait_s <= 30:
        raise ValidationFailed("wait_s must be a number of seconds between 0 and 30")
    block = get_block(block_id)
    ensure_can_manage(block, user)
    _prechecks(
        "block_mgmt",
        block,
        {
            "block_data": block_data(block),
            "input": {"action": "parameter_update", "payload": parameters, "service": "instances"},
        },
        user=user,
    )
    url = _service_url(block, "executor")
    result = _call(
        f"{url}/parameters",
        {"parameters": parameters, "wait_s": wait_s},
        what=f"executor of block {block.id}",
        timeout=wait_s + conf.SERVICE_HTTP_TIMEOUT_S,
    )
    with transaction.atomic():
        locked = get_block(block_id, for_update=True)
        locked.parameters = {**(locked.parameters or {}), **parameters}
        locked.save(update_fields=["parameters", "updated_at"])
    return {"block_id": block.id, **(result if isinstance(result, dict) else {"result": result})}


def _instance_mgmt(block: Block, action: str, data: Any, instance_id: str | None) -> Any:
    rows = list(_live_instances(block))
    if instance_id is not None:
        rows = [r for r in rows if r.instance_id == instance_id]
        if not rows:
            raise NotFound(f"instance {instance_id!r} is not a live instance of {block.id}")

    def one(row: Instance) -> tuple[str, Any]:
        url = f"http://{row.host}:{row.http_port}/mgmt"
        try:
            return row.instance_id, _call(
                url, {"mgmt_action": action, "mgmt_data": data}, what=f"instance {row.instance_id}"
            )
        except ApiError as exc:
            if instance_id is not None:
                raise
            return row.instance_id, {"error": exc.as_dict()["error"]}

    if not rows:
        return {"results": {}}
    with ThreadPoolExecutor(max_workers=min(16, len(rows))) as pool:
        results = dict(pool.map(one, rows))
    if instance_id is not None:
        return results[instance_id]
    return {"results": results}


def execute_mgmt(
    block_id: str, *, service: str, action: str, data: Any = None, user=None
) -> dict[str, Any]:
    """executeMgmtCommand for a block: ``block_mgmt`` pre-checks, then the command goes to
    the executor (``/executor/mgmt``: mapping, instances, logs, its policy's management), the
    autoscaler or the health checker (the block controller), or the instances (all of them,
    or ``mgmtData.instance_id``: the component's ``management(action, data)``)."""
    if service not in MGMT_SERVICES:
        raise ValidationFailed(
            f"unknown block service {service!r}",
            details=[{"field": "service", "allowed": list(MGMT_SERVICES)}],
        )
    if not isinstance(action, str) or not action.strip():
        raise ValidationFailed("a management command needs a command name (mgmtCommand)")
    block = get_block(block_id)
    ensure_can_manage(block, user)
    checked = _prechecks(
        "block_mgmt",
        block,
        {
            "block_data": block_data(block),
            "input": {"action": action, "payload": data, "service": service},
        },
        user=user,
    )
    command = checked.get("input") if isinstance(checked.get("input"), dict) else {}
    action = command.get("action", action)
    data = command.get("payload", data)
    if service == "instances":
        instance_id = None
        payload = data
        if isinstance(data, dict) and "instance_id" in data:
            instance_id = str(data["instance_id"])
            payload = data.get("data", {k: v for k, v in data.items() if k != "instance_id"})
        if action in ("update_parameters", "set_parameters", "parameter_update"):
            params = payload.get("parameters", payload) if isinstance(payload, dict) else payload
            result = update_parameters(block.id, params, user=None)
        else:
            _service_url(block, "executor")  # the block must be running
            result = _instance_mgmt(block, action, payload, instance_id)
    else:
        base = _service_url(block, service)
        path = {
            "executor": "/executor/mgmt",
            "autoscaler": "/autoscaler/mgmt",
            "health": "/health-checker/mgmt",
        }[service]
        result = _call(
            f"{base}{path}",
            {"mgmt_action": action, "mgmt_data": data},
            what=f"{service} of {block.id}",
        )
    return {"block_id": block.id, "service": service, "action": action, "result": result}
