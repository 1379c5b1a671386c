"""Cluster searches over the clusters app's real models: ``clusterQuery`` narrowed by the
metrics app's ``clusterMetricsQuery`` pre-filter (the cluster allocator's filter), and
ranking over clusters."""

import pytest
from django.utils import timezone

from apps.search import engine, registry
from tests.registries.factories import register_test_policy

clusters_models = pytest.importorskip("apps.clusters.models")
metrics_models = pytest.importorskip("apps.metrics.models")

PICK_LAST = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        return {"clusters": None, "ids": [c["id"] for c in input_data["candidates"]][::-1]}
"""


@pytest.fixture
def clusters(db):
    Cluster = clusters_models.Cluster
    rows = [
        ("gpu-eu", 8, "dma-bangalore", 4.0),
        ("gpu-us", 6, "dma-bangalore", 12.0),
        ("cpu-eu", 0, "acme", 1.0),
    ]
    for cluster_id, gpus, vendor, load in rows:
        Cluster.objects.create(
            id=cluster_id,
            region_id=cluster_id.split("-")[1],
            gpus={"count": gpus, "memory": gpus * 16000},
            cluster_metadata={"vendor": vendor},
            tags=["lab"],
        )
        metrics_models.LiveClusterMetrics.objects.create(
            cluster_id=cluster_id,
            ts=timezone.now(),
            vcpu={"load_15m": load},
            gpus={"totalFreeMem": gpus * 10000},
        )


def ids(results):
    return [r["id"] for r in results]


@pytest.mark.django_db
def test_cluster_query_from_the_block_spec_example(clusters):
    if "cluster" not in registry.registered():
        pytest.skip("the clusters app does not register 'cluster'")
    query = {
        "clusterQuery": {
            "logicalOperator": "AND",
            "conditions": [
                {"variable": "gpus.count", "operator": ">", "value": 5},
                {"variable": "clusterMetadata.vendor", "operator": "==", "value": "dma-bangalore"},
            ],
        }
    }
    assert ids(engine.search("cluster", query)) == ["gpu-eu", "gpu-us"]


@pytest.mark.django_db
def test_cluster_metrics_prefilter_narrows_clusters(clusters):
    if "clusterMetrics" not in registry.registered():
        pytest.skip("the metrics app does not register 'clusterMetrics'")
    query = {
        "clusterMetricsQuery": {"variable": "vcpu.load_15m", "operator": "<", "value": 10},
        "clusterQuery": {"variable": "gpus.count", "operator": ">", "value": 5},
    }
    assert ids(engine.search("cluster", query)) == ["gpu-eu"]
    assert "clusterMetricsQuery" in engine.allowed_filter_keys("cluster")


@pytest.mark.django_db
def test_ranking_over_clusters(clusters):
    if "cluster" not in registry.registered():
        pytest.skip("the clusters app does not register 'cluster'")
    uri = register_test_policy(PICK_LAST)
    result = engine.search("cluster", {}, ranking_policy_rule={"policyRuleURI": uri})
    assert ids(result) == ["gpu-us", "gpu-eu", "cpu-eu"]


@pytest.mark.django_db
def test_prepare_query_hook_rewrites_before_compiling(clusters, isolated_registry):
    entity = registry.registered()["cluster"]
    registry.register(
        "cluster",
        entity.queryset_fn,
        entity.fields,
        entity.serializer_fn,
        entity.relations,
        id_key=entity.id_key,
        prepare_query=lambda q: {**q, "variable": q["variable"].removeprefix("cluster.")},
    )
    query = {"clusterQuery": {"variable": "cluster.regionId", "operator": "==", "value": "us"}}
    assert ids(engine.search("cluster", query)) == ["gpu-us"]


@pytest.mark.django_db
def test_cluster_search_through_the_parser(api, clusters):
    if "cluster" not in registry.registered():
        pytest.skip("the clusters app does not register 'cluster'")
    body = {
        "header": {"templateUri": "Parser/V1"},
        "body": {
            "values": {
                "matchType": "cluster",
                "filter": {"clusterQuery": {"regionId": {"$in": ["eu"]}}},
            }
        },
    }
    response = api.post("/api/filter", body, format="json")
    assert response.status_code == 200, response.content
    assert ids(response.json()["results"]) == ["cpu-eu", "gpu-eu"]


@pytest.mark.django_db
def test_cluster_query_finds_clusters_without_metrics(clusters):
    """A relation pointing back (clusterMetrics -> cluster) must not narrow a cluster search
    by its own clusterQuery to the clusters that happen to have metrics."""
    if "cluster" not in registry.registered():
        pytest.skip("the clusters app does not register 'cluster'")
    clusters_models.Cluster.objects.create(id="fresh-eu", region_id="eu", gpus={"count": 7})
    query = {"clusterQuery": {"variable": "gpus.count", "operator": ">", "value": 5}}
    assert ids(engine.search("cluster", query)) == ["fresh-eu", "gpu-eu", "gpu-us"]
