"""The metrics system: live node metrics with a TTL, history with downsampling and
retention, cluster aggregates, the query endpoint, Prometheus text, block/vDAG metrics."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.metrics import services
from apps.metrics.models import MetricSample, NodeMetricSample
from tests.clusters.helpers import forget_redis, make_cluster, node_spec, uid

pytestmark = pytest.mark.django_db


def report(load=1.5, free_mem=30000, gpu_free=(40000,), ts=None) -> dict:
    gpus = [
        {
            "gpu_id": i,
            "modelName": "A100",
            "totalMem": 40960,
            "usedMem": 40960 - f,
            "freeMem": f,
            "memUtilization": 10.0,
            "cudaUtilization": 5.0,
            "powerUtilization": 0.0,
            "temperature": 40.0,
        }
        for i, f in enumerate(gpu_free)
    ]
    return {
        "ts": ts or timezone.now().timestamp(),
        "vcpu": {
            "count": 8,
            "utilization": 12.5,
            "load_1m": load,
            "load_5m": load,
            "load_15m": load,
        },
        "memory": {
            "totalMem": 65536,
            "freeMem": free_mem,
            "usedMem": 65536 - free_mem,
            "averageUtil": 50.0,
        },
        "storage": {"totalMem": 100000, "freeMem": 50000, "usedMem": 50000},
        "network": {"txBytesTotal": 10, "rxBytesTotal": 20},
        "disk": {"memory": {"freeMem": 5, "usedMem": 5}, "iops": {"total": 3}},
        "gpus": {"count": len(gpus), "totalFreeMem": sum(gpu_free), "gpus": gpus},
    }


@pytest.fixture
def cluster_with_two_nodes():
    n1, n2 = uid("n"), uid("n")
    cluster = make_cluster(nodes=[node_spec(n1), node_spec(n2)])
    yield cluster, n1, n2
    forget_redis(n1, n2, cluster_ids=(cluster.id,))


def test_live_node_metrics_have_reference_names_and_expire(api, cluster_with_two_nodes):
    cluster, n1, _ = cluster_with_two_nodes
    services.record_node_metrics(n1, cluster.id, report())
    body = api.get(f"/api/v1/metrics/nodes/{n1}/").json()
    assert body["healthy"] is True and body["stale"] is False
    assert body["vcpu"]["load_15m"] == 1.5
    assert body["memory"]["freeMem"] == 30000
    assert body["gpus"]["totalFreeMem"] == 40000
    assert body["gpus"]["gpus"][0]["freeMem"] == 40000
    assert len(body["history"]) == 1
    ttl = services._redis().ttl(services.NODE_KEY.format(n1))
    assert 0 < ttl <= services.NODE_TTL_S
    # When the TTL runs out (simulated), the node has no live metrics and is not healthy.
    services._redis().delete(services.NODE_KEY.format(n1))
    stale = api.get(f"/api/v1/metrics/nodes/{n1}/").json()
    assert stale["stale"] is True and stale["healthy"] is False and "vcpu" not in stale
    assert api.get("/api/v1/metrics/nodes/no-such-node/").status_code == 404


def test_history_is_throttled_and_ranged(api, cluster_with_two_nodes):
    cluster, n1, _ = cluster_with_two_nodes
    for load in (1.0, 2.0, 3.0):
        services.record_node_metrics(n1, cluster.id, report(load=load))
    assert NodeMetricSample.objects.filter(node_id=n1).count() == 1  # one per interval
    old = timezone.now() - timedelta(hours=3)
    NodeMetricSample.objects.create(
        node_id=n1, cluster_id=cluster.id, ts=old, values={"vcpu.load_15m": 9.0}
    )
    recent = api.get(f"/api/v1/metrics/nodes/{n1}/").json()["history"]
    assert [h["values"]["vcpu.load_15m"] for h in recent] == [1.0]
    since = (old - timedelta(minutes=1)).isoformat()
    ranged = api.get(f"/api/v1/metrics/nodes/{n1}/", {"since": since}).json()["history"]
    assert [h["values"]["vcpu.load_15m"] for h in ranged] == [9.0, 1.0]
    assert api.get(f"/api/v1/metrics/nodes/{n1}/?since=yesterday").status_code == 400
    assert "history" not in api.get(f"/api/v1/metrics/nodes/{n1}/?history=0").json()


def test_cluster_aggregates_sum_and_average_reporting_nodes(api, cluster_with_two_nodes):
    cluster, n1, n2 = cluster_with_two_nodes
    services.record_node_metrics(n1, cluster.id, report(load=1.0, gpu_free=(40000, 20000)))
    services.record_node_metrics(n2, cluster.id, report(load=3.0, gpu_free=(10000,)))
    body = api.get(f"/api/v1/metrics/clusters/{cluster.id}/").json()
    assert body["nodes"] == {"count": 2, "reporting": 2}
    assert body["vcpu"]["load_15m"] == 2.0 and body["vcpu"]["count"] == 16
    assert body["gpus"]["count"] == 3 and body["gpus"]["totalFreeMem"] == 70000
    assert body["gpu"]["totalFreeMem"] == 70000 and body["gpus"]["maxFreeMem"] == 40000
    assert body["memory"]["freeMem"] == 60000
    assert set(body["node_metrics"]) == {n1, n2}
    listed = api.get("/api/v1/metrics/clusters/").json()
    assert any(c["cluster_id"] == cluster.id for c in listed)
    assert api.get("/api/v1/metrics/clusters/nope/").status_code == 404


def test_query_endpoint_over_live_metrics(api, cluster_with_two_nodes):
    cluster, n1, n2 = cluster_with_two_nodes
    services.record_node_metrics(n1, cluster.id, report(load=0.5))
    services.record_node_metrics(n2, cluster.id, report(load=12.0))
    busy = api.post(
        "/api/v1/metrics/query/",
        {
            "entity": "node",
            "query": {
                "variable": "metrics.resource.node.vcpu.load_15m",
                "operator": ">",
                "value": "10",
            },
        },
        format="json",
    )
    assert busy.status_code == 200
    assert [r["node_id"] for r in busy.json()["results"]] == [n2]
    mongo = api.post(
        "/api/v1/metrics/query/",
        {"query": {"$and": [{"cluster_id": cluster.id}, {"vcpu.load_15m": {"$lt": "1"}}]}},
        format="json",
    )
    assert [r["node_id"] for r in mongo.json()["results"]] == [n1]
    clusters = api.post(
        "/api/v1/metrics/query/",
        {
            "entity": "cluster",
            "query": {"variable": "cluster.gpu.totalFreeMem", "operator": ">=", "value": "80000"},
        },
        format="json",
    )
    assert [c["cluster_id"] for c in clusters.json()["results"]] == [cluster.id]
    bad = api.post(
        "/api/v1/metrics/query/", {"entity": "node", "query": {"secret": 1}}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_query"
    assert (
        api.post(
            "/api/v1/metrics/query/", {"entity": "planet", "query": {}}, format="json"
        ).status_code
        == 400
    )


def test_search_engine_narrows_clusters_by_cluster_metrics(cluster_with_two_nodes):
    from apps.search.engine import filter_queryset

    cluster, n1, _ = cluster_with_two_nodes
    idle = make_cluster(nodes=[node_spec(uid("n"))])
    services.record_node_metrics(n1, cluster.id, report(load=0.2))
    found = filter_queryset(
        "cluster",
        {"clusterMetricsQuery": {"variable": "cluster.vcpu.load_15m", "operator": "<", "value": 5}},
    )
    ids = set(found.values_list("id", flat=True))
    assert cluster.id in ids and idle.id not in ids  # no live metrics: not a candidate


def test_prometheus_exposition(anon_client, cluster_with_two_nodes):
    cluster, n1, n2 = cluster_with_two_nodes
    services.record_node_metrics(n1, cluster.id, report())
    response = anon_client.get("/api/v1/metrics/prometheus/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert f'aios_node_up{{cluster="{cluster.id}",node="{n1}"}} 1.0' in text
    assert f'aios_node_up{{cluster="{cluster.id}",node="{n2}"}} 0.0' in text
    assert f'aios_node_load{{cluster="{cluster.id}",node="{n1}",window="15m"}} 1.5' in text
    assert "# TYPE aios_node_gpu_memory_free_mb gauge" in text
    labels = f'cluster="{cluster.id}",node="{n1}",gpu="0",model="A100"'
    assert f"aios_node_gpu_memory_free_mb{{{labels}}} 40000.0" in text


def test_downsampling_and_retention_bound_the_history():
    node = uid("n")
    now = timezone.now()
    base = now - services.RAW_RETENTION - timedelta(minutes=30)
    bucket_start = base.replace(minute=(base.minute // 5) * 5, second=0, microsecond=0)
    for i, load in enumerate((1.0, 2.0, 3.0)):
        NodeMetricSample.objects.create(
            node_id=node,
            cluster_id="c",
            values={"vcpu.load_15m": load},
            ts=bucket_start + timedelta(seconds=30 * i),
        )
    NodeMetricSample.objects.create(
        node_id=node, cluster_id="c", values={"vcpu.load_15m": 7.0}, ts=now - timedelta(minutes=1)
    )
    NodeMetricSample.objects.create(
        node_id=node,
        cluster_id="c",
        values={"x": 1.0},
        resolution_s=300,
        ts=now - services.RETENTION - timedelta(hours=1),
    )
    MetricSample.objects.create(
        entity_type="block",
        entity_id="b",
        name="latency",
        value=1.0,
        ts=now - services.ENTITY_RETENTION - timedelta(hours=1),
    )
    result = services.downsample_and_prune(now)
    assert result["downsampled"] == 3 and result["buckets"] == 1
    assert result["expired"] == 1 and result["entity_expired"] == 1
    rows = list(NodeMetricSample.objects.filter(node_id=node).order_by("ts"))
    assert [(r.resolution_s, r.values["vcpu.load_15m"]) for r in rows] == [(300, 2.0), (0, 7.0)]


def test_block_and_vdag_metrics(api, anon_client):
    block_id = uid("blk")
    payload = {
        "entity_type": "block",
        "entity_id": block_id,
        "values": {"latency": 12.5, "tasks_processed": 40},
        "labels": {"instance": "i-1"},
    }
    assert anon_client.post("/api/v1/metrics/samples/", payload, format="json").status_code == 401
    assert api.post("/api/v1/metrics/samples/", payload, format="json").status_code == 201
    body = api.get(f"/api/v1/metrics/blocks/{block_id}/").json()
    assert body["live"]["latency"] == 12.5 and body["live"]["tasks_processed"] == 40
    assert {h["name"] for h in body["history"]} == {"latency", "tasks_processed"}
    fast = api.post(
        "/api/v1/metrics/query/",
        {"entity": "block", "query": {"variable": "latency", "operator": "<", "value": "20"}},
        format="json",
    ).json()
    assert [r["entity_id"] for r in fast["results"]] == [block_id]
    for bad in (
        {**payload, "values": {"latency": "fast"}},
        {**payload, "values": {}},
        {**payload, "entity_type": "planet"},
        {**payload, "values": {"bad name!": 1}},
    ):
        assert api.post("/api/v1/metrics/samples/", bad, format="json").status_code == 400
    vdag = uid("vdag")
    services.record_entity_metrics("vdag", vdag, {"end_to_end_latency": 3.0})
    assert api.get(f"/api/v1/metrics/vdags/{vdag}/").json()["live"] == {
        "end_to_end_latency": 3.0,
        "_ts": pytest.approx(timezone.now().timestamp(), abs=60),
    }
    services._redis().delete(
        services.ENTITY_KEY.format("block", block_id), services.ENTITY_KEY.format("vdag", vdag)
    )


def test_admin_pages_render(admin_client, cluster_with_two_nodes):
    cluster, n1, _ = cluster_with_two_nodes
    services.record_node_metrics(n1, cluster.id, report())
    services.record_entity_metrics("block", uid("b"), {"latency": 1.0})
    for url in (
        "/admin/metrics/nodemetricsample/",
        "/admin/metrics/livenodemetrics/",
        f"/admin/metrics/livenodemetrics/{n1}/change/",
        "/admin/metrics/liveclustermetrics/",
        "/admin/metrics/metricsample/",
        "/admin/metrics/liveentitymetrics/",
    ):
        assert admin_client.get(url).status_code == 200, url
