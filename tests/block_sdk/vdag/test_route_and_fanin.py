"""The route carried in packets, the Redis fan-in step, node-policy results, and AIOS-style
clients built from the public protos (generated afresh here, not our checked-in modules)."""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from pathlib import Path

import pytest
import redis

from block_sdk.packet import DataPlaneError, Packet
from block_sdk.protos import aios_packet_pb2 as pb
from block_sdk.vdag import GraphNode, compile_graph
from block_sdk.vdag.fanin import FanIn, fanin_key
from block_sdk.vdag.hops import HopTransport
from block_sdk.vdag.policies import NodePolicies, policy_ref
from block_sdk.vdag.route import (
    FINAL_KIND,
    ROUTE_KIND,
    RouteError,
    new_route,
    parse_doc,
    parse_route,
)
from tests.block_sdk.vdag.harness import POLICY_DIR, Network

PROTO_DIR = Path(__file__).resolve().parents[3] / "block_sdk" / "protos"


def diamond():
    return compile_graph(
        [
            GraphNode("a", block_id="A"),
            GraphNode("b", block_id="B"),
            GraphNode("c", block_id="C"),
            GraphNode("d", block_id="D"),
        ],
        [
            {"nodeLabel": "b", "inputs": [{"nodeLabel": "a"}]},
            {"nodeLabel": "c", "inputs": [{"nodeLabel": "a"}]},
            {"nodeLabel": "d", "inputs": [{"nodeLabel": "b"}, {"nodeLabel": "c"}]},
        ],
        ["a"],
        ["d"],
    )


def test_route_round_trips_through_output_ptr():
    g = diamond()
    route = new_route(
        g,
        "r1",
        final={"redis_list": "L", "cluster_id": "c1"},
        deadline=123.5,
        vdag="v:1-x",
        frame_ptr=b'{"key": 1}',
    )
    ptr = route.ptr("d", "b", skipped=True)
    doc = json.loads(ptr)
    assert doc["kind"] == ROUTE_KIND and doc["node"] == "d" and doc["from"] == "b"
    assert doc["skip"] is True and doc["graph"] == g.to_dict()
    again = parse_route(ptr)
    assert (again.rid, again.node, again.sender, again.deadline) == ("r1", "d", "b", 123.5)
    assert again.skipped and again.frame_ptr == '{"key": 1}' and again.vdag == "v:1-x"
    assert again.graph.predecessors("d") == ["b", "c"]
    final = json.loads(route.final_ptr("d", error={"code": "INTERNAL", "message": "x"}))
    assert final == {
        "kind": FINAL_KIND,
        "rid": "r1",
        "node": "d",
        "list": "L",
        "error": {"code": "INTERNAL", "message": "x"},
    }


def test_other_output_ptrs_are_not_vdag_routes():
    assert parse_route("") is None
    assert parse_route('{"final": {"redis_list": "k"}}') is None
    assert parse_route("not json") is None
    assert parse_doc("[1]") is None


@pytest.mark.parametrize(
    "doc",
    [
        {"kind": ROUTE_KIND, "rid": "r", "node": "zz", "graph": {"nodes": {"a": {}}}},
        {"kind": ROUTE_KIND, "rid": "", "node": "a", "graph": {"nodes": {"a": {}}}},
        {"kind": ROUTE_KIND, "rid": "r", "node": "a", "graph": {"nodes": {}}},
        {
            "kind": ROUTE_KIND,
            "rid": "r",
            "node": "a",
            "graph": {"nodes": {"a": {}}},
            "deadline": "soon",
        },
    ],
)
def test_a_broken_route_is_reported(doc):
    with pytest.raises(RouteError):
        parse_route(json.dumps(doc))


def test_router_turns_a_broken_route_into_invalid_argument():
    from block_sdk.routing import DefaultForwarder, Router

    router = Router("blk", DefaultForwarder(None), redis_url="redis://127.0.0.1:6379/0")
    bad = json.dumps({"kind": ROUTE_KIND, "rid": "r", "node": "zz", "graph": {"nodes": {"a": {}}}})
    with pytest.raises(DataPlaneError) as info:
        router.prepare(Packet(data="{}", output_ptr=bad))
    assert info.value.code == "INVALID_ARGUMENT"
    plain = Packet(data="{}", output_ptr='{"final": {"redis_list": "k"}}')
    assert router.prepare(plain) is plain


def test_fan_in_completes_once_and_a_retry_of_the_claimer_gets_the_same_inputs(redis_url):
    client = redis.Redis.from_url(redis_url)
    fan = FanIn(client)
    rid = uuid.uuid4().hex
    try:
        assert fan.arrive(rid, "d", "b", b"from-b", 2, 5000) is None
        assert fan.arrive(rid, "d", "b", b"from-b", 2, 5000) is None  # a duplicate of b
        got = fan.arrive(rid, "d", "c", b"from-c", 2, 5000)
        assert got == {"b": b"from-b", "c": b"from-c"}
        # the claimer (c) re-run after a crash gets the group again; a late b does not
        assert fan.arrive(rid, "d", "c", b"from-c", 2, 5000) == got
        assert fan.arrive(rid, "d", "b", b"from-b", 2, 5000) is None
        assert 0 < client.pttl(fanin_key(rid, "d")) <= 5000
        # a skip marker counts as an arrival with no payload
        assert fan.arrive(rid, "e", "b", b"", 2, 5000) is None
        assert fan.arrive(rid, "e", "c", b"x", 2, 5000) == {"b": b"", "c": b"x"}
    finally:
        client.delete(fanin_key(rid, "d"), fanin_key(rid, "e"))
        client.close()


