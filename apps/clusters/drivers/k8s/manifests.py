"""Pure manifest builders: a workload (row or spec) and the cluster's settings -> dicts.

The driver applies exactly what these functions return and ``manage.py aios_k8s_render``
prints exactly the same, so the two cannot drift. Nothing here touches the database or the
network; everything a manifest depends on is in :class:`WorkloadView` and
:class:`~apps.clusters.drivers.k8s.config.K8sConfig`.

What each workload kind becomes:

======================  ==================================================================
kind                    objects (all named after the workload, in the workloads namespace)
======================  ==================================================================
executor                Deployment (rolling) + ClusterIP Service
instance                Deployment (Recreate), pinned with ``nodeSelector``; GPUs as
                        ``nvidia.com/gpu`` limits (exclusive) or ``NVIDIA_VISIBLE_DEVICES``
                        (declared shared); no Service (reached by pod IP via the registry)
vdag_controller         Deployment + Service
inference_server        Deployment + Service
service                 Deployment + Service (e.g. a block controller)
sidecar                 Deployment (Recreate) + Service when it has ports
third_party_init        Deployment (Recreate): the init workload is long-lived (it keeps the
                        third-party system alive and its finish data fresh)
function (T4)           Deployment (replicas owned by the HPA) + HorizontalPodAutoscaler
                        (+ Service when it has ports)
job (T3)                Job (``restartPolicy: Never``, ``backoffLimit`` from the restart
                        policy); its result is read back from the termination message/log
======================  ==================================================================
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from apps.clusters.choices import DesiredState, RestartPolicy, WorkloadKind
from apps.clusters.drivers.k8s import names
from apps.clusters.drivers.k8s.config import K8sConfig
from apps.core.errors import ValidationFailed

WORKLOAD_SERVICE_ACCOUNT = "aios-workload"
CONTROLLER_SERVICE_ACCOUNT = "aios-controller"
NODE_METRICS_SERVICE_ACCOUNT = "aios-node-metrics"
REDIS_SERVICE_ACCOUNT = "aios-redis"
REDIS_NAME = "aios-redis"
NODE_METRICS_NAME = "aios-node-metrics"
NODE_METRICS_TOKEN_SECRET = "aios-node-metrics-token"  # noqa: S105 - a Secret's name
NODE_METRICS_TOKEN_KEY = "token"  # noqa: S105 - a key name in it
NODE_METRICS_HEALTH_PORT = 9109
NODE_IDS_CONFIGMAP = "aios-node-ids"
NODE_IDS_FILE = "node-ids.json"
GPU_RESOURCE = "nvidia.com/gpu"
RESULT_PATH = "/dev/termination-log"

# AIOS's in-cluster ports (reference §1.2) for ports a workload asks as 0: each pod has its
# own IP, so the conventional numbers never collide.
DEFAULT_PORTS = {"grpc": 50051, "http": 18000, "instance_http": 18001, "controller": 10000}
FALLBACK_PORT_BASE = 8000
# Kinds whose Deployment gets a Service for its ports.
SERVICE_KINDS = frozenset(
    {
        WorkloadKind.EXECUTOR,
        WorkloadKind.VDAG_CONTROLLER,
        WorkloadKind.INFERENCE_SERVER,
        WorkloadKind.SERVICE,
        WorkloadKind.SIDECAR,
        WorkloadKind.FUNCTION,
    }
)
# Kinds that own state a second copy must not share (GPUs, an external system): replaced,
# never surged.
RECREATE_KINDS = frozenset(
    {WorkloadKind.INSTANCE, WorkloadKind.THIRD_PARTY_INIT, WorkloadKind.SIDECAR}
)
# Kinds the cluster's NetworkPolicy opens to every namespace (clients inside the cluster).
SERVING_KINDS = (
    WorkloadKind.EXECUTOR,
    WorkloadKind.VDAG_CONTROLLER,
    WorkloadKind.INFERENCE_SERVER,
)
# Requests (vCPUs, MB) when the workload names none.
DEFAULT_REQUESTS: dict[str, tuple[float, int]] = {
    WorkloadKind.EXECUTOR: (0.25, 256),
    WorkloadKind.INSTANCE: (0.5, 512),
    WorkloadKind.VDAG_CONTROLLER: (0.25, 256),
    WorkloadKind.INFERENCE_SERVER: (0.25, 256),
    WorkloadKind.FUNCTION: (0.25, 256),
    WorkloadKind.JOB: (0.25, 256),
}
DEFAULT_REQUEST = (0.1, 128)
DEFAULT_MEMORY_LIMIT_MB = 1024
STARTUP_TIMEOUT_S = 300
# Modules the runtime image's entry point knows by a role name (deploy/images/bin/aios-runtime):
# the role lets its health check find the right endpoint.
RUNTIME_ROLES = {
    "block_sdk.executor": "executor",
    "block_sdk.instance": "instance",
    "block_sdk.policy_runtime.executor": "policy-executor",
    "block_sdk.policy_runtime.function_server": "policy-function",
    "block_sdk.vdag_controller": "vdag-controller",
    "block_sdk.inference_server": "inference-server",
    "block_sdk.node_metrics": "node-metrics",
}
_PYTHON_RE = re.compile(r"^python(\d+(\.\d+)?)?$")


# -- the input ---------------------------------------------------------------------------------
@dataclass
class WorkloadView:
    """Everything a workload's manifests depend on (from a ``Workload`` row or a
    ``WorkloadSpec``), plus the GPU facts the driver looks up on the node."""

    id: str
    kind: str
    cluster_id: str
    node_id: str
    entry_point: str = ""
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    image: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    gpu_ids: list[int] = field(default_factory=list)
    gpu_shared: bool = False
    gpu_uuids: list[str] = field(default_factory=list)
    probes: dict[str, Any] = field(default_factory=dict)
    restart_policy: str = RestartPolicy.ALWAYS
    max_restarts: int = 0
    stop_grace_s: float = 5.0
    block_id: str = ""
    instance_id: str = ""
    labels: dict[str, Any] = field(default_factory=dict)
    desired_state: str = DesiredState.RUNNING
    generation: int = 1

    @classmethod
    def from_row(cls, workload, *, gpu_shared: bool = False, gpu_uuids=()) -> WorkloadView:
        return cls(
            id=workload.id,
            kind=workload.kind,
            cluster_id=workload.cluster_id,
            node_id=workload.node_id,
            entry_point=workload.entry_point or "",
            command=list(workload.command or []),
            args=list(workload.args or []),
            env=dict(workload.env or {}),
            image=workload.image or "",
            ports=dict(workload.ports or {}),
            resources=dict(workload.resources or {}),
            gpu_ids=list(workload.gpu_ids or []),
            gpu_shared=gpu_shared,
            gpu_uuids=list(gpu_uuids),
            probes=dict(workload.probes or {}),
            restart_policy=workload.restart_policy,
            max_restarts=workload.max_restarts,
            stop_grace_s=workload.stop_grace_s,
            block_id=workload.block_id or "",
            instance_id=workload.instance_id or "",
            labels=dict(workload.labels or {}),
            desired_state=DesiredState.STOPPED
            if workload.remove_requested
            else workload.desired_state,
            generation=workload.generation,
        )

    @classmethod
    def from_spec(
        cls, spec, *, cluster_id: str, gpu_shared: bool = False, gpu_uuids=()
    ) -> WorkloadView:
        """A spec as ``create_workload`` would store it (id and node settled by the caller)."""
        if not spec.id or not spec.node_id:
            raise ValueError("the spec needs its id and node_id settled")
        return cls(
            id=spec.id,
            kind=spec.kind,
            cluster_id=cluster_id,
            node_id=spec.node_id,
            entry_point=spec.entry_point,
            command=list(spec.command),
            args=list(spec.args),
            env=dict(spec.env),
            image=spec.image,
            ports=dict(spec.ports),
            resources=dict(spec.resources),
            gpu_ids=list(spec.gpu_ids),
            gpu_shared=gpu_shared,
            gpu_uuids=list(gpu_uuids),
            probes=dict(spec.probes),
            restart_policy=spec.restart_policy,
            max_restarts=spec.max_restarts,
            stop_grace_s=spec.stop_grace_s,
            block_id=spec.block_id,
            instance_id=spec.instance_id,
            labels=dict(spec.labels),
        )

    @property
    def running(self) -> bool:
        return self.desired_state == DesiredState.RUNNING

    @property
    def gpu_count(self) -> int:
        if self.gpu_ids:
            return len(self.gpu_ids)
        return _whole(self.resources.get("gpus"), "resources.gpus", default=0)


def assign_ports(ports: dict[str, int]) -> dict[str, int]:
    """Ports asked as 0 get AIOS's conventional number for their name, else the first free
    number from 8000 (every pod has its own IP, so nothing else can collide)."""
    taken = {p for p in ports.values() if p}
    out: dict[str, int] = {}
    next_port = FALLBACK_PORT_BASE
    for name in sorted(ports):
        port = ports[name]
        if not port:
            port = DEFAULT_PORTS.get(name, 0)
            if not port or port in taken:
                while next_port in taken:
                    next_port += 1
                port = next_port
            taken.add(port)
        out[name] = port
    return {name: out[name] for name in ports}


# -- small helpers ----------------------------------------------------------------------------
def _bad(field_name: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"{field_name}: {message}", details=[{"field": field_name, "message": message}]
    )


def _number(value: Any, what: str, *, default: float) -> float:
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _bad(what, "must be a number >= 0")
    return float(value) or default


def _whole(value: Any, what: str, *, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(what, "must be a whole number >= 0")
    return value


def cpu_quantity(vcpus: float) -> str:
    return f"{max(1, round(vcpus * 1000))}m"


def kind_slug(kind: str) -> str:
    return kind.replace("_", "-")


def object_labels(view: WorkloadView) -> dict[str, str]:
    labels = {
        names.MANAGED_BY: names.MANAGED_BY_VALUE,
        names.PART_OF: "aios",
        names.APP_NAME: f"aios-{kind_slug(view.kind)}",
        names.APP_COMPONENT: kind_slug(view.kind),
        names.CLUSTER_ID: names.label_value(view.cluster_id),
        names.WORKLOAD_ID: names.label_value(view.id),
        names.KIND: view.kind,
        names.NODE_ID: names.label_value(view.node_id),
    }
    if view.block_id:
        labels[names.BLOCK_ID] = names.label_value(view.block_id)
    if view.instance_id:
        labels[names.INSTANCE_ID] = names.label_value(view.instance_id)
    return labels


def selector_labels(cluster_id: str, workload_id: str) -> dict[str, str]:
    return {
        names.CLUSTER_ID: names.label_value(cluster_id),
        names.WORKLOAD_ID: names.label_value(workload_id),
    }


def workload_selector(cluster_id: str, workload_id: str | None = None) -> dict[str, str]:
    """The label selector that finds a workload's objects (or all workload objects)."""
    selector = {
        names.MANAGED_BY: names.MANAGED_BY_VALUE,
        names.CLUSTER_ID: names.label_value(cluster_id),
    }
    if workload_id is not None:
        selector[names.WORKLOAD_ID] = names.label_value(workload_id)
    return selector


