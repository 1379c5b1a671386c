"""Blocks under failure and placement constraints, every process real.

SIGKILL of an instance under load (every request answered, the health checker replaces it);
an instance class that cannot start (the block fails with the reason, nothing is left);
GPU ids in the instance environment and their reservations; a managed third-party system
started before the instances, its finish data reaching them, torn down on removal."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import psutil
import pytest

from apps.allocator.models import Allocation, GPUAllocation
from apps.blocks.models import Block, Instance
from apps.clusters.models import Workload
from tests.blocks.conftest import ECHO_SPEC, pids_alive, wait_gone
from tests.clusters.helpers import uid
from tests.support.procs import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

GPUS = json.dumps([{"model": "A100", "memory_mb": 40960}, {"model": "A100", "memory_mb": 40960}])


def workload_pid(workload_id: str) -> int | None:
    row = Workload.objects.filter(pk=workload_id).first()
    return row.pid if row and row.status == "running" else None


def test_sigkill_under_load_every_request_is_answered_and_the_instance_is_replaced(network):
    cluster_id, node_id = uid("c"), uid("n")
    network.agent(cluster_id, node_id)
    uri = network.create_component(componentParameters={"delay_s": 0.02})
    block_id = uid("heal")
    network.create_block(
        {"blockComponentURI": uri, "blockId": block_id, "minInstances": 2, "maxInstances": 2}
    )
    doc = network.wait_status(block_id, "running")
    network.wait_instances(
        block_id,
        lambda d: all(i["health"] == "healthy" for i in d["instances"]),
        30,
        "instances healthy",
    )
    victim = doc["instances"][0]["id"]
    survivor = doc["instances"][1]["id"]
    victim_pid = workload_pid(victim)
    assert victim_pid

    outcomes: list[str] = []
    lock = threading.Lock()
    stub = network.stub(doc["endpoints"]["grpc"])
    from block_sdk.packet import make_block_packet

    def call(n: int) -> None:
        try:
            stub.infer(make_block_packet({"n": n}, session_id=f"s{n % 7}"), timeout=20)
            result = "ok"
        except grpc.RpcError as exc:
            result = exc.code().name
        with lock:
            outcomes.append(result)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(call, n) for n in range(400)]
        wait_until(lambda: len(outcomes) >= 60, 30, "load under way")
        os.kill(victim_pid, signal.SIGKILL)
        for future in futures:
            future.result(timeout=60)  # none hangs
    assert len(outcomes) == 400
    assert time.monotonic() - started < 60
    errors = [o for o in outcomes if o != "ok"]
    # Requests the dead instance held are retried on the other one or failed back.
    assert set(errors) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, errors
    assert outcomes.count("ok") >= 380, errors

    # The health checker notices and has the control plane replace the instance.
    replaced = network.wait_instances(
        block_id,
        lambda d: victim not in {i["id"] for i in d["instances"]} and len(d["instances"]) == 2,
        30,
        "the killed instance replaced",
    )
    new = next(i for i in replaced["instances"] if i["id"] != survivor)
    assert Instance.objects.get(pk=new["id"]).replaces == victim
    network.wait_instances(
        block_id,
        lambda d: all(i["health"] == "healthy" for i in d["instances"]),
        30,
        "the replacement healthy",
    )
    wait_until(
        lambda: not Workload.objects.filter(pk=victim).exists(), 30, "the dead workload gone"
    )
    assert not Allocation.objects.filter(instance_id=victim).exists()
    assert Block.objects.get(pk=block_id).status == "running"
    # Traffic reaches the replacement.
    seen = set()
    for n in range(20):
        network.infer(doc["endpoints"]["grpc"], {"n": n}, session_id=f"new-{n}")
    history = network.mgmt(block_id, "executor", "list_instances").json()["result"]["result"]
    for row in history["instances"]:
        if row["instance_id"] == new["id"]:
            seen.add(row["completed"])
    assert seen and max(seen) > 0
    health = network.mgmt(block_id, "health", "get_state").json()["result"]["result"]
    assert victim in health["recently_replaced"]


def test_an_instance_that_cannot_start_fails_the_block_and_leaves_nothing(network):
    cluster_id, node_id = uid("c"), uid("n")
    network.agent(cluster_id, node_id)
    values = json.loads(ECHO_SPEC.read_text())["body"]["spec"]["values"]
    uri = network.create_component(
        componentId={**values["componentId"], "name": "broken"},
        containerRegistryInfo={
            "componentMode": "aios",
            "containerImageMetadata": {"entrypoint": "tests.blocks.programs:BrokenBlock"},
        },
    )
    block_id = uid("broken")
    network.create_block(
        {"blockComponentURI": uri, "blockId": block_id, "minInstances": 1, "maxInstances": 1}
    )
    doc = network.wait_status(block_id, "failed", timeout=90)
    assert f"instance {block_id}-" in doc["status_reason"]
    assert "model weights not found" in doc["status_reason"]
    assert doc["instances"] == []
    wait_until(
        lambda: not Workload.objects.filter(block_id=block_id).exists(), 30, "workloads gone"
    )
    assert not Allocation.objects.filter(block_id=block_id).exists()
    assert network.api.delete(f"/api/v1/blocks/{block_id}/").status_code == 200


def test_gpu_ids_reach_the_instances_and_reservations_are_released(network):
    cluster_id, node_id = uid("c"), uid("n")
    network.agent(cluster_id, node_id, "--declare-gpus", GPUS)
    values = json.loads(ECHO_SPEC.read_text())["body"]["spec"]["values"]
    uri = network.create_component(
        componentId={**values["componentId"], "name": "gpu-probe"},
        containerRegistryInfo={
            "componentMode": "aios",
            "containerImageMetadata": {"entrypoint": "tests.blocks.programs:InitDataBlock"},
        },
    )
    block_id = uid("gpu")
    network.create_block(
        {
            "blockComponentURI": uri,
            "blockId": block_id,
            "minInstances": 2,
            "maxInstances": 2,
            "policyRulesSpec": [
                {
                    "values": {
                        "name": "resourceAllocator",
                        "policyRuleURI": "aios.allocator_best_fit:1.0-stable",
                        "parameters": {"gpus": 1},
                    }
                }
            ],
        }
    )
    doc = network.wait_status(block_id, "running")
    gpus = {i["id"]: i["gpus"] for i in doc["instances"]}
    assert sorted(g for ids in gpus.values() for g in ids) == [0, 1]  # never the same GPU
    for instance_id, ids in gpus.items():
        # The row may not say "running" yet; psutil.Process(None) would be this very process.
        pid = wait_until(lambda: workload_pid(instance_id), 30, f"{instance_id} to run")  # noqa: B023
        env = psutil.Process(pid).environ()
        assert env["CUDA_VISIBLE_DEVICES"] == str(ids[0])
        assert env["NVIDIA_VISIBLE_DEVICES"] == str(ids[0])
        assert json.loads(env["ALLOCATION_INFO"])["gpus"] == ids
    rows = GPUAllocation.objects.filter(instance_id__in=list(gpus))
    assert sorted(r.gpu.index for r in rows) == [0, 1] and all(r.exclusive for r in rows)
    answer = json.loads(network.infer(doc["endpoints"]["grpc"], {}).data)
    assert answer["CUDA_VISIBLE_DEVICES"] in {"0", "1"}

    # No GPU left: even a forced scale cannot place a third instance.
    forced = network.api.post(
        f"/api/v1/blocks/{block_id}/scale/", {"instances": 3, "force": True}, format="json"
    )
    assert forced.status_code == 409 and forced.json()["error"]["code"] == "no_capacity"
    assert Instance.objects.filter(block_id=block_id).count() == 2

    pids = [workload_pid(i) for i in gpus]
    assert network.api.delete(f"/api/v1/blocks/{block_id}/").status_code == 202
    wait_until(lambda: not Block.objects.filter(pk=block_id).exists(), 60, "block removed")
    wait_gone([p for p in pids if p])
    assert not GPUAllocation.objects.exists()
    assert not Allocation.objects.filter(block_id=block_id).exists()
    assert not Workload.objects.filter(block_id=block_id).exists()


def test_third_party_system_starts_first_and_its_finish_data_reaches_instances(network, tmp_path):
    cluster_id, node_id = uid("c"), uid("n")
    network.agent(cluster_id, node_id)
    marker = tmp_path / "teardown.json"
    values = json.loads(ECHO_SPEC.read_text())["body"]["spec"]["values"]
    uri = network.create_component(
        componentId={**values["componentId"], "name": "third-party"},
        containerRegistryInfo={
            "componentMode": "third_party",
            "containerImage": "example/proxy:1",
            "containerImageMetadata": {"entrypoint": "tests.blocks.programs:InitDataBlock"},
            "initContainer": {
                "containerImage": "example/system:1",
                "containerImageMetadata": {
                    "entrypoint": "tests.blocks.programs:FakeSystem",
                    "config": {"marker": str(marker)},
                },
            },
        },
    )
    block_id = uid("tp")
    network.create_block(
        {"blockComponentURI": uri, "blockId": block_id, "minInstances": 1, "maxInstances": 1}
    )
    doc = network.wait_status(block_id, "running")
    finish = {"inference_url": "127.0.0.1:65000", "started_by": block_id}
    assert doc["blockInitData"]["initContainer"] == finish
    init = Workload.objects.get(block_id=block_id, kind="third_party_init")
    instance = Workload.objects.get(block_id=block_id, kind="instance")
    assert init.created_at <= instance.created_at
    answer = json.loads(network.infer(doc["endpoints"]["grpc"], {}).data)
    assert answer["initContainer"] == finish
    init_pid = init.pid
    assert network.api.delete(f"/api/v1/blocks/{block_id}/").status_code == 202
    wait_until(lambda: not Block.objects.filter(pk=block_id).exists(), 60, "block removed")
    assert json.loads(marker.read_text()) == {"torn_down": block_id}
    assert not pids_alive([init_pid])


FIRST_LB = '''
class AIOSv1PolicyRule:
    """Always the first live instance (by id): easy to see in per-instance counts."""

    def __init__(self, rule_id, settings, parameters):
        self.calls = 0

    def eval(self, parameters, input_data, context):
        self.calls += 1
        return {"instance_id": sorted(input_data["instances"])[0]}

    def management(self, action, data):
        return {"calls": self.calls}
'''

GREEDY_AUTOSCALER = '''
class AIOSv1PolicyRule:
    """AIOS-shaped: asks for five more instances whenever there are fewer than two."""

    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        if input_data["current_instances"] < 2:
            return {"skip": False, "operation": "upscale", "instances_count": 5}
        return {"skip": True}
'''


def _register_policy(tmp_path, name: str, code: str) -> str:
    from apps.policies.services import register_policy
    from block_sdk.policy_runtime import package_folder

    folder = tmp_path / name / "code"
    folder.mkdir(parents=True)
    (folder / "function.py").write_text(code)
    rule = register_policy(
        name=name, version="1.0", release_tag="test", archive=package_folder(folder.parent)
    )
    return rule.policy_rule_uri


def test_registry_policies_run_in_the_executor_and_the_controller(network, tmp_path):
    lb_uri = _register_policy(tmp_path, "tests.first-instance", FIRST_LB)
    scaler_uri = _register_policy(tmp_path, "tests.greedy-scaler", GREEDY_AUTOSCALER)
    cluster_id, node_id = uid("c"), uid("n")
    network.agent(cluster_id, node_id)
    uri = network.create_component()
    block_id = uid("pol")
    network.create_block(
        {
            "blockComponentURI": uri,
            "blockId": block_id,
            "minInstances": 1,
            "maxInstances": 2,
            "policyRulesSpec": [
                {"values": {"name": "loadBalancer", "policyRuleURI": lb_uri}},
                {"values": {"name": "autoscaler", "policyRuleURI": scaler_uri}},
            ],
        }
    )
    doc = network.wait_status(block_id, "running")
    # The autoscaler asked for 1 + 5; the controller clamped to maxInstances.
    scaled = network.wait_instances(
        block_id, lambda d: len(d["instances"]) == 2, 30, "two instances"
    )
    for _ in range(10):
        time.sleep(0.3)
        assert len(network.block(block_id)["instances"]) == 2
    ids = sorted(i["id"] for i in scaled["instances"])

    def both_alive():
        rows = network.mgmt(block_id, "executor", "list_instances").json()["result"]["result"]
        return sum(1 for r in rows["instances"] if r["alive"]) == 2

    wait_until(both_alive, 30, "both instances live in the executor")
    for n in range(12):
        network.infer(doc["endpoints"]["grpc"], {"n": n}, session_id=f"s{n}")
    rows = network.mgmt(block_id, "executor", "list_instances").json()["result"]["result"]
    completed = {r["instance_id"]: r["completed"] for r in rows["instances"]}
    assert completed[ids[0]] >= 12 and completed.get(ids[1], 0) == 0
    calls = network.mgmt(block_id, "executor", "any_policy_action").json()["result"]["result"]
    assert calls["calls"] >= 12
    state = network.mgmt(block_id, "autoscaler", "get_state").json()["result"]["result"]
    assert state["policy"]["policyRuleURI"] == scaler_uri and not state["policy"]["builtin"]
    assert [h["decision"]["target"] for h in state["history"] if h.get("decision")] == [2]