def test_same_cluster_is_decided_from_the_executor_address():
    t = HopTransport(cluster_id="c1", redis_url="redis://h:6379/0")
    assert t.redis_url_for({"cluster_id": "c1", "grpc": "x:1"}) == "redis://h:6379/0"
    assert t.redis_url_for({"cluster_id": "c1", "redis_url": "redis://o/2"}) == "redis://o/2"
    assert t.redis_url_for({"cluster_id": "c2", "grpc": "x:1"}) is None
    assert t.redis_url_for({"cluster_id": "c1", "grpc": "x:1", "transport": "grpc"}) is None
    assert t.redis_url_for({}) == "redis://h:6379/0"
    anon = HopTransport(redis_url="redis://h:6379/0")
    assert anon.redis_url_for({"grpc": "x:1"}) is None
    assert anon.redis_url_for({"grpc": "x:1", "redis_url": "redis://h:6379/0"}) is not None


def test_sticky_order_is_the_same_everywhere_and_spreads_sessions():
    live = ["i1", "i2", "i3"]
    assert HopTransport._order(live, "sess-1", 0) == HopTransport._order(live, "sess-1", 99)
    firsts = {HopTransport._order(live, f"s{i}", 0)[0] for i in range(60)}
    assert firsts == set(live)
    assert HopTransport._order(live, "", 1) == ["i2", "i3", "i1"]


def test_node_policy_references_and_results(monkeypatch):
    monkeypatch.setenv("AIOS_POLICY_DIR", str(POLICY_DIR))
    from block_sdk.policy_runtime import evaluator

    monkeypatch.setattr(evaluator, "_default_resolver", None)
    assert policy_ref("p:1-x") == {"uri": "p:1-x", "parameters": {}, "settings": {}, "mode": None}
    assert policy_ref({"policyRuleURI": "p", "parameters": {"a": 1}})["parameters"] == {"a": 1}
    assert policy_ref({"parameters": {}}) is None
    policies = NodePolicies("blk")
    node = GraphNode("n", block_id="blk")
    # pre: the AIOS-style policy edits the packet in place and returns it
    pre = policies.run_pre(
        policy_ref("test.times_ten"), "v", node, Packet(data='{"x": 2}', output_ptr="{}")
    )
    assert json.loads(pre.data) == {"x": 20, "trace": ["pre@n"]}
    # post: conditional routing through {"packet", "next"}
    ref = policy_ref(
        {"policyRuleURI": "test.route_by_parity", "parameters": {"even": "e", "odd": "o"}}
    )
    out, nxt = policies.run_post(ref, "v", node, pb.AIOSPacket(data='{"x": 3}'))
    assert nxt == ["o"] and json.loads(out.data) == {"x": 3}
    with pytest.raises(DataPlaneError) as info:
        policies.run_pre(policy_ref("test.missing"), "v", node, Packet(data="{}"))
    assert info.value.code == "FAILED_PRECONDITION"


def _generated_stubs(tmp_path: Path):
    """Compile the public .proto files with grpc_tools, as an AIOS client would."""
    from grpc_tools import protoc

    out = tmp_path / "aios_client"
    out.mkdir()
    for proto in ("aios_packet.proto", "vdag_packet.proto", "inference_proxy.proto"):
        rc = protoc.main(
            [
                "protoc",
                f"-I{PROTO_DIR}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                str(PROTO_DIR / proto),
            ]
        )
        assert rc == 0, proto
    sys.path.insert(0, str(out))
    try:
        names = (
            "aios_packet_pb2",
            "aios_packet_pb2_grpc",
            "vdag_packet_pb2",
            "vdag_packet_pb2_grpc",
        )
        for name in names:
            sys.modules.pop(name, None)
        return [importlib.import_module(n) for n in names]
    finally:
        sys.path.remove(str(out))
        for name in (
            "aios_packet_pb2",
            "aios_packet_pb2_grpc",
            "vdag_packet_pb2",
            "vdag_packet_pb2_grpc",
        ):
            sys.modules.pop(name, None)


def test_aios_style_clients_talk_to_the_controller_and_the_adhoc_server(net: Network, tmp_path):
    import grpc

    apb, apb_grpc, vpb, vpb_grpc = _generated_stubs(tmp_path)
    net.add_block("a", {"op": "add", "k": 1})
    net.add_block("b", {"op": "mul", "k": 2})
    net.wait_ready()
    g = net.graph([net.node("a", "a"), net.node("b", "b")], {"b": ["a"]}, ["a"], ["b"])
    ctl = net.start_controller(g)
    b = net.blocks["b"]
    server = net.start_adhoc(executors={b.block_id: b.address()})
    with grpc.insecure_channel(f"127.0.0.1:{ctl.grpc_port}") as channel:
        stub = vpb_grpc.vDAGInferenceServiceStub(channel)
        resp = stub.infer(
            vpb.vDAGInferencePacket(session_id="aios", seq_no=1, data='{"x": 3}', ts=2.0),
            timeout=10,
        )
        assert json.loads(resp.data)["x"] == 8 and resp.seq_no == 1
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = apb_grpc.BlockInferenceServiceStub(channel)
        resp = stub.infer(
            apb.BlockInferencePacket(
                block_id=b.block_id, session_id="aios", seq_no=2, data='{"x": 5}', ts=2.0
            ),
            timeout=10,
        )
        assert json.loads(resp.data)["x"] == 10 and resp.session_id == "aios"
