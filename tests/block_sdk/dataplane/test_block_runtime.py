"""A block served for real: executor and instance processes, Redis, gRPC and HTTP.

Most tests share one block (round-robin executor, two probe instances) to keep the folder
fast; tests that kill or saturate instances get their own block."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import grpc
import pytest
import redis

from block_sdk.packet import make_block_packet
from block_sdk.protos import aios_packet_pb2 as pb
from block_sdk.protos import inference_proxy_pb2 as proxy_pb
from tests.block_sdk.dataplane.conftest import new_block_id
from tests.block_sdk.dataplane.plane import DataPlane


@pytest.fixture(scope="module")
def shared(redis_url, tmp_path_factory, redis_client) -> Iterator[DataPlane]:
    dp = DataPlane(redis_url, tmp_path_factory.mktemp("shared"), new_block_id("shared"))
    try:
        dp.start_instance("p1", parameters={"level": 1})
        dp.start_instance("p2", parameters={"level": 1})
        dp.start_executor(lb_policy="round_robin", lb_parameters={"session_stickiness": True})
        dp.wait_alive(["p1", "p2"])
        yield dp
    finally:
        dp.close()
        dp.delete_keys(redis_client)


def _error(exc: grpc.RpcError) -> dict:
    return json.loads(exc.details())["error"]


# -- request/response --------------------------------------------------------------------
def test_infer_returns_the_block_output_with_files(shared):
    files = [({"name": "a.txt", "type": "text"}, b"hello"), ({"name": "b.bin"}, b"\x00\xff")]
    out = shared.infer(
        {"x": 1},
        files=files,
        session_id="files-session",
        seq_no=42,
        query_parameters='{"q": 1}',
        ts=123.5,
    )
    body = json.loads(out.data)
    assert body["input"] == {"x": 1}
    assert body["files"] == [{"name": "a.txt", "type": "text"}, {"name": "b.bin"}]
    assert body["query_parameters"] == '{"q": 1}'
    assert (out.session_id, out.seq_no, out.ts) == ("files-session", 42, 123.5)
    assert [f.file_data for f in out.files] == [b"hello", b"\x00\xff"]


def test_round_robin_spreads_requests_evenly(shared):
    before = shared.instance_counts()
    seen = [shared.infer_json({"i": i})["instance_id"] for i in range(20)]
    after = shared.instance_counts()
    assert {k: after[k] - before.get(k, 0) for k in ("p1", "p2")} == {"p1": 10, "p2": 10}
    assert seen.count("p1") == seen.count("p2") == 10


def test_session_stickiness(shared):
    owners = {shared.infer_json({"i": i}, session_id="sticky-A")["instance_id"] for i in range(8)}
    assert len(owners) == 1
    others = {
        shared.infer_json({}, session_id=f"s-{uuid.uuid4().hex}")["instance_id"] for _ in range(6)
    }
    assert others == {"p1", "p2"}  # new sessions still spread
    _, body = shared.mgmt("get_sessions")
    assert body["result"]["sessions"]["sticky-A"] in owners


def test_on_data_raising_reaches_the_caller(shared):
    with pytest.raises(grpc.RpcError) as info:
        shared.infer({"raise": "boom 42"})
    assert info.value.code() == grpc.StatusCode.INTERNAL
    err = _error(info.value)
    assert err["code"] == "INTERNAL" and "ValueError: boom 42" in err["message"]
    detail = err["details"][0]
    assert detail["stage"] == "on_data" and detail["instance_id"] in ("p1", "p2")
    assert detail["block_id"] == shared.block_id


@pytest.mark.parametrize(
    ("data", "stage", "text"),
    [({"fail": "bad input"}, "on_data", "bad input"),
     ({"preprocess_fail": True}, "on_preprocess", "refused in preprocess")],
)  # fmt: skip
def test_a_refusal_is_aborted_with_its_reason(shared, data, stage, text):
    with pytest.raises(grpc.RpcError) as info:
        shared.infer(data)
    assert info.value.code() == grpc.StatusCode.ABORTED
    err = _error(info.value)
    assert err["message"] == text and err["details"][0]["stage"] == stage


def test_deadline_exceeded_never_hangs(shared):
    with pytest.raises(grpc.RpcError) as info:
        shared.infer({"sleep": 0.8}, timeout=0.3, session_id="slow-one")
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The block keeps serving afterwards.
    assert shared.infer_json({"after": True}, timeout=5)["input"] == {"after": True}


def test_wrong_block_id_is_not_found(shared):
    with pytest.raises(grpc.RpcError) as info:
        shared.infer({}, block_id="some-other-block")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# -- fire-and-forward --------------------------------------------------------------------
def test_inference_proxy_queues_and_routes_to_the_final_target(shared, redis_client):
    final_key = f"{shared.keys.base}:final-{uuid.uuid4().hex[:6]}"
    packet = pb.AIOSPacket(
        session_id="proxy-s",
        seq_no=9,
        data=json.dumps({"via": "proxy"}),
        output_ptr=json.dumps({"final": {"redis_list": final_key}}),
    )
    packet.files.add(metadata='{"name": "p.bin"}', file_data=b"xyz")
    resp = shared.proxy_stub().infer(
        proxy_pb.InferenceMessage(rpc_data=packet.SerializeToString()), timeout=5
    )
    assert resp.message is True
    got = redis_client.blpop([final_key], timeout=4)  # < the client socket timeout
    assert got is not None, "result never reached the final target"
    out = pb.AIOSPacket.FromString(got[1])
    assert json.loads(out.data)["input"] == {"via": "proxy"}
    assert (out.session_id, out.seq_no) == ("proxy-s", 9)
    assert [f.file_data for f in out.files] == [b"xyz"]


def test_inference_proxy_rejects_garbage(shared):
    with pytest.raises(grpc.RpcError) as info:
        shared.proxy_stub().infer(proxy_pb.InferenceMessage(rpc_data=b"\xff\xff\xff"), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- control -----------------------------------------------------------------------------
def test_parameter_update_reaches_every_instance(shared):
    status, body = shared.http("POST", "/parameters", {"parameters": {"mode": "fast"}})
    assert status == 200, body
    assert body["missing"] == [] and set(body["acks"]) == {"p1", "p2"}
    assert all(ack["ok"] for ack in body["acks"].values())
    outs = [shared.infer_json({"i": i})["params"] for i in range(4)]
    assert all(p == {"level": 1, "mode": "fast"} for p in outs)
    for iid in ("p1", "p2"):
        port = shared.instances[iid].http_port
        _, res = shared.http("POST", "/mgmt", {"mgmt_action": "updates"}, port=port)
        assert res["result"]["updates"][-1] == {"mode": "fast"}  # on_update got the delta


def test_executor_management_commands(shared):
    status, body = shared.mgmt("get_mapping")
    assert status == 200
    mapping = body["result"]
    assert mapping["lb_policy"] == "round_robin" and sorted(mapping["instances"]) == ["p1", "p2"]

    _, body = shared.mgmt("list_instances")
    rows = {r["instance_id"]: r for r in body["result"]["instances"]}
    assert rows["p1"]["alive"] and rows["p2"]["alive"]
    assert rows["p1"]["heartbeat"]["pid"] > 0

    _, body = shared.mgmt("logs", {"n": 5})
    lines = body["result"]["lines"]
    assert 0 < len(lines) <= 5 and all("event" in json.loads(line) for line in lines)

    status, body = shared.mgmt("set_lb_policy", {"name": "least_queue"})
    assert status == 200 and body["result"]["lb_policy"] == "least_queue"
    status, body = shared.mgmt("set_lb_policy", {"name": "round_robin"})
    assert body["result"]["lb_policy"] == "round_robin"

    status, body = shared.mgmt("no_such_command")
    assert status == 400 and body["error"]["code"] == "INVALID_ARGUMENT"
    status, body = shared.mgmt("set_lb_policy", {"name": "missing.module:Nope"})
    assert status == 400


def test_instance_http_endpoints(shared):
    shared.infer({"warm": True})
    port = shared.instances["p1"].http_port
    status, body = shared.http("GET", "/health", port=port)
    assert status == 200 and body["status"] == "healthy"
    status, body = shared.http("POST", "/mgmt", {"mgmt_action": "count"}, port=port)
    assert status == 200 and body["instance_id"] == "p1" and body["result"]["count"] >= 0
    status, body = shared.http("POST", "/mgmt", {"mgmt_action": "boom"}, port=port)
    assert status == 500 and "management exploded" in body["error"]["message"]
    status, text = shared.http("GET", "/metrics", port=port)
    assert status == 200
    assert "probe_requests_total" in text and "aios_instance_requests_total" in text


def test_executor_metrics_exposition(shared):
    shared.infer({"m": 1})
    status, text = shared.http("GET", "/metrics")
    assert status == 200
    for needle in (
        "aios_executor_tasks_processed_total{",
        "aios_executor_latency_seconds_bucket{",
        f'aios_executor_instance_requests_total{{block_id="{shared.block_id}",instance_id="p1"}}',
        "aios_executor_queue_length{",
        "aios_executor_instances_alive{",
    ):
        assert needle in text, needle


def test_block_events_reach_the_events_stream(shared, redis_client):
    shared.infer({"event": "hello"})
    entries = redis_client.xrange(shared.events_stream)
    assert entries, "no event written"
    fields = entries[-1][1]
    assert (
        fields[b"event_name"] == b"probe-event" and fields[b"block_id"] == shared.block_id.encode()
    )
    assert json.loads(fields[b"event_data"]) == {"value": "hello"}


# -- blocks of their own -----------------------------------------------------------------
def test_no_live_instance_is_unavailable_and_api_key_is_enforced(plane):
    plane.start_executor(api_key="s3cret")
    with pytest.raises(grpc.RpcError) as info:
        plane.infer({}, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    req = make_block_packet({})
    with pytest.raises(grpc.RpcError) as info:
        plane.stub().infer(req, timeout=5, metadata=[("x-api-key", "s3cret")])
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no live instance" in _error(info.value)["message"]
    status, body = plane.mgmt("get_mapping")
    assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"
    assert plane.http("GET", "/health")[0] == 200  # probes stay open


def test_full_queue_is_resource_exhausted(plane):
    plane.start_instance("only", env={"PROBE_DELAY_S": "0.4"})
    plane.start_executor(max_queue_length=2)
    plane.wait_alive(["only"])
    stub = plane.stub()
    futures = [stub.infer.future(make_block_packet({"n": n}), timeout=15) for n in range(7)]
    codes = []
    for f in futures:
        try:
            f.result()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert "full" in _error(exc)["message"]
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 2, codes
    assert codes.count(grpc.StatusCode.OK) >= 3, codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}


def test_echo_example_through_the_executor(plane):
    plane.start_instance("echo-1", entrypoint="examples.echo.block:EchoBlock")
    plane.start_executor()
    plane.wait_alive(["echo-1"])
    out = plane.infer({"hello": "world"}, files=[({"name": "x"}, b"123")])
    assert json.loads(out.data) == {"hello": "world", "echo": True}
    assert [f.file_data for f in out.files] == [b"123"]
    status, body = plane.http("POST", "/parameters", {"parameters": {"tag": "v2"}})
    assert status == 200 and body["missing"] == []
    assert plane.infer_json({"a": 1}) == {"a": 1, "echo": True, "tag": "v2"}


def test_aios_sdk_style_block_runs_unchanged_as_an_instance(plane):
    plane.start_instance(
        "aios-1",
        entrypoint="tests.block_sdk.dataplane.aios_style_block:SimpleBlock",
        parameters={"threshold": 0.7},
    )
    plane.start_executor()
    plane.wait_alive(["aios-1"])
    assert plane.infer_json({"value": 0.9}) == {"value": 0.9, "passed": True}
    assert plane.infer_json({"value": 0.5}) == {"value": 0.5, "passed": False}
    plane.http("POST", "/parameters", {"parameters": {"threshold": 0.1}})
    assert plane.infer_json({"value": 0.5}) == {"value": 0.5, "passed": True}
    port = plane.instances["aios-1"].http_port
    _, body = plane.http("POST", "/mgmt", {"mgmt_action": "get_threshold"}, port=port)
    assert body["result"] == {"threshold": 0.1}
    with pytest.raises(grpc.RpcError) as info:  # its own (False, str(e)) on bad JSON
        plane.infer("not json")
    assert info.value.code() == grpc.StatusCode.ABORTED


def test_muxer_fans_in_two_requests_of_one_session_and_seq(plane):
    plane.start_instance("mux-1", entrypoint="tests.block_sdk.dataplane.dp_blocks:MuxBlock")
    plane.start_executor()
    plane.wait_alive(["mux-1"])
    stub = plane.stub()
    f1 = stub.infer.future(make_block_packet({"left": 1}, session_id="m", seq_no=3), timeout=10)
    f2 = stub.infer.future(make_block_packet({"right": 2}, session_id="m", seq_no=3), timeout=10)
    outs = [json.loads(f.result().data) for f in (f1, f2)]
    assert outs[0] == outs[1]
    assert sorted(map(json.dumps, outs[0]["merged"]["inputs"])) == sorted(
        [json.dumps({"left": 1}), json.dumps({"right": 2})]
    )
    # A lone input times out in the muxer (3 s) and the caller hears about it.
    with pytest.raises(grpc.RpcError) as info:
        plane.infer({"alone": True}, session_id="m", seq_no=4, timeout=8)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "muxer" in _error(info.value)["message"]


def test_instance_leaves_the_live_set_on_graceful_stop(plane, redis_client: redis.Redis):
    plane.start_instance("g1")
    plane.start_executor()
    plane.wait_alive(["g1"])
    plane.instances["g1"].process.stop(timeout=10)
    plane.wait_gone("g1")
    assert redis_client.get(plane.keys.heartbeat("g1")) is None
    with pytest.raises(grpc.RpcError) as info:
        plane.infer({}, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_fire_and_forward_hop_to_the_next_block_then_final(
    plane, redis_url, tmp_path, redis_client
):
    """A two-block route: A's instance forwards to B's executor, B's delivers to `final`."""
    second = DataPlane(redis_url, tmp_path / "b", new_block_id("hopb"))
    (tmp_path / "b").mkdir()
    try:
        plane.start_instance("a1", entrypoint="examples.echo.block:EchoBlock")
        second.start_instance(
            "b1", entrypoint="examples.echo.block:EchoBlock", parameters={"tag": "from-b"}
        )
        plane.start_executor()
        second.start_executor()
        plane.wait_alive(["a1"])
        second.wait_alive(["b1"])
        final_key = f"{plane.keys.base}:final"
        route = {
            "route": {plane.block_id: [second.block_id]},
            "endpoints": {second.block_id: f"127.0.0.1:{second.executor.grpc_port}"},
            "final": {"redis_list": final_key},
        }
        packet = pb.AIOSPacket(
            session_id="hop", seq_no=1, data='{"x": 1}', output_ptr=json.dumps(route)
        )
        resp = plane.proxy_stub().infer(
            proxy_pb.InferenceMessage(rpc_data=packet.SerializeToString()), timeout=5
        )
        assert resp.message is True
        got = redis_client.blpop([final_key], timeout=4)  # < the client socket timeout
        assert got is not None, "the result never reached the final target"
        assert json.loads(pb.AIOSPacket.FromString(got[1]).data) == {
            "x": 1,
            "echo": True,
            "tag": "from-b",
        }
    finally:
        second.close()
        second.delete_keys(redis_client)
