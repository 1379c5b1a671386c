"""The autoscaler, for real: the slow example under a burst scales up to maxInstances, never
beyond, and back down to minInstances once the burst is over, never below; every request of
the burst is answered."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from apps.blocks.models import Block, Instance
from block_sdk.packet import make_block_packet
from tests.blocks.conftest import SLOW_SPEC
from tests.clusters.helpers import uid

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_autoscaler_follows_a_burst_within_min_and_max(network):
    cluster_id, node_id = uid("c"), uid("n")
    network.agent(cluster_id, node_id)
    uri = network.create_component(SLOW_SPEC)
    block_id = uid("slow")
    network.create_block(
        {
            "blockComponentURI": uri,
            "blockId": block_id,
            "minInstances": 1,
            "maxInstances": 3,
            "parameters": {"delay_s": 0.2},
            "policyRulesSpec": [
                {
                    "values": {
                        "name": "autoscaler",
                        "policyRuleURI": "aios.autoscaler_queue_latency:1.0-stable",
                        "parameters": {
                            "target_queue_per_instance": 2,
                            "scale_up_cooldown": 1,
                            "scale_down_cooldown": 1.5,
                            "max_scale_down_step": 1,
                        },
                    }
                }
            ],
        }
    )
    doc = network.wait_status(block_id, "running")
    assert len(doc["instances"]) == 1
    stub = network.stub(doc["endpoints"]["grpc"])
    stop = threading.Event()
    outcomes: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        k = 0
        while not stop.is_set():
            k += 1
            try:
                stub.infer(make_block_packet({"c": n, "k": k}, session_id=f"c{n}-{k}"), timeout=30)
                result = "ok"
            except grpc.RpcError as exc:
                result = exc.code().name
            with lock:
                outcomes.append(result)

    counts: list[int] = []

    def count() -> int:
        value = Instance.objects.filter(block_id=block_id).count()
        counts.append(value)
        return value

    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(client, n) for n in range(16)]
        deadline = time.monotonic() + 40
        while count() < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        # Keep the pressure on a little longer: it must not go past maxInstances.
        for _ in range(15):
            count()
            time.sleep(0.2)
        stop.set()
        for future in futures:
            future.result(timeout=60)
    assert max(counts) == 3, counts
    assert outcomes and set(outcomes) == {"ok"}, {o for o in outcomes if o != "ok"}

    deadline = time.monotonic() + 40
    while count() > 1 and time.monotonic() < deadline:
        time.sleep(0.3)
    for _ in range(10):  # and it stays at minInstances
        count()
        time.sleep(0.2)
    assert counts[-1] == 1, counts
    assert min(counts) >= 1 and max(counts) <= 3, counts
    assert Block.objects.get(pk=block_id).last_scale_at is not None

    state = network.mgmt(block_id, "autoscaler", "get_state").json()["result"]["result"]
    operations = [h["decision"]["operation"] for h in state["history"] if h.get("decision")]
    assert "upscale" in operations and "downscale" in operations
    assert all(1 <= h["decision"]["target"] <= 3 for h in state["history"] if h.get("decision"))
    # CPU of the instances on the controller's node is part of the policy's input.
    live = set(Instance.objects.filter(block_id=block_id).values_list("instance_id", flat=True))
    metrics = state["last_metrics"]
    assert set(metrics["cpu_percent"]) <= live and "cpu_utilization" in metrics
    assert metrics["current_instances"] == 1 and set(metrics["queue_lengths"]) == live
    # Requests still flow after all this.
    assert network.infer(doc["endpoints"]["grpc"], {"after": True}).data
