"""A small wrapper over the official ``kubernetes`` client for the objects AIOS manages.

It uses the client's configuration loading (kubeconfig contexts, tokens, client
certificates, exec plugins) and its REST layer, and adds what the driver needs: one generic
get/list/apply/delete per kind, server-side apply with field manager ``aios``, a timeout on
every request, label-selector results checked again on this side, and errors turned into
the API's typed errors.

The kubeconfig is decrypted in memory and handed to the client as a dict. The client keeps
embedded client certificates and keys in files (the TLS stack reads them from files); they
live in a private 0700 directory that :meth:`KubeClient.close` deletes. The cluster CA is
moved into memory at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
import yaml

from apps.clusters.drivers.base import DriverError

log = logging.getLogger("aios.clusters.k8s")

FIELD_MANAGER = "aios"
CONNECT_TIMEOUT_S = 5.0
LOG_TAIL_LINES = 50
LOG_LIMIT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Resource:
    api_version: str
    plural: str
    namespaced: bool

    @property
    def base(self) -> str:
        return "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"


RESOURCES: dict[str, Resource] = {
    "Namespace": Resource("v1", "namespaces", False),
    "Node": Resource("v1", "nodes", False),
    "ServiceAccount": Resource("v1", "serviceaccounts", True),
    "Service": Resource("v1", "services", True),
    "ConfigMap": Resource("v1", "configmaps", True),
    "Pod": Resource("v1", "pods", True),
    "Deployment": Resource("apps/v1", "deployments", True),
    "DaemonSet": Resource("apps/v1", "daemonsets", True),
    "Job": Resource("batch/v1", "jobs", True),
    "HorizontalPodAutoscaler": Resource("autoscaling/v2", "horizontalpodautoscalers", True),
    "Role": Resource("rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": Resource("rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterRole": Resource("rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": Resource("rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "NetworkPolicy": Resource("networking.k8s.io/v1", "networkpolicies", True),
}


class KubeApiError(DriverError):
    """The API server refused a request (forbidden, invalid, conflict ...)."""

    code = "kubernetes_api_error"

    def __init__(self, message: str, *, http_status: int = 0, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.http_status = http_status


class KubeUnreachable(DriverError):
    """No answer from the API server (connection refused, timeout, TLS failure)."""

    status_code = 503
    code = "kubernetes_unreachable"


class KubeConfigInvalid(DriverError):
    code = "kubeconfig_invalid"


def selector_text(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def matches(obj: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def object_path(kind: str, namespace: str | None, name: str | None = None) -> str:
    resource = RESOURCES[kind]
    path = resource.base
    if resource.namespaced:
        if not namespace:
            raise ValueError(f"{kind} is namespaced: a namespace is required")
        path += f"/namespaces/{namespace}"
    path += f"/{resource.plural}"
    if name:
        path += f"/{name}"
    return path


def describe(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {where}{meta.get('name')}"


class KubeClient:
    """One connection to one cluster's API server; use as a context manager."""

    def __init__(self, api_client, *, timeout_s: float, tmpdir: str | None = None):
        self.api = api_client
        self.timeout_s = timeout_s
        self._tmpdir = tmpdir

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_kubeconfig(
        cls, text: str, *, context: str | None = None, timeout_s: float = 15.0
    ) -> KubeClient:
        from kubernetes.client import ApiClient, Configuration
        from kubernetes.config import kube_config
        from kubernetes.config.config_exception import ConfigException

        try:
            document = yaml.safe_load(text) if text else None
        except yaml.YAMLError as exc:
            raise KubeConfigInvalid(f"the stored kubeconfig is not YAML/JSON: {exc}") from None
        if not isinstance(document, dict) or not document.get("clusters"):
            raise KubeConfigInvalid(
                "the cluster has no usable kubeconfig (set it with update_cluster "
                "kube_config_data, or set config.kubernetes.inCluster)"
            )
        tmpdir = tempfile.mkdtemp(prefix="aios-kube-")  # 0700
        configuration = type.__call__(Configuration)
        try:
            kube_config.load_kube_config_from_dict(
                config_dict=document,
                context=context,
                client_configuration=configuration,
                persist_config=False,
                temp_file_path=tmpdir,
            )
        except (ConfigException, ValueError, TypeError, KeyError, OSError) as exc:
            _forget_files(tmpdir)
            raise KubeConfigInvalid(f"the stored kubeconfig cannot be used: {exc}") from None
        _ca_in_memory(configuration, tmpdir)
        configuration.retries = 1
        return cls(ApiClient(configuration), timeout_s=timeout_s, tmpdir=tmpdir)

    @classmethod
    def in_cluster(cls, *, timeout_s: float = 15.0) -> KubeClient:
        from kubernetes.client import ApiClient, Configuration
        from kubernetes.config import incluster_config
        from kubernetes.config.config_exception import ConfigException

        configuration = type.__call__(Configuration)
        try:
            incluster_config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise KubeConfigInvalid(f"no in-cluster service account: {exc}") from None
        configuration.retries = 1
        return cls(ApiClient(configuration), timeout_s=timeout_s)

    def close(self) -> None:
        try:
            self.api.close()
        finally:
            if self._tmpdir:
                _forget_files(self._tmpdir)
                self._tmpdir = None

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        raw: bool = False,
        missing_ok: bool = True,
    ) -> Any:
        """One call; returns parsed JSON (or text with ``raw``); ``None`` on 404 when
        ``missing_ok`` (reads, deletes), else a 404 is an error (a write into a namespace
        that does not exist must not pass for a success)."""
        headers = {"Accept": "application/json, */*", "Content-Type": content_type}
        serialized = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        method_, url, header_params, body_, _post = serialized
        try:
            response = self.api.call_api(
                method_,
                url,
                header_params=header_params,
                body=body_,
                _request_timeout=(CONNECT_TIMEOUT_S, self.timeout_s),
            )
            data = response.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeUnreachable(
                f"the Kubernetes API server did not answer {method} {path}: {exc}"
            ) from None
        status = response.status
        if status == 404 and missing_ok:
            return None
        text = data.decode("utf-8", errors="replace") if data else ""
        if not 200 <= status < 300:
            message = text[:500]
            with contextlib.suppress(ValueError, AttributeError):
                message = json.loads(text).get("message") or message
            raise KubeApiError(
                f"Kubernetes answered {status} to {method} {path}: {message}",
                http_status=status,
                details=[{"http_status": status, "path": path}],
            )
        if raw:
            return text
        if not text:
            return {}
        try:
            return json.loads(text)
        except ValueError:
            raise KubeApiError(f"Kubernetes answered {method} {path} with non-JSON") from None

    # -- objects ------------------------------------------------------------------------------
    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.request("GET", object_path(kind, namespace, name))

    def list(
        self, kind: str, namespace: str | None, selector: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": selector_text(selector)} if selector else None
        result = self.request("GET", object_path(kind, namespace), query=query) or {}
        items = result.get("items") or []
        # A selector is a filter we rely on for deletion: check it here as well.
        return [i for i in items if not selector or matches(i, selector)]

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply (creates or updates; fields dropped from ``obj`` are removed)."""
        meta = obj["metadata"]
        return self.request(
            "PATCH",
            object_path(obj["kind"], meta.get("namespace"), meta["name"]),
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
            missing_ok=False,
        )

    def merge_patch(
        self, kind: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        return self.request(
            "PATCH",
            object_path(kind, namespace, name),
            query={"fieldManager": FIELD_MANAGER},
            body=patch,
            content_type="application/merge-patch+json",
            missing_ok=False,
        )

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        """Delete one object; dependents (ReplicaSets, pods) are collected in the background
        (Jobs would orphan their pods by default). False when it was already gone."""
        result = self.request(
            "DELETE",
            object_path(kind, namespace, name),
            query={"propagationPolicy": "Background"},
        )
        return result is not None

    def pod_log(self, namespace: str, name: str, *, container: str | None = None) -> str:
        query: dict[str, Any] = {"tailLines": LOG_TAIL_LINES, "limitBytes": LOG_LIMIT_BYTES}
        if container:
            query["container"] = container
        text = self.request(
            "GET", object_path("Pod", namespace, name) + "/log", query=query, raw=True
        )
        return text or ""

    def server_version(self) -> dict[str, Any]:
        return self.request("GET", "/version") or {}


def _ca_in_memory(configuration, tmpdir: str) -> None:
    path = configuration.ssl_ca_cert
    if path and str(path).startswith(tmpdir) and Path(path).is_file():
        configuration.ca_cert_data = Path(path).read_text()
        configuration.ssl_ca_cert = None
        Path(path).unlink(missing_ok=True)
        _forget_cached(tmpdir, only=str(path))


def _forget_cached(tmpdir: str, *, only: str | None = None) -> None:
    """The client caches temp file names by content; drop the ones we delete."""
    from kubernetes.config import kube_config

    cache = getattr(kube_config, "_temp_files", None)
    if not isinstance(cache, dict):
        return
    for key, name in list(cache.items()):
        if (only is None and str(name).startswith(tmpdir)) or name == only:
            cache.pop(key, None)


def _forget_files(tmpdir: str) -> None:
    _forget_cached(tmpdir)
    shutil.rmtree(tmpdir, ignore_errors=True)
