"""The allocation flow against real PostgreSQL: placement decisions, refusals, dry-run,
GPU accounting (exclusive and shared), concurrency, filters, custom policies."""

from __future__ import annotations

import io
import threading
import uuid
import zipfile
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.allocator import services
from apps.allocator.models import Allocation, GPUAllocation
from apps.clusters.models import Node
from tests.clusters.helpers import forget_redis, make_cluster, node_spec, uid

BEST_FIT = "aios.allocator_best_fit:1.0-stable"


def block(gpus=1, memory=0, instances=1, *, block_id=None, cluster_filter=None, **params):
    rules = [
        {
            "values": {
                "name": "resourceAllocator",
                "policyRuleURI": BEST_FIT,
                "parameters": {"gpus": gpus, "min_gpu_free_memory": memory, **params},
            }
        }
    ]
    if cluster_filter is not None:
        rules.append(
            {
                "values": {
                    "name": "clusterAllocator",
                    "policyRuleURI": BEST_FIT,
                    "parameters": {"filter": cluster_filter},
                }
            }
        )
    return {
        "blockId": block_id or uid("blk"),
        "blockComponentURI": "model.test:1.0-stable",
        "minInstances": instances,
        "maxInstances": instances,
        "policyRulesSpec": rules,
    }


@pytest.mark.django_db
def test_allocation_picks_the_node_with_enough_free_gpu_memory():
    small, big = uid("n"), uid("n")
    cluster = make_cluster(
        nodes=[node_spec(small, [("T4", 16384), ("T4", 16384)]), node_spec(big, [("A100", 40960)])]
    )
    decision = services.allocate(block(memory=20000), clusters=[cluster.id])
    assert (decision.cluster_id, decision.node_id, decision.gpus) == (cluster.id, big, [0])
    row = Allocation.objects.get(instance_id=decision.instances[0].instance_id)
    assert row.node_id == big and [g.gpu.index for g in row.gpu_allocations.all()] == [0]
    # That GPU is now taken: the same request does not fit any more, and says why.
    with pytest.raises(services.AllocationError) as refused:
        services.allocate(block(memory=20000), clusters=[cluster.id])
    assert refused.value.status_code == 409
    assert "usable GPU" in refused.value.message
    # Released, it fits again.
    assert services.release(row.instance_id) == 1
    assert services.allocate(block(memory=20000), clusters=[cluster.id]).node_id == big


@pytest.mark.django_db
def test_best_fit_keeps_big_gpus_for_big_blocks_across_clusters():
    c40, c80 = (
        make_cluster(nodes=[node_spec(uid("n"), [("A100", 40960)])]),
        make_cluster(nodes=[node_spec(uid("n"), [("A100", 81920)])]),
    )
    decision = services.allocate(block(memory=30000), clusters=[c40.id, c80.id])
    assert decision.cluster_id == c40.id
    assert {c["cluster_id"] for c in decision.candidates} == {c40.id, c80.id}


@pytest.mark.django_db
def test_nothing_fits_is_a_clear_409_over_rest(api):
    make_cluster(nodes=[node_spec(uid("n"), [("T4", 16384)])])
    response = api.post("/api/v1/allocator/dry-run/", block(gpus=2, memory=50000), format="json")
    assert response.status_code == 409
    err = response.json()["error"]
    assert err["code"] == "no_capacity"
    assert "no cluster can place 1 instance(s)" in err["message"]
    assert err["details"] and "score" in err["details"][0]


