"""The ``config.kubernetes`` object of a cluster record, validated, with defaults.

Everything the manifests depend on besides the workload rows lives here, so that the
driver and ``aios_k8s_render`` build from the same values. Example (all keys optional)::

    "config": {"driver": "kubernetes", "kubernetes": {
        "namespace": "aios-gpu-east", "systemNamespace": "aios-gpu-east-system",
        "context": "prod", "inCluster": false,
        "runtimeImage": "registry.example.com/aios/aios-runtime:0.1.0",
        "nodeMetricsImage": "registry.example.com/aios/aios-node-metrics:0.1.0",
        "imagePullPolicy": "IfNotPresent", "imagePullSecrets": ["regcred"],
        "redis": {"mode": "control-plane", "url": "redis://aios-redis.aios-system.svc:6379/0"},
        "controlPlaneUrl": "https://aios.example.com",
        "gateway": {"cidrs": ["10.8.0.0/16"], "peers": [...]},
        "nodeSelector": "aios.io/pool=gpu", "podSecurity": "restricted",
        "gpuRuntimeClassName": "nvidia", "nodeMetrics": true,
        "jobActiveDeadlineSeconds": 3600, "requestTimeoutSeconds": 15}}
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.clusters.drivers.k8s import names
from apps.core.errors import ValidationFailed

REDIS_MODES = ("control-plane", "in-cluster", "external")
POD_SECURITY_LEVELS = ("restricted", "baseline")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
DEFAULT_REDIS_IMAGE = "docker.io/library/redis:7.4.5-bookworm"  # the chart's bundled Redis
KNOWN_KEYS = frozenset(
    {
        "namespace",
        "systemNamespace",
        "context",
        "inCluster",
        "runtimeImage",
        "nodeMetricsImage",
        "imagePullPolicy",
        "imagePullSecrets",
        "redis",
        "controlPlaneUrl",
        "gateway",
        "nodeSelector",
        "podSecurity",
        "gpuRuntimeClassName",
        "nodeMetrics",
        "jobActiveDeadlineSeconds",
        "requestTimeoutSeconds",
    }
)
_IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
# Equality selectors only ("key=value,key2=value2"): results are checked again locally.
_SELECTOR_RE = re.compile(r"^[A-Za-z0-9._/-]+=[A-Za-z0-9._-]*(,[A-Za-z0-9._/-]+=[A-Za-z0-9._-]*)*$")


@functools.lru_cache(maxsize=1)
def project_version() -> str:
    """The version the images are tagged with by default (``build.sh`` does the same)."""
    try:
        data = tomllib.loads((Path(settings.BASE_DIR) / "pyproject.toml").read_text())
        return str(data["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "dev"


def default_image(name: str) -> str:
    """``[$AIOS_IMAGE_REGISTRY/]aios-<name>:$AIOS_IMAGE_TAG``, as ``make images`` names them."""
    registry = os.environ.get("AIOS_IMAGE_REGISTRY", "").strip().rstrip("/")
    tag = os.environ.get("AIOS_IMAGE_TAG", "").strip() or project_version()
    return f"{registry + '/' if registry else ''}aios-{name}:{tag}"


@dataclass(frozen=True)
class K8sConfig:
    cluster_id: str
    namespace: str
    system_namespace: str
    context: str | None = None
    in_cluster: bool = False
    runtime_image: str = ""
    node_metrics_image: str = ""
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    redis_mode: str = "control-plane"
    redis_url: str = ""  # what pods use (all modes)
    redis_image: str = DEFAULT_REDIS_IMAGE
    redis_memory_mb: int = 1024
    control_plane_url: str = ""
    gateway_cidrs: tuple[str, ...] = ()
    gateway_peers: tuple[dict[str, Any], ...] = ()
    node_selector: str = ""
    pod_security: str = "restricted"
    gpu_runtime_class: str | None = None
    node_metrics: bool = True
    job_deadline_s: int = 3600
    request_timeout_s: float = 15.0

    @property
    def in_cluster_redis(self) -> bool:
        return self.redis_mode == "in-cluster"


# The management plane installed by the chart (deploy/helm/aios): its pods carry
# app.kubernetes.io/name=aios, in whatever namespace it was installed to.
DEFAULT_GATEWAY_PEER: dict[str, Any] = {
    "namespaceSelector": {},
    "podSelector": {"matchLabels": {names.APP_NAME: "aios"}},
}


def _fail(key: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"config.kubernetes.{key}: {message}",
        details=[{"field": f"config.kubernetes.{key}", "message": message}],
    )


def _str(raw: dict, key: str, default: str = "", *, pattern: re.Pattern | None = None) -> str:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _fail(key, "must be a string")
    value = value.strip()
    if value and pattern is not None and not pattern.match(value):
        raise _fail(key, f"{value!r} is not valid")
    return value or default


def _number(raw: dict, key: str, default: float, low: float, high: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _fail(key, f"must be a number from {low:g} to {high:g}")
    return value


def _namespace(raw: dict, key: str, default: str) -> str:
    value = _str(raw, key, default)
    if len(value) > 63 or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", value):
        raise _fail(key, f"{value!r} is not a valid namespace name")
    return value


def parse(cluster_id: str, config: dict[str, Any] | None) -> K8sConfig:
    """``config.kubernetes`` of a cluster, checked; unknown keys are refused (typos)."""
    raw = (config or {}).get("kubernetes") or {}
    if not isinstance(raw, dict):
        raise _fail("", "must be an object")
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise ValidationFailed(
            f"unknown key config.kubernetes.{unknown[0]}",
            details=[
                {"field": "config.kubernetes", "unknown": unknown, "allowed": sorted(KNOWN_KEYS)}
            ],
        )
    namespace = _namespace(raw, "namespace", names.namespace_name(cluster_id))
    system_namespace = _namespace(raw, "systemNamespace", names.system_namespace_name(cluster_id))
    if namespace == system_namespace:
        raise _fail("systemNamespace", "must differ from namespace")

    redis = raw.get("redis") or {}
    if not isinstance(redis, dict):
        raise _fail("redis", "must be an object")
    mode = redis.get("mode", "control-plane")
    if mode not in REDIS_MODES:
        raise _fail("redis.mode", f"must be one of {list(REDIS_MODES)}")
    url = redis.get("url") or ""
    if not isinstance(url, str) or (url and not url.startswith(("redis://", "rediss://"))):
        raise _fail("redis.url", "must be a redis:// or rediss:// URL")
    if mode == "external" and not url:
        raise _fail("redis.url", "is required when redis.mode is 'external'")
    if mode == "in-cluster":
        url = f"redis://aios-redis.{system_namespace}.svc:6379/0"
    elif mode == "control-plane":
        url = url or settings.REDIS_URL
    redis_image = redis.get("image") or DEFAULT_REDIS_IMAGE
    if not isinstance(redis_image, str) or not _IMAGE_RE.match(redis_image):
        raise _fail("redis.image", "is not an image reference")
    memory = redis.get("memoryMb", 1024)
    if isinstance(memory, bool) or not isinstance(memory, int) or not 64 <= memory <= 1_048_576:
        raise _fail("redis.memoryMb", "must be a whole number of MB from 64")

    gateway = raw.get("gateway") or {}
    if not isinstance(gateway, dict):
        raise _fail("gateway", "must be an object")
    cidrs = gateway.get("cidrs") or []
    if not isinstance(cidrs, list):
        raise _fail("gateway.cidrs", "must be a list of CIDRs")
    for cidr in cidrs:
        try:
            ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            raise _fail("gateway.cidrs", f"{cidr!r} is not a CIDR") from None
    peers = gateway.get("peers")
    if peers is None:
        peers = [DEFAULT_GATEWAY_PEER]
    if not isinstance(peers, list) or not all(isinstance(p, dict) and p for p in peers):
        raise _fail("gateway.peers", "must be a list of NetworkPolicyPeer objects")

    secrets = raw.get("imagePullSecrets") or []
    if not isinstance(secrets, list) or not all(
        isinstance(s, str) and re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", s) for s in secrets
    ):
        raise _fail("imagePullSecrets", "must be a list of Secret names")
    pull_policy = _str(raw, "imagePullPolicy", "IfNotPresent")
    if pull_policy not in PULL_POLICIES:
        raise _fail("imagePullPolicy", f"must be one of {list(PULL_POLICIES)}")
    pod_security = _str(raw, "podSecurity", "restricted")
    if pod_security not in POD_SECURITY_LEVELS:
        raise _fail("podSecurity", f"must be one of {list(POD_SECURITY_LEVELS)}")
    for key in ("inCluster", "nodeMetrics"):
        if key in raw and not isinstance(raw[key], bool):
            raise _fail(key, "must be true or false")
    runtime_class = _str(raw, "gpuRuntimeClassName", "") or None
    if runtime_class and not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", runtime_class):
        raise _fail("gpuRuntimeClassName", "is not a RuntimeClass name")

    return K8sConfig(
        cluster_id=cluster_id,
        namespace=namespace,
        system_namespace=system_namespace,
        context=_str(raw, "context", "") or None,
        in_cluster=bool(raw.get("inCluster", False)),
        runtime_image=_str(raw, "runtimeImage", default_image("runtime"), pattern=_IMAGE_RE),
        node_metrics_image=_str(
            raw, "nodeMetricsImage", default_image("node-metrics"), pattern=_IMAGE_RE
        ),
        image_pull_policy=pull_policy,
        image_pull_secrets=tuple(secrets),
        redis_mode=mode,
        redis_url=url,
        redis_image=redis_image,
        redis_memory_mb=memory,
        control_plane_url=_str(raw, "controlPlaneUrl", settings.AIOS_PUBLIC_URL).rstrip("/"),
        gateway_cidrs=tuple(str(c) for c in cidrs),
        gateway_peers=tuple(peers),
        node_selector=_str(raw, "nodeSelector", "", pattern=_SELECTOR_RE),
        pod_security=pod_security,
        gpu_runtime_class=runtime_class,
        node_metrics=bool(raw.get("nodeMetrics", True)),
        job_deadline_s=int(_number(raw, "jobActiveDeadlineSeconds", 3600, 1, 7 * 24 * 3600)),
        request_timeout_s=float(_number(raw, "requestTimeoutSeconds", 15, 1, 120)),
    )
