"""The vDAG-controller API without processes: what a bad request answers, the cluster's
``add_vdag_controller`` / ``remove_vdag_controller`` pre-checks (deny, and a rewrite that
pins the node), the workload and the process config it gets, ownership."""

from __future__ import annotations

import json

import pytest

from apps.clusters.models import Workload
from apps.vdags.models import VDag, VDagController
from tests.clusters.helpers import make_cluster, node_spec
from tests.vdags.support import make_block, uid

pytestmark = pytest.mark.django_db

DENY_BLOCKED = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        request = input_data.get("request") or {}
        if input_data.get("action") == "remove_vdag_controller":
            return {"allowed": False, "reason": "controllers here are permanent"}
        if str(request.get("vdag_controller_id", "")).startswith("blocked"):
            return {"allowed": False, "reason": "blocked ids are not allowed"}
        # Pin every controller to the node named in the parameters.
        return {"allowed": True, "input_data": {"node_id": parameters["node"]}}
"""


@pytest.fixture
def network(db):
    n1, n2 = uid("n1"), uid("n2")
    cluster = make_cluster(uid("cc"), [node_spec(n1), node_spec(n2)])
    block = make_block(uid("blk"), cluster, grpc="127.0.0.1:50999")
    vdag = VDag.objects.create(
        vdag_uri=f"{uid('v')}:1.0-stable",
        name="v",
        version="1.0",
        release_tag="stable",
        status="active",
        compiled_graph={
            "version": 1,
            "nodes": {"a": {"node_type": "block", "block_id": block.pk}},
            "edges": {"a": []},
            "inputs": {"a": []},
            "heads": ["a"],
            "tails": ["a"],
            "order": ["a"],
        },
        block_ids=[block.pk],
        controller={
            "policies": {
                "quotaChecker": {
                    "policyRuleURI": "aios.quota_session_global:1.0-stable",
                    "parameters": {"requests_per_session": 5},
                }
            }
        },
    )
    return cluster, vdag, (n1, n2)


def post(api, **body):
    return api.post("/api/v1/vdag-controllers/", body, format="json")


def test_a_controller_is_accepted_with_a_task_workload_and_public_url(api, network):
    cluster, vdag, _ = network
    response = post(
        api,
        vdag_controller_id="ctl-one",
        vdag_uri=vdag.pk,
        cluster_id=cluster.id,
        config={"policy_execution_mode": "local", "replicas": 2, "quality_sample_rate": 0.5},
        search_tags=["eu"],
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "starting"
    assert body["task_id"] and body["status_url"] == f"/api/v1/tasks/{body['task_id']}/"
    workloads = list(Workload.objects.filter(labels__vdag_controller_id="ctl-one"))
    assert len(workloads) == 2
    # Replicas spread over the nodes.
    assert {w.node_id for w in workloads} == {n.id for n in cluster.nodes.all()}
    first = next(w for w in workloads if w.labels["replica_index"] == 0)
    assert body["public_url"] == f"127.0.0.1:{first.ports['grpc']}"
    assert len({w.ports["grpc"] for w in workloads}) == 2  # one host: distinct ports
    config = json.loads(first.env["AIOS_VDAG_CONTROLLER_CONFIG"])
    assert config["vdag_uri"] == vdag.pk and config["controller_id"] == "ctl-one"
    # The route carries the blocks' current executor addresses.
    node = config["graph"]["nodes"]["a"]
    assert node["executor"] == {"grpc": "127.0.0.1:50999", "cluster_id": cluster.id}
    assert config["grpc_port"] == first.ports["grpc"]
    assert config["advertise_grpc"] == body["public_url"]
    assert config["quota_policy"]["parameters"] == {"requests_per_session": 5}
    assert config["quality_policy"]["parameters"] == {"sample_rate": 0.5}
    assert config["policy_mode"] == "local"
    from block_sdk.vdag_controller.config import load_config

    # The data plane accepts exactly this document.
    assert load_config(json.dumps(config), env={}).controller_id == "ctl-one"
    # Status is observed: nothing answers on the port here.
    detail = api.get("/api/v1/vdag-controllers/ctl-one/").json()
    assert detail["status"] == "starting" and detail["search_tags"] == ["eu"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"vdag_controller_id": "Bad_Id"}, 400, "invalid vdag_controller_id"),
        ({"vdag_uri": "nope:1.0-x"}, 404, "does not exist"),
        ({"cluster_id": "no-cluster"}, 404, "cluster 'no-cluster' does not exist"),
        ({"config": {"replicas": 0}}, 400, "config.replicas"),
        ({"config": {"replica": 2}}, 400, "unknown config key 'replica'"),
        ({"config": {"policy_execution_mode": "magic"}}, 400, "policy_execution_mode"),
        ({"config": {"policies": {"speedChecker": "x:1-y"}}}, 400, "unknown controller policy"),
        ({"config": {"quality_sample_rate": 2}}, 400, "quality_sample_rate"),
        ({"search_tags": "eu"}, 400, "search_tags"),
    ],
)
def test_bad_requests_are_4xx_in_the_error_shape(api, network, body, status, needle):
    cluster, vdag, _ = network
    full = {"vdag_controller_id": uid("c"), "vdag_uri": vdag.pk, "cluster_id": cluster.id, **body}
    response = post(api, **full)
    assert response.status_code == status, response.content
    assert needle in response.json()["error"]["message"]
    assert not Workload.objects.exists()


def test_only_active_vdags_and_unique_ids(api, network):
    cluster, vdag, _ = network
    pending = VDag.objects.create(
        vdag_uri=f"{uid('p')}:1.0-stable", name="p", version="1.0", release_tag="stable"
    )
    response = post(api, vdag_controller_id="c1", vdag_uri=pending.pk, cluster_id=cluster.id)
    assert response.status_code == 409 and "not active" in response.json()["error"]["message"]
    assert (
        post(api, vdag_controller_id="c1", vdag_uri=vdag.pk, cluster_id=cluster.id).status_code
        == 202
    )
    again = post(api, vdag_controller_id="c1", vdag_uri=vdag.pk, cluster_id=cluster.id)
    assert again.status_code == 409


def test_writes_need_authentication_and_ownership(
    anon_client, api, client_for, other_user, network
):
    cluster, vdag, _ = network
    denied = anon_client.post(
        "/api/v1/vdag-controllers/",
        {"vdag_controller_id": "c2", "vdag_uri": vdag.pk, "cluster_id": cluster.id},
        format="json",
    )
    assert denied.status_code == 401
    assert (
        post(api, vdag_controller_id="c2", vdag_uri=vdag.pk, cluster_id=cluster.id).status_code
        == 202
    )
    assert client_for(other_user).delete("/api/v1/vdag-controllers/c2/").status_code == 403
    assert anon_client.delete("/api/v1/vdag-controllers/c2/").status_code == 401
    removed = api.delete("/api/v1/vdag-controllers/c2/")
    assert removed.status_code == 200, removed.content
    assert removed.json()["removed"] is True
    assert not VDagController.objects.filter(pk="c2").exists()
    # The workloads are asked to stop (the agent removes the rows once they have).
    assert all(w.remove_requested for w in Workload.objects.filter(labels__vdag_controller_id="c2"))


def test_the_cluster_prechecks_deny_or_rewrite(api, network, register_policy):
    cluster, vdag, (_, n2) = network
    uri = register_policy(DENY_BLOCKED)
    config = dict(cluster.config or {})
    config["actionsPolicyMap"] = {"add_vdag_controller": uri, "remove_vdag_controller": uri}
    cluster.config = config
    cluster.save()
    from apps.policies.models import PolicyRule

    PolicyRule.objects.filter(policy_rule_uri=uri).update(policy_parameters={"node": n2})

    denied = post(api, vdag_controller_id="blocked-1", vdag_uri=vdag.pk, cluster_id=cluster.id)
    assert denied.status_code == 403, denied.content
    assert denied.json()["error"]["code"] == "precheck_denied"
    assert "blocked ids are not allowed" in denied.json()["error"]["message"]
    assert not VDagController.objects.exists()

    allowed = post(api, vdag_controller_id="pinned", vdag_uri=vdag.pk, cluster_id=cluster.id)
    assert allowed.status_code == 202, allowed.content
    assert Workload.objects.get(labels__vdag_controller_id="pinned").node_id == n2

    refused = api.delete("/api/v1/vdag-controllers/pinned/")
    assert refused.status_code == 403
    assert "permanent" in refused.json()["error"]["message"]
    assert VDagController.objects.filter(pk="pinned").exists()


def test_by_vdag_uri_lists_the_controllers_of_a_vdag(api, anon_client, network):
    cluster, vdag, _ = network
    for cid in ("ctl-b", "ctl-a"):
        assert (
            post(api, vdag_controller_id=cid, vdag_uri=vdag.pk, cluster_id=cluster.id).status_code
            == 202
        )
    listed = anon_client.get(f"/api/v1/vdag-controllers/by-vdag-uri/{vdag.pk}/")
    assert listed.status_code == 200
    assert [c["vdag_controller_id"] for c in listed.json()] == ["ctl-a", "ctl-b"]
    assert anon_client.get("/api/v1/vdag-controllers/by-vdag-uri/none:1.0-x/").status_code == 404
    filtered = anon_client.get(
        "/api/v1/vdag-controllers/", {"vdag_uri": vdag.pk, "status": "starting"}
    )
    assert filtered.json()["count"] == 2


def test_a_vdag_whose_blocks_do_not_run_gets_no_controller(api, network):
    cluster, vdag, _ = network
    from apps.blocks.models import Block

    Block.objects.filter(pk__in=vdag.block_ids).update(status="failed")
    response = post(api, vdag_controller_id="c3", vdag_uri=vdag.pk, cluster_id=cluster.id)
    assert response.status_code == 409
    assert "do not run" in response.json()["error"]["message"]
    assert response.json()["error"]["details"] == [
        {"block_id": vdag.block_ids[0], "status": "failed"}
    ]


def test_removing_a_block_fails_the_vdags_that_route_through_it(api, network):
    _, vdag, _ = network
    from apps.blocks.models import Block

    Block.objects.filter(pk__in=vdag.block_ids).delete()
    detail = api.get(f"/api/v1/vdags/{vdag.pk}/").json()
    assert detail["status"] == "failed"
    assert f"block {vdag.block_ids[0]} was removed" in detail["status_reason"]