@pytest.mark.django_db
def test_dry_run_changes_nothing(api):
    nid = uid("n")
    cluster = make_cluster(nodes=[node_spec(nid, [("A100", 40960), ("A100", 40960)])])
    envelope = {
        "header": {"templateUri": "Parser/V1"},
        "body": {"spec": {"values": block(memory=1000)}},
    }
    for _ in range(3):
        response = api.post("/api/v1/allocator/dry-run/", envelope, format="json")
        assert response.status_code == 200, response.json()
        body = response.json()
        assert (body["cluster_id"], body["node_id"], body["gpus"]) == (cluster.id, nid, [0])
        assert 0 < body["score"] <= 1 and body["dry_run"] is True
    assert not Allocation.objects.exists() and not GPUAllocation.objects.exists()
    two = api.post("/api/v1/allocator/dry-run/", {**block(), "instances": 2}, format="json").json()
    assert sorted(p["gpus"][0] for p in two["instances"]) == [0, 1]
    assert (
        api.post(
            "/api/v1/allocator/dry-run/", {**block(), "instances": 0}, format="json"
        ).status_code
        == 400
    )


@pytest.mark.django_db
def test_unhealthy_cordoned_and_failed_places_are_not_used():
    stale, cordoned, good = uid("n"), uid("n"), uid("n")
    cluster = make_cluster(nodes=[node_spec(n, [("A100", 40960)]) for n in (stale, cordoned, good)])
    Node.objects.filter(pk=stale).update(last_heartbeat=timezone.now() - timedelta(hours=1))
    Node.objects.filter(pk=cordoned).update(schedulable=False)
    decision = services.allocate(block(instances=1), clusters=[cluster.id])
    assert decision.node_id == good
    with pytest.raises(services.AllocationError):
        services.allocate(block(), clusters=[cluster.id])
    failed = make_cluster(nodes=[node_spec(uid("n"), [("A100", 40960)])])
    failed.status = "failed"
    failed.save()
    with pytest.raises(services.AllocationError, match="no live cluster"):
        services.allocate(block(), clusters=[failed.id])


@pytest.mark.django_db
def test_several_instances_cpu_memory_and_release_block():
    a, b = uid("n"), uid("n")
    cluster = make_cluster(
        nodes=[
            node_spec(a, [("A100", 40960)] * 2, vcpus=8, memory=32768),
            node_spec(b, [("A100", 40960)] * 2, vcpus=8, memory=32768),
        ]
    )
    spec = block(instances=3, vcpus=2, memory_mb=4096, block_id=uid("blk"))
    decision = services.allocate(spec, clusters=[cluster.id], instance_ids=["i-1", "i-2", "i-3"])
    assert [p.instance_id for p in decision.instances] == ["i-1", "i-2", "i-3"]
    held = {(p.node_id, p.gpus[0]) for p in decision.instances}
    assert len(held) == 3
    assert Allocation.objects.filter(block_id=spec["blockId"]).count() == 3
    assert sum(a.vcpus for a in Allocation.objects.all()) == 6
    with pytest.raises(Exception, match="already holds"):
        services.allocate(block(), clusters=[cluster.id], instance_ids=["i-1"])
    assert services.release_block(spec["blockId"]) == 3
    assert not GPUAllocation.objects.exists()
    with pytest.raises(services.AllocationError):  # 16 vCPUs in all
        services.allocate(block(gpus=0, instances=3, vcpus=6), clusters=[cluster.id])


@pytest.mark.django_db
def test_shared_gpus_are_explicit_and_bounded_by_memory():
    shared_node, plain_node = uid("n"), uid("n")
    cluster = make_cluster(
        nodes=[
            node_spec(shared_node, [("L4", 24576)], shared=True),
            node_spec(plain_node, [("L4", 24576)]),
        ]
    )
    spec = block(memory=8000, shared_gpu=True)
    nodes = {services.allocate(spec, clusters=[cluster.id]).node_id for _ in range(3)}
    assert nodes == {shared_node}
    rows = GPUAllocation.objects.filter(gpu__node_id=shared_node)
    assert rows.count() == 3 and not any(r.exclusive for r in rows)
    with pytest.raises(services.AllocationError):  # 3 x 8000 of 24576 MB are reserved
        services.allocate(spec, clusters=[cluster.id])
    # An exclusive request cannot take a GPU that instances share.
    exclusive = services.allocate(block(memory=1000), clusters=[cluster.id])
    assert exclusive.node_id == plain_node


