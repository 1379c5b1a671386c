"""Similarity search: the filter's candidates handed to a ranking policy (sandboxed)."""

import pytest

from apps.core.errors import ApiError
from apps.registries import services as registries
from apps.search import engine
from tests.registries.factories import component_values, register_test_policy

RANKER = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.settings = settings

    def eval(self, parameters, input_data, context):
        candidates = input_data["candidates"]
        ids = [c["componentURI"] for c in candidates]
        mode = parameters.get("mode", "reverse")
        if mode == "reverse":
            return list(reversed(ids))
        if mode == "scores":
            return {"scores": {i: float(n) for n, i in enumerate(ids)}}
        if mode == "best":
            return candidates[-1]
        if mode == "scored-list":
            return [{"id": i, "score": 1.0 / (n + 1)} for n, i in enumerate(ids)]
        if mode == "unknown":
            return ["model.ghost:1-x"]
        if mode == "echo-query":
            return {"results": [{"id": ids[0], "score": 1, "query": input_data["query"]}]}
        if mode == "weird":
            return 42
        raise ValueError("unknown mode")
"""


@pytest.fixture
def ranker(user):
    for name in ("a", "b", "c"):
        registries.register_component(component_values(name=name), owner=user)
    return register_test_policy(RANKER, name="ranker")


def ranked(ranker_uri, mode, **kwargs):
    rule = {"policyRuleURI": ranker_uri, "settings": {}, "parameters": {"mode": mode}}
    return engine.search("component", {}, ranking_policy_rule=rule, **kwargs)


@pytest.mark.django_db
def test_policy_orders_candidates_by_id(ranker):
    result = ranked(ranker, "reverse")
    assert [r["componentURI"] for r in result] == [
        "model.c:1.0.0-stable",
        "model.b:1.0.0-stable",
        "model.a:1.0.0-stable",
    ]
    assert "_score" not in result[0]


@pytest.mark.django_db
def test_scores_map_sorts_descending_and_top_k(ranker):
    result = ranked(ranker, "scores", limit=2)
    assert [(r["componentURI"], r["_score"]) for r in result] == [
        ("model.c:1.0.0-stable", 2.0),
        ("model.b:1.0.0-stable", 1.0),
    ]


@pytest.mark.django_db
def test_single_best_match_and_scored_list(ranker):
    assert [r["componentURI"] for r in ranked(ranker, "best")] == ["model.c:1.0.0-stable"]
    scored = ranked(ranker, "scored-list")
    assert scored[0]["_score"] == 1.0 and scored[0]["componentURI"] == "model.a:1.0.0-stable"


@pytest.mark.django_db
def test_policy_sees_the_query_and_return_parameter_cuts(ranker):
    rule = {"policyRuleURI": ranker, "parameters": {"mode": "echo-query", "return": 1}}
    filter_ = {"componentQuery": {"componentType": "model"}}
    result = engine.search("component", filter_, ranking_policy_rule=rule)
    assert len(result) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("mode,status", [("unknown", 422), ("weird", 422), ("boom", 422)])
def test_bad_policy_answers_are_422(ranker, mode, status):
    with pytest.raises(ApiError) as exc:
        ranked(ranker, mode)
    assert exc.value.status_code == status


@pytest.mark.django_db
def test_missing_policy_is_404_and_no_candidates_skips_the_policy(ranker):
    with pytest.raises(ApiError) as exc:
        engine.search("component", {}, ranking_policy_rule="nobody.ranks:1-x")
    assert exc.value.status_code == 404
    empty = engine.search(
        "component",
        {"componentQuery": {"componentType": "none"}},
        ranking_policy_rule="nobody.ranks:1-x",
    )
    assert empty == []


@pytest.mark.django_db
def test_aios_ir_with_values_wrapper_and_filter_rule(ranker):
    values = {
        "matchType": "component",
        "rankingPolicyRule": {
            "values": {
                "executionMode": "code",
                "policyRuleURI": ranker,
                "settings": {},
                "parameters": {
                    "mode": "reverse",
                    "filterRule": {
                        "matchType": "component",
                        "filter": {"componentQuery": {"componentId.name": {"$in": ["a", "b"]}}},
                    },
                },
            }
        },
    }
    out = engine.run_ir(values)
    assert out["count"] == 2
    assert [r["componentURI"] for r in out["results"]] == [
        "model.b:1.0.0-stable",
        "model.a:1.0.0-stable",
    ]
