"""A block's life through the public API, with every process real: node agents, executor,
instances and block controller as child processes, Redis queues, gRPC, a Celery worker.

createComponent → createBlock (202) → running → BlockInferenceService.infer (with files) →
scale up/down within min/max → live parameters → management commands of every service →
remove (no process, no workload, no GPU reservation left)."""

from __future__ import annotations

import json

import grpc
import psutil
import pytest

from apps.allocator.models import Allocation, GPUAllocation
from apps.blocks.models import Block, Instance
from apps.clusters.models import Workload
from apps.tasks.models import Task
from block_sdk.queues import BlockKeys
from tests.blocks.conftest import pids_alive, wait_gone
from tests.clusters.helpers import uid
from tests.support.procs import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def block_pids(block_id: str) -> list[int]:
    pids = Workload.objects.filter(block_id=block_id).values_list("pid", flat=True)
    return [p for p in pids if p]


def test_echo_block_lifecycle_through_the_api(network):
    cluster_id, node_id = uid("c"), uid("n")
    network.agent(cluster_id, node_id)
    uri = network.create_component()
    block_id = uid("echo")

    accepted = network.create_block(
        {
            "blockComponentURI": uri,
            "blockId": block_id,
            "minInstances": 2,
            "maxInstances": 3,
            "parameters": {"tag": "first"},
        }
    )
    assert accepted["block_id"] == block_id and accepted["task_id"]
    assert accepted["status_url"] == f"/api/v1/tasks/{accepted['task_id']}/"

    doc = network.wait_status(block_id, "running")
    assert doc["cluster"] == cluster_id
    assert len(doc["instances"]) == 2
    assert {i["node"] for i in doc["instances"]} == {node_id}
    assert all(set(i) >= {"id", "node", "gpus", "health"} for i in doc["instances"])
    host, _, port = doc["endpoints"]["grpc"].rpartition(":")
    assert host and port.isdigit()
    task = Task.objects.get(pk=accepted["task_id"])
    assert task.task_type == "block_alloc" and task.task_status == "completed"

    # Inference at endpoints.grpc, with a file passing through.
    reply = network.infer(
        doc["endpoints"]["grpc"],
        {"x": 1},
        session_id="s-1",
        seq_no=7,
        files=[({"name": "a.bin"}, b"\x00\x01payload")],
    )
    out = json.loads(reply.data)
    assert out["x"] == 1 and out["echo"] is True
    assert reply.session_id == "s-1" and reply.seq_no == 7
    assert [f.file_data for f in reply.files] == [b"\x00\x01payload"]

    # The health checker reports: instances become healthy in the block document.
    network.wait_instances(
        block_id,
        lambda d: (
            len(d["instances"]) == 2 and all(i["health"] == "healthy" for i in d["instances"])
        ),
        30,
        "both instances healthy",
    )

    # Manual scale stays within min/max.
    api = network.api
    over = api.post(f"/api/v1/blocks/{block_id}/scale/", {"instances": 4}, format="json")
    assert over.status_code == 409 and over.json()["error"]["code"] == "instance_bounds"
    under = api.post(f"/api/v1/blocks/{block_id}/scale/", {"delta": -1}, format="json")
    assert under.status_code == 409
    up = api.post(f"/api/v1/blocks/{block_id}/scale/", {"delta": 1}, format="json")
    assert up.status_code == 200, up.content
    assert up.json()["instances"] == 3 and len(up.json()["added"]) == 1
    new_id = up.json()["added"][0]["id"]

    def serves_three():
        status, body = _executor_health(doc)
        return status == 200 and len(body["instances"]) == 3

    wait_until(serves_three, 30, "the executor to route to 3 instances")
    seen = set()
    for n in range(30):
        seen.add(json.loads(network.infer(doc["endpoints"]["grpc"], {"n": n}).data)["n"])
    assert len(seen) == 30
    down = api.post(f"/api/v1/blocks/{block_id}/scale/", {"remove": [new_id]}, format="json")
    assert down.status_code == 200 and down.json()["removed"] == [new_id]
    wait_until(
        lambda: not Workload.objects.filter(pk=new_id).exists(), 30, "removed instance's workload"
    )
    assert not Allocation.objects.filter(instance_id=new_id).exists()
    assert Instance.objects.filter(block_id=block_id).count() == 2

    # Live parameters reach every instance (the echo block adds its tag).
    params = api.post(
        f"/api/v1/blocks/{block_id}/parameters/", {"parameters": {"tag": "second"}}, format="json"
    )
    assert params.status_code == 200, params.content
    assert params.json()["missing"] == []
    assert len(params.json()["acks"]) == 2
    replies = [network.infer(doc["endpoints"]["grpc"], {"k": n}) for n in range(6)]
    tags = {json.loads(r.data).get("tag") for r in replies}
    assert tags == {"second"}
    assert Block.objects.get(pk=block_id).parameters["tag"] == "second"

    # Management commands through the parser, one per service.
    executor = network.mgmt(block_id, "executor", "list_instances")
    assert executor.status_code == 200, executor.content
    assert len(executor.json()["result"]["result"]["instances"]) == 2
    mapping = network.mgmt(block_id, "executor", "get_mapping")
    assert mapping.status_code == 200 and mapping.json()["result"]["result"]["block_id"] == block_id
    logs = network.mgmt(block_id, "executor", "logs", {"n": 5})
    assert logs.status_code == 200
    autoscaler = network.mgmt(block_id, "autoscaler", "get_state")
    assert autoscaler.status_code == 200, autoscaler.content
    assert autoscaler.json()["result"]["result"]["policy"]["policyRuleURI"].startswith(
        "aios.autoscaler_queue_latency"
    )
    # The health checker refreshes its instance list periodically: the removed instance
    # leaves its state within a refresh.
    expected = {i.instance_id for i in Instance.objects.filter(block_id=block_id)}

    def health_tracks_current_instances():
        health = network.mgmt(block_id, "health", "get_state")
        assert health.status_code == 200
        return set(health.json()["result"]["result"]["instances"]) == expected

    wait_until(health_tracks_current_instances, 30, "the health checker to drop the removed one")
    policy_state = network.mgmt(block_id, "health", "get_state_of_policy")
    assert policy_state.status_code == 400  # unknown to the policy: its error comes back
    every = network.mgmt(block_id, "instances", "get_count")
    assert every.status_code == 200
    assert set(every.json()["result"]["results"]) == set(
        Instance.objects.filter(block_id=block_id).values_list("instance_id", flat=True)
    )
    one_id = sorted(every.json()["result"]["results"])[0]
    one = network.mgmt(block_id, "instances", "get_count", {"instance_id": one_id})
    assert one.status_code == 200 and one.json()["result"]["instance_id"] == one_id
    wrong = network.mgmt(block_id, "autopilot", "x")
    assert wrong.status_code == 400

    # Removal leaves no process, no workload, no reservation, no Redis key.
    pids = block_pids(block_id)
    assert len(pids) == 4  # executor, controller, 2 instances
    removal = api.delete(f"/api/v1/blocks/{block_id}/")
    assert removal.status_code == 202, removal.content
    wait_until(lambda: not Block.objects.filter(pk=block_id).exists(), 60, "block removed")
    assert Task.objects.get(pk=removal.json()["task_id"]).task_status == "completed"
    wait_gone(pids)
    assert not Workload.objects.filter(block_id=block_id).exists()
    assert not Allocation.objects.filter(block_id=block_id).exists()
    assert not GPUAllocation.objects.filter(instance_id__startswith=block_id).exists()
    assert not list(network.redis.scan_iter(match=f"{BlockKeys(block_id).base}:*"))
    assert not pids_alive(pids)
    assert api.get(f"/api/v1/blocks/{block_id}/").status_code == 404
    with pytest.raises(grpc.RpcError):
        network.infer(doc["endpoints"]["grpc"], {"late": True}, timeout=2)
    assert not [p for p in psutil.pids() if p in pids]


def _executor_health(doc):
    from apps.blocks.services import http_json

    return http_json("GET", f"{doc['endpoints']['http']}/health", timeout=3)
