"""Fixtures of the Kubernetes driver tests: a fake API server (kmock) per test, a cluster
record that points at it, and builders of the node and pod objects a real cluster's
kubelets and controllers would create."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from apps.clusters.choices import ClusterStatus, DriverName
from apps.clusters.drivers.k8s import names
from apps.clusters.models import Cluster
from tests.k8s.fake_api import FakeKubernetes


@pytest.fixture
def fake_k8s():
    fake = FakeKubernetes().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def make_cluster(db, fake_k8s):
    """A ``kubernetes`` cluster record whose encrypted kubeconfig points at the fake."""

    def make(*, kubernetes: dict[str, Any] | None = None, cluster_id: str | None = None):
        cluster = Cluster(
            id=cluster_id or f"k8s-{uuid.uuid4().hex[:8]}",
            region_id="test",
            driver=DriverName.KUBERNETES,
            status=ClusterStatus.LIVE,
            config={"kubernetes": kubernetes or {}},
        )
        cluster.set_kubeconfig(fake_k8s.kubeconfig())
        cluster.save(force_insert=True)
        return cluster

    return make


@pytest.fixture
def cluster(make_cluster):
    return make_cluster()


def k8s_node(
    name: str,
    *,
    gpus: int = 0,
    ready: bool = True,
    labels: dict[str, str] | None = None,
    cpu: str = "8",
    memory: str = "32Gi",
    gpu_product: str = "",
    unschedulable: bool = False,
) -> dict[str, Any]:
    """A Node object as a kubelet (and the NVIDIA device plugin) would report it."""
    capacity = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"}
    allocatable = {"cpu": "7800m", "memory": "30Gi", "pods": "110"}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
        allocatable["nvidia.com/gpu"] = str(gpus)
    node_labels = {"kubernetes.io/hostname": name, **(labels or {})}
    if gpu_product:
        node_labels["nvidia.com/gpu.product"] = gpu_product
        node_labels["nvidia.com/gpu.memory"] = "81920"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels},
        "spec": {"unschedulable": unschedulable} if unschedulable else {},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "message": "kubelet is posting ready status" if ready else "kubelet stopped",
                }
            ],
            "nodeInfo": {"kubeletVersion": "v1.33.1", "architecture": "amd64"},
        },
    }


def make_pod(
    owner: dict[str, Any],
    *,
    suffix: str = "abc12",
    node: str = "worker-1",
    phase: str = "Running",
    ready: bool = True,
    restarts: int = 0,
    waiting: dict[str, Any] | None = None,
    terminated: dict[str, Any] | None = None,
    last_terminated: dict[str, Any] | None = None,
    created: str = "2026-01-01T00:00:00Z",
    scheduled: bool = True,
) -> dict[str, Any]:
    """The pod a Deployment's ReplicaSet (or a Job) creates from ``owner``'s template."""
    template = owner["spec"]["template"]
    meta = owner["metadata"]
    if waiting is not None:
        state = {"waiting": waiting}
    elif terminated is not None:
        state = {"terminated": terminated}
    else:
        state = {"running": {"startedAt": created}}
    status: dict[str, Any] = {
        "phase": phase,
        "podIP": "10.0.0.7",
        "startTime": created,
        "conditions": [
            {"type": "PodScheduled", "status": "True" if scheduled else "False"},
            {"type": "Ready", "status": "True" if ready else "False"},
        ],
        "containerStatuses": [
            {
                "name": template["spec"]["containers"][0]["name"],
                "ready": ready,
                "restartCount": restarts,
                "state": state,
                "lastState": {"terminated": last_terminated} if last_terminated else {},
            }
        ],
    }
    if not scheduled:
        status["conditions"][0].update(
            reason="Unschedulable",
            message="0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
        )
        status.pop("containerStatuses")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{meta['name']}-{suffix}",
            "namespace": meta["namespace"],
            "labels": dict(template["metadata"]["labels"]),
            "creationTimestamp": created,
            "ownerReferences": [{"kind": owner["kind"], "name": meta["name"]}],
        },
        "spec": {"nodeName": node if scheduled else None, **template["spec"]},
        "status": status,
    }


def workload_label(workload_id: str) -> str:
    return names.label_value(workload_id)
