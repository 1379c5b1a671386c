"""The vDAG graph compiler: every validation error, nested expansion, the stored form, the
dynamic-graph form and the protocol check."""

from __future__ import annotations

import json

import pytest

from block_sdk.vdag import (
    CompiledGraph,
    GraphError,
    GraphNode,
    check_protocols,
    compile_dynamic_graph,
    compile_graph,
    compile_spec,
)


def n(label: str, **kw) -> dict:
    return {"nodeLabel": label, "nodeType": "block", "manualBlockId": f"blk-{label}", **kw}


def conn(dst: str, *srcs: str) -> dict:
    return {"nodeLabel": dst, "inputs": [{"nodeLabel": s} for s in srcs]}


def ins(*labels: str) -> list[dict]:
    return [{"nodeLabel": x} for x in labels]


def diamond() -> CompiledGraph:
    return compile_graph(
        [n("a"), n("b"), n("c"), n("d")],
        [conn("b", "a"), conn("c", "a"), conn("d", "b", "c")],
        ins("a"),
        ins("d"),
    )


def test_chain_compiles_with_heads_tails_and_order():
    g = compile_graph(
        [n("a"), n("b"), n("c")], [conn("b", "a"), conn("c", "b")], ins("a"), ins("c")
    )
    assert g.heads == ["a"] and g.tails == ["c"]
    assert g.order == ["a", "b", "c"]
    assert g.successors("a") == ["b"] and g.predecessors("c") == ["b"]
    assert g.nodes["b"].block_id == "blk-b"
    assert g.block_ids() == ["blk-a", "blk-b", "blk-c"]


def test_diamond_keeps_fan_in_order_of_the_spec():
    g = diamond()
    assert g.successors("a") == ["b", "c"]
    assert g.predecessors("d") == ["b", "c"]
    assert g.is_fan_in("d") and not g.is_fan_in("b")


@pytest.mark.parametrize(
    ("nodes", "connections", "inputs", "outputs", "pointer", "fragment"),
    [
        (
            [n("a")],
            [conn("b", "a")],
            ins("a"),
            ins("a"),
            "/graph/connections/0/nodeLabel",
            "unknown nodeLabel 'b'",
        ),
        (
            [n("a"), n("b")],
            [conn("b", "x")],
            ins("a"),
            ins("b"),
            "/graph/connections/0/inputs/0/nodeLabel",
            "unknown nodeLabel 'x'",
        ),
        ([n("a")], [], ins("zz"), ins("a"), "/graph/inputs/0/nodeLabel", "unknown nodeLabel"),
        ([n("a")], [], ins("a"), ins("zz"), "/graph/outputs/0/nodeLabel", "unknown nodeLabel"),
        ([n("a"), n("a")], [], ins("a"), ins("a"), "/nodes/1/nodeLabel", "duplicate nodeLabel 'a'"),
        ([n("a")], [], [], ins("a"), "/graph/inputs", "graph.inputs is empty"),
        ([n("a")], [], ins("a"), [], "/graph/outputs", "graph.outputs is empty"),
        (
            [n("a"), n("b")],
            [conn("b", "a")],
            ins("a", "b"),
            ins("b"),
            "/graph/inputs/1/nodeLabel",
            "has inputs of its own",
        ),
        (
            [n("a"), n("b")],
            [conn("b", "a")],
            ins("a"),
            ins("a", "b"),
            "/graph/outputs/0/nodeLabel",
            "tails are the nodes without successors",
        ),
        (
            [n("a"), n("b"), n("c")],
            [conn("b", "a")],
            ins("a"),
            ins("b", "c"),
            "/nodes/2",
            "unreachable from graph.inputs: c",
        ),
        (
            [n("a"), n("b"), n("c")],
            [conn("b", "a"), conn("c", "a")],
            ins("a"),
            ins("b"),
            "/graph/outputs",
            "missing tail: c",
        ),
        ([], [], [], [], "/nodes", "at least one node"),
        ([{"nodeLabel": ""}], [], [], [], "/nodes/0/nodeLabel", "nodeLabel is required"),
        (
            [n("a", nodeType="pipeline")],
            [],
            ins("a"),
            ins("a"),
            "/nodes/0/nodeType",
            "nodeType of 'a'",
        ),
        (
            [{"nodeLabel": "v", "nodeType": "vdag"}],
            [],
            ins("v"),
            ins("v"),
            "/nodes/0/vdagURI",
            "no vdagURI",
        ),
        (
            [n("a")],
            [{"inputs": []}],
            ins("a"),
            ins("a"),
            "/graph/connections/0/nodeLabel",
            "nodeLabel is required",
        ),
        ([n("a")], "nope", ins("a"), ins("a"), "/graph/connections", "must be a list"),
    ],
)
def test_each_validation_error_names_the_place(
    nodes, connections, inputs, outputs, pointer, fragment
):
    with pytest.raises(GraphError) as info:
        compile_graph(nodes, connections, inputs, outputs)
    assert fragment in info.value.message
    assert info.value.pointer == pointer
    assert info.value.to_dict()["error"]["details"][0] == {"pointer": pointer}


