"""vDAG controllers: create, observe and remove the gRPC gateways that serve vDAGs.

A controller is created through its cluster's controller (reference §1.5): the cluster's
``add_vdag_controller`` pre-check runs first (a policy may deny, or rewrite the input, e.g.
pin the node), then the cluster's driver runs ``python -m block_sdk.vdag_controller`` as a
workload with the vDAG's compiled graph (one workload per replica). The controller is
``running`` once its gRPC port answers; ``public_url`` is that gRPC ``host:port``.
Removal runs ``remove_vdag_controller`` and stops the workloads.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
from django.db import transaction

from apps.clusters.choices import ClusterStatus, WorkloadKind
from apps.clusters.controller import ClusterController, cluster_metrics_snapshot
from apps.clusters.drivers import WorkloadSpec
from apps.clusters.models import Cluster, Node, Workload
from apps.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from apps.core.uris import URIError, validate_slug_id
from apps.vdags import conf
from apps.vdags.choices import (
    CONTROLLER_POLICY_NAMES,
    TASK_VDAG_CONTROLLER_CREATION,
    ControllerStatus,
    PolicyExecutionMode,
    VDagStatus,
)
from apps.vdags.models import VDag, VDagController
from apps.vdags.services import telemetry
from apps.vdags.services import workloads as serving
from apps.vdags.services.vdags import get_vdag, missing_blocks, recompile

log = logging.getLogger("aios.vdags.controllers")

ENTRY_POINT = "block_sdk.vdag_controller"
CONFIG_ENV = "AIOS_VDAG_CONTROLLER_CONFIG"
MAX_REPLICAS = 16
CONFIG_KEYS = (
    "policy_execution_mode",
    "replicas",
    "policies",
    "request_timeout_s",
    "health_interval_s",
    "metrics_interval_s",
    "quality_sample_rate",
    "node_id",
)


# -- lookups ------------------------------------------------------------------------------------
def get_controller(controller_id: str) -> VDagController:
    controller = (
        VDagController.objects.select_related("vdag", "cluster")
        .filter(pk=controller_id if isinstance(controller_id, str) else None)
        .first()
    )
    if controller is None:
        raise NotFound(f"vDAG controller {controller_id!r} does not exist")
    return controller


def controllers_of(vdag_uri: str):
    return VDagController.objects.select_related("vdag", "cluster").filter(vdag_id=vdag_uri)


def workloads_of(controller_id: str):
    return Workload.objects.filter(
        kind=WorkloadKind.VDAG_CONTROLLER, labels__vdag_controller_id=controller_id
    ).select_related("node")


# -- validation -------------------------------------------------------------------------------
def clean_config(config: Any, vdag: VDag) -> dict[str, Any]:
    """The controller's config: ``policy_execution_mode`` (local | remote), ``replicas``
    (1..16), optional ``policies`` overriding the vDAG spec's ``controller.policies`` and
    tuning keys. Unknown keys are a 400 (a typo must not be silently ignored)."""
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ValidationFailed("config must be an object", details=[{"field": "config"}])
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ValidationFailed(
            f"unknown config key {unknown[0]!r}",
            details=[{"field": f"config.{k}", "allowed": list(CONFIG_KEYS)} for k in unknown],
        )
    mode = config.get("policy_execution_mode") or PolicyExecutionMode.LOCAL
    if mode == "distributed":
        mode = PolicyExecutionMode.REMOTE
    if mode not in PolicyExecutionMode.values:
        raise ValidationFailed(
            f"config.policy_execution_mode must be one of {list(PolicyExecutionMode.values)}",
            details=[{"field": "config.policy_execution_mode", "value": mode}],
        )
    replicas = config.get("replicas", 1)
    if (
        isinstance(replicas, bool)
        or not isinstance(replicas, int)
        or not (1 <= replicas <= MAX_REPLICAS)
    ):
        raise ValidationFailed(
            f"config.replicas must be an integer from 1 to {MAX_REPLICAS}",
            details=[{"field": "config.replicas", "value": replicas}],
        )
    for key in ("request_timeout_s", "health_interval_s", "metrics_interval_s"):
        value = config.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        ):
            raise ValidationFailed(f"config.{key} must be a number > 0")
    rate = config.get("quality_sample_rate")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1
    ):
        raise ValidationFailed("config.quality_sample_rate must be a number from 0 to 1")
    policies = controller_policies(config.get("policies", (vdag.controller or {}).get("policies")))
    return {
        **{k: v for k, v in config.items() if k not in ("policies",)},
        "policy_execution_mode": mode,
        "replicas": replicas,
        "policies": policies,
    }


def controller_policies(value: Any) -> dict[str, Any]:
    """The spec's ``controller.policies`` as ``{quotaChecker|qualityChecker|healthChecker:
    {policyRuleURI, parameters, settings}}``. Accepts the map, or a list of rules each with
    a ``name`` (the reference leaves the shape open)."""
    if value in (None, [], {}):
        return {}
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        for index, rule in enumerate(value):
            if not isinstance(rule, dict) or not isinstance(rule.get("name"), str):
                raise ValidationFailed(
                    "each rule of controller.policies needs a 'name' "
                    f"({', '.join(CONTROLLER_POLICY_NAMES)})",
                    details=[{"field": f"policies[{index}].name"}],
                )
            items.append((rule["name"], {k: v for k, v in rule.items() if k != "name"}))
    else:
        raise ValidationFailed("controller policies must be an object or a list")
    out: dict[str, Any] = {}
    for name, rule in items:
        if name not in CONTROLLER_POLICY_NAMES:
            raise ValidationFailed(
                f"unknown controller policy {name!r}",
                details=[{"field": f"policies.{name}", "allowed": list(CONTROLLER_POLICY_NAMES)}],
            )
        if isinstance(rule, str):
            rule = {"policyRuleURI": rule}
        if not isinstance(rule, dict) or not isinstance(rule.get("policyRuleURI"), str):
            raise ValidationFailed(
                f"controller policy {name!r} needs a policyRuleURI",
                details=[{"field": f"policies.{name}.policyRuleURI"}],
            )
        out[name] = {
            "policyRuleURI": rule["policyRuleURI"],
            "parameters": dict(rule.get("parameters") or {}),
            "settings": dict(rule.get("settings") or {}),
        }
    return out


# -- the workload ------------------------------------------------------------------------------
DEFAULT_QUALITY_POLICY = "aios.quality_sampler:1.0-stable"
DEFAULT_PORTS = {"grpc": 50061, "http": 18061}
# Spec policy names -> the controller process's config keys.
POLICY_KEYS = {
    "quotaChecker": "quota_policy",
    "qualityChecker": "quality_policy",
    "healthChecker": "health_policy",
}


def process_config(
    controller: VDagController,
    vdag: VDag,
    *,
    grpc_port: int,
    http_port: int,
    host: str,
) -> dict[str, Any]:
    """The controller process's config (``block_sdk.vdag_controller.config``), passed as
    ``AIOS_VDAG_CONTROLLER_CONFIG``. Policies left out run the data plane's defaults (the
    built-in quota and quality policies)."""
    from django.conf import settings

    config = dict(controller.config or {})
    mode = config.get("policy_execution_mode", PolicyExecutionMode.LOCAL)
    doc: dict[str, Any] = {
        "vdag_uri": vdag.vdag_uri,
        "controller_id": controller.vdag_controller_id,
        "cluster_id": controller.cluster_id,
        "graph": vdag.compiled_graph,
        "grpc_host": "0.0.0.0",  # noqa: S104 - clients and other clusters call it
        "grpc_port": grpc_port,
        "http_host": "0.0.0.0",  # noqa: S104
        "http_port": http_port,
        # Blocks of other clusters deliver results here over InferenceProxy.
        "advertise_grpc": f"{host}:{grpc_port}",
        "request_timeout_s": config.get("request_timeout_s", conf.REQUEST_TIMEOUT_S),
        # Local: trusted in-process evaluation; otherwise the process's sandbox pool.
        "policy_mode": "local" if mode == PolicyExecutionMode.LOCAL else "sandbox",
        "api_url": settings.AIOS_PUBLIC_URL,
    }
    for name, key in POLICY_KEYS.items():
        rule = (config.get("policies") or {}).get(name)
        if rule:
            doc[key] = rule
    if "quality_sample_rate" in config and "quality_policy" not in doc:
        doc["quality_policy"] = {
            "policyRuleURI": DEFAULT_QUALITY_POLICY,
            "parameters": {"sample_rate": config["quality_sample_rate"]},
        }
    for key in ("health_interval_s", "metrics_interval_s"):
        if key in config:
            doc[key] = config[key]
    doc.update(conf.controller_overrides())
    return doc


def workload_spec(
    controller: VDagController, vdag: VDag, *, node: Node, index: int
) -> WorkloadSpec:
    """One replica: its ports are chosen here (a local node runs every process on one
    host), so the process is told them and clients know them before it starts."""
    cluster = controller.cluster
    grpc_port = serving.service_port(cluster, DEFAULT_PORTS["grpc"])
    http_port = serving.service_port(cluster, DEFAULT_PORTS["http"])
    host = serving.advertise_host(cluster, node)
    doc = process_config(controller, vdag, grpc_port=grpc_port, http_port=http_port, host=host)
    return WorkloadSpec(
        kind=WorkloadKind.VDAG_CONTROLLER,
        entry_point=ENTRY_POINT,
        env={CONFIG_ENV: json.dumps(doc, separators=(",", ":"))},
        ports={"grpc": grpc_port, "http": http_port},
        node_id=node.id,
        labels={"vdag_uri": vdag.vdag_uri, "replica_index": index},
        id=f"vdagc-{controller.vdag_controller_id}-{index}"[:128],
        probes={"readiness": {"tcp": {"port": "grpc"}}},
    )


# -- create ------------------------------------------------------------------------------------
def create_controller(
    *,
    vdag_controller_id: Any,
    vdag_uri: Any,
    cluster_id: Any,
    config: Any = None,
    metadata: Any = None,
    search_tags: Any = None,
    user=None,
):
    """Register a controller and start its workloads; returns ``(controller, task)``. The
    ``vdag_controller_creation`` task waits for it to answer and marks it ``running``."""
    from apps.tasks.services import submit
    from apps.vdags import tasks

    try:
        validate_slug_id(vdag_controller_id, "vdag_controller_id")
    except URIError as exc:
        raise ValidationFailed(str(exc), details=[{"field": "vdag_controller_id"}]) from None
    if not isinstance(vdag_uri, str) or not vdag_uri:
        raise ValidationFailed("vdag_uri is required", details=[{"field": "vdag_uri"}])
    if not isinstance(cluster_id, str) or not cluster_id:
        raise ValidationFailed("cluster_id is required", details=[{"field": "cluster_id"}])
    if metadata is not None and not isinstance(metadata, dict):
        raise ValidationFailed("metadata must be an object", details=[{"field": "metadata"}])
    if search_tags is not None and (
        not isinstance(search_tags, list) or not all(isinstance(t, str) for t in search_tags)
    ):
        raise ValidationFailed(
            "search_tags must be a list of strings", details=[{"field": "search_tags"}]
        )
    vdag = get_vdag(vdag_uri)
    if vdag.status != VDagStatus.ACTIVE:
        raise Conflict(
            f"vDAG {vdag_uri!r} is {vdag.status}, not active; a controller serves active vDAGs",
            details=[{"vdag_uri": vdag_uri, "status": vdag.status}],
        )
    down = missing_blocks(vdag)
    if down:
        raise Conflict(
            f"vDAG {vdag_uri!r} routes through blocks that do not run: "
            + ", ".join(f"{b} ({state})" for b, state in sorted(down.items())),
            details=[{"block_id": b, "status": state} for b, state in sorted(down.items())],
        )
    cluster = Cluster.objects.filter(pk=cluster_id).first()
    if cluster is None:
        raise NotFound(f"cluster {cluster_id!r} does not exist")
    if cluster.status != ClusterStatus.LIVE:
        raise Conflict(f"cluster {cluster_id!r} is {cluster.status}, not live")
    config = clean_config(config, vdag)
    if VDagController.objects.filter(pk=vdag_controller_id).exists():
        raise Conflict(f"vDAG controller {vdag_controller_id!r} already exists")

    cluster_controller = ClusterController(cluster)
    node_id = config.get("node_id") or _planned_node(cluster_controller)
    input_data = {
        "vdag_controller_id": vdag_controller_id,
        "vdag_uri": vdag_uri,
        "config": config,
        "search_tags": search_tags or [],
    }
    # The reference's input; the request is also under "request" because the pre-check
    # envelope reuses the key "input_data" for the whole input.
    checked = cluster_controller.precheck(
        "add_vdag_controller",
        {
            "vdag_data": _vdag_document(vdag),
            "cluster_data": _cluster_document(cluster),
            "cluster_metrics": cluster_metrics_snapshot(cluster.id),
            "node_id": node_id,
            "input_data": input_data,
            "request": input_data,
        },
        user=user,
    )
    # A policy may rewrite the request's config ("request") or pin the node ("node_id").
    rewritten = checked.get("request") if isinstance(checked.get("request"), dict) else {}
    if isinstance(rewritten.get("config"), dict) and rewritten["config"] != input_data["config"]:
        config = clean_config(rewritten["config"], vdag)
    pinned = checked.get("node_id")
    if isinstance(pinned, str) and pinned and pinned != node_id:
        config["node_id"] = pinned

    recompile(vdag)  # executors may have moved since the vDAG was compiled
    with transaction.atomic():
        controller = VDagController.objects.create(
            vdag_controller_id=vdag_controller_id,
            vdag=vdag,
            cluster=cluster,
            config=config,
            status=ControllerStatus.STARTING,
            metadata=metadata or {},
            search_tags=search_tags or [],
            owner=user if getattr(user, "is_authenticated", False) else None,
        )
        refs = []
        for index in range(config["replicas"]):
            node = _placement(cluster_controller, config.get("node_id"))
            spec = workload_spec(controller, vdag, node=node, index=index)
            refs += cluster_controller.driver.create_vdag_controller(
                vdag_controller_id, spec, replicas=1
            )
        endpoints = [serving.endpoint(w, cluster) for w in workloads_of(vdag_controller_id)]
        controller.endpoints = endpoints
        controller.public_url = endpoints[0]["grpc"] if endpoints else ""
        controller.management_url = endpoints[0]["http"] if endpoints else ""
        task = submit(
            TASK_VDAG_CONTROLLER_CREATION,
            tasks.vdag_controller_creation,
            owner=user,
            task_data={"vdag_controller_id": vdag_controller_id, "vdag_uri": vdag_uri},
            vdag_controller_id=vdag_controller_id,
        )
        controller.last_task_id = task.task_id
        controller.save(update_fields=["endpoints", "public_url", "management_url", "last_task_id"])
    log.info(
        "event=vdag_controller_created controller=%s vdag=%s cluster=%s replicas=%d "
        "public_url=%s workloads=%s",
        vdag_controller_id,
        vdag_uri,
        cluster.id,
        len(refs),
        controller.public_url,
        ",".join(r.id for r in refs),
    )
    return controller, task


def _placement(cluster_controller: ClusterController, node_id: str | None) -> Node:
    """The node of the next replica: the pinned one, else the driver's least busy."""
    if node_id:
        node = cluster_controller.cluster.nodes.filter(pk=node_id).first()
        if node is None:
            raise NotFound(f"node {node_id!r} is not in cluster {cluster_controller.cluster.id!r}")
        return node
    return cluster_controller.driver.pick_node(
        WorkloadSpec(kind=WorkloadKind.VDAG_CONTROLLER, entry_point=ENTRY_POINT)
    )


