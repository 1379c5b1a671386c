"""The control side of adhoc inference servers, and request-log reads.

- Deployments: ``create_deployment`` starts ``python -m block_sdk.inference_server`` as a
  workload on a cluster (one per replica), lists it in the inference-server registry
  (``apps.registries`` ``InferenceServer``) with its public gRPC URL, and queues
  ``inference_server_creation``, which waits for its port to answer. ``remove_deployment``
  stops it and unlists it.
- The executor map: the adhoc server resolves a ``block_id`` to the block's executor through
  a Redis hash the control plane keeps (``EXECUTOR_MAP_KEY``): one field per running block.
  ``sync_executor_map`` rewrites it from the blocks registry (a beat task and block signals
  call it); ``set_executor_entry`` / ``drop_executor_entry`` change one block.
- Request logs: the servers write ``inference_request_log`` in batches; the read functions
  here back the REST endpoints.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import Any

import redis
from django.conf import settings
from django.db import transaction

from apps.clusters.choices import ClusterStatus, WorkloadKind
from apps.clusters.drivers import WorkloadSpec
from apps.clusters.models import Cluster, Workload
from apps.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from apps.core.uris import URIError, validate_slug_id
from apps.inference import conf
from apps.inference.choices import TASK_INFERENCE_SERVER_CREATION, DeploymentStatus
from apps.inference.models import InferenceServerDeployment, RequestLog
from apps.vdags.services import workloads as serving

log = logging.getLogger("aios.inference")

ENTRY_POINT = "block_sdk.inference_server"
CONFIG_ENV = "AIOS_INFERENCE_SERVER_CONFIG"
LABEL = "inference_server_id"
MAX_REPLICAS = 16
CONFIG_KEYS = (
    "replicas",
    "policies",
    "policy_execution_mode",
    "request_logging",
    "log_batch_rows",
    "log_flush_ms",
    "request_timeout_s",
    "session_cache_ttl_s",
    "node_id",
)
DEFAULT_PORTS = {"grpc": 31500, "http": 31501}
SEARCH_PATH = "/api/v1/inference/search/"


# -- lookups -----------------------------------------------------------------------------------
def get_deployment(deployment_id: Any) -> InferenceServerDeployment:
    deployment = (
        InferenceServerDeployment.objects.select_related("cluster", "server")
        .filter(pk=deployment_id if isinstance(deployment_id, str) else None)
        .first()
    )
    if deployment is None:
        raise NotFound(f"inference server deployment {deployment_id!r} does not exist")
    return deployment


def workloads_of(deployment_id: str):
    return Workload.objects.filter(
        kind=WorkloadKind.SERVICE, **{f"labels__{LABEL}": deployment_id}
    ).select_related("node")


# -- the executor map ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def executor_entry(block: Any) -> dict[str, Any]:
    """What the adhoc server needs to reach a block (the vDAG compiler's executor address)."""
    from apps.vdags.blocks import executor_address

    return executor_address(block)


def executor_map() -> dict[str, dict[str, Any]]:
    """``{block_id: executor address}`` of every running block, from the registry."""
    from apps.vdags import blocks as block_lookup

    model = block_lookup.block_model()
    rows = model.objects.select_related("cluster").filter(
        status__in=block_lookup.ASSIGNABLE_BLOCK_STATUSES
    )
    return {row.pk: executor_entry(row) for row in rows if (row.endpoints or {}).get("grpc")}


def sync_executor_map() -> int:
    """Rewrite the Redis executor map from the blocks registry; returns its size. Fields of
    blocks that stopped running go; the hash is replaced in one MULTI, so a reader never sees
    it half-written."""
    entries = executor_map()
    pipe = _redis().pipeline(transaction=True)
    pipe.delete(conf.EXECUTOR_MAP_KEY)
    if entries:
        pipe.hset(
            conf.EXECUTOR_MAP_KEY,
            mapping={k: json.dumps(v, separators=(",", ":")) for k, v in entries.items()},
        )
        # Bounded by the number of blocks; the TTL only clears a map nobody maintains.
        pipe.expire(conf.EXECUTOR_MAP_KEY, conf.EXECUTOR_MAP_TTL_S)
    pipe.execute()
    return len(entries)


def _sync_quietly() -> None:
    try:
        sync_executor_map()
    except redis.RedisError as exc:  # the beat task heals it
        log.warning("event=executor_map_sync_failed error=%r", exc)


def set_executor_entry(block: Any) -> None:
    address = executor_entry(block)
    if not address.get("grpc"):
        return
    pipe = _redis().pipeline(transaction=False)
    pipe.hset(conf.EXECUTOR_MAP_KEY, block.pk, json.dumps(address, separators=(",", ":")))
    pipe.expire(conf.EXECUTOR_MAP_KEY, conf.EXECUTOR_MAP_TTL_S)
    pipe.execute()


def drop_executor_entry(block_id: str) -> None:
    _redis().hdel(conf.EXECUTOR_MAP_KEY, block_id)


def on_block_saved(block: Any) -> None:
    """Keep the map in step with a block's status (called from the post_save signal)."""
    from apps.vdags import blocks as block_lookup

    try:
        if block_lookup.is_assignable(block) and (block.endpoints or {}).get("grpc"):
            set_executor_entry(block)
        else:
            drop_executor_entry(block.pk)
    except redis.RedisError as exc:  # the periodic sync heals the map
        log.warning("event=executor_map_update_failed block_id=%s error=%r", block.pk, exc)


def on_block_deleted(block_id: str) -> None:
    try:
        drop_executor_entry(block_id)
    except redis.RedisError as exc:
        log.warning("event=executor_map_update_failed block_id=%s error=%r", block_id, exc)


# -- deployments --------------------------------------------------------------------------------
def clean_config(config: Any) -> dict[str, Any]:
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
    for key in ("log_batch_rows", "log_flush_ms"):
        value = config.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValidationFailed(f"config.{key} must be an integer >= 1")
    for key in ("request_timeout_s", "session_cache_ttl_s"):
        value = config.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        ):
            raise ValidationFailed(f"config.{key} must be a number > 0")
    if "request_logging" in config and not isinstance(config["request_logging"], bool):
        raise ValidationFailed("config.request_logging must be true or false")
    from apps.vdags.services.controllers import controller_policies

    policies = controller_policies(config.get("policies"))
    unknown_policies = sorted(set(policies) - {"quotaChecker"})
    if unknown_policies:
        raise ValidationFailed(
            "an inference server runs a quotaChecker policy only",
            details=[{"field": f"config.policies.{k}"} for k in unknown_policies],
        )
    mode = config.get("policy_execution_mode", "local")
    if mode not in ("local", "sandbox", "remote"):
        raise ValidationFailed("config.policy_execution_mode must be local, sandbox or remote")
    return {**config, "replicas": replicas, "policies": policies, "policy_execution_mode": mode}