def test_a_cycle_is_named_node_by_node():
    with pytest.raises(GraphError) as info:
        compile_graph(
            [n("a"), n("b"), n("c"), n("d")],
            [conn("b", "a", "d"), conn("c", "b"), conn("d", "c")],
            ins("a"),
            ins("d"),
        )
    assert info.value.message == "cycle: b -> c -> d -> b"
    assert info.value.details == [{"cycle": ["b", "c", "d", "b"]}]


def test_a_self_loop_is_a_cycle():
    with pytest.raises(GraphError, match="cycle: a -> a"):
        compile_graph([n("a")], [conn("a", "a")], ins("a"), ins("a"))


def test_nested_vdag_expands_inline_with_prefixed_labels():
    inner = diamond()  # a -> (b, c) -> d
    outer = compile_graph(
        [
            n("pre"),
            {"nodeLabel": "sub", "nodeType": "vdag", "vdagURI": "inner:1.0-stable"},
            n("post"),
        ],
        [conn("sub", "pre"), conn("post", "sub")],
        ins("pre"),
        ins("post"),
        resolve_vdag=lambda uri: {"inner:1.0-stable": inner}[uri],
    )
    assert set(outer.nodes) == {"pre", "sub/a", "sub/b", "sub/c", "sub/d", "post"}
    assert outer.successors("pre") == ["sub/a"]
    assert outer.predecessors("sub/d") == ["sub/b", "sub/c"]
    assert outer.successors("sub/d") == ["post"]
    assert outer.nodes["sub/b"].block_id == "blk-b"
    assert outer.heads == ["pre"] and outer.tails == ["post"]


def test_every_tail_of_an_inner_graph_feeds_every_outer_successor():
    inner = compile_graph(
        [n("x"), n("y"), n("z")], [conn("y", "x"), conn("z", "x")], ins("x"), ins("y", "z")
    )
    outer = compile_graph(
        [{"nodeLabel": "sub", "nodeType": "vdag", "vdagURI": "fan"}, n("m"), n("out")],
        [conn("out", "sub", "m")],
        ins("sub", "m"),
        ins("out"),
        resolve_vdag=lambda uri: inner.to_dict(),  # the stored form works too
    )
    assert outer.predecessors("out") == ["sub/y", "sub/z", "m"]
    assert outer.heads == ["sub/x", "m"]
    assert outer.is_fan_in("out")