@pytest.mark.django_db
def test_filters_compare_numbers_given_as_strings_and_use_live_metrics():
    from apps.metrics.services import record_node_metrics

    vendor_node, other_node = uid("n"), uid("n")
    vendor = make_cluster(
        nodes=[node_spec(vendor_node, [("A100", 40960)] * 6)],
        clusterMetadata={"vendor": "dma-bangalore"},
    )
    other = make_cluster(
        nodes=[node_spec(other_node, [("A100", 40960)] * 6)],
        clusterMetadata={"vendor": "elsewhere"},
    )
    try:
        for nid, cid, load in ((vendor_node, vendor.id, 2.0), (other_node, other.id, 2.0)):
            record_node_metrics(
                nid,
                cid,
                {
                    "vcpu": {"load_15m": load, "count": 16},
                    "memory": {"freeMem": 60000, "totalMem": 65536},
                    "gpus": {
                        "gpus": [
                            {"gpu_id": i, "freeMem": 40000, "totalMem": 40960} for i in range(6)
                        ]
                    },
                },
            )
        cluster_filter = {
            "clusterMetricsQuery": {
                "logicalOperator": "AND",
                "conditions": [
                    {"variable": "cluster.vcpu.load_15m", "operator": "<", "value": "10"},
                    {"variable": "cluster.gpu.totalFreeMem", "operator": ">", "value": "9000"},
                ],
            },
            "clusterQuery": {
                "logicalOperator": "AND",
                "conditions": [
                    {"variable": "gpus.count", "operator": ">", "value": "5"},
                    {
                        "variable": "clusterMetadata.vendor",
                        "operator": "==",
                        "value": "dma-bangalore",
                    },
                ],
            },
        }
        decision = services.allocate(block(cluster_filter=cluster_filter), dry_run=True)
        assert decision.cluster_id == vendor.id
        assert [c["cluster_id"] for c in decision.candidates] == [vendor.id]
        hot = {
            "clusterMetricsQuery": {
                "variable": "cluster.vcpu.load_15m",
                "operator": "<",
                "value": "1",
            }
        }
        with pytest.raises(services.AllocationError, match="matches"):
            services.allocate(block(cluster_filter=hot), dry_run=True)
    finally:
        forget_redis(vendor_node, other_node, cluster_ids=(vendor.id, other.id))


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_allocations_against_four_gpus_reserve_exactly_four():
    cluster = make_cluster(
        nodes=[
            node_spec(uid("n"), [("A100", 40960)] * 2),
            node_spec(uid("n"), [("A100", 40960)] * 2),
        ]
    )
    barrier = threading.Barrier(20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        try:
            barrier.wait(10)
            decision = services.allocate(block(block_id=f"race-{index}"), clusters=[cluster.id])
            result = f"ok:{decision.node_id}:{decision.gpus[0]}"
        except services.AllocationError:
            result = "refused"
        except Exception as exc:  # anything else is a bug
            result = f"error:{type(exc).__name__}:{exc}"
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == 20
    assert not [o for o in outcomes if o.startswith("error")], outcomes
    won = [o for o in outcomes if o.startswith("ok")]
    assert len(won) == 4 and len(set(won)) == 4
    gpus = list(GPUAllocation.objects.values_list("gpu_id", flat=True))
    assert len(gpus) == 4 and len(set(gpus)) == 4


@pytest.mark.django_db
def test_scale_and_reassign():
    a, b = uid("n"), uid("n")
    cluster = make_cluster(nodes=[node_spec(a, [("A100", 40960)]), node_spec(b, [("A100", 40960)])])
    spec = block(block_id=uid("blk"))
    first = services.allocate(spec, clusters=[cluster.id], instance_ids=["inst-a"])
    moved = services.reassign(spec, instance_id="inst-a", new_instance_id="inst-b")
    assert moved.node_id != first.node_id
    assert not Allocation.objects.filter(instance_id="inst-a").exists()
    more = services.scale(spec, cluster_id=cluster.id, instances=1, instance_ids=["inst-c"])
    assert more.node_id == first.node_id
    with pytest.raises(services.AllocationError):
        services.scale(spec, cluster_id=cluster.id, instances=1)


@pytest.mark.django_db
def test_bad_block_specs_are_400(api):
    make_cluster(nodes=[node_spec(uid("n"), [("A100", 40960)])])
    bad = block()
    bad["policyRulesSpec"][0]["values"]["parameters"]["gpus"] = -1
    assert api.post("/api/v1/allocator/dry-run/", bad, format="json").status_code == 400
    assert (
        api.post("/api/v1/allocator/dry-run/", {"policyRulesSpec": "x"}, format="json").status_code
        == 400
    )
    assert api.post("/api/v1/allocator/dry-run/", [1], format="json").status_code == 400


PINNED = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        nodes = input_data["payload"]["healthy_nodes"]
        if input_data["action"] == "dry_run":
            return {"selection_score_data": {"score": 0.5, "node_info": {
                "node_id": nodes[0]["node_id"], "gpus": [0]}}}
        return {"node_id": nodes[0]["node_id"], "gpus": [0]}
"""


@pytest.mark.django_db
def test_a_custom_policy_runs_sandboxed_and_its_answer_is_checked():
    from apps.policies.services import register_policy

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("code/function.py", f"# {uuid.uuid4()}\n{PINNED}")
    name = f"test.pinned.{uuid.uuid4().hex[:8]}"
    uri = register_policy(
        name=name, version="1.0", release_tag="beta", archive=buf.getvalue()
    ).policy_rule_uri
    nid = uid("n")
    cluster = make_cluster(nodes=[node_spec(nid, [("A100", 40960)] * 2)])
    spec = block()
    spec["policyRulesSpec"][0]["values"]["policyRuleURI"] = uri
    first = services.allocate(spec, clusters=[cluster.id])
    assert (first.node_id, first.gpus) == (nid, [0])
    # The policy insists on GPU 0 again: the allocator refuses instead of double-booking.
    with pytest.raises(services.AllocationError, match="already allocated"):
        services.allocate(spec, clusters=[cluster.id])
    assert GPUAllocation.objects.count() == 1


@pytest.mark.django_db
def test_allocations_api_lists_and_staff_release(api, staff_api):
    cluster = make_cluster(nodes=[node_spec(uid("n"), [("A100", 40960)])])
    decision = services.allocate(block(), clusters=[cluster.id])
    listed = api.get(f"/api/v1/allocator/allocations/?cluster={cluster.id}").json()
    assert listed["count"] == 1 and listed["results"][0]["gpus"][0]["index"] == 0
    pk = listed["results"][0]["id"]
    assert api.delete(f"/api/v1/allocator/allocations/{pk}/").status_code == 403
    assert staff_api.delete(f"/api/v1/allocator/allocations/{pk}/").status_code == 204
    assert not Allocation.objects.filter(instance_id=decision.instances[0].instance_id).exists()


@pytest.mark.django_db
def test_dry_run_uses_the_components_allocation_policy(api, user):
    """createBlock's body names a component; its resourceAllocator applies unless the block
    overrides it (the blocks app's merge rule)."""
    import json
    from pathlib import Path

    from apps.registries.services.components import register_component

    values = json.loads(Path("examples/echo/component.json").read_text())["body"]["spec"]["values"]
    values["componentId"]["name"] = f"two-gpu-{uuid.uuid4().hex[:6]}"
    values["policies"]["resourceAllocator"] = {
        "policyRuleURI": BEST_FIT,
        "parameters": {"gpus": 2},
    }
    component = register_component(values, owner=user)
    one, two = uid("n"), uid("n")
    make_cluster(nodes=[node_spec(one, [("A100", 40960)]), node_spec(two, [("A100", 40960)] * 2)])
    body = {"blockComponentURI": component.component_uri, "minInstances": 1, "maxInstances": 1}
    response = api.post("/api/v1/allocator/dry-run/", body, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["node_id"] == two and response.json()["gpus"] == [0, 1]