def _metadata(
    name: str, namespace: str | None, labels: dict[str, str], annotations: dict[str, str]
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def finalize(obj: dict[str, Any]) -> dict[str, Any]:
    """Stamp the spec hash the driver compares to decide whether to write at all."""
    obj.setdefault("metadata", {}).setdefault("annotations", {})[names.SPEC_HASH] = names.spec_hash(
        obj
    )
    return obj


# -- containers -------------------------------------------------------------------------------
def _argv(view: WorkloadView) -> tuple[list[str] | None, list[str]]:
    """(command, args) of the container. The runtime image's ENTRYPOINT is ``aios-runtime``:
    entry points become its role/``module``/``entry`` arguments; a raw ``command`` replaces
    the ENTRYPOINT, with a host interpreter path (``/…/.venv/bin/python``) mapped to the
    image's ``python``."""
    args = [str(a) for a in view.args]
    if view.command:
        command = [str(c) for c in view.command]
        if _PYTHON_RE.match(os.path.basename(command[0])):
            command[0] = "python"
        return command, args
    if ":" in view.entry_point:
        return None, ["entry", view.entry_point, *args]
    if view.entry_point in RUNTIME_ROLES:
        return None, [RUNTIME_ROLES[view.entry_point], *args]
    if view.entry_point:
        return None, ["module", view.entry_point, *args]
    return None, args  # an image with its own entry point


def _env(view: WorkloadView, cfg: K8sConfig) -> list[dict[str, Any]]:
    refs = {
        "POD_NAME": "metadata.name",
        "POD_IP": "status.podIP",
        "K8S_NODE_NAME": "spec.nodeName",
        "AIOS_NAMESPACE": "metadata.namespace",
    }
    values: dict[str, str] = {
        "REDIS_URL": cfg.redis_url,
        "AIOS_REDIS_URL": cfg.redis_url,
        "AIOS_CONTROL_PLANE_URL": cfg.control_plane_url,
        "AIOS_WORKLOAD_ID": view.id,
        "AIOS_WORKLOAD_KIND": view.kind,
        "AIOS_CLUSTER_ID": view.cluster_id,
        "AIOS_NODE_ID": view.node_id,
        "NODE_ID": view.node_id,
        "AIOS_RUN_DIR": "/tmp",  # noqa: S108 - an emptyDir; the root filesystem is read-only
        "PYTHONUNBUFFERED": "1",
    }
    if cfg.pod_security == "restricted":
        values["HOME"] = "/tmp"  # noqa: S108 - libraries write caches under $HOME
    if view.block_id:
        values["BLOCK_ID"] = view.block_id
    if view.instance_id:
        values["INSTANCE_ID"] = view.instance_id
    count = view.gpu_count
    if count and view.gpu_shared:
        # Declared shared GPUs: no device-plugin resource (it would hand out whole GPUs);
        # the NVIDIA runtime exposes exactly these devices.
        ids = view.gpu_uuids if len(view.gpu_uuids) == len(view.gpu_ids) else view.gpu_ids
        values["NVIDIA_VISIBLE_DEVICES"] = ",".join(str(i) for i in ids)
        values["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility"
    elif not count:
        # A CUDA base image sets NVIDIA_VISIBLE_DEVICES=all; a CPU workload must see none.
        values["NVIDIA_VISIBLE_DEVICES"] = "none"
    if view.gpu_ids:
        values["AIOS_GPU_IDS"] = ",".join(str(i) for i in view.gpu_ids)
    for name, port in sorted(view.ports.items()):
        values[f"AIOS_PORT_{name.upper()}"] = str(port)
    if view.kind == WorkloadKind.JOB:
        values["AIOS_RESULT_PATH"] = RESULT_PATH
    own = {str(k): str(v) for k, v in sorted(view.env.items())}
    env: list[dict[str, Any]] = [
        {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
        for name, path in refs.items()
        if name not in own
    ]
    merged = {**values, **own}
    env.extend({"name": name, "value": value} for name, value in merged.items())
    return env


def _resources(view: WorkloadView) -> dict[str, Any]:
    r = view.resources
    cpu_default, mem_default = DEFAULT_REQUESTS.get(view.kind, DEFAULT_REQUEST)
    cpu = _number(r.get("vcpus"), "resources.vcpus", default=cpu_default)
    memory = int(_number(r.get("memory_mb"), "resources.memory_mb", default=mem_default))
    cpu_limit = _number(r.get("vcpus_limit"), "resources.vcpus_limit", default=max(cpu * 2, 1.0))
    # A declared memory size is a guarantee (request = limit); without one, a small request
    # with headroom.
    memory_limit = int(
        _number(
            r.get("memory_limit_mb"),
            "resources.memory_limit_mb",
            default=memory if r.get("memory_mb") else max(memory, DEFAULT_MEMORY_LIMIT_MB),
        )
    )
    if cpu_limit < cpu or memory_limit < memory:
        raise _bad("resources", "limits must not be below requests")
    requests = {"cpu": cpu_quantity(cpu), "memory": f"{memory}Mi"}
    limits = {"cpu": cpu_quantity(cpu_limit), "memory": f"{memory_limit}Mi"}
    if view.gpu_count and not view.gpu_shared:
        requests[GPU_RESOURCE] = str(view.gpu_count)
        limits[GPU_RESOURCE] = str(view.gpu_count)
    return {"requests": requests, "limits": limits}


def _port_ref(value: Any, ports: dict[str, int], what: str) -> int:
    if isinstance(value, str) and value in ports:
        return ports[value]
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 65535:
        return value
    raise _bad(what, f"port {value!r} is neither a port name of the workload nor a number")


def _probe_handler(spec: dict[str, Any], ports: dict[str, int], what: str) -> dict[str, Any]:
    if "http" in spec:
        http = spec["http"] or {}
        path = http.get("path", "/health")
        if not isinstance(path, str) or not path.startswith("/"):
            raise _bad(f"{what}.http.path", "must be a path starting with /")
        port = _port_ref(http.get("port", "http"), ports, f"{what}.http.port")
        return {"httpGet": {"path": path, "port": port}}
    if "tcp" in spec:
        tcp = spec["tcp"] or {}
        return {"tcpSocket": {"port": _port_ref(tcp.get("port"), ports, f"{what}.tcp.port")}}
    if "grpc" in spec:
        grpc = spec["grpc"] or {}
        handler: dict[str, Any] = {"port": _port_ref(grpc.get("port", "grpc"), ports, what)}
        if grpc.get("service"):
            handler["service"] = str(grpc["service"])
        return {"grpc": handler}
    if "exec" in spec:
        command = spec["exec"]
        command = command.get("command") if isinstance(command, dict) else command
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(c, str) for c in command)
        ):
            raise _bad(f"{what}.exec", "must be a non-empty list of strings")
        return {"exec": {"command": list(command)}}
    raise _bad(what, "needs one of http, tcp, grpc, exec")


_TIMINGS = {
    "initial_delay_s": "initialDelaySeconds",
    "period_s": "periodSeconds",
    "timeout_s": "timeoutSeconds",
    "failure_threshold": "failureThreshold",
}


def _probe(spec: Any, ports: dict[str, int], what: str, defaults: dict[str, int]) -> dict:
    if not isinstance(spec, dict):
        raise _bad(what, "must be an object")
    probe = _probe_handler(spec, ports, what)
    for key, k8s_key in _TIMINGS.items():
        value = spec.get(key, defaults.get(k8s_key))
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise _bad(f"{what}.{key}", "must be a number >= 0")
        probe[k8s_key] = (
            max(1, math.ceil(value)) if k8s_key != "initialDelaySeconds" else int(value)
        )
    return probe


def _default_handler(view: WorkloadView, cfg: K8sConfig) -> dict[str, Any]:
    """A workload that declares no probe: its HTTP /health, else a TCP check of its (gRPC)
    port, else the runtime image's role-aware ``aios-healthcheck`` (healthy while the
    process runs when the role serves nothing), else a liveness check of PID 1."""
    if "http" in view.ports:
        return {"http": {"path": "/health", "port": "http"}}
    if view.ports:
        name = "grpc" if "grpc" in view.ports else sorted(view.ports)[0]
        return {"tcp": {"port": name}}
    if not view.image or view.image == cfg.runtime_image or view.entry_point:
        return {"exec": ["aios-healthcheck"]}
    return {"exec": ["/bin/sh", "-c", "kill -0 1"]}


def _probes(view: WorkloadView, cfg: K8sConfig, *, long_running: bool) -> dict[str, Any]:
    declared = view.probes or {}
    if not isinstance(declared, dict):
        raise _bad("probes", "must be an object")
    unknown = sorted(set(declared) - {"liveness", "readiness", "startup"})
    if unknown:
        raise _bad("probes", f"unknown probe {unknown[0]!r} (liveness, readiness, startup)")
    default = _default_handler(view, cfg)
    liveness = declared.get("liveness") or default
    readiness = declared.get("readiness") or declared.get("liveness") or default
    out = {
        "livenessProbe": _probe(
            liveness,
            view.ports,
            "probes.liveness",
            {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        ),
        "readinessProbe": _probe(
            readiness,
            view.ports,
            "probes.readiness",
            {"periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3},
        ),
    }
    if long_running:
        # Model loading may take minutes: liveness only starts once this has passed once.
        startup = declared.get("startup") or liveness
        out["startupProbe"] = _probe(
            startup,
            view.ports,
            "probes.startup",
            {
                "periodSeconds": 5,
                "timeoutSeconds": 5,
                "failureThreshold": STARTUP_TIMEOUT_S // 5,
            },
        )
    return out


def pod_security_context(cfg: K8sConfig, uid: int = 10001) -> dict[str, Any]:
    if cfg.pod_security == "restricted":
        return {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    return {"seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context(cfg: K8sConfig) -> dict[str, Any]:
    if cfg.pod_security == "restricted":
        return {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
    return {"allowPrivilegeEscalation": False}


def _container(view: WorkloadView, cfg: K8sConfig, *, long_running: bool) -> dict[str, Any]:
    command, args = _argv(view)
    container: dict[str, Any] = {
        "name": kind_slug(view.kind),
        "image": view.image or cfg.runtime_image,
        "imagePullPolicy": cfg.image_pull_policy,
    }
    if command is not None:
        container["command"] = command
    if args:
        container["args"] = args
    container["env"] = _env(view, cfg)
    if view.ports:
        ports = []
        seen: set[int] = set()
        for name, number in sorted(view.ports.items()):
            if number in seen:  # two names for one port: Kubernetes lists a port once
                continue
            seen.add(number)
            port: dict[str, Any] = {"containerPort": number, "protocol": "TCP"}
            if names.port_name(name):
                port["name"] = names.port_name(name)
            ports.append(port)
        container["ports"] = ports
    container["resources"] = _resources(view)
    container.update(_probes(view, cfg, long_running=long_running))
    container["securityContext"] = container_security_context(cfg)
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    container["volumeMounts"] = [
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
        {"name": "data", "mountPath": "/var/lib/aios"},
    ]
    return container


def _pod_template(
    view: WorkloadView, cfg: K8sConfig, labels: dict[str, str], *, long_running: bool
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": WORKLOAD_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "nodeSelector": {names.NODE_ID: names.label_value(view.node_id)},
        "securityContext": pod_security_context(cfg),
        "terminationGracePeriodSeconds": max(1, math.ceil(view.stop_grace_s)),
        "containers": [_container(view, cfg, long_running=long_running)],
        "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "data", "emptyDir": {}}],
    }
    if not long_running:
        spec["restartPolicy"] = "Never"
    if view.gpu_count:
        # GPU node pools are commonly tainted nvidia.com/gpu:NoSchedule.
        spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
        if cfg.gpu_runtime_class:
            spec["runtimeClassName"] = cfg.gpu_runtime_class
    if cfg.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in cfg.image_pull_secrets]
    return {
        "metadata": {
            "labels": dict(labels),
            "annotations": {
                names.GENERATION: str(view.generation),
                names.WORKLOAD_FULL_ID: view.id,
            },
        },
        "spec": spec,
    }


# -- one workload -------------------------------------------------------------------------------
def _autoscaling(view: WorkloadView) -> tuple[int, int, int]:
    auto = view.resources.get("autoscaling") or {}
    if not isinstance(auto, dict):
        raise _bad("resources.autoscaling", "must be an object")
    low = _whole(auto.get("min_replicas"), "resources.autoscaling.min_replicas", default=1)
    high = _whole(auto.get("max_replicas"), "resources.autoscaling.max_replicas", default=low)
    target = _whole(
        auto.get("target_cpu_utilization_percentage"),
        "resources.autoscaling.target_cpu_utilization_percentage",
        default=80,
    )
    if not 1 <= low <= high <= 1000 or not 1 <= target <= 100:
        raise _bad(
            "resources.autoscaling",
            "needs 1 <= min_replicas <= max_replicas <= 1000 and a target from 1 to 100",
        )
    return low, high, target


def _backoff_limit(view: WorkloadView) -> int:
    if view.restart_policy == RestartPolicy.NEVER:
        return 0
    return view.max_restarts or 6  # 0 means "unlimited" on the local driver; Kubernetes' default


def workload_manifests(view: WorkloadView, cfg: K8sConfig) -> list[dict[str, Any]]:
    """The objects of one workload, in apply order, each stamped with its spec hash."""
    if view.kind not in WorkloadKind.values:
        raise _bad("kind", f"unknown workload kind {view.kind!r}")
    name = names.workload_object_name(view.id)
    ns = cfg.namespace
    labels = object_labels(view)
    annotations = {
        names.WORKLOAD_FULL_ID: view.id,
        "aios.io/labels": json.dumps(view.labels, sort_keys=True, default=str),
    }
    selector = selector_labels(view.cluster_id, view.id)
    docs: list[dict[str, Any]] = []

    if view.kind == WorkloadKind.JOB:
        deadline = _whole(
            view.resources.get("timeout_s"), "resources.timeout_s", default=cfg.job_deadline_s
        )
        docs.append(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": _metadata(name, ns, labels, annotations),
                "spec": {
                    "backoffLimit": _backoff_limit(view),
                    "activeDeadlineSeconds": max(1, deadline),
                    "suspend": not view.running,
                    "template": _pod_template(view, cfg, labels, long_running=False),
                },
            }
        )
        return [finalize(d) for d in docs]

    autoscaled = view.kind == WorkloadKind.FUNCTION
    deployment_spec: dict[str, Any] = {}
    if not (autoscaled and view.running):  # the HPA owns replicas while it exists
        deployment_spec["replicas"] = 1 if view.running else 0
    deployment_spec["selector"] = {"matchLabels": selector}
    deployment_spec["strategy"] = (
        {"type": "Recreate"}
        if view.kind in RECREATE_KINDS
        else {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    )
    deployment_spec["revisionHistoryLimit"] = 3
    deployment_spec["template"] = _pod_template(view, cfg, labels, long_running=True)
    docs.append(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(name, ns, labels, annotations),
            "spec": deployment_spec,
        }
    )
    if autoscaled and view.running:
        low, high, target = _autoscaling(view)
        docs.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": _metadata(name, ns, labels, annotations),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": low,
                    "maxReplicas": high,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {"type": "Utilization", "averageUtilization": target},
                            },
                        }
                    ],
                },
            }
        )
    if view.kind in SERVICE_KINDS and view.ports:
        ports = []
        seen: set[int] = set()
        for port_name, number in sorted(view.ports.items()):
            if number in seen:
                continue
            seen.add(number)
            port: dict[str, Any] = {
                "name": port_name.replace("_", "-"),
                "port": number,
                "targetPort": number,
                "protocol": "TCP",
            }
            if port_name == "grpc":
                port["appProtocol"] = "kubernetes.io/h2c"
            ports.append(port)
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _metadata(name, ns, labels, annotations),
                "spec": {"type": "ClusterIP", "selector": selector, "ports": ports},
            }
        )
    return [finalize(d) for d in docs]


