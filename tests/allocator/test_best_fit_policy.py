"""The built-in best-fit allocator policy on its own: its decisions for given nodes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PATH = (
    Path(__file__).resolve().parents[2]
    / "block_sdk/builtin_policies/allocator_best_fit/code/function.py"
)


@pytest.fixture(scope="module")
def policy_class():
    spec = importlib.util.spec_from_file_location("best_fit_under_test", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.AIOSv1PolicyRule


def gpu(
    index, memory, *, model="A100", free=None, taken=False, shared=False, reserved=0, util=None
):
    return {
        "index": index,
        "model": model,
        "memory_mb": memory,
        "shared": shared,
        "exclusive_taken": taken,
        "shared_reserved_mb": reserved,
        "free_memory_mb": memory - reserved if free is None else free,
        "utilization": util,
    }


def node(node_id, gpus=(), *, vcpus=16, free_vcpus=None, memory=65536, free_memory=None):
    return {
        "node_id": node_id,
        "vcpus": {"count": vcpus, "free": vcpus if free_vcpus is None else free_vcpus},
        "memory": {"total": memory, "free": memory if free_memory is None else free_memory},
        "gpus": list(gpus),
    }


def run(policy_class, action, payload=None, parameters=None, settings=None, **data):
    rule = policy_class("aios.allocator_best_fit:1.0-stable", settings or {}, parameters or {})
    return rule.eval(parameters or {}, {"action": action, "payload": payload or {}, **data}, {})


def dry(policy_class, nodes, parameters, instances=1):
    payload = {"healthy_nodes": nodes, "instances": instances}
    return run(policy_class, "dry_run", payload, parameters)["selection_score_data"]


def test_picks_the_node_with_enough_free_gpu_memory(policy_class):
    nodes = [node("small", [gpu(0, 16384), gpu(1, 16384)]), node("big", [gpu(0, 40960)])]
    result = dry(policy_class, nodes, {"gpus": 1, "min_gpu_free_memory": 20000})
    assert result["node_info"] == {"node_id": "big", "gpus": [0]}
    assert 0 < result["score"] <= 1


def test_best_fit_takes_the_tightest_gpu_and_worst_fit_the_emptiest(policy_class):
    nodes = [node("n80", [gpu(0, 81920)]), node("n40", [gpu(0, 40960)])]
    params = {"gpus": 1, "min_gpu_free_memory": 30000}
    assert dry(policy_class, nodes, params)["node_info"]["node_id"] == "n40"
    spread = dry(policy_class, nodes, {**params, "strategy": "worst_fit"})
    assert spread["node_info"]["node_id"] == "n80"


def test_gpu_count_model_utilization_and_taken_gpus_are_honoured(policy_class):
    nodes = [
        node("a", [gpu(0, 40960, taken=True), gpu(1, 40960)]),
        node("b", [gpu(0, 40960, model="H100"), gpu(1, 40960, model="H100")]),
        node("c", [gpu(0, 40960, util=0.95), gpu(1, 40960, util=0.1)]),
    ]
    two = dry(policy_class, nodes, {"gpus": 2})
    assert two["node_info"] == {"node_id": "b", "gpus": [0, 1]}
    a100 = dry(policy_class, nodes, {"gpus": 2, "gpu_model": "a100"})
    assert a100["node_info"] == {"node_id": "c", "gpus": [0, 1]}
    cool = dry(policy_class, nodes, {"gpus": 2, "gpu_model": "a100", "max_gpu_utilization": 80})
    assert cool["score"] == 0 and "usable GPU" in cool["reason"]
    busy = dry(policy_class, nodes, {"gpus": 1, "gpu_model": "A100", "max_gpu_utilization": 0.8})
    assert busy["node_info"]["gpus"] == [1]
    assert busy["node_info"]["node_id"] in {"a", "c"}


def test_cpu_and_memory_are_part_of_the_fit(policy_class):
    nodes = [
        node("busy", vcpus=8, free_vcpus=1, memory=16000, free_memory=1000),
        node("idle", vcpus=8, memory=16000),
    ]
    result = dry(policy_class, nodes, {"vcpus": 2, "memory": 2048})
    assert result["node_info"]["node_id"] == "idle" and result["node_info"]["gpus"] == []
    none = dry(policy_class, nodes, {"vcpus": 64})
    assert none["score"] == 0 and "vCPUs" in none["reason"]


def test_several_instances_never_share_an_exclusive_gpu(policy_class):
    nodes = [node("a", [gpu(0, 40960), gpu(1, 40960)]), node("b", [gpu(0, 40960)])]
    result = dry(policy_class, nodes, {"gpus": 1}, instances=3)
    placed = {(p["node_id"], p["gpus"][0]) for p in result["placements"]}
    assert placed == {("a", 0), ("a", 1), ("b", 0)}
    too_many = dry(policy_class, nodes, {"gpus": 1}, instances=4)
    assert too_many["score"] == 0 and "3 of 4" in too_many["reason"]
    assert nodes[0]["gpus"][0]["exclusive_taken"] is False  # the input is not modified


def test_shared_gpus_hold_several_instances_within_their_memory(policy_class):
    nodes = [node("s", [gpu(0, 40960, shared=True)]), node("x", [gpu(0, 40960)])]
    shared = dry(
        policy_class,
        nodes,
        {"gpus": 1, "min_gpu_free_memory": 10000, "shared_gpu": True},
        instances=4,
    )
    assert {p["node_id"] for p in shared["placements"]} == {"s"}
    five = dry(
        policy_class,
        nodes,
        {"gpus": 1, "min_gpu_free_memory": 10000, "shared_gpu": True},
        instances=5,
    )
    assert five["score"] == 0


def test_selection_drops_clusters_that_cannot_hold_one_instance(policy_class):
    filter_result = [
        {
            "id": "tiny",
            "status": "live",
            "capacity": {"healthy_nodes": 1, "usable_gpus": 1, "max_gpu_free_mb": 8000},
        },
        {
            "id": "fits",
            "status": "live",
            "capacity": {"healthy_nodes": 2, "usable_gpus": 4, "max_gpu_free_mb": 40960},
        },
        {
            "id": "down",
            "status": "failed",
            "capacity": {"healthy_nodes": 2, "usable_gpus": 8, "max_gpu_free_mb": 40960},
        },
        {
            "id": "fits-more",
            "status": "live",
            "capacity": {"healthy_nodes": 4, "usable_gpus": 16, "max_gpu_free_mb": 81920},
        },
    ]
    params = {"gpus": 2, "min_gpu_free_memory": 20000}
    result = run(policy_class, "selection", parameters=params, filter_result=filter_result)
    assert result == {"clusters": ["fits", "fits-more"]}
    capped = run(
        policy_class,
        "selection",
        parameters=params,
        settings={"max_candidates": 1},
        filter_result=filter_result,
    )
    assert capped == {"clusters": ["fits"]}


def test_post_dry_run_returns_the_highest_score_or_nothing(policy_class):
    clusters = [
        {"cluster_id": "a", "score_data": {"score": 0.4}},
        {"cluster_id": "b", "score_data": {"score": 0.9}},
        {"cluster_id": "c", "score_data": {"score": 0}},
    ]
    assert run(policy_class, "post_dry_run", clusters=clusters)["cluster_id"] == "b"
    assert run(policy_class, "post_dry_run", clusters=[clusters[2]]) == {}


def test_allocation_scale_and_reassignment(policy_class):
    nodes = [node("a", [gpu(0, 40960)]), node("b", [gpu(0, 40960)])]
    payload = {"healthy_nodes": nodes, "instances": 1, "requirements": {"gpus": 1}}
    placed = run(policy_class, "allocation", payload)
    assert placed["node_id"] in {"a", "b"} and placed["gpus"] == [0]
    moved = run(policy_class, "reassignment", {**payload, "current_node_id": "a"})
    assert moved["node_id"] == "b"
    nowhere = run(policy_class, "reassignment", {**payload, "exclude_nodes": ["a", "b"]})
    assert nowhere["node_id"] is None and nowhere["reason"]
    scaled = run(policy_class, "scale", {**payload, "instances": 2})
    assert len(scaled["placements"]) == 2


def test_adhoc_message_picks_a_cluster(policy_class):
    rule = policy_class("x", {}, {})
    data = {
        "cluster_data": {
            "c1": {"nodes": [node("c1-n", [gpu(0, 16384)])]},
            "c2": {"nodes": [node("c2-n", [gpu(0, 40960)])]},
        },
        "inputs": {"gpus": 1, "min_gpu_free_memory": 20000},
    }
    assert rule.eval({}, data, {}) == {
        "cluster_id": "c2",
        "node_id": "c2-n",
        "gpus": [0],
        "score": pytest.approx(rule.eval({}, data, {})["score"]),
    }
    data["inputs"]["min_gpu_free_memory"] = 90000
    assert rule.eval({}, data, {})["cluster_id"] is None


def test_unknown_action_is_an_error(policy_class):
    with pytest.raises(ValueError, match="unknown action"):
        run(policy_class, "teleport")
