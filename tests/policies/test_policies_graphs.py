"""T5: graphs of policy functions, validated acyclic and run in topological order."""

from __future__ import annotations

import re

import pytest

from apps.core.errors import ValidationFailed
from apps.policies import graphs
from tests.policies.policies_support import ARITHMETIC_POLICY, upload


def test_topological_order_respects_edges_and_declaration_order():
    nodes, adjacency = graphs.normalise_connections(
        [], {"funcA": ["funcB", "funcC"], "funcB": ["funcD"], "funcC": ["funcD"]}
    )
    assert graphs.topological_order(nodes, adjacency) == ["funcA", "funcB", "funcC", "funcD"]
    assert graphs.sinks(nodes, adjacency) == ["funcD"]
    assert graphs.parents_of(nodes, adjacency)["funcD"] == ["funcB", "funcC"]


@pytest.mark.parametrize(
    "connections,cycle",
    [
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, "a -> b -> c -> a"),
        ({"a": ["a"]}, "a -> a"),
        ({"x": ["y"], "y": ["z"], "z": ["y"]}, "y -> z -> y"),
    ],
)
def test_a_cycle_is_refused_naming_it(connections, cycle):
    with pytest.raises(ValidationFailed, match=re.escape(cycle)):
        nodes, adjacency = graphs.normalise_connections([], connections)
        graphs.topological_order(nodes, adjacency)


def test_connections_must_name_declared_functions():
    with pytest.raises(ValidationFailed, match="not in graph_function_ids"):
        graphs.normalise_connections(["a"], {"a": ["b"]})
    with pytest.raises(ValidationFailed, match="adjacency map"):
        graphs.normalise_connections(["a"], ["a", "b"])


@pytest.fixture
def arithmetic_functions(db, api):
    """Four running functions: a (+1), b (*2), c (+10), d (+0, sums its parents)."""
    from apps.policies import services
    from apps.policies.models import PolicyFunction, PolicyGraph

    upload(api, "arith", ARITHMETIC_POLICY)
    for name, params in {
        "fa": {"op": "add", "k": 1},
        "fb": {"op": "mul", "k": 2},
        "fc": {"op": "add", "k": 10},
        "fd": {"op": "add", "k": 0},
    }.items():
        body = {"name": name, "policy_rule_uri": "arith:1.0-test", "policy_rule_parameters": params}
        assert api.post("/api/v1/policy-functions/", body, format="json").status_code == 201
    yield
    PolicyGraph.objects.all().delete()
    for function in PolicyFunction.objects.all():
        services.delete_function(function)


DIAMOND = {"fa": ["fb", "fc"], "fb": ["fd"], "fc": ["fd"]}


def test_graph_executes_in_order_feeding_outputs_forward(api, arithmetic_functions):
    created = api.post(
        "/api/v1/policy-graphs/",
        {
            "graph_name": "diamond",
            "graph_version": "1.0",
            "graph_release_tag": "stable",
            "graph_function_ids": ["fa", "fb", "fc", "fd"],
            "graph_connection_data": DIAMOND,
            "graph_input_schema": {"type": "object", "required": ["value"]},
            "graph_search_tags": ["math"],
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["graph_uri"] == "diamond:1.0-stable"
    response = api.post(
        "/api/v1/policy-graphs/diamond:1.0-stable/execute/",
        {"input_data": {"value": 1}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    # fa: 1+1=2; fb: 2*2=4; fc: 2+10=12; fd: {fb: 4, fc: 12} -> 16
    assert response.json() == {"result": {"fd": {"value": 16}}, "order": ["fa", "fb", "fc", "fd"]}
    bad = api.post(
        "/api/v1/policy-graphs/diamond:1.0-stable/execute/", {"input_data": {}}, format="json"
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad_input"
    assert api.get("/api/v1/policy-graphs/?tag=math").json()["count"] == 1


def test_graph_validation_errors_are_400(api, arithmetic_functions):
    base = {"name": "g", "version": "1", "release_tag": "x"}
    cyclic = api.post(
        "/api/v1/policy-graphs/",
        {**base, "graph_connection_data": {"fa": ["fb"], "fb": ["fc"], "fc": ["fa"]}},
        format="json",
    )
    assert cyclic.status_code == 400
    assert "cycle: fa -> fb -> fc -> fa" in cyclic.json()["error"]["message"]
    missing = api.post(
        "/api/v1/policy-graphs/",
        {**base, "graph_connection_data": {"fa": ["ghost"]}},
        format="json",
    )
    assert missing.status_code == 400 and "ghost" in missing.json()["error"]["message"]
    ok = api.post(
        "/api/v1/policy-graphs/", {**base, "graph_connection_data": {"fa": ["fb"]}}, format="json"
    )
    assert ok.status_code == 201
    cyclic_update = api.patch(
        "/api/v1/policy-graphs/g:1-x/",
        {"graph_connection_data": {"fa": ["fb"], "fb": ["fa"]}},
        format="json",
    )
    assert cyclic_update.status_code == 400
    in_use = api.delete("/api/v1/policy-functions/fa/")
    assert in_use.status_code == 409 and "g:1-x" in in_use.json()["error"]["message"]