def _planned_node(cluster_controller: ClusterController) -> str | None:
    try:
        return cluster_controller.driver.pick_node(
            WorkloadSpec(kind=WorkloadKind.VDAG_CONTROLLER, entry_point=ENTRY_POINT)
        ).id
    except Exception:  # no ready node: the driver says so, clearly, when creating
        return None


def _vdag_document(vdag: VDag) -> dict[str, Any]:
    return {
        "vdagURI": vdag.vdag_uri,
        "vdag_name": vdag.name,
        "vdag_version": {"version": vdag.version, "release-tag": vdag.release_tag},
        "discoveryTags": vdag.discovery_tags,
        "controller": vdag.controller,
        "assignment_info": vdag.assignment,
        "status": vdag.status,
        "block_ids": vdag.block_ids,
    }


def _cluster_document(cluster: Cluster) -> dict[str, Any]:
    from apps.clusters.services import cluster_document

    return cluster_document(cluster, include_nodes=False)


# -- status ------------------------------------------------------------------------------------
def observe(controller: VDagController) -> VDagController:
    """Refresh ``status`` from the world (see ``workloads.observed_status``)."""
    if controller.status == ControllerStatus.REMOVING:
        return controller
    status, reason = serving.observed_status(
        controller.status,
        controller.status_reason,
        controller.endpoints,
        list(workloads_of(controller.pk)),
        running=ControllerStatus.RUNNING,
        starting=ControllerStatus.STARTING,
        failed=ControllerStatus.FAILED,
    )
    if (status, reason) != (controller.status, controller.status_reason):
        VDagController.objects.filter(pk=controller.pk).update(
            status=status, status_reason=reason[:2000]
        )
        controller.status, controller.status_reason = status, reason
    return controller


