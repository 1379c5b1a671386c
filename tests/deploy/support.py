"""Shared helpers of the deploy tests: the chart renderer, value sets, and manifest walks."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "aios"
IMAGES = ROOT / "deploy" / "images"
RELEASE = "rel"
NAMESPACE = "aios-system"

# Fixed secret values, so that two renders (ours and helm's) can be compared byte for byte.
FIXED_SECRETS: dict[str, Any] = {
    "secrets": {
        "secretKey": "k" * 50,
        "fernetKey": "ZmVybmV0LWtleS1mb3ItdGVzdHMtMzItYnl0ZXMtISE=",
        "adminPassword": "admin-pw",
    },
    "postgresql": {"auth": {"password": "pgpassword"}},
    "redis": {"auth": {"password": "redispassword"}},
}

# The value sets every manifest check runs on: what operators actually install.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-urls": {
        "postgresql": {"enabled": False},
        "redis": {"enabled": False},
        "externalDatabase": {"url": "postgresql://aios:pw@db.example.com:5432/aios"},
        "externalRedis": {"url": "rediss://:pw@redis.example.com:6380/0"},
    },
    "existing-secrets": {
        "postgresql": {"enabled": False},
        "redis": {"enabled": False},
        "secrets": {"existingSecret": "aios-app"},
        "externalDatabase": {"existingSecret": "aios-db", "existingSecretKey": "url"},
        "externalRedis": {"existingSecret": "aios-redis"},
        "media": {"s3": {"enabled": True, "bucket": "aios", "existingSecret": "aios-s3"}},
        "flower": {"basicAuthSecret": "aios-flower"},
    },
    "ingress-tls": {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
            "hosts": [{"host": "aios.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
            "tls": [{"secretName": "aios-tls", "hosts": ["aios.example.com"]}],
        },
        "config": {"allowedHosts": ["aios.internal"], "csrfTrustedOrigins": ["https://ui.x"]},
    },
    "minimal": {
        "flower": {"enabled": False},
        "beat": {"enabled": False},
        "web": {"replicaCount": 1, "podDisruptionBudget": {"enabled": False}},
        "media": {"persistence": {"enabled": False}},
        "postgresql": {"persistence": {"enabled": False}},
        "redis": {"persistence": {"enabled": False}},
        "migrations": {"waitInitContainer": False},
    },
    "hardened": {
        "networkPolicy": {
            "enabled": True,
            "webFrom": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                    }
                }
            ],
            "redisFrom": [{"namespaceSelector": {"matchLabels": {"aios.io/data-plane": "yes"}}}],
        },
        "image": {"registry": "registry.example.com/aios", "digest": "sha256:" + "ab" * 32},
        "imagePullSecrets": ["regcred"],
        "serviceAccount": {"annotations": {"iam.example.com/role": "aios"}},
        "worker": {"queues": "default,provisioning", "nodeSelector": {"pool": "cpu"}},
        "commonLabels": {"team": "ml-platform"},
        **FIXED_SECRETS,
    },
}


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@cache
def renderer() -> ModuleType:
    """deploy/helm/render.py (a script, not a package)."""
    return _load(ROOT / "deploy" / "helm" / "render.py", "aios_chart_render")


@cache
def select_requirements() -> ModuleType:
    return _load(IMAGES / "bin" / "select_requirements.py", "aios_select_requirements")


def render(values: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    kw.setdefault("release_name", RELEASE)
    kw.setdefault("namespace", NAMESPACE)
    return renderer().render_manifests(CHART, values or {}, **kw)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    matches = [o for o in by_kind(objects, kind) if o["metadata"]["name"].endswith(suffix)]
    assert len(matches) == 1, f"{kind} *{suffix}: {[o['metadata']['name'] for o in matches]}"
    return matches[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] == "Pod":
        return obj["spec"]
    return None


def containers(obj: dict[str, Any], *, init: bool = True) -> Iterator[dict[str, Any]]:
    spec = pod_spec(obj)
    if spec is None:
        return
    yield from spec.get("containers", [])
    if init:
        yield from spec.get("initContainers", []) or []


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if pod_spec(o) is not None]


def helm_binary() -> str | None:
    return shutil.which("helm")


def helm_engine() -> ModuleType | None:
    """Helm's own Go engine through the helm-python-sdk package, when it is installed."""
    try:
        import helm_python
    except ImportError:
        return None
    return helm_python


NO_HELM_REASON = (
    "helm is not available here: no `helm` binary on PATH and no helm-python-sdk package "
    "(Helm's Go engine as a library); the chart is checked with deploy/helm/render.py only"
)