def request_log_dsn() -> str:
    """The DSN servers write request logs with: ``AIOS_REQUEST_LOG_DATABASE_URL`` when set
    (best: a role allowed only to INSERT into ``inference_request_log``), else the control
    plane's database. It reaches the process through its workload environment, which the
    workloads API shows to staff only."""
    if conf.REQUEST_LOG_DATABASE_URL:
        return conf.REQUEST_LOG_DATABASE_URL
    from urllib.parse import quote

    db = settings.DATABASES["default"]
    auth = quote(db.get("USER") or "", safe="")
    if db.get("PASSWORD"):
        auth = f"{auth}:{quote(db['PASSWORD'], safe='')}"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgresql://{auth + '@' if auth else ''}{host}:{port}/{db['NAME']}"


def process_config(
    deployment: InferenceServerDeployment, *, grpc_port: int, http_port: int, host: str
) -> dict[str, Any]:
    """The server process's config (``block_sdk.inference_server.config``)."""
    config = dict(deployment.config or {})
    doc: dict[str, Any] = {
        "server_id": deployment.deployment_id,
        "cluster_id": deployment.cluster_id,
        "grpc_host": "0.0.0.0",  # noqa: S104 - a public gateway
        "grpc_port": grpc_port,
        "http_host": "0.0.0.0",  # noqa: S104
        "http_port": http_port,
        # Blocks of other clusters deliver results here over InferenceProxy.
        "advertise_grpc": f"{host}:{grpc_port}",
        "executors_key": conf.EXECUTOR_MAP_KEY,
        "api_url": settings.AIOS_PUBLIC_URL,
        # Searches by query_parameters go to the control plane's read-only block search.
        "search_path": SEARCH_PATH,
        "policy_mode": "local" if config["policy_execution_mode"] == "local" else "sandbox",
    }
    quota = (config.get("policies") or {}).get("quotaChecker")
    if quota:
        doc["quota_policy"] = quota
    for key in ("request_timeout_s", "session_cache_ttl_s", "log_batch_rows", "log_flush_ms"):
        if key in config:
            doc[key] = config[key]
    doc.update(conf.server_overrides())
    return doc