def wait_until_running(controller_id: str, progress=None) -> dict[str, Any]:
    """The ``vdag_controller_creation`` body: wait (bounded) for the gRPC port to answer."""
    progress = progress or (lambda *a, **k: None)
    deadline = time.monotonic() + conf.CONTROLLER_START_TIMEOUT_S
    progress(10, "waiting for the controller's gRPC port")
    while True:
        controller = observe(get_controller(controller_id))
        if controller.status == ControllerStatus.RUNNING:
            progress(95, "running", public_url=controller.public_url)
            return {
                "vdag_controller_id": controller_id,
                "status": controller.status,
                "public_url": controller.public_url,
            }
        if controller.status in (ControllerStatus.FAILED, ControllerStatus.REMOVING):
            raise RuntimeError(
                f"vDAG controller {controller_id} is {controller.status}: "
                f"{controller.status_reason}"
            )
        restarts = max((w.restarts for w in workloads_of(controller_id)), default=0)
        if restarts > conf.CONTROLLER_START_MAX_RESTARTS:
            reason = next(
                (w.last_error for w in workloads_of(controller_id) if w.last_error),
                "the controller process keeps exiting",
            )
            _fail(controller_id, f"restarted {restarts} times while starting: {reason}")
        if time.monotonic() > deadline:
            _fail(
                controller_id,
                f"its gRPC port did not answer within {conf.CONTROLLER_START_TIMEOUT_S:.0f}s",
            )
        time.sleep(0.25)