def service_host(cfg: K8sConfig, workload_id: str) -> str:
    """The in-cluster DNS name of a workload's Service."""
    return f"{names.workload_object_name(workload_id)}.{cfg.namespace}.svc"


# -- the cluster ---------------------------------------------------------------------------------
def _cluster_labels(cfg: K8sConfig, component: str) -> dict[str, str]:
    return {
        names.MANAGED_BY: names.MANAGED_BY_VALUE,
        names.PART_OF: "aios",
        names.APP_COMPONENT: component,
        names.CLUSTER_ID: names.label_value(cfg.cluster_id),
    }


def _obj(
    cfg: K8sConfig,
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None,
    component: str,
    body: dict[str, Any] | None = None,
    *,
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    labels = {**_cluster_labels(cfg, component), **(extra_labels or {})}
    doc: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": _metadata(name, namespace, labels, {}),
    }
    doc.update(body or {})
    return doc


_CONTROLLER_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]
_READ_VERBS = ["get", "list", "watch"]


def _gateway_peers(cfg: K8sConfig) -> list[dict[str, Any]]:
    peers = [json.loads(json.dumps(p)) for p in cfg.gateway_peers]
    peers.extend({"ipBlock": {"cidr": cidr}} for cidr in cfg.gateway_cidrs)
    return peers