def workload_spec(deployment: InferenceServerDeployment, *, node, index: int) -> WorkloadSpec:
    cluster = deployment.cluster
    grpc_port = serving.service_port(cluster, DEFAULT_PORTS["grpc"])
    http_port = serving.service_port(cluster, DEFAULT_PORTS["http"])
    host = serving.advertise_host(cluster, node)
    doc = process_config(deployment, grpc_port=grpc_port, http_port=http_port, host=host)
    env = {CONFIG_ENV: json.dumps(doc, separators=(",", ":"))}
    dsn = request_log_dsn() if (deployment.config or {}).get("request_logging", True) else ""
    if dsn:
        env["AIOS_REQUEST_LOG_DSN"] = dsn
    return WorkloadSpec(
        kind=WorkloadKind.SERVICE,
        entry_point=ENTRY_POINT,
        env=env,
        ports={"grpc": grpc_port, "http": http_port},
        node_id=node.id,
        labels={"role": "inference_server", LABEL: deployment.deployment_id, "replica": index},
        id=f"infsrv-{deployment.deployment_id}-{index}"[:128],
    )


def create_deployment(
    *,
    deployment_id: Any,
    cluster_id: Any,
    name: Any = None,
    config: Any = None,
    metadata: Any = None,
    tags: Any = None,
    user=None,
):
    """Start an adhoc inference server on a cluster and list it in the registry; returns
    ``(deployment, task)``."""
    from apps.inference import tasks
    from apps.registries.models import InferenceServer
    from apps.tasks.services import submit

    try:
        validate_slug_id(deployment_id, "deployment_id")
    except URIError as exc:
        raise ValidationFailed(str(exc), details=[{"field": "deployment_id"}]) from None
    if not isinstance(cluster_id, str) or not cluster_id:
        raise ValidationFailed("cluster_id is required", details=[{"field": "cluster_id"}])
    if name is not None and (not isinstance(name, str) or not name or len(name) > 200):
        raise ValidationFailed("name must be a non-empty string of at most 200 characters")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValidationFailed("metadata must be an object", details=[{"field": "metadata"}])
    if tags is not None and (
        not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)
    ):
        raise ValidationFailed("tags must be a list of strings", details=[{"field": "tags"}])
    config = clean_config(config)
    cluster = Cluster.objects.filter(pk=cluster_id).first()
    if cluster is None:
        raise NotFound(f"cluster {cluster_id!r} does not exist")
    if cluster.status != ClusterStatus.LIVE:
        raise Conflict(f"cluster {cluster_id!r} is {cluster.status}, not live")
    if InferenceServerDeployment.objects.filter(pk=deployment_id).exists():
        raise Conflict(f"inference server deployment {deployment_id!r} already exists")

    from apps.clusters.drivers import get_driver

    driver = get_driver(cluster)
    owner = user if getattr(user, "is_authenticated", False) else None
    with transaction.atomic():
        deployment = InferenceServerDeployment.objects.create(
            deployment_id=deployment_id,
            name=name or deployment_id,
            cluster=cluster,
            config=config,
            metadata=metadata or {},
            tags=tags or [],
            status=DeploymentStatus.STARTING,
            owner=owner,
        )
        server = InferenceServer.objects.create(
            name=deployment.name,
            metadata={
                **(metadata or {}),
                "cluster_id": cluster.id,
                "deployment_id": deployment_id,
                "managed": True,
            },
            tags=tags or [],
            public_url="",
            owner=owner,
        )
        deployment.server = server
        deployment.save(update_fields=["server"])
        for index in range(config["replicas"]):
            node = _placement(driver, cluster, config.get("node_id"))
            driver.create_workload(workload_spec(deployment, node=node, index=index))
        endpoints = [serving.endpoint(w, cluster) for w in workloads_of(deployment_id)]
        deployment.endpoints = endpoints
        deployment.public_url = endpoints[0]["grpc"] if endpoints else ""
        deployment.management_url = endpoints[0]["http"] if endpoints else ""
        server.public_url = deployment.public_url
        server.save(update_fields=["public_url"])
        # The map the server resolves block ids with, fresh before it starts.
        transaction.on_commit(_sync_quietly)
        task = submit(
            TASK_INFERENCE_SERVER_CREATION,
            tasks.inference_server_creation,
            owner=user,
            task_data={"deployment_id": deployment_id, "cluster_id": cluster.id},
            deployment_id=deployment_id,
        )
        deployment.last_task_id = task.task_id
        deployment.save(update_fields=["endpoints", "public_url", "management_url", "last_task_id"])
    log.info(
        "event=inference_server_created deployment=%s cluster=%s public_url=%s server_id=%s",
        deployment_id,
        cluster.id,
        deployment.public_url,
        server.pk,
    )
    return deployment, task


