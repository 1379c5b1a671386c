"""vDAGs served by a real vDAG controller over real block processes: chains, fan-out/fan-in,
a block serving several nodes, several tails, conditional routing, pre-processing policies,
nested vDAGs, a hop to another cluster over gRPC, files and frame_ptr, errors mid-graph, and
the controller's governance (quota, quality, metrics). Outputs are checked against the same
functions composed directly."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

from block_sdk.vdag import GraphNode
from tests.block_sdk.vdag.blocks import add, mul, total
from tests.block_sdk.vdag.harness import Network, other_db


@pytest.fixture(scope="module")
def blocks(module_net: Network) -> Network:
    net = module_net
    net.add_block("add1", {"op": "add", "k": 1})
    net.add_block("mul3", {"op": "mul", "k": 3})
    net.add_block("add10", {"op": "add", "k": 10})
    net.add_block("summer", {"op": "sum"})
    net.add_block("fail13", {"op": "fail", "k": 13})
    net.add_block("muxsum", {}, entrypoint="tests.block_sdk.vdag.blocks:MuxSumBlock")
    # A second "cluster": another Redis database, so Redis cannot be the way there.
    net.add_block(
        "remote_mul3", {"op": "mul", "k": 3}, cluster_id="c2", redis_url=other_db(net.redis_url)
    )
    net.wait_ready()
    return net


def out(resp) -> dict:
    return json.loads(resp.data)


def blocks_of(trace: list[str]) -> list[str]:
    return [t.split(":")[0].rsplit("-", 1)[0] for t in trace]


def test_three_block_chain_matches_direct_composition(blocks: Network):
    n = blocks
    g = n.graph(
        [n.node("a", "add1"), n.node("b", "mul3"), n.node("c", "add10")],
        {"b": ["a"], "c": ["b"]},
        ["a"],
        ["c"],
    )
    ctl = n.start_controller(g)
    for x in (2, -5, 0.5):
        resp = ctl.infer({"x": x}, session_id="chain", seq_no=7)
        assert out(resp)["x"] == add(mul(add(x, 1), 3), 10)
        assert blocks_of(out(resp)["trace"]) == ["add1", "mul3", "add10"]
        assert (resp.session_id, resp.seq_no, resp.ts) == ("chain", 7, 1.5)


def test_diamond_fans_out_and_merges_inputs_in_declared_order(blocks: Network):
    n = blocks
    g = n.graph(
        [n.node("a", "add1"), n.node("b", "mul3"), n.node("c", "add10"), n.node("d", "summer")],
        {"b": ["a"], "c": ["a"], "d": ["b", "c"]},
        ["a"],
        ["d"],
    )
    ctl = n.start_controller(g)
    for i, x in enumerate((2, 7, -1)):
        resp = out(ctl.infer({"x": x}, session_id=f"d{i}"))
        assert resp["x"] == total([mul(add(x, 1), 3), add(add(x, 1), 10)])
        # inputs are merged in the order d declares them: b's branch first, then c's
        assert blocks_of(resp["trace"]) == ["add1", "mul3", "add1", "add10", "summer"]


def test_a_block_with_its_own_muxer_merges_the_inputs_itself(blocks: Network):
    n = blocks
    g = n.graph(
        [n.node("a", "add1"), n.node("b", "mul3"), n.node("c", "add10"), n.node("d", "muxsum")],
        {"b": ["a"], "c": ["a"], "d": ["b", "c"]},
        ["a"],
        ["d"],
    )
    ctl = n.start_controller(g)
    for i, x in enumerate((2, 5)):
        resp = out(ctl.infer({"x": x}, session_id=f"m{i}"))
        assert resp["x"] == total([mul(add(x, 1), 3), add(add(x, 1), 10)])
        assert blocks_of(resp["trace"])[-1] == "muxsum"


def test_one_block_serves_several_nodes_of_a_vdag(blocks: Network):
    n = blocks
    g = n.graph(
        [n.node("first", "add1"), n.node("second", "add1"), n.node("third", "add1")],
        {"second": ["first"], "third": ["second"]},
        ["first"],
        ["third"],
    )
    ctl = n.start_controller(g)
    assert out(ctl.infer({"x": 1}))["x"] == 4


def test_several_tails_answer_one_object_keyed_by_label(blocks: Network):
    n = blocks
    g = n.graph(
        [n.node("a", "add1"), n.node("times", "mul3"), n.node("plus", "add10")],
        {"times": ["a"], "plus": ["a"]},
        ["a"],
        ["times", "plus"],
    )
    ctl = n.start_controller(g)
    resp = out(ctl.infer({"x": 4}))
    assert set(resp) == {"times", "plus"}
    assert resp["times"]["x"] == 15 and resp["plus"]["x"] == 15


def test_conditional_routing_by_a_post_processing_policy(blocks: Network):
    n = blocks
    parity = {"policyRuleURI": "test.route_by_parity", "parameters": {"even": "even", "odd": "odd"}}
    g = n.graph(
        [n.node("a", "add1", post_policy=parity), n.node("even", "mul3"), n.node("odd", "add10")],
        {"even": ["a"], "odd": ["a"]},
        ["a"],
        ["even", "odd"],
    )
    ctl = n.start_controller(g)
    took_even = out(ctl.infer({"x": 1}, seq_no=3))
    assert set(took_even) == {"even"} and took_even["even"]["x"] == mul(add(1, 1), 3)
    took_odd = out(ctl.infer({"x": 2}, seq_no=4))
    assert set(took_odd) == {"odd"} and took_odd["odd"]["x"] == add(add(2, 1), 10)


def test_conditional_branches_rejoin_at_a_fan_in(blocks: Network):
    """The pruned branch sends a skip marker, so the fan-in runs with the branch taken."""
    n = blocks
    parity = {"policyRuleURI": "test.route_by_parity", "parameters": {"even": "even", "odd": "odd"}}
    g = n.graph(
        [
            n.node("a", "add1", post_policy=parity),
            n.node("even", "mul3"),
            n.node("odd", "add10"),
            n.node("join", "summer"),
        ],
        {"even": ["a"], "odd": ["a"], "join": ["even", "odd"]},
        ["a"],
        ["join"],
    )
    ctl = n.start_controller(g)
    started = time.monotonic()
    assert out(ctl.infer({"x": 1}, seq_no=1))["x"] == 6
    assert out(ctl.infer({"x": 2}, seq_no=2))["x"] == 13
    assert time.monotonic() - started < 5  # no waiting out a timeout for the pruned branch


def test_pruning_a_branch_into_a_block_with_its_own_muxer_fails_clearly(blocks: Network):
    n = blocks
    parity = {
        "policyRuleURI": "test.route_by_parity",
        "parameters": {"even": "even", "odd": "odd"},
    }
    g = n.graph(
        [
            n.node("a", "add1", post_policy=parity),
            n.node("even", "mul3"),
            n.node("odd", "add10"),
            n.node("join", "muxsum"),
        ],
        {"even": ["a"], "odd": ["a"], "join": ["even", "odd"]},
        ["a"],
        ["join"],
    )
    ctl = n.start_controller(g)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        ctl.infer({"x": 1}, session_id="mux-prune")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "own Muxer" in json.loads(info.value.details())["error"]["message"]
    assert time.monotonic() - started < 5


def test_a_policy_that_prunes_everything_answers_empty(blocks: Network):
    n = blocks
    g = n.graph(
        [n.node("a", "add1", post_policy="test.drop_all"), n.node("b", "mul3")],
        {"b": ["a"]},
        ["a"],
        ["b"],
    )
    ctl = n.start_controller(g)
    assert ctl.infer({"x": 1}).data == "null"


def test_pre_processing_policy_runs_before_the_block(blocks: Network):
    n = blocks
    g = n.graph(
        [n.node("a", "add1"), n.node("b", "mul3", pre_policy="test.times_ten")],
        {"b": ["a"]},
        ["a"],
        ["b"],
    )
    ctl = n.start_controller(g)
    resp = out(ctl.infer({"x": 2}))
    assert resp["x"] == mul(add(2, 1) * 10, 3)
    assert "pre@b" in resp["trace"]


def test_nested_vdag_runs_inline(blocks: Network):
    n = blocks
    inner = n.graph(
        [n.node("a", "add1"), n.node("b", "mul3"), n.node("c", "add10"), n.node("d", "summer")],
        {"b": ["a"], "c": ["a"], "d": ["b", "c"]},
        ["a"],
        ["d"],
    )
    outer = n.graph(
        [
            n.node("pre", "add10"),
            GraphNode("sub", node_type="vdag", vdag_uri="inner:1-t"),
            n.node("post", "mul3"),
        ],
        {"sub": ["pre"], "post": ["sub"]},
        ["pre"],
        ["post"],
        resolve_vdag=lambda uri: inner,
    )
    ctl = n.start_controller(outer)
    x = 1
    y = add(x, 10)
    expected = mul(total([mul(add(y, 1), 3), add(add(y, 1), 10)]), 3)
    assert out(ctl.infer({"x": x}))["x"] == expected


def test_a_hop_to_another_cluster_goes_over_grpc(blocks: Network):
    n = blocks
    remote = n.blocks["remote_mul3"]
    before = remote.metric("aios_executor_tasks_processed_total", method="proxy")
    g = n.graph(
        [n.node("a", "add1"), n.node("b", "remote_mul3"), n.node("c", "add10")],
        {"b": ["a"], "c": ["b"]},
        ["a"],
        ["c"],
    )
    ctl = n.start_controller(g)
    for x in range(3):
        assert out(ctl.infer({"x": x}, seq_no=x))["x"] == add(mul(add(x, 1), 3), 10)
    # The c2 block was reached through its executor's InferenceProxy, three times.
    assert remote.metric("aios_executor_tasks_processed_total", method="proxy") - before == 3


def test_a_result_from_another_cluster_comes_back_over_grpc(blocks: Network):
    n = blocks
    g = n.graph([n.node("a", "add1"), n.node("b", "remote_mul3")], {"b": ["a"]}, ["a"], ["b"])
    ctl = n.start_controller(g)
    assert out(ctl.infer({"x": 1}))["x"] == 6
    _, health = ctl.http("GET", "/health")
    assert health["results_over_grpc"] >= 1


def test_files_and_frame_ptr_travel_the_whole_graph(blocks: Network):
    n = blocks
    g = n.graph(
        [n.node("a", "add1"), n.node("b", "mul3")],
        {"b": ["a"]},
        ["a"],
        ["b"],
    )
    ctl = n.start_controller(g)
    frame = json.dumps({"framedb_id": "f1", "key": "k9"}).encode()
    resp = ctl.infer({"x": 1}, files=[({"name": "img.jpg"}, b"\x00\x01")], frame_ptr=frame)
    body = out(resp)
    assert body["files"] == [{"name": "img.jpg"}]
    assert json.loads(body["frame_ptr"]) == {"framedb_id": "f1", "key": "k9"}
    assert resp.frame_ptr == frame
    assert [(json.loads(f.metadata), f.file_data) for f in resp.files] == [
        ({"name": "img.jpg"}, b"\x00\x01")
    ]


def test_a_block_raising_mid_graph_fails_the_request_at_once(blocks: Network):
    n = blocks
    g = n.graph(
        [n.node("a", "add1"), n.node("f", "fail13"), n.node("c", "add10")],
        {"f": ["a"], "c": ["f"]},
        ["a"],
        ["c"],
    )
    ctl = n.start_controller(g, request_timeout_s=10)
    assert out(ctl.infer({"x": 1}))["x"] == 12
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        ctl.infer({"x": 12}, timeout=10)
    assert time.monotonic() - started < 3, "the error must not wait for the deadline"
    assert info.value.code() == grpc.StatusCode.INTERNAL
    detail = json.loads(info.value.details())["error"]
    assert "calc refuses x=13" in detail["message"]
    assert detail["details"][0]["node"] == "f"


def test_bad_requests_are_invalid_argument(blocks: Network):
    n = blocks
    ctl = n.start_controller(n.graph([n.node("a", "add1")], {}, ["a"], ["a"]))
    from block_sdk.protos import vdag_packet_pb2 as vpb

    for req in (
        vpb.vDAGInferencePacket(session_id="", data="{}"),
        vpb.vDAGInferencePacket(session_id="s", data="{not json"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            ctl.vdag_stub().infer(req, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_quota_denies_the_n_plus_first_request_of_a_session(blocks: Network):
    n = blocks
    ctl = n.start_controller(
        n.graph([n.node("a", "add1")], {}, ["a"], ["a"]),
        quota_policy={"parameters": {"requests_per_session": 3, "window_s": 60}},
    )
    for i in range(3):
        ctl.infer({"x": i}, session_id="alice", seq_no=i)
    with pytest.raises(grpc.RpcError) as info:
        ctl.infer({"x": 9}, session_id="alice", seq_no=4)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over its quota of 3" in json.loads(info.value.details())["error"]["message"]
    ctl.infer({"x": 1}, session_id="bob")  # another session is not affected
    assert ctl.http("GET", "/quota/alice")[1]["quota"] == 3
    assert ctl.http("GET", "/quota/exists/alice")[1]["exists"] is True
    assert ctl.http("POST", "/quota/reset/alice")[0] == 200
    ctl.infer({"x": 1}, session_id="alice", seq_no=5)
    assert ctl.http("DELETE", "/quota/alice")[1]["removed"] is True
    assert ctl.http("GET", "/quota/exists/alice")[1]["exists"] is False
    status, body = ctl.http(
        "POST",
        "/quota/mgmt",
        {"mgmt_action": "set_parameters", "mgmt_data": {"requests_per_session": 1}},
    )
    assert status == 200 and body["result"]["parameters"]["requests_per_session"] == 1
    ctl.infer({"x": 1}, session_id="carol")
    with pytest.raises(grpc.RpcError):
        ctl.infer({"x": 1}, session_id="carol", seq_no=2)
    status, body = ctl.http("POST", "/quota/mgmt", {"mgmt_action": "nope"})
    assert status == 400 and body["error"]["code"] == "INVALID_ARGUMENT"
    assert ctl.http("POST", "/quota/mgmt", {})[0] == 400


class _Sink(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def sink_server() -> Iterator[tuple[str, list]]:
    handler = type("Sink", (_Sink,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (
            f"http://127.0.0.1:{server.server_address[1]}/api/v1/quality-samples/",
            handler.received,
        )
    finally:
        server.shutdown()
        server.server_close()


def test_quality_samples_are_recorded_in_the_stream_and_posted(blocks: Network, sink_server):
    n = blocks
    url, received = sink_server
    ctl = n.start_controller(
        n.graph([n.node("a", "add1")], {}, ["a"], ["a"]),
        quality_policy={"parameters": {"sample_rate": 1.0}},
        quality_sink_url=url,
    )
    for i in range(4):
        ctl.infer({"x": i}, session_id="q", seq_no=i)

    def samples():
        _, body = ctl.http(
            "POST",
            "/quality-check/mgmt",
            {"mgmt_action": "get_samples", "mgmt_data": {"count": 10}},
        )
        return body["result"]["samples"] if len(body["result"]["samples"]) == 4 else None

    from tests.support.procs import wait_until

    got = wait_until(samples, 10, "four quality samples")
    assert sorted(s["seq_no"] for s in got) == [0, 1, 2, 3]
    first = next(s for s in got if s["seq_no"] == 2)
    assert json.loads(first["request"]["data"]) == {"x": 2}
    assert json.loads(first["response"]["data"])["x"] == 3
    wait_until(lambda: len(received) == 4, 10, "four samples posted to the sink")
    assert received[0]["vdag"] == ctl.ids["vdag_uri"]
    _, stats = ctl.http("POST", "/quality-check/mgmt", {"mgmt_action": "stats"})
    assert stats["result"]["recorded"] == 4 and stats["result"]["dropped"] == 0
    _, state = ctl.http("POST", "/quality-check/mgmt", {"mgmt_action": "get_state"})
    assert state["result"] == {"seen": 4, "recorded": 4}


def test_sampling_rate_zero_records_nothing(blocks: Network):
    n = blocks
    ctl = n.start_controller(
        n.graph([n.node("a", "add1")], {}, ["a"], ["a"]),
        quality_policy={"parameters": {"sample_rate": 0.0}},
    )
    for i in range(3):
        ctl.infer({"x": i}, seq_no=i)
    time.sleep(0.3)
    _, body = ctl.http("POST", "/quality-check/mgmt", {"mgmt_action": "stats"})
    assert body["result"]["seen"] == 3 and body["result"]["recorded"] == 0


def test_metrics_are_exposed_and_pushed_to_the_live_hash(blocks: Network, redis_client):
    n = blocks
    ctl = n.start_controller(n.graph([n.node("a", "add1")], {}, ["a"], ["a"]))
    for i in range(5):
        ctl.infer({"x": i}, seq_no=i)
    _, text = ctl.http("GET", "/metrics")
    assert 'inference_requests_total{code="OK"' in text
    assert "inference_latency_seconds_bucket" in text and "inference_fps" in text
    key = f"aios:metrics:live:vdag:{ctl.ids['vdag_uri']}"
    from tests.support.procs import wait_until

    wait_until(lambda: redis_client.hget(key, "requests_total") == b"5.0", 10, "live metrics")
    assert redis_client.ttl(key) > 0
    ctl_key = f"aios:metrics:live:vdag_controller:{ctl.ids['controller_id']}"
    assert float(redis_client.hget(ctl_key, "requests_total")) == 5.0
    assert float(redis_client.hget(key, "latency_p50_s") or 0) >= 0


def test_the_controller_refuses_to_start_with_a_broken_graph_or_policy(blocks: Network):
    n = blocks
    with pytest.raises(RuntimeError, match=r"cycle|exited"):
        n.start_controller({"nodes": {"a": {}, "b": {}}, "edges": {"a": ["b"], "b": ["a"]}})
    with pytest.raises(RuntimeError, match=r"not found|exited"):
        n.start_controller(
            n.graph([n.node("a", "add1")], {}, ["a"], ["a"]), quota_policy="no.such:1-x"
        )
