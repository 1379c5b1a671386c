"""What a block runs, as workload specs, and the Redis keys the control plane owns for it.

Per block (DESIGN §7): one **executor** workload (the block's gRPC gateway), one **block
controller** workload (``python -m block_sdk.block_controller``: mapper, autoscaler, health
checker), ``N`` **instance** workloads running the component class, and for a managed
third-party component one **init** workload. The instance registry hash
``aios:block:{B}:instances`` is written here when an instance is created or removed (so
traffic reaches it at once) and kept current by the controller's mapper.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
import socket
import time
from typing import Any

import redis
from django.conf import settings

from apps.blocks import conf
from apps.blocks.specs import BlockValues, lb_policy_name
from apps.clusters.choices import RestartPolicy, WorkloadKind
from apps.clusters.drivers import WorkloadSpec
from block_sdk.block_controller.mapper import tombstone_key
from block_sdk.queues import BlockKeys

log = logging.getLogger("aios.blocks.runtime")

# AIOS's in-cluster ports (reference §1.2), used where the driver gives every pod its own IP.
DEFAULT_PORTS = {"grpc": 50051, "http": 18000, "instance_http": 18001, "controller": 10000}
REGISTRY_LB_POLICY = "block_sdk.block_controller.lb_adapter:RegistryLoadBalancer"
# ExecutorConfig fields a block may set through its loadBalancer rule's settings.
EXECUTOR_TUNABLES = (
    "max_queue_length",
    "max_pending",
    "request_timeout_s",
    "proxy_timeout_s",
    "max_attempts",
    "watch_interval_s",
    "params_ack_timeout_s",
)
TOMBSTONE_TTL_S = 120  # a removed instance is not re-registered by a stale mapper read
BIND_HOST = "0.0.0.0"  # noqa: S104 - block services are reached from other nodes


@functools.lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_for(cluster, name: str) -> int:
    """The local driver runs every process of a node on one host: each needs its own port."""
    if cluster.driver == "local":
        return free_port()
    return DEFAULT_PORTS[name]


def advertise_host(cluster, node) -> str:
    """Where clients reach a process on ``node``: an address the node declares
    (``nodeMetadata.address`` or ``.ip``), else the cluster's ``publicHostname``, else
    loopback (the local driver's embedded default: every agent on this machine). The agent's
    own ``hostname`` is not used: it may resolve to an interface the process does not serve."""
    meta = (node.node_metadata or {}) if node is not None else {}
    for key in ("address", "ip"):
        if isinstance(meta.get(key), str) and meta[key]:
            return meta[key]
    public = (cluster.config or {}).get("publicHostname")
    if isinstance(public, str) and public:
        return public
    return "127.0.0.1"


# -- the service token ---------------------------------------------------------------------
def token_key(block_id: str) -> str:
    return f"{BlockKeys(block_id).base}:svc-token"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(block_id: str) -> tuple[str, str]:
    """A new service token for the block's controller: ``(token, sha256)``. The token is
    handed over through Redis, never through a workload row (the API shows those)."""
    token = f"aios-blk-{secrets.token_urlsafe(32)}"
    redis_client().set(token_key(block_id), token, ex=conf.TOKEN_TTL_S)
    return token, hash_token(token)


# -- the instance registry hash -------------------------------------------------------------
def registry_info(instance) -> dict[str, Any]:
    return {
        "instance_id": instance.instance_id,
        "node_id": instance.node_id,
        "gpus": list(instance.gpus or []),
        "host": instance.host,
        "http_port": instance.http_port,
        "registered_at": time.time(),
    }


def register_instances(block_id: str, instances) -> None:
    mapping = {i.instance_id: json.dumps(registry_info(i)) for i in instances}
    if not mapping:
        return
    try:
        redis_client().hset(BlockKeys(block_id).instances, mapping=mapping)
    except redis.RedisError as exc:  # the controller's mapper heals this within one tick
        log.warning("event=instance_register_failed block_id=%s error=%r", block_id, exc)


def unregister_instances(block_id: str, instance_ids: list[str]) -> None:
    if not instance_ids:
        return
    keys = BlockKeys(block_id)
    try:
        pipe = redis_client().pipeline(transaction=False)
        pipe.hdel(keys.instances, *instance_ids)
        for iid in instance_ids:
            pipe.set(tombstone_key(keys, iid), "1", ex=TOMBSTONE_TTL_S)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("event=instance_unregister_failed block_id=%s error=%r", block_id, exc)


def registered_instances(block_id: str) -> dict[str, dict[str, Any]]:
    raw = redis_client().hgetall(BlockKeys(block_id).instances)
    out = {}
    for key, value in raw.items():
        try:
            out[key.decode()] = json.loads(value)
        except ValueError:
            out[key.decode()] = {}
    return out


def clear_block_keys(block_id: str) -> int:
    """Delete every Redis key of the block (queues, registry, parameters, token, init keys)."""
    client = redis_client()
    pattern = f"{BlockKeys(block_id).base}:*"
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=500):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.delete(*batch)
            batch = []
    if batch:
        deleted += client.delete(*batch)
    return deleted


# -- workload specs ---------------------------------------------------------------------------
def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def executor_spec(values: BlockValues, cluster, node, *, api_url: str) -> WorkloadSpec:
    grpc_port, http_port = port_for(cluster, "grpc"), port_for(cluster, "http")
    rule = values.policy("loadBalancer") or {}
    lb_settings = dict(rule.get("settings") or {})
    config: dict[str, Any] = {
        key: lb_settings.pop(key) for key in EXECUTOR_TUNABLES if key in lb_settings
    }
    name = lb_policy_name(rule or None)
    if name:
        config.update(lb_policy=name, lb_parameters=dict(rule.get("parameters") or {}))
        config["lb_settings"] = lb_settings
    else:
        config.update(
            lb_policy=REGISTRY_LB_POLICY,
            lb_parameters=dict(rule.get("parameters") or {}),
            lb_settings={
                "policy_rule_uri": rule["policyRuleURI"],
                "api_url": api_url,
                "settings": lb_settings,
            },
        )
    config.update(conf.executor_config_defaults())
    return WorkloadSpec(
        kind=WorkloadKind.EXECUTOR,
        entry_point="block_sdk.executor",
        args=[
            "--block-id",
            values.block_id,
            "--grpc-port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--grpc-host",
            BIND_HOST,
            "--http-host",
            BIND_HOST,
            "--executor-id",
            f"{values.block_id}-executor",
            "--config",
            _json(config),
        ],
        ports={"grpc": grpc_port, "http": http_port},
        node_id=node.id,
        restart_policy=RestartPolicy.ALWAYS,
        stop_grace_s=5.0,
        id=f"{values.block_id}-executor",
        labels={"role": "executor", "component": values.component_uri},
    )


def instance_spec(
    values: BlockValues,
    cluster,
    node,
    *,
    instance_id: str,
    gpus: list[int],
    block_doc: dict[str, Any],
) -> WorkloadSpec:
    http_port = port_for(cluster, "instance_http")
    env = {
        "BLOCK_DATA": _json(block_doc),
        "BLOCK_INIT_DATA": _json(values.block_init_data),
        "BLOCK_INIT_SETTINGS": _json(values.init_settings),
        "BLOCK_INIT_PARAMETERS": _json(values.parameters),
        "ALLOCATION_INFO": _json({"gpus": gpus, "node_id": node.id, "cluster_id": cluster.id}),
        "AIOS_INSTANCE_HTTP_HOST": BIND_HOST,
        "AIOS_INSTANCE_HTTP_PORT": str(http_port),
        "AIOS_INSTANCE_ADVERTISE_HOST": advertise_host(cluster, node),
        **conf.instance_env_defaults(),
    }
    return WorkloadSpec(
        kind=WorkloadKind.INSTANCE,
        entry_point="block_sdk.instance",
        args=["--entrypoint", values.entrypoint] if values.entrypoint else [],
        image=values.image,
        env=env,
        ports={"http": http_port},
        node_id=node.id,
        gpu_ids=list(gpus),
        resources={"gpus": len(gpus)},
        # The health checker owns recovery: a dead instance is replaced (new id, placement
        # checked again), not restarted in place behind the policy's back.
        restart_policy=RestartPolicy.NEVER,
        stop_grace_s=5.0,
        instance_id=instance_id,
        id=instance_id,
        labels={"role": "instance", "component": values.component_uri},
    )


def controller_config(
    values: BlockValues, cluster, *, api_url: str, executor_http: str, port: int
) -> dict[str, Any]:
    return {
        "block_id": values.block_id,
        "cluster_id": cluster.id,
        "api_url": api_url,
        "executor_http_url": executor_http,
        "http_host": BIND_HOST,
        "http_port": port,
        "min_instances": values.min_instances,
        "max_instances": values.max_instances,
        "autoscaler": values.policy("autoscaler"),
        "stability_checker": values.policy("stabilityChecker"),
        **conf.controller_overrides(),
    }


def controller_spec(
    values: BlockValues, cluster, node, *, api_url: str, executor_http: str
) -> tuple[WorkloadSpec, int]:
    port = port_for(cluster, "controller")
    config = controller_config(
        values, cluster, api_url=api_url, executor_http=executor_http, port=port
    )
    spec = WorkloadSpec(
        kind=WorkloadKind.SERVICE,
        entry_point="block_sdk.block_controller",
        env={"AIOS_BLOCK_CONTROLLER_CONFIG": _json(config)},
        ports={"http": port},
        node_id=node.id,
        restart_policy=RestartPolicy.ALWAYS,
        stop_grace_s=3.0,
        block_id=values.block_id,
        id=f"{values.block_id}-controller",
        labels={"role": "block_controller"},
    )
    return spec, port


def init_workload_spec(values: BlockValues, cluster, node, block_doc: dict[str, Any]):
    """The managed third-party system's init workload (None for other components)."""
    from block_sdk.third_party.init import init_argv, init_spec

    spec = init_spec(
        values.block_id,
        {"initContainer": values.init_container},
        block_init_data=values.block_init_data,
        block_data=block_doc,
        redis_url=settings.REDIS_URL,
    )
    if spec is None:
        return None
    return WorkloadSpec(
        kind=WorkloadKind.THIRD_PARTY_INIT,
        command=init_argv(spec),
        image=str(values.init_container.get("containerImage") or ""),
        node_id=node.id,
        restart_policy=RestartPolicy.ON_FAILURE,
        stop_grace_s=15.0,
        block_id=values.block_id,
        id=f"{values.block_id}-init",
        labels={"role": "third_party_init"},
    )