def _placement(driver, cluster: Cluster, node_id: str | None):
    if node_id:
        node = cluster.nodes.filter(pk=node_id).first()
        if node is None:
            raise NotFound(f"node {node_id!r} is not in cluster {cluster.id!r}")
        return node
    return driver.pick_node(WorkloadSpec(kind=WorkloadKind.SERVICE, entry_point=ENTRY_POINT))


def observe(deployment: InferenceServerDeployment) -> InferenceServerDeployment:
    if deployment.status == DeploymentStatus.REMOVING:
        return deployment
    status, reason = serving.observed_status(
        deployment.status,
        deployment.status_reason,
        deployment.endpoints,
        list(workloads_of(deployment.pk)),
        running=DeploymentStatus.RUNNING,
        starting=DeploymentStatus.STARTING,
        failed=DeploymentStatus.FAILED,
    )
    if (status, reason) != (deployment.status, deployment.status_reason):
        InferenceServerDeployment.objects.filter(pk=deployment.pk).update(
            status=status, status_reason=reason[:2000]
        )
        deployment.status, deployment.status_reason = status, reason
    return deployment


def wait_until_running(deployment_id: str, progress=None) -> dict[str, Any]:
    """The ``inference_server_creation`` body: wait (bounded) for the gRPC port."""
    progress = progress or (lambda *a, **k: None)
    deadline = time.monotonic() + conf.SERVER_START_TIMEOUT_S
    progress(10, "waiting for the server's gRPC port")
    while True:
        deployment = observe(get_deployment(deployment_id))
        if deployment.status == DeploymentStatus.RUNNING:
            progress(95, "running", public_url=deployment.public_url)
            return {
                "deployment_id": deployment_id,
                "status": deployment.status,
                "public_url": deployment.public_url,
                "inference_server_id": str(deployment.server_id),
            }
        if deployment.status in (DeploymentStatus.FAILED, DeploymentStatus.REMOVING):
            raise RuntimeError(
                f"inference server {deployment_id} is {deployment.status}: "
                f"{deployment.status_reason}"
            )
        restarts = max((w.restarts for w in workloads_of(deployment_id)), default=0)
        if restarts > conf.SERVER_START_MAX_RESTARTS or time.monotonic() > deadline:
            reason = next(
                (w.last_error for w in workloads_of(deployment_id) if w.last_error),
                f"its gRPC port did not answer within {conf.SERVER_START_TIMEOUT_S:.0f}s",
            )
            InferenceServerDeployment.objects.filter(pk=deployment_id).update(
                status=DeploymentStatus.FAILED, status_reason=reason[:2000]
            )
            raise RuntimeError(f"inference server {deployment_id} failed: {reason}")
        time.sleep(0.25)


