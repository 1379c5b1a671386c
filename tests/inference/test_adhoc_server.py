"""An adhoc inference server deployed through the REST API on a local cluster, for real:
listed in the inference-server registry with its public gRPC URL, answering
``/BlockInferenceService/infer`` by block id, by ``query_parameters`` (search) and along a
dynamic graph; its request logs are read back through the REST API; removal unlists it."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from apps.clusters.models import Workload
from block_sdk.packet import make_block_packet
from block_sdk.protos import aios_packet_pb2_grpc as pb_grpc
from tests.support.procs import wait_until
from tests.vdags.support import affine, uid

pytestmark = pytest.mark.django_db(transaction=True)


def test_adhoc_server_serves_blocks_by_id_query_and_graph_and_logs_requests(live_network):
    net = live_network
    cluster_id, node_id = uid("ic"), uid("in")
    net.agent(cluster_id, node_id)
    component = net.component(uid("affine"))
    a, b = uid("blk-a"), uid("blk-b")
    net.block(component, a, cluster_id, name="a", mul=2.0, add=1.0)
    net.block(component, b, cluster_id, name="b", mul=3.0, add=0.0)

    deployment_id = uid("infsrv")
    response = net.api.post(
        "/api/v1/inference/deployments/",
        {
            "deployment_id": deployment_id,
            "cluster_id": cluster_id,
            "name": "eu-test",
            "metadata": {"region": "eu"},
            "config": {"log_flush_ms": 50},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    net.wait_blocks([a, b])

    def running():
        doc = net.api.get(f"/api/v1/inference/deployments/{deployment_id}/").json()
        assert doc["status"] != "failed", f"{doc}\n{net.logs()}"
        return doc if doc["status"] == "running" else None

    deployment = wait_until(running, 60, "inference server running", interval=0.2)
    server_id = deployment["inference_server_id"]
    listed = net.api.get(f"/api/v1/inference-servers/{server_id}/").json()
    address = deployment["public_url"]
    assert address and json.dumps(listed).count(address) >= 1
    # The blocks became running after the server started: the periodic sync catches up.
    from apps.inference.services import sync_executor_map

    assert sync_executor_map() >= 2

    channel = grpc.insecure_channel(address)
    net.channels.append(channel)
    stub = pb_grpc.BlockInferenceServiceStub(channel)
    session = uid("sess")

    def infer(seq: int, data, **kw):
        packet = make_block_packet(data, session_id=session, seq_no=seq, ts=time.time(), **kw)
        return json.loads(stub.infer(packet, timeout=20).data)

    by_id = wait_until(
        lambda: _try(lambda: infer(1, {"x": 4.0}, block_id=a)), 15, "server resolves block a"
    )
    assert by_id["x"] == affine(4.0, 2, 1)
    query = {"matchType": "block", "filter": {"blockQuery": {"id": b}}}
    by_query = infer(2, {"x": 4.0}, query_parameters=json.dumps({"body": {"values": query}}))
    assert by_query["x"] == affine(4.0, 3, 0)
    graph = {"graph": {a: [b], b: []}}
    by_graph = infer(3, {"x": 4.0}, block_id=a, output_ptr=json.dumps(graph))
    assert by_graph["x"] == affine(affine(4.0, 2, 1), 3, 0)
    with pytest.raises(grpc.RpcError) as unknown:
        infer(4, {"x": 1.0}, block_id="no-such-block")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    def logged():
        rows = net.api.get(f"/api/v1/inference/logs/session/{session}/").json()["results"]
        return rows if len(rows) >= 3 else None

    rows = wait_until(logged, 15, "request logs written")
    by_seq = {r["seq_no"]: r for r in rows}
    assert by_seq[1]["block_id"] == a and json.loads(by_seq[1]["data"]) == {"x": 4.0}
    assert json.loads(by_seq[2]["query_parameters"])["body"]["values"] == query
    assert json.loads(by_seq[3]["output_ptr"]) == graph
    block_rows = net.api.get(
        "/api/v1/inference/logs/session_block/", {"session_id": session, "block_id": a}
    ).json()["results"]
    assert {r["seq_no"] for r in block_rows} >= {1}

    workloads = list(
        Workload.objects.filter(labels__inference_server_id=deployment_id).values_list(
            "pk", flat=True
        )
    )
    removed = net.api.delete(f"/api/v1/inference/deployments/{deployment_id}/?wait=1")
    assert removed.status_code == 200, removed.content
    assert not Workload.objects.filter(pk__in=workloads).exists()
    assert net.api.get(f"/api/v1/inference-servers/{server_id}/").status_code == 404


def _try(fn):
    try:
        return fn()
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
