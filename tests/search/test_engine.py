"""The search engine: per-entity queries, dependency paths through relations (declared,
added from outside, and implied by foreign keys), errors naming what is wrong."""

import pytest

from apps.core.errors import ApiError
from apps.core.query import QueryFields
from apps.registries import services as registries
from apps.registries.models import Asset, AssetRegistry
from apps.search import engine
from apps.search.adapters import model_document
from apps.search.registry import Relation, add_relation, register
from tests.registries.factories import component_values, register_test_policy

POLICY = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        return input_data
"""


def uris(results, key="componentURI"):
    return sorted(r[key] for r in results)


@pytest.fixture
def components(user):
    registries.register_component(component_values(name="a"), owner=user)
    registries.register_component(
        {**component_values(name="b", version="2.0"), "componentMetadata": {"framework": "onnx"}},
        owner=user,
    )
    registries.register_component(
        {**component_values(name="c"), "componentType": "utility", "tags": ["gpu"]}, owner=user
    )


@pytest.fixture
def network(db):
    """Stand-ins for clusters (asset registries) and blocks (assets) with a real FK."""
    eu = AssetRegistry.objects.create(
        name="eu", public_url="http://eu", metadata={"vendor": "dma", "gpus": 8}
    )
    us = AssetRegistry.objects.create(
        name="us", public_url="http://us", metadata={"vendor": "acme", "gpus": 2}
    )
    for registry, names in ((eu, ["eu-1", "eu-2"]), (us, ["us-1"])):
        for index, name in enumerate(names):
            Asset.objects.create(
                asset_uri=f"{name}:1-x",
                name=name,
                version="1",
                tag="x",
                source="external",
                external_url="http://x",
                assets_db=registry,
                metadata={"replicas": index + 1, "load": 0.2 if name != "eu-2" else 0.9},
            )
    cluster_fields = QueryFields(
        fields={"id": "pk", "name": "name"}, json_fields={"clusterMetadata": "metadata"}
    )
    block_fields = QueryFields(
        fields={"id": "asset_uri", "name": "name"}, json_fields={"blockMetadata": "metadata"}
    )
    metrics_fields = QueryFields(
        fields={"blockId": "asset_uri"}, json_fields={"metrics": "metadata"}
    )
    register("testCluster", AssetRegistry.objects.all, cluster_fields, model_document)
    register(
        "testBlock",
        Asset.objects.all,
        block_fields,
        lambda a: {"id": a.asset_uri, "cluster": str(a.assets_db_id)},
        relations=[Relation("testCluster", local_field="assets_db_id", remote_field="pk")],
    )
    # Metrics of a block are its own row here; the relation is added from "outside".
    register("testBlockMetrics", Asset.objects.all, metrics_fields, model_document)
    add_relation("testBlock", "testBlockMetrics", local_field="asset_uri", remote_field="asset_uri")
    return {"eu": eu, "us": us}


@pytest.mark.django_db
def test_component_query_single_step(components):
    query = {
        "componentQuery": {
            "variable": "componentMetadata.framework",
            "operator": "==",
            "value": "onnx",
        }
    }
    assert uris(engine.filter_entities("component", query)) == ["model.b:2.0-stable"]
    mongo = {"componentQuery": {"componentType": {"$in": ["utility"]}}}
    assert uris(engine.search("component", mongo)) == ["utility.c:1.0.0-stable"]
    assert len(engine.search("component", {})) == 3
    assert len(engine.search("component", None, limit=2)) == 2


@pytest.mark.django_db
def test_block_search_narrowed_by_cluster_query(network):
    by_cluster = {
        "testClusterQuery": {"variable": "clusterMetadata.vendor", "operator": "==", "value": "dma"}
    }
    assert uris(engine.search("testBlock", by_cluster), "id") == ["eu-1:1-x", "eu-2:1-x"]
    both = {
        **by_cluster,
        "testBlockQuery": {"variable": "blockMetadata.replicas", "operator": ">=", "value": 2},
    }
    assert uris(engine.search("testBlock", both), "id") == ["eu-2:1-x"]


@pytest.mark.django_db
def test_block_search_with_metrics_prefilter_and_all_combined_with_and(network):
    low_load = {
        "testBlockMetricsQuery": {"variable": "metrics.load", "operator": "<", "value": 0.5}
    }
    assert uris(engine.search("testBlock", low_load), "id") == ["eu-1:1-x", "us-1:1-x"]
    combined = {
        **low_load,
        "testClusterQuery": {"variable": "clusterMetadata.gpus", "operator": ">", "value": 4},
    }
    assert uris(engine.search("testBlock", combined), "id") == ["eu-1:1-x"]


@pytest.mark.django_db
def test_foreign_keys_imply_relations_and_metrics_prefilters(network):
    # No declared relation: Asset.assets_db -> AssetRegistry gives block -> cluster, and a
    # "...Metrics" entity with an FK to the cluster becomes its pre-filter.
    register("fkBlock", Asset.objects.all, QueryFields.of("name"), model_document)
    register("fkCluster", AssetRegistry.objects.all, QueryFields.of("name"), model_document)
    register(
        "fkClusterMetrics",
        Asset.objects.all,
        QueryFields(json_fields={"m": "metadata"}),
        model_document,
    )
    found = engine.search("fkBlock", {"fkClusterQuery": {"name": "us"}})
    assert [r["name"] for r in found] == ["us-1"]
    hot = engine.search("fkCluster", {"fkClusterMetricsQuery": {"m.load": {"$gt": 0.5}}})
    assert [r["name"] for r in hot] == ["eu"]
    assert "fkClusterMetricsQuery" in engine.allowed_filter_keys("fkBlock")


@pytest.mark.django_db
def test_errors_name_what_is_wrong(components, isolated_registry):
    with pytest.raises(ApiError) as unknown:
        engine.search("spaceship", {})
    assert unknown.value.status_code == 400 and "spaceship" in unknown.value.message

    isolated_registry.unregister("blockMetrics")
    with pytest.raises(ApiError) as missing:
        engine.search("blockMetrics", {})
    assert missing.value.code == "entity_not_available"
    assert "blockMetrics" in missing.value.message

    with pytest.raises(ApiError) as wrong_key:
        engine.search("component", {"clusterQuery": {}})
    assert "clusterQuery" in wrong_key.value.message
    assert wrong_key.value.details[0]["allowed"] == ["componentQuery"]

    with pytest.raises(ApiError) as bad_field:
        engine.search("component", {"componentQuery": {"password": "x"}})
    assert bad_field.value.code == "invalid_query"
    assert bad_field.value.message.startswith("componentQuery: ")

    with pytest.raises(ApiError):
        engine.search("component", {}, limit=0)


@pytest.mark.django_db
def test_relation_to_an_entity_not_available_yet_is_400_only_when_used(network, isolated_registry):
    register(
        "testVdag",
        Asset.objects.all,
        QueryFields.of("name"),
        model_document,
        relations=[Relation("notThereYet", "name", "name")],
    )
    assert len(engine.search("testVdag", {"testVdagQuery": {"name": "us-1"}})) == 1
    with pytest.raises(ApiError) as exc:
        engine.search("testVdag", {"notThereYetQuery": {"x": 1}})
    assert "notThereYet" in exc.value.message


@pytest.mark.django_db
def test_policies_are_searchable(user):
    uri = register_test_policy(POLICY, name="ranker-alpha", metadata={"kind": "ranking"})
    register_test_policy(POLICY, name="other-beta", metadata={"kind": "allocator"})
    found = engine.search(
        "policy",
        {"policyQuery": {"variable": "metadata.kind", "operator": "==", "value": "ranking"}},
    )
    assert [r["policy_rule_uri"] for r in found] == [uri]
    found = engine.search("policy", {"policyQuery": {"name": {"$regex": "beta$"}}})
    assert [r["name"] for r in found] == ["other-beta"]