def ensure_can_manage(deployment: InferenceServerDeployment, user) -> None:
    if user is None:
        return
    if not getattr(user, "is_authenticated", False):
        raise Forbidden("authentication is required")
    if user.is_staff or deployment.owner_id in (None, user.pk):
        return
    raise Forbidden(f"only the owner of {deployment.pk!r} or staff may do this")


def remove_deployment(
    deployment: InferenceServerDeployment, *, user=None, wait: bool = False
) -> dict[str, Any]:
    """Stop the server's workloads, unlist it from the registry, delete the record."""
    from apps.clusters.drivers import get_driver

    ensure_can_manage(deployment, user)
    driver = get_driver(deployment.cluster)
    InferenceServerDeployment.objects.filter(pk=deployment.pk).update(
        status=DeploymentStatus.REMOVING
    )
    ids = driver.remove_workloads(workloads_of(deployment.pk))
    if deployment.server_id:
        from apps.registries.models import InferenceServer

        InferenceServer.objects.filter(pk=deployment.server_id).delete()
    deployment_id = deployment.pk
    deployment.delete()
    if wait and ids:
        driver.wait_gone(ids, timeout_s=conf.SERVER_REMOVAL_WAIT_S)
    log.info("event=inference_server_removed deployment=%s workloads=%d", deployment_id, len(ids))
    return {"deployment_id": deployment_id, "removed": True, "workloads": len(ids)}


# -- search for servers ------------------------------------------------------------------------
def search_for_server(body: Any) -> dict[str, Any]:
    """A search/filter run for an adhoc server's ``query_parameters`` (validated as the
    parser's ``search``/``filter`` values; the AIOS envelope is accepted too)."""
    from apps.parser import validation
    from apps.search import engine

    if isinstance(body, dict) and isinstance(body.get("body"), dict):
        body = body["body"].get("values", body["body"])
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be the search values (a JSON object)")
    ranked = "rankingPolicyRule" in body
    values = validation.validate_values("search" if ranked else "filter", body)
    return engine.run_ir(values, ranked=ranked)


# -- request logs -------------------------------------------------------------------------------
def logs_of_session(session_id: str):
    return RequestLog.objects.filter(session_id=session_id).order_by("ts", "request_id")


def logs_of_request(request_id: str):
    return RequestLog.objects.filter(request_id=request_id).order_by("ts", "request_id")


def logs_of_block(block_id: str):
    return RequestLog.objects.filter(block_id=block_id).order_by("ts", "request_id")


def logs_of_session_block(session_id: Any, block_id: Any):
    if not isinstance(session_id, str) or not session_id:
        raise ValidationFailed("session_id is required", details=[{"field": "session_id"}])
    if not isinstance(block_id, str) or not block_id:
        raise ValidationFailed("block_id is required", details=[{"field": "block_id"}])
    queryset = RequestLog.objects.filter(session_id=session_id, block_id=block_id)
    return queryset.order_by("ts", "request_id")


def prune_request_logs(*, older_than_days: float) -> int:
    """Delete request logs older than ``older_than_days`` (the table grows with traffic;
    operators bound it with this, e.g. from ``aios_prune_request_logs``)."""
    from datetime import timedelta

    from django.utils import timezone

    if older_than_days < 0:
        raise ValidationFailed("older_than_days must be >= 0")
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = RequestLog.objects.filter(ts__lt=cutoff).delete()
    log.info("event=request_logs_pruned deleted=%d older_than_days=%s", deleted, older_than_days)
    return deleted