def test_nested_vdag_as_a_tail_contributes_its_tails():
    inner = compile_graph(
        [n("x"), n("y"), n("z")], [conn("y", "x"), conn("z", "x")], ins("x"), ins("y", "z")
    )
    outer = compile_graph(
        [n("a"), {"nodeLabel": "sub", "nodeType": "vdag", "vdagURI": "fan"}],
        [conn("sub", "a")],
        ins("a"),
        ins("sub"),
        resolve_vdag=lambda uri: inner,
    )
    assert outer.tails == ["sub/y", "sub/z"]


def test_a_missing_nested_vdag_is_reported_at_its_node():
    def resolve(uri):
        raise LookupError(f"no vDAG {uri}")

    with pytest.raises(GraphError) as info:
        compile_graph(
            [n("a"), {"nodeLabel": "sub", "nodeType": "vdag", "vdagURI": "ghost:1.0-x"}],
            [conn("sub", "a")],
            ins("a"),
            ins("sub"),
            resolve_vdag=resolve,
        )
    assert info.value.pointer == "/nodes/1/vdagURI"
    assert "ghost:1.0-x" in info.value.message and "does not exist" in info.value.message


def test_nested_vdag_without_resolver_is_an_error():
    with pytest.raises(GraphError, match="cannot be resolved"):
        compile_graph(
            [{"nodeLabel": "sub", "nodeType": "vdag", "vdagURI": "x"}],
            [],
            ins("sub"),
            ins("sub"),
        )


def test_nesting_twice_prefixes_twice():
    leaf = compile_graph([n("k")], [], ins("k"), ins("k"))
    mid = compile_graph(
        [n("m"), {"nodeLabel": "in", "nodeType": "vdag", "vdagURI": "leaf"}],
        [conn("in", "m")],
        ins("m"),
        ins("in"),
        resolve_vdag=lambda u: leaf,
    )
    top = compile_graph(
        [{"nodeLabel": "outer", "nodeType": "vdag", "vdagURI": "mid"}],
        [],
        ins("outer"),
        ins("outer"),
        resolve_vdag=lambda u: mid,
    )
    assert top.order == ["outer/m", "outer/in/k"]
    assert top.tails == ["outer/in/k"]


def test_stored_form_round_trips_and_is_json():
    g = diamond().with_executors({"blk-a": {"cluster_id": "c1", "grpc": "h:1"}})
    doc = json.loads(json.dumps(g.to_dict()))
    again = CompiledGraph.from_dict(doc)
    assert again.to_dict() == g.to_dict()
    assert again.nodes["a"].executor == {"cluster_id": "c1", "grpc": "h:1"}
    assert again.digest == g.digest
    assert again.predecessors("d") == ["b", "c"]


@pytest.mark.parametrize(
    ("doc", "pointer"),
    [
        ([], ""),
        ({"nodes": {}}, "/nodes"),
        ({"nodes": {"a": {}}, "edges": {"a": ["zz"]}}, "/edges/a/0"),
        ({"nodes": {"a": {"node_type": "vdag"}}}, "/nodes/a/node_type"),
        ({"nodes": {"a": {}, "b": {}}, "edges": {"a": ["b"], "b": ["a"]}}, "/edges"),
    ],
)
def test_a_malformed_stored_graph_is_rejected(doc, pointer):
    with pytest.raises(GraphError) as info:
        CompiledGraph.from_dict(doc)
    assert info.value.pointer == pointer


def test_compile_spec_reads_the_vdag_spec_values():
    values = {
        "vdagName": "v",
        "nodes": [
            {
                "nodeLabel": "a",
                "manualBlockId": "b1",
                "postprocessingPolicyRule": {"policyRuleURI": "p:1-x", "parameters": {"k": 1}},
            },
            {"nodeLabel": "b", "manualBlockId": "b2", "modelParameters": {"t": 0.5}},
        ],
        "graph": {"connections": [conn("b", "a")], "inputs": ins("a"), "outputs": ins("b")},
    }
    g = compile_spec(values)
    assert g.nodes["a"].post_policy == {"policyRuleURI": "p:1-x", "parameters": {"k": 1}}
    assert g.nodes["b"].model_parameters == {"t": 0.5}
    with pytest.raises(GraphError, match="graph is required"):
        compile_spec({"nodes": []})