def _namespace_peer(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def _redis_objects(cfg: K8sConfig) -> list[dict[str, Any]]:
    sys_ns = cfg.system_namespace
    selector = {**selector_labels(cfg.cluster_id, REDIS_NAME)}
    labels = {names.WORKLOAD_ID: names.label_value(REDIS_NAME)}
    maxmemory = max(32, int(cfg.redis_memory_mb * 0.8))  # headroom for Redis itself
    container = {
        "name": "redis",
        "image": cfg.redis_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "args": [
            "redis-server",
            "--save",
            "",
            "--appendonly",
            "no",
            # No password: only this cluster's pods and the gateway reach it (the
            # NetworkPolicy below); protected mode would refuse them all.
            "--protected-mode",
            "no",
            "--maxmemory",
            f"{maxmemory}mb",
            # Queues must not lose entries silently: writes fail instead when full.
            "--maxmemory-policy",
            "noeviction",
        ],
        "ports": [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": "100m", "memory": f"{cfg.redis_memory_mb // 4}Mi"},
            "limits": {"cpu": "1000m", "memory": f"{cfg.redis_memory_mb}Mi"},
        },
        "livenessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 10, "timeoutSeconds": 5},
        "readinessProbe": {
            "exec": {"command": ["redis-cli", "ping"]},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    return [
        _obj(
            cfg,
            "apps/v1",
            "Deployment",
            REDIS_NAME,
            sys_ns,
            "redis",
            {
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": selector},
                    "strategy": {"type": "Recreate"},
                    "revisionHistoryLimit": 3,
                    "template": {
                        "metadata": {
                            "labels": {**_cluster_labels(cfg, "redis"), **labels, **selector}
                        },
                        "spec": {
                            "serviceAccountName": REDIS_SERVICE_ACCOUNT,
                            "automountServiceAccountToken": False,
                            "enableServiceLinks": False,
                            # The official redis image's user.
                            "securityContext": {
                                **pod_security_context(cfg, uid=999),
                                "runAsNonRoot": True,
                                "runAsUser": 999,
                                "runAsGroup": 999,
                                "fsGroup": 999,
                            },
                            "containers": [container],
                            "volumes": [{"name": "data", "emptyDir": {}}],
                        },
                    },
                }
            },
            extra_labels=labels,
        ),
        _obj(
            cfg,
            "v1",
            "Service",
            REDIS_NAME,
            sys_ns,
            "redis",
            {
                "spec": {
                    "type": "ClusterIP",
                    "selector": selector,
                    "ports": [
                        {"name": "redis", "port": 6379, "targetPort": 6379, "protocol": "TCP"}
                    ],
                }
            },
            extra_labels=labels,
        ),
    ]


def _node_metrics_objects(cfg: K8sConfig, node_ids: dict[str, str]) -> list[dict[str, Any]]:
    sys_ns = cfg.system_namespace
    selector = selector_labels(cfg.cluster_id, NODE_METRICS_NAME)
    labels = {names.WORKLOAD_ID: names.label_value(NODE_METRICS_NAME)}
    configmap = _obj(
        cfg,
        "v1",
        "ConfigMap",
        NODE_IDS_CONFIGMAP,
        sys_ns,
        "node-metrics",
        # Kubernetes node name -> AIOS node id: the downward API cannot read node labels.
        {"data": {NODE_IDS_FILE: json.dumps(dict(sorted(node_ids.items())), indent=1)}},
    )
    container = {
        "name": "node-metrics",
        "image": cfg.node_metrics_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "env": [
            {
                "name": "AIOS_K8S_NODE_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
            },
            {"name": "AIOS_CLUSTER_ID", "value": cfg.cluster_id},
            {"name": "AIOS_NODE_ID_FILE", "value": f"/etc/aios/{NODE_IDS_FILE}"},
            {"name": "AIOS_HOST_ROOT", "value": "/host"},
            {"name": "AIOS_CONTROL_PLANE_URL", "value": cfg.control_plane_url},
            {"name": "REDIS_URL", "value": cfg.redis_url},
            # GPU utilisation through NVML on GPU nodes (read-only "utility" capability).
            {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
            {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "utility"},
            {"name": "AIOS_RUN_DIR", "value": "/tmp"},  # noqa: S108
            # The token the agent pushes with (docs/kubernetes.md §7): an optional Secret the
            # operator creates; re-read on every push, so rotating it needs no restart.
            {"name": "AIOS_API_TOKEN_FILE", "value": f"/etc/aios-token/{NODE_METRICS_TOKEN_KEY}"},
            {"name": "AIOS_HEALTH_PORT", "value": str(NODE_METRICS_HEALTH_PORT)},
        ],
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "200m", "memory": "256Mi"},
        },
        # /health answers 503 only when sampling stalls, not while the control plane is down.
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": NODE_METRICS_HEALTH_PORT},
            "periodSeconds": 30,
            "timeoutSeconds": 5,
        },
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": NODE_METRICS_HEALTH_PORT},
            "periodSeconds": 30,
            "timeoutSeconds": 5,
        },
        "securityContext": container_security_context(cfg)
        | {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "host", "mountPath": "/host", "readOnly": True},
            {"name": "node-ids", "mountPath": "/etc/aios", "readOnly": True},
            {"name": "token", "mountPath": "/etc/aios-token", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
        ],
    }
    daemonset = _obj(
        cfg,
        "apps/v1",
        "DaemonSet",
        NODE_METRICS_NAME,
        sys_ns,
        "node-metrics",
        {
            "spec": {
                "selector": {"matchLabels": selector},
                "updateStrategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 1},
                },
                "template": {
                    "metadata": {
                        "labels": {**_cluster_labels(cfg, "node-metrics"), **labels, **selector}
                    },
                    "spec": {
                        "serviceAccountName": NODE_METRICS_SERVICE_ACCOUNT,
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        # Only on this cluster's AIOS nodes, whatever their taints.
                        "nodeSelector": {names.CLUSTER_ID: names.label_value(cfg.cluster_id)},
                        "tolerations": [{"operator": "Exists"}],
                        # Host network interface counters need the host's network namespace.
                        "hostNetwork": True,
                        "dnsPolicy": "ClusterFirstWithHostNet",
                        "securityContext": pod_security_context(cfg),
                        "containers": [container],
                        "volumes": [
                            {"name": "host", "hostPath": {"path": "/", "type": "Directory"}},
                            {"name": "node-ids", "configMap": {"name": NODE_IDS_CONFIGMAP}},
                            {
                                "name": "token",
                                "secret": {
                                    "secretName": NODE_METRICS_TOKEN_SECRET,
                                    "optional": True,
                                },
                            },
                            {"name": "tmp", "emptyDir": {}},
                        ],
                    },
                },
            }
        },
        extra_labels=labels,
    )
    return [configmap, daemonset]


