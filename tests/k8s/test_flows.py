"""The kubernetes driver through the public paths: createCluster and addNode through the
gateway, the cluster status endpoint, and the periodic sync task."""

from __future__ import annotations

import uuid

from apps.clusters import gateway
from apps.clusters.choices import ClusterStatus, NodeStatus
from apps.clusters.drivers.k8s import names, tasks
from apps.clusters.models import Cluster, Node
from tests.k8s.conftest import k8s_node


def cluster_spec(cluster_id: str) -> dict:
    return {
        "id": cluster_id,
        "regionId": "eu-west",
        "config": {"driver": "kubernetes", "kubernetes": {"redis": {"mode": "in-cluster"}}},
    }


def test_create_cluster_provisions_a_kubernetes_cluster_from_its_kubeconfig(
    db, fake_k8s, user
) -> None:
    fake_k8s.put("Node", k8s_node("gpu-1", gpus=1))
    cluster_id = f"k8s-{uuid.uuid4().hex[:8]}"
    accepted = gateway.create_cluster(
        cluster_spec(cluster_id), user=user, kubeconfig=fake_k8s.kubeconfig(), run_async=False
    )
    cluster = Cluster.objects.get(pk=cluster_id)
    assert cluster.status == ClusterStatus.LIVE
    assert accepted.result["namespace"] == f"aios-{cluster_id}"
    assert accepted.result["registered"] == ["gpu-1"]
    assert fake_k8s.get("Deployment", f"aios-{cluster_id}-system", "aios-redis") is not None
    # the kubeconfig is on the record encrypted, never in clear
    assert fake_k8s.url not in cluster.kubeconfig_encrypted
    assert fake_k8s.url in cluster.get_kubeconfig()


def test_add_node_joins_a_kubernetes_node_that_came_later(db, fake_k8s, user) -> None:
    cluster_id = f"k8s-{uuid.uuid4().hex[:8]}"
    gateway.create_cluster(
        cluster_spec(cluster_id), user=user, kubeconfig=fake_k8s.kubeconfig(), run_async=False
    )
    fake_k8s.put("Node", k8s_node("ip-10-1-2-3", labels={names.NODE_ID: "edge-2"}))
    accepted = gateway.add_node(
        {"id": "edge-2", "clusterId": cluster_id}, user=user, run_async=False
    )
    assert accepted.result["kubernetes_node"] == "ip-10-1-2-3"
    assert Node.objects.get(pk="edge-2").status == NodeStatus.READY


def test_the_cluster_status_endpoint_reads_the_kubernetes_cluster(api, user, fake_k8s) -> None:
    cluster_id = f"k8s-{uuid.uuid4().hex[:8]}"
    fake_k8s.put("Node", k8s_node("worker-1"))
    gateway.create_cluster(
        cluster_spec(cluster_id), user=user, kubeconfig=fake_k8s.kubeconfig(), run_async=False
    )
    response = api.get(f"/api/v1/clusters/{cluster_id}/status/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["driver"] == "kubernetes"
    assert body["api"] == {"reachable": True}
    assert body["nodes"][0]["kubernetes_node"] == "worker-1"
    assert "kubeconfig" not in response.content.decode().lower().replace("haskubeconfig", "")


def test_the_periodic_sync_runs_once_at_a_time_per_cluster_and_lists_new_nodes(
    cluster, fake_k8s
) -> None:
    fake_k8s.put("Node", k8s_node("worker-1"))
    result = tasks.sync_cluster(cluster.id)
    # A sync never registers nodes (that is provisioning's or addNode's, with pre-checks).
    assert result["nodes"]["unregistered_kubernetes_nodes"] == ["worker-1"]
    key = tasks.LOCK_KEY.format(cluster_id=cluster.id)
    tasks._redis().set(key, "someone", ex=30)
    try:
        assert tasks.sync_cluster(cluster.id)["skipped"] == "a sync of this cluster is running"
    finally:
        tasks._redis().delete(key)
    assert 0 < tasks._redis().ttl(key) <= tasks.LOCK_TTL_S or not tasks._redis().exists(key)


def test_a_sync_of_an_unreachable_cluster_reports_instead_of_raising(cluster, fake_k8s) -> None:
    fake_k8s.stop()
    result = tasks.sync_cluster(cluster.id)
    assert result["error"]["code"] == "kubernetes_unreachable"
    assert not tasks._redis().exists(tasks.LOCK_KEY.format(cluster_id=cluster.id))


def test_sync_all_fans_out_to_live_kubernetes_clusters_only(cluster, monkeypatch) -> None:
    sent: list[str] = []
    monkeypatch.setattr(tasks.k8s_sync, "delay", sent.append)
    Cluster.objects.create(id=f"local-{uuid.uuid4().hex[:6]}", region_id="x", driver="local")
    assert cluster.id in tasks.k8s_sync_all()
    assert cluster.id in sent
    assert all(Cluster.objects.get(pk=c).driver == "kubernetes" for c in sent)