def test_graph_node_accepts_compiled_and_spec_keys():
    a = GraphNode.from_dict({"nodeLabel": "x", "manualBlockId": "b", "vdagURI": None})
    b = GraphNode.from_dict({"block_id": "b", "node_type": "block"}, label="x")
    assert a.label == b.label == "x" and a.block_id == b.block_id == "b"
    assert GraphNode("x", block_id="b").to_dict() == {"node_type": "block", "block_id": "b"}


def test_dynamic_graph_of_the_adhoc_server():
    g = compile_dynamic_graph(
        {"blk-a": ["blk-b", "blk-c"], "blk-b": ["blk-d"], "blk-c": ["blk-d"], "blk-d": []},
        "blk-a",
        {"blk-a": {"grpc": "h:1"}},
    )
    assert g.heads == ["blk-a"] and g.tails == ["blk-d"]
    assert g.predecessors("blk-d") == ["blk-b", "blk-c"]
    assert g.nodes["blk-a"].executor == {"grpc": "h:1"}
    # the documented {"parent": {"outputs": [...]}} variant
    g2 = compile_dynamic_graph({"x": {"outputs": ["y"]}}, "x")
    assert g2.successors("x") == ["y"]


@pytest.mark.parametrize(
    ("graph_map", "head", "fragment"),
    [
        ({"a": ["b"]}, "zz", "not in the graph"),
        ({"a": ["b"], "c": ["b"]}, "a", "unreachable from graph.inputs: c"),
        ({"a": ["b"], "b": ["a"]}, "a", "cycle"),
        ({"a": "b"}, "a", "must be a list"),
        ({}, "a", "non-empty"),
    ],
)
def test_dynamic_graph_errors(graph_map, head, fragment):
    with pytest.raises(GraphError, match=fragment):
        compile_dynamic_graph(graph_map, head)


def test_protocol_check_json_schema_and_aios_templates():
    g = compile_graph(
        [n("a"), n("b"), n("c")], [conn("b", "a"), conn("c", "b")], ins("a"), ins("c")
    )
    good = {
        "blk-a": {
            "output": {
                "type": "object",
                "properties": {"text": {"type": "string"}, "n": {"type": "integer"}},
            }
        },
        "blk-b": {
            "input": {"type": "object", "required": ["text"]},
            "output": {"label": {"type": "string"}, "score": {"type": "number"}},
        },
        "blk-c": {"input": {"label": {"type": "string"}, "extra": {"required": False}}},
    }
    assert check_protocols(g, good) == []
    bad = dict(good)
    bad["blk-c"] = {"input": {"label": {"type": "number"}, "box": {"type": "array"}}}
    problems = check_protocols(g, bad)
    assert len(problems) == 1
    p = problems[0]
    assert (p["from"], p["to"]) == ("b", "c")
    assert p["missing"] == ["box"] and p["type_mismatch"] == ["label"]
    # an undeclared protocol is compatible with anything
    assert check_protocols(g, {}) == []


def test_protocol_check_of_a_fan_in_node():
    g = diamond()
    assert (
        check_protocols(g, {"blk-d": {"input": {"type": "object", "required": ["inputs"]}}}) == []
    )
    problems = check_protocols(g, {"blk-d": {"input": {"type": "object", "required": ["x"]}}})
    assert problems[0]["to"] == "d" and problems[0]["missing"] == ["x"]


def test_protocol_check_top_level_type_mismatch():
    g = compile_graph([n("a"), n("b")], [conn("b", "a")], ins("a"), ins("b"))
    problems = check_protocols(
        g, {"blk-a": {"output": {"type": "array"}}, "blk-b": {"input": {"type": "object"}}}
    )
    assert "produces array" in problems[0]["message"]