def cluster_manifests(cfg: K8sConfig, node_ids: dict[str, str] | None = None) -> list[dict]:
    """Everything ``provision_cluster`` applies, in order. ``node_ids`` maps Kubernetes node
    names to AIOS node ids (the node-metrics agent's lookup table)."""
    ns, sys_ns, cid = cfg.namespace, cfg.system_namespace, cfg.cluster_id
    controller_rules_ns = [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": _CONTROLLER_VERBS},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": _CONTROLLER_VERBS},
        {
            "apiGroups": ["autoscaling"],
            "resources": ["horizontalpodautoscalers"],
            "verbs": _CONTROLLER_VERBS,
        },
        {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": _CONTROLLER_VERBS},
        {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": _READ_VERBS},
    ]
    controller_rules_sys = [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "daemonsets"],
            "verbs": _CONTROLLER_VERBS,
        },
        {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": _CONTROLLER_VERBS},
        {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": _READ_VERBS},
    ]
    subject = [{"kind": "ServiceAccount", "name": CONTROLLER_SERVICE_ACCOUNT, "namespace": ns}]
    workload_enforce = cfg.pod_security
    # hostNetwork and a hostPath volume (node metrics) are only allowed at "privileged".
    system_enforce = "privileged" if cfg.node_metrics else "restricted"
    docs: list[dict[str, Any]] = [
        _obj(
            cfg,
            "v1",
            "Namespace",
            ns,
            None,
            "workloads",
            extra_labels={
                "pod-security.kubernetes.io/enforce": workload_enforce,
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
        ),
        _obj(
            cfg,
            "v1",
            "Namespace",
            sys_ns,
            None,
            "system",
            extra_labels={
                "pod-security.kubernetes.io/enforce": system_enforce,
                "pod-security.kubernetes.io/warn": system_enforce,
            },
        ),
        # User workloads run as an identity with no API rights and no token mounted.
        _obj(
            cfg,
            "v1",
            "ServiceAccount",
            WORKLOAD_SERVICE_ACCOUNT,
            ns,
            "workloads",
            {"automountServiceAccountToken": False},
        ),
        # The identity a scoped kubeconfig for the control plane can use after provisioning
        # (docs/kubernetes.md): namespaced rights only, plus reading and labelling nodes.
        _obj(
            cfg,
            "v1",
            "ServiceAccount",
            CONTROLLER_SERVICE_ACCOUNT,
            ns,
            "controller",
            {"automountServiceAccountToken": False},
        ),
        _obj(
            cfg,
            "rbac.authorization.k8s.io/v1",
            "Role",
            CONTROLLER_SERVICE_ACCOUNT,
            ns,
            "controller",
            {"rules": controller_rules_ns},
        ),
        _obj(
            cfg,
            "rbac.authorization.k8s.io/v1",
            "Role",
            CONTROLLER_SERVICE_ACCOUNT,
            sys_ns,
            "controller",
            {"rules": controller_rules_sys},
        ),
        _obj(
            cfg,
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            CONTROLLER_SERVICE_ACCOUNT,
            ns,
            "controller",
            {
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": CONTROLLER_SERVICE_ACCOUNT,
                },
                "subjects": subject,
            },
        ),
        _obj(
            cfg,
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            CONTROLLER_SERVICE_ACCOUNT,
            sys_ns,
            "controller",
            {
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": CONTROLLER_SERVICE_ACCOUNT,
                },
                "subjects": subject,
            },
        ),
        _obj(
            cfg,
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            names.cluster_scoped_name(cid, "nodes"),
            None,
            "controller",
            {
                "rules": [
                    {"apiGroups": [""], "resources": ["nodes"], "verbs": [*_READ_VERBS, "patch"]}
                ]
            },
        ),
        _obj(
            cfg,
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            names.cluster_scoped_name(cid, "nodes"),
            None,
            "controller",
            {
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": names.cluster_scoped_name(cid, "nodes"),
                },
                "subjects": subject,
            },
        ),
    ]
    if cfg.node_metrics:
        docs.append(
            _obj(
                cfg,
                "v1",
                "ServiceAccount",
                NODE_METRICS_SERVICE_ACCOUNT,
                sys_ns,
                "node-metrics",
                {"automountServiceAccountToken": False},
            )
        )
        docs.extend(_node_metrics_objects(cfg, node_ids or {}))
    if cfg.in_cluster_redis:
        docs.append(
            _obj(
                cfg,
                "v1",
                "ServiceAccount",
                REDIS_SERVICE_ACCOUNT,
                sys_ns,
                "redis",
                {"automountServiceAccountToken": False},
            )
        )
        docs.extend(_redis_objects(cfg))

    gateway = _gateway_peers(cfg)
    docs.append(
        _obj(
            cfg,
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "aios-default-ingress",
            ns,
            "network",
            {
                "spec": {
                    "podSelector": {},
                    "policyTypes": ["Ingress"],
                    # Workloads of this cluster talk to each other; the gateway reaches all.
                    "ingress": [{"from": [{"podSelector": {}}, *gateway]}],
                }
            },
        )
    )
    docs.append(
        _obj(
            cfg,
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "aios-serving-ingress",
            ns,
            "network",
            {
                "spec": {
                    "podSelector": {
                        "matchExpressions": [
                            {"key": names.KIND, "operator": "In", "values": list(SERVING_KINDS)}
                        ]
                    },
                    "policyTypes": ["Ingress"],
                    # Executors, vDAG controllers and inference servers serve clients in any
                    # namespace of this Kubernetes cluster (pods only: not the outside).
                    "ingress": [{"from": [{"namespaceSelector": {}}]}],
                }
            },
        )
    )
    docs.append(
        _obj(
            cfg,
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "aios-default-deny-ingress",
            sys_ns,
            "network",
            {"spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
        )
    )
    if cfg.in_cluster_redis:
        docs.append(
            _obj(
                cfg,
                "networking.k8s.io/v1",
                "NetworkPolicy",
                "aios-redis-ingress",
                sys_ns,
                "network",
                {
                    "spec": {
                        "podSelector": {"matchLabels": selector_labels(cid, REDIS_NAME)},
                        "policyTypes": ["Ingress"],
                        "ingress": [
                            {
                                "from": [_namespace_peer(ns), {"podSelector": {}}, *gateway],
                                "ports": [{"port": 6379, "protocol": "TCP"}],
                            }
                        ],
                    }
                },
            )
        )
    return [finalize(d) for d in docs]


def node_ids_configmap(cfg: K8sConfig, node_ids: dict[str, str]) -> dict[str, Any] | None:
    """Just the node-id table (re-applied when nodes join or leave)."""
    if not cfg.node_metrics:
        return None
    return finalize(_node_metrics_objects(cfg, node_ids)[0])
