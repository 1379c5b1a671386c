"""What ``manage.py aios_k8s_render`` prints: the manifests the driver would apply.

The workload specs come from the apps that own them — ``apps.blocks`` (executor, block
controller, instances, third-party init) and ``apps.vdags`` (vDAG controller) — and go
through the same steps as on a real cluster: the driver base's id/kind normalisation, the
Kubernetes driver's ``prepare`` (ports) and the shared manifest builders. Nothing contacts a
cluster; the database is read for the cluster, node, component and vDAG records when they
exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

from apps.clusters.choices import DriverName, WorkloadKind
from apps.clusters.drivers.base import WorkloadSpec
from apps.clusters.drivers.k8s import manifests
from apps.clusters.drivers.kubernetes import KubernetesDriver
from apps.clusters.models import Cluster, Node
from apps.core.errors import NotFound, ValidationFailed


class RenderError(ValidationFailed):
    code = "render_error"


def load_document(path: str | Path) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise RenderError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise RenderError(f"{path} is neither JSON nor YAML: {exc}") from None


def spec_values(document: Any, what: str) -> dict[str, Any]:
    """``body.spec.values`` of a parser envelope, or the values themselves."""
    if not isinstance(document, dict):
        raise RenderError(f"the {what} must be a JSON/YAML object")
    body = document.get("body")
    if isinstance(body, dict):
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else body
        values = spec.get("values")
        if not isinstance(values, dict):
            raise RenderError(f"the {what} envelope has no body.spec.values object")
        return values
    if isinstance(document.get("values"), dict):
        return document["values"]
    return document


# -- the cluster and node a render is for ----------------------------------------------------
def resolve(
    *,
    node_id: str | None = None,
    cluster_id: str | None = None,
    kubernetes: dict[str, Any] | None = None,
) -> tuple[Cluster, Node | None]:
    """The cluster (and node) records; unsaved stand-ins when they are not registered."""
    node = Node.objects.select_related("cluster").filter(pk=node_id).first() if node_id else None
    if node is not None:
        if cluster_id and node.cluster_id != cluster_id:
            raise RenderError(f"node {node_id!r} belongs to cluster {node.cluster_id!r}")
        cluster = node.cluster
    elif cluster_id:
        cluster = Cluster.objects.filter(pk=cluster_id).first() or Cluster(
            id=cluster_id, region_id="render", driver=DriverName.KUBERNETES, config={}
        )
    else:
        raise RenderError(
            f"node {node_id!r} is not registered: name its cluster with --cluster"
            if node_id
            else "name the cluster with --cluster"
        )
    # Rendered as the kubernetes driver would run it, whatever the record says (in memory
    # only): the apps that build specs choose ports by the cluster's driver.
    cluster.driver = DriverName.KUBERNETES
    if kubernetes is not None:
        if not isinstance(kubernetes, dict):
            raise RenderError("--config must hold a JSON/YAML object (config.kubernetes)")
        cluster.config = {**(cluster.config or {}), "kubernetes": kubernetes}
    if node is None and node_id:
        node = Node(id=node_id, cluster=cluster)
    return cluster, node


def _workload_docs(
    driver: KubernetesDriver, spec: WorkloadSpec, node: Node
) -> list[dict[str, Any]]:
    """``create_workload``'s path without the row: prepare, then the builders."""
    spec.node_id = node.id
    spec.validate()
    spec = driver.prepare(spec, node)
    return manifests.workload_manifests(driver.view_of_spec(spec, node), driver.k8s)


def render_cluster(cluster: Cluster) -> list[dict[str, Any]]:
    return KubernetesDriver(cluster).cluster_manifests()


# -- a block ---------------------------------------------------------------------------------
def _component(values: dict[str, Any], component_path: str | None):
    from apps.registries.models import Component

    if component_path:
        from apps.registries.services import components as component_services

        raw = spec_values(load_document(component_path), "component spec")
        clean = component_services.validate_component_values(raw)
        return Component(
            component_uri=component_services.component_uri_of(clean),
            **component_services._columns(clean),
        )
    uri = values.get("blockComponentURI")
    component = Component.objects.filter(component_uri=uri).first() if uri else None
    if component is None:
        raise NotFound(f"component {uri!r} is not registered; register it or pass --component FILE")
    return component


def _runtime_block_doc(values, cluster: Cluster) -> dict[str, Any]:
    # The same document apps.blocks gives an instance as BLOCK_DATA.
    return {
        "blockId": values.block_id,
        "blockComponentURI": values.component_uri,
        "clusterId": cluster.id,
        "minInstances": values.min_instances,
        "maxInstances": values.max_instances,
        "blockMetadata": values.block_metadata,
        "tags": values.tags,
    }


def _gpu_ids(node: Node, count: int, explicit: list[int] | None) -> list[int]:
    if explicit is not None:
        return list(explicit)
    if not count:
        return []
    indices = sorted(node.gpus.values_list("index", flat=True)) if node.pk else []
    return indices[:count] if len(indices) >= count else list(range(count))


