"""createCluster, addNode and executeMgmtCommand through the parser (``POST /api/<action>``)."""

from __future__ import annotations

import pytest

from apps.clusters.models import Cluster, Node
from apps.tasks.models import Task
from tests.clusters.helpers import node_spec, uid
from tests.support.procs import wait_until


def envelope(values: dict) -> dict:
    return {
        "header": {"templateUri": "Parser/V1", "parameters": {}},
        "body": {"spec": {"values": values}},
    }


def cluster_values(cid: str, *nodes: dict) -> dict:
    return {
        "id": cid,
        "regionId": "eu-1",
        "status": "live",
        "nodes": {"count": len(nodes), "nodeData": list(nodes)},
        "gpus": {"count": 0, "memory": 0},
        "vcpus": {"count": 0},
        "memory": 0,
        "swap": 0,
        "storage": {"disks": 1, "size": 1000},
        "network": {"interfaces": 1, "txBandwidth": 0, "rxBandwidth": 0},
        "config": {"policyExecutionMode": "local", "driver": "local"},
        "tags": ["eu"],
        "clusterMetadata": {"name": cid, "owner": "alice"},
        "reputation": 50,
    }


@pytest.mark.django_db(transaction=True)
def test_onboarding_a_cluster_with_two_nodes_through_the_parser(celery_worker, api):
    cid, n1, n2 = uid("c"), uid("n"), uid("n")
    created = api.post(
        "/api/createCluster",
        envelope(cluster_values(cid, node_spec(n1, [("A100", 40960)]))),
        format="json",
    )
    assert created.status_code == 202, created.json()
    body = created.json()
    assert body["cluster_id"] == cid and body["task_id"]
    wait_until(lambda: Task.objects.get(pk=body["task_id"]).is_finished, 60, "provisioning")
    assert Task.objects.get(pk=body["task_id"]).task_status == "completed"
    assert Cluster.objects.get(pk=cid).status == "live"

    added = api.post(
        "/api/addNode",
        envelope({**node_spec(n2, [("T4", 16384)]), "clusterId": cid}),
        format="json",
    )
    assert added.status_code == 202, added.json()
    assert added.json()["node_id"] == n2 and added.json()["cluster_id"] == cid
    wait_until(
        lambda: Task.objects.get(pk=added.json()["task_id"]).is_finished, 60, "node_addition"
    )
    assert set(Node.objects.filter(cluster_id=cid).values_list("id", flat=True)) == {n1, n2}
    assert Cluster.objects.get(pk=cid).gpus["count"] == 2

    mgmt = api.post(
        "/api/executeMgmtCommand",
        envelope(
            {
                "clusterId": cid,
                "service": "stability_checker",
                "mgmtCommand": "check_stability",
                "mgmtData": {},
            }
        ),
        format="json",
    )
    assert mgmt.status_code == 200, mgmt.json()
    # No agent reports for these nodes: the cluster is not stable, and says why.
    assert mgmt.json()["is_stable"] is False
    assert set(mgmt.json()["stability_check_data"]["not_ready_nodes"]) == {n1, n2}


@pytest.mark.django_db
def test_parser_errors_keep_the_error_shape(api, anon_client):
    assert (
        anon_client.post(
            "/api/createCluster", envelope(cluster_values(uid("c"))), format="json"
        ).status_code
        == 401
    )
    bad = api.post(
        "/api/addNode",
        envelope({**node_spec(uid("n")), "clusterId": "no-such-cluster"}),
        format="json",
    )
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "not_found"
    other = cluster_values(uid("c"))
    other["config"]["driver"] = "nomad"
    refused = api.post("/api/createCluster", envelope(other), format="json")
    assert refused.status_code == 400 and "validation_error" in refused.json()["error"]["code"]


@pytest.mark.django_db
def test_remove_and_update_handlers_for_the_parser(user):
    from apps.clusters import parser_actions
    from apps.clusters.models import Workload
    from apps.core.actions import ActionRequest
    from apps.core.errors import ApiError
    from tests.clusters.helpers import make_cluster

    nid = uid("n")
    cluster = make_cluster(owner=user, nodes=[node_spec(nid)])
    updated = parser_actions.update_cluster(
        ActionRequest(
            "updateCluster",
            {"clusterId": cluster.id, "changes": {"clusterMetadata.creator": "ops"}},
            user=user,
        )
    )
    assert updated.status == 200 and updated.body["clusterMetadata"]["creator"] == "ops"
    Workload.objects.create(
        id=uid("w"), cluster=cluster, node_id=nid, kind="job", entry_point="a.b", status="running"
    )
    with pytest.raises(ApiError) as busy:
        parser_actions.remove_node(ActionRequest("removeNode", {"nodeId": nid}, user=user))
    assert busy.value.status_code == 409
    removed = parser_actions.remove_cluster(
        ActionRequest("removeCluster", {"clusterId": cluster.id, "force": True}, user=user)
    )
    assert removed.status == 202 and removed.body["task_type"] == "cluster_infra_remove"
    with pytest.raises(ApiError):
        parser_actions.update_cluster(
            ActionRequest("updateCluster", {"clusterId": cluster.id}, user=user)
        )