def _fail(controller_id: str, reason: str) -> None:
    VDagController.objects.filter(pk=controller_id).update(
        status=ControllerStatus.FAILED, status_reason=reason[:2000]
    )
    log.warning("event=vdag_controller_failed controller=%s reason=%r", controller_id, reason)
    raise RuntimeError(f"vDAG controller {controller_id} failed: {reason}")


# -- remove ------------------------------------------------------------------------------------
def ensure_can_manage(controller: VDagController, user) -> None:
    if user is None:
        return
    if not getattr(user, "is_authenticated", False):
        raise Forbidden("authentication is required")
    if user.is_staff or controller.owner_id in (None, user.pk):
        return
    raise Forbidden(f"only the owner of vDAG controller {controller.pk!r} or staff may do this")


def remove_controller(controller: VDagController, *, user=None, wait: bool = False) -> dict:
    """Run ``remove_vdag_controller``, stop the workloads and delete the record."""
    ensure_can_manage(controller, user)
    cluster_controller = ClusterController(controller.cluster)
    workloads = list(workloads_of(controller.pk))
    cluster_controller.precheck(
        "remove_vdag_controller",
        {
            "vdag_data": _vdag_document(controller.vdag),
            "vdag_controller_data": controller_document(controller),
            "cluster_data": _cluster_document(controller.cluster),
            "cluster_metrics": cluster_metrics_snapshot(controller.cluster_id),
            "node_id": workloads[0].node_id if workloads else None,
        },
        user=user,
    )
    VDagController.objects.filter(pk=controller.pk).update(status=ControllerStatus.REMOVING)
    try:  # keep what it recorded for audit before its stream goes
        telemetry.collect_quality(controller)
    except redis.RedisError as exc:
        log.warning("event=quality_collect_failed controller=%s error=%r", controller.pk, exc)
    removed = cluster_controller.driver.remove_vdag_controller(controller.pk, wait=False)
    controller_id = controller.pk
    controller.delete()
    if wait and workloads:
        cluster_controller.driver.wait_gone(
            [w.id for w in workloads], timeout_s=conf.CONTROLLER_REMOVAL_WAIT_S
        )
    try:
        telemetry.forget_controller(controller_id)
    except redis.RedisError as exc:  # bounded keys; they only cost memory
        log.warning("event=controller_keys_left controller=%s error=%r", controller_id, exc)
    log.info("event=vdag_controller_removed controller=%s workloads=%d", controller_id, removed)
    return {"vdag_controller_id": controller_id, "removed": True, "workloads": removed}


def controller_document(controller: VDagController) -> dict[str, Any]:
    """The registry's ``vDAGController`` document (reference §1.13) plus status."""
    return {
        "vdag_controller_id": controller.vdag_controller_id,
        "vdag_uri": controller.vdag_id,
        "public_url": controller.public_url,
        "management_url": controller.management_url,
        "cluster_id": controller.cluster_id,
        "metadata": controller.metadata,
        "config": controller.config,
        "search_tags": controller.search_tags,
        "status": controller.status,
        "status_reason": controller.status_reason,
        "endpoints": controller.endpoints,
    }