def block_specs(
    spec_path: str,
    cluster: Cluster,
    node: Node,
    *,
    component_path: str | None = None,
    gpu_ids: list[int] | None = None,
) -> list[WorkloadSpec]:
    """The block's workload specs as ``apps.blocks`` builds them for ``createBlock``: the
    third-party init workload (if any), the executor, the block controller and
    ``minInstances`` instances (ids ``<block>-i<n>``; placed on ``node``)."""
    from apps.blocks import runtime
    from apps.blocks import specs as block_specs_module

    values_raw = spec_values(load_document(spec_path), "createBlock spec")
    component = _component(values_raw, component_path)
    values = block_specs_module.build(values_raw, component)
    block_doc = _runtime_block_doc(values, cluster)
    api_url = settings.AIOS_PUBLIC_URL.rstrip("/")
    out: list[WorkloadSpec] = []
    init = runtime.init_workload_spec(values, cluster, node, block_doc)
    if init is not None:
        out.append(init)
    executor = runtime.executor_spec(values, cluster, node, api_url=api_url)
    # As ClusterDriver.create_block / _instance normalise them.
    executor.kind, executor.block_id = WorkloadKind.EXECUTOR, values.block_id
    executor.id = executor.id or f"{values.block_id}-executor"
    out.append(executor)
    host = runtime.advertise_host(cluster, node)
    controller, _port = runtime.controller_spec(
        values,
        cluster,
        node,
        api_url=api_url,
        executor_http=f"http://{host}:{executor.ports['http']}",
    )
    out.append(controller)
    requirements = values.resource_requirements or {}
    count = requirements.get("gpus") or requirements.get("gpu_count") or 0
    gpus = _gpu_ids(node, int(count) if isinstance(count, int) else 0, gpu_ids)
    for index in range(values.min_instances):
        instance_id = f"{values.block_id}-i{index}"
        spec = runtime.instance_spec(
            values,
            cluster,
            node,
            instance_id=instance_id,
            gpus=gpus,
            block_doc=block_doc,
        )
        spec.kind, spec.block_id = WorkloadKind.INSTANCE, values.block_id
        spec.instance_id = spec.instance_id or instance_id
        spec.id = spec.id or spec.instance_id
        out.append(spec)
    return out


def render_block(
    spec_path: str,
    cluster: Cluster,
    node: Node,
    *,
    component_path: str | None = None,
    gpu_ids: list[int] | None = None,
) -> list[dict[str, Any]]:
    driver = KubernetesDriver(cluster)
    docs: list[dict[str, Any]] = []
    for spec in block_specs(
        spec_path, cluster, node, component_path=component_path, gpu_ids=gpu_ids
    ):
        docs.extend(_workload_docs(driver, spec, node))
    return docs


# -- a vDAG controller ----------------------------------------------------------------------
def vdag_controller_specs(
    controller_id: str,
    cluster: Cluster,
    node: Node,
    *,
    vdag_uri: str | None = None,
    replicas: int = 1,
) -> list[WorkloadSpec]:
    """The controller's replicas as ``apps.vdags`` and ``create_vdag_controller`` build them
    (a vDAG that is not registered renders with an empty graph)."""
    from apps.vdags.models import VDag, VDagController
    from apps.vdags.services import controllers

    vdag = VDag.objects.filter(vdag_uri=vdag_uri).first() if vdag_uri else None
    if vdag is None:
        vdag = VDag(vdag_uri=vdag_uri or "", compiled_graph={}, controller={})
    config = controllers.clean_config({"replicas": replicas, "node_id": node.id}, vdag)
    controller = VDagController(
        vdag_controller_id=controller_id, vdag=vdag, cluster=cluster, config=config
    )
    out = []
    for index in range(replicas):
        # One spec per replica, each created with replicas=1 (ClusterDriver._replicas).
        spec = controllers.workload_spec(controller, vdag, node=node, index=index)
        spec.kind = WorkloadKind.VDAG_CONTROLLER
        spec.labels = {**spec.labels, "vdag_controller_id": controller_id, "replica": 0}
        spec.id = spec.id or f"{controller_id}-0"
        out.append(spec)
    return out


def render_vdag_controller(
    controller_id: str,
    cluster: Cluster,
    node: Node,
    *,
    vdag_uri: str | None = None,
    replicas: int = 1,
) -> list[dict[str, Any]]:
    driver = KubernetesDriver(cluster)
    docs: list[dict[str, Any]] = []
    for spec in vdag_controller_specs(
        controller_id, cluster, node, vdag_uri=vdag_uri, replicas=replicas
    ):
        docs.extend(_workload_docs(driver, spec, node))
    return docs


def to_yaml(docs: list[dict[str, Any]]) -> str:
    """Multi-document YAML, in apply order (``kubectl apply -f -`` reads it)."""
    # Round-trip through JSON: plain types only, and key order as built.
    plain = json.loads(json.dumps(docs))
    return yaml.safe_dump_all(plain, sort_keys=False, default_flow_style=False, width=100)
