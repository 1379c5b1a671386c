"""The clusters REST API: onboarding (202 + tasks), validation, ownership, kubeconfig secrecy,
updates, removal guarded by running workloads, management commands, admin pages."""

from __future__ import annotations

import pytest
from django.db import connection

from apps.clusters import services
from apps.clusters.models import GPU, Cluster, GatewayConfig, Node, Workload
from apps.tasks.models import Task
from tests.clusters.helpers import make_cluster, node_spec, uid
from tests.support.procs import wait_until

SPEC_NODE = node_spec("placeholder", [("A100", 40960), ("A100", 40960)])


def cluster_spec(cid: str, *nodes: dict, **extra) -> dict:
    return {
        "id": cid,
        "regionId": "eu-1",
        "nodes": {"count": len(nodes), "nodeData": list(nodes)},
        "gpus": {"count": 0, "memory": 0},
        "vcpus": {"count": 0},
        "memory": 0,
        "storage": {"disks": 1, "size": 1000},
        "network": {"interfaces": 1, "txBandwidth": 0, "rxBandwidth": 0},
        "clusterMetadata": {"name": cid, "owner": "alice", "vendor": "dma-bangalore"},
        "tags": ["gpu", "eu"],
        **extra,
    }


def envelope(values: dict) -> dict:
    return {
        "header": {"templateUri": "Parser/V1", "parameters": {}},
        "body": {"spec": {"values": values}},
    }


def error(response) -> dict:
    return response.json()["error"]


@pytest.mark.django_db
def test_create_cluster_answers_202_with_a_task_and_registers_nodes_and_gpus(api, user):
    cid, nid = uid("c"), uid("n")
    response = api.post(
        "/api/v1/clusters/",
        cluster_spec(cid, node_spec(nid, [("A100", 40960), ("T4", 16384)])),
        format="json",
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["cluster_id"] == cid and body["task_type"] == "cluster_infra_creation"
    assert body["status_url"] == f"/api/v1/tasks/{body['task_id']}/"
    task = Task.objects.get(pk=body["task_id"])
    assert task.owner == user and task.task_data["cluster_id"] == cid
    doc = api.get(f"/api/v1/clusters/{cid}/").json()
    assert doc["status"] == "pending" and doc["owner"] == "alice"
    # Totals come from the registered nodes, not from the spec's placeholders.
    assert doc["gpus"] == {"count": 2, "memory": 57344}
    assert doc["vcpus"]["count"] == 16
    node = doc["nodes"]["nodeData"][0]
    assert node["id"] == nid and node["status"] == "pending"
    assert [(g["index"], g["modelName"], g["memory"]) for g in node["gpus"]["gpus"]] == [
        (0, "A100", 40960),
        (1, "T4", 16384),
    ]
    # The envelope form is accepted too.
    other = uid("c")
    assert (
        api.post("/api/v1/clusters/", envelope(cluster_spec(other)), format="json").status_code
        == 202
    )


@pytest.mark.django_db
def test_bad_cluster_specs_are_400_with_the_field(api):
    bad_id = api.post("/api/v1/clusters/", cluster_spec("Not_A_Slug"), format="json")
    assert bad_id.status_code == 400 and "cluster id" in error(bad_id)["message"]
    spec = cluster_spec(uid("c"))
    del spec["regionId"]
    missing = api.post("/api/v1/clusters/", spec, format="json")
    assert missing.status_code == 400 and "regionId" in error(missing)["message"]
    wrong_type = api.post("/api/v1/clusters/", cluster_spec(uid("c"), memory="lots"), format="json")
    assert wrong_type.status_code == 400
    assert error(wrong_type)["details"][0]["field"] == "memory"
    bad_map = api.post(
        "/api/v1/clusters/",
        cluster_spec(uid("c"), config={"actionsPolicyMap": {"add_nod": "x:1.0-stable"}}),
        format="json",
    )
    assert bad_map.status_code == 400 and "add_nod" in error(bad_map)["message"]
    not_json = api.post("/api/v1/clusters/", [1, 2], format="json")
    assert not_json.status_code == 400


@pytest.mark.django_db
def test_duplicate_cluster_or_node_is_409_and_writes_need_auth(api, anon_client):
    cid, nid = uid("c"), uid("n")
    assert (
        api.post("/api/v1/clusters/", cluster_spec(cid, node_spec(nid)), format="json").status_code
        == 202
    )
    again = api.post("/api/v1/clusters/", cluster_spec(cid), format="json")
    assert again.status_code == 409 and error(again)["code"] == "conflict"
    node_taken = api.post(
        "/api/v1/clusters/", cluster_spec(uid("c"), node_spec(nid)), format="json"
    )
    assert node_taken.status_code == 409
    assert (
        anon_client.post("/api/v1/clusters/", cluster_spec(uid("c")), format="json").status_code
        == 401
    )
    assert anon_client.get(f"/api/v1/clusters/{cid}/").status_code == 200  # reads are open


@pytest.mark.django_db
def test_unknown_driver_is_400_and_kubeconfig_sent_on_create_is_encrypted(api):
    unknown = api.post(
        "/api/v1/clusters/", cluster_spec(uid("c"), config={"driver": "nomad"}), format="json"
    )
    assert unknown.status_code == 400 and "config.driver" in error(unknown)["message"]
    cid = uid("c")
    created = api.post(
        "/api/v1/clusters/",
        cluster_spec(cid, config={"driver": "kubernetes"}, kube_config_data="token: zz-top-secret"),
        format="json",
    )
    assert created.status_code == 202, created.json()
    with connection.cursor() as cursor:
        cursor.execute("SELECT kubeconfig_encrypted FROM clusters_cluster WHERE id = %s", [cid])
        assert "zz-top-secret" not in cursor.fetchone()[0]
    doc = api.get(f"/api/v1/clusters/{cid}/")
    assert doc.json()["driver"] == "kubernetes" and doc.json()["hasKubeconfig"] is True
    assert "zz-top-secret" not in doc.content.decode()


@pytest.mark.django_db
def test_kubeconfig_is_encrypted_at_rest_and_never_returned(api, user):
    secret = (
        "apiVersion: v1\nclusters:\n- cluster: {server: https://10.0.0.1:6443}\n"
        "  token: s3cr3t-token-abc"
    )
    cid = uid("c")
    from apps.clusters.specs import clean_cluster_values

    cluster = services.register_cluster(
        clean_cluster_values({"id": cid, "regionId": "x", "config": {"driver": "kubernetes"}}),
        owner=user,
        kubeconfig=secret,
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT kubeconfig_encrypted FROM clusters_cluster WHERE id = %s", [cid])
        (raw,) = cursor.fetchone()
    assert raw and "s3cr3t-token-abc" not in raw and "apiVersion" not in raw
    assert Cluster.objects.get(pk=cid).get_kubeconfig() == secret
    response = api.get(f"/api/v1/clusters/{cid}/")
    assert response.json()["hasKubeconfig"] is True
    assert (
        "s3cr3t" not in response.content.decode() and "kubeconfig_encrypted" not in response.json()
    )
    assert cluster.driver == "kubernetes"

    # Setting one through the API on another cluster: stored encrypted too.
    local = make_cluster(owner=user)
    patched = api.patch(
        f"/api/v1/clusters/{local.id}/", {"kube_config_data": {"token": "tok-xyz"}}, format="json"
    )
    assert patched.status_code == 200 and patched.json()["hasKubeconfig"] is True
    assert "tok-xyz" not in patched.content.decode()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT kubeconfig_encrypted FROM clusters_cluster WHERE id = %s", [local.id]
        )
        assert "tok-xyz" not in cursor.fetchone()[0]


@pytest.mark.django_db
def test_add_node_via_rest_and_its_validation(api, user, client_for, other_user):
    cluster = make_cluster(owner=user)
    nid = uid("n")
    response = api.post(
        "/api/v1/nodes/",
        {**node_spec(nid, [("L4", 24576)], shared=True), "clusterId": cluster.id},
        format="json",
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["node_id"] == nid and body["cluster_id"] == cluster.id
    assert body["task_type"] == "node_addition"
    gpu = GPU.objects.get(node_id=nid)
    assert (gpu.model, gpu.memory_mb, gpu.shared) == ("L4", 24576, True)
    assert Cluster.objects.get(pk=cluster.id).gpus["count"] == 1
    assert (
        api.post(
            "/api/v1/nodes/", {**node_spec(nid), "clusterId": cluster.id}, format="json"
        ).status_code
        == 409
    )
    missing = api.post(
        "/api/v1/nodes/", {**node_spec(uid("n")), "clusterId": "no-such"}, format="json"
    )
    assert missing.status_code == 404
    no_cluster = api.post("/api/v1/nodes/", node_spec(uid("n")), format="json")
    assert no_cluster.status_code == 400 and "clusterId" in error(no_cluster)["message"]
    inconsistent = api.post(
        "/api/v1/nodes/",
        {
            **node_spec(uid("n")),
            "clusterId": cluster.id,
            "gpus": {"count": 3, "gpus": [{"modelName": "x", "memory": 1}]},
        },
        format="json",
    )
    assert inconsistent.status_code == 400

    # Another user may not add nodes to alice's cluster, unless it allows external nodes.
    bob = client_for(other_user)
    refused = bob.post(
        "/api/v1/nodes/", {**node_spec(uid("n")), "clusterId": cluster.id}, format="json"
    )
    assert refused.status_code == 403
    Cluster.objects.filter(pk=cluster.id).update(config={"allowExternalNodes": True})
    allowed = bob.post(
        "/api/v1/nodes/", {**node_spec(uid("n")), "clusterId": cluster.id}, format="json"
    )
    assert allowed.status_code == 202


@pytest.mark.django_db
def test_update_cluster_merges_and_sets_dotted_keys(api, user, client_for, other_user):
    cluster = make_cluster(owner=user, clusterMetadata={"name": "a", "owner": "alice"})
    response = api.patch(
        f"/api/v1/clusters/{cluster.id}/",
        {
            "clusterMetadata.creator": "ops-team",
            "tags": ["x"],
            "config": {"publicHostname": "h.example"},
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    doc = response.json()
    assert doc["clusterMetadata"] == {"name": "a", "owner": "alice", "creator": "ops-team"}
    assert doc["tags"] == ["x"] and doc["config"]["publicHostname"] == "h.example"
    assert doc["config"]["driver"] == "local"
    bad = api.patch(f"/api/v1/clusters/{cluster.id}/", {"status": "live"}, format="json")
    assert bad.status_code == 400 and "status" in error(bad)["message"]
    bad_value = api.patch(f"/api/v1/clusters/{cluster.id}/", {"reputation": 400}, format="json")
    assert bad_value.status_code == 400
    stranger = client_for(other_user).patch(
        f"/api/v1/clusters/{cluster.id}/", {"tags": ["mine"]}, format="json"
    )
    assert stranger.status_code == 403
    assert api.put(f"/api/v1/clusters/{cluster.id}/", {}, format="json").status_code == 405


@pytest.mark.django_db
def test_removal_is_refused_while_workloads_run_unless_forced(api, user):
    nid = uid("n")
    cluster = make_cluster(owner=user, nodes=[node_spec(nid)])
    Workload.objects.create(
        id=uid("w"),
        cluster=cluster,
        node_id=nid,
        kind="instance",
        block_id="blk-1",
        entry_point="x.y",
        status="running",
    )
    refused = api.delete(f"/api/v1/clusters/{cluster.id}/")
    assert refused.status_code == 409
    assert error(refused)["code"] == "cluster_in_use"
    assert "blk-1" in error(refused)["message"]
    node_refused = api.delete(f"/api/v1/nodes/{nid}/")
    assert node_refused.status_code == 409 and error(node_refused)["code"] == "node_in_use"
    forced = api.delete(f"/api/v1/clusters/{cluster.id}/?force=true")
    assert forced.status_code == 202
    assert forced.json()["task_type"] == "cluster_infra_remove"
    assert Cluster.objects.get(pk=cluster.id).status == "removing"
    assert api.delete("/api/v1/clusters/no-such-cluster/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_tasks_provision_then_remove_through_a_real_worker(celery_worker, api, user):
    cid, nid = uid("c"), uid("n")
    body = api.post("/api/v1/clusters/", cluster_spec(cid, node_spec(nid)), format="json").json()
    done = wait_until(lambda: Task.objects.get(pk=body["task_id"]).is_finished, 60, "provisioning")
    task = Task.objects.get(pk=body["task_id"])
    assert task.task_status == "completed", task.error
    assert task.task_status_data["status"] == "live"
    assert any(nid in c for c in task.task_status_data["agent_commands"])
    cluster = Cluster.objects.get(pk=cid)
    assert cluster.status == "live" and cluster.config["urlMap"]["controllerService"]
    assert done

    added = api.post(
        "/api/v1/nodes/", {**node_spec(uid("n")), "clusterId": cid}, format="json"
    ).json()
    wait_until(lambda: Task.objects.get(pk=added["task_id"]).is_finished, 60, "node_addition")
    assert Task.objects.get(pk=added["task_id"]).task_status == "completed"

    removed = api.delete(f"/api/v1/nodes/{added['node_id']}/").json()
    wait_until(lambda: Task.objects.get(pk=removed["task_id"]).is_finished, 60, "node_removal")
    assert not Node.objects.filter(pk=added["node_id"]).exists()

    gone = api.delete(f"/api/v1/clusters/{cid}/").json()
    wait_until(lambda: Task.objects.get(pk=gone["task_id"]).is_finished, 60, "cluster removal")
    assert Task.objects.get(pk=gone["task_id"]).task_status == "completed"
    assert not Cluster.objects.filter(pk=cid).exists()
    assert api.get(f"/api/v1/clusters/{cid}/").status_code == 404


@pytest.mark.django_db
def test_management_commands(api, user):
    nid = uid("n")
    cluster = make_cluster(owner=user, nodes=[node_spec(nid)])
    url = f"/api/v1/clusters/{cluster.id}/mgmt/"
    status = api.post(url, {"action": "status"}, format="json")
    assert status.status_code == 200
    assert status.json()["status"]["nodes"][0]["id"] == nid
    cordon = api.post(url, {"action": "cordon_node", "payload": {"node_id": nid}}, format="json")
    assert cordon.status_code == 200 and Node.objects.get(pk=nid).schedulable is False
    stability = api.post(
        url, {"service": "stability_checker", "mgmtCommand": "check_stability"}, format="json"
    )
    assert stability.status_code == 200 and "is_stable" in stability.json()
    unknown = api.post(url, {"action": "reboot_everything"}, format="json")
    assert unknown.status_code == 400 and "reboot_everything" in error(unknown)["message"]
    bad_service = api.post(url, {"service": "nope", "action": "status"}, format="json")
    assert bad_service.status_code == 400
    missing_arg = api.post(url, {"action": "cordon_node"}, format="json")
    assert missing_arg.status_code == 400
    mode = api.post(
        url,
        {
            "action": "set_policy_execution_mode",
            "payload": {"mode": "remote", "executor_id": "ex-1"},
        },
        format="json",
    )
    assert mode.status_code == 200
    assert Cluster.objects.get(pk=cluster.id).policy_execution_mode == "remote"


@pytest.mark.django_db
def test_pre_check_maps_through_the_api(api, staff_api, user):
    cluster = make_cluster(owner=user)
    url = f"/api/v1/clusters/{cluster.id}/pre-check-policies/"
    assert api.get(url).json() == {"actionsPolicyMap": {}}
    updated = api.patch(url, {"add_node": "my.add-node-check:1.0-stable"}, format="json")
    assert updated.status_code == 200
    assert updated.json()["actionsPolicyMap"] == {"add_node": "my.add-node-check:1.0-stable"}
    cleared = api.patch(url, {"actionsPolicyMap": {"add_node": ""}}, format="json")
    assert cleared.json()["actionsPolicyMap"] == {}
    assert api.patch(url, {"unknown_action": "a:1.0-x"}, format="json").status_code == 400

    assert (
        api.patch(
            "/api/v1/gateway/config/", {"policy_execution_mode": "remote"}, format="json"
        ).status_code
        == 403
    )
    gw = staff_api.post(
        "/api/v1/gateway/pre-check-policies/update/",
        {"add_cluster": "net.add-cluster:1.0-stable", "remove_cluster": ""},
        format="json",
    )
    assert gw.status_code == 200
    assert gw.json()["actions_policy_map"] == {"add_cluster": "net.add-cluster:1.0-stable"}
    assert GatewayConfig.objects.get().actions_policy_map == {
        "add_cluster": "net.add-cluster:1.0-stable"
    }
    cleared = staff_api.patch("/api/v1/gateway/config/", {"actions_policy_map": {}}, format="json")
    assert cleared.status_code == 200 and cleared.json()["actions_policy_map"] == {}
    assert (
        staff_api.post(
            "/api/v1/gateway/pre-check-policies/update/", {"bogus": "a:1.0-x"}, format="json"
        ).status_code
        == 400
    )


@pytest.mark.django_db
def test_filters_and_query_language(api, user):
    big = make_cluster(
        owner=user,
        nodes=[node_spec(uid("n"), [("A100", 40960)] * 6)],
        clusterMetadata={"vendor": "dma-bangalore"},
        tags=["big"],
    )
    small = make_cluster(owner=user, nodes=[node_spec(uid("n"), [("T4", 16384)])])
    ids = lambda r: {c["id"] for c in r.json()["results"]}  # noqa: E731
    assert big.id in ids(api.get("/api/v1/clusters/?tag=big"))
    assert small.id not in ids(api.get("/api/v1/clusters/?tag=big"))
    query = {
        "query": {
            "logicalOperator": "AND",
            "conditions": [
                {"variable": "gpus.count", "operator": ">", "value": 5},
                {"variable": "clusterMetadata.vendor", "operator": "==", "value": "dma-bangalore"},
            ],
        }
    }
    found = api.post("/api/v1/clusters/query/", query, format="json")
    assert found.status_code == 200 and ids(found) == {big.id}
    assert (
        api.post("/api/v1/clusters/query/", {"query": {"secret": 1}}, format="json").status_code
        == 400
    )
    nodes = api.get(f"/api/v1/nodes/?cluster={small.id}").json()["results"]
    assert [n["gpus"]["modelNames"] for n in nodes] == [["T4"]]
    assert api.get("/api/v1/nodes/?gpu_model=a100").json()["count"] >= 1
    gpus = api.get(f"/api/v1/gpus/?cluster={big.id}").json()
    assert gpus["count"] == 6


@pytest.mark.django_db
def test_workload_endpoints(api, staff_api, user):
    nid = uid("n")
    cluster = make_cluster(owner=user, nodes=[node_spec(nid)])
    created = staff_api.post(
        "/api/v1/workloads/",
        {
            "cluster_id": cluster.id,
            "kind": "service",
            "entry_point": "pkg.mod:main",
            "ports": {"http": 0},
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["node_id"] == nid and body["ports"]["http"] > 0 and body["status"] == "pending"
    assert (
        api.post(
            "/api/v1/workloads/",
            {"cluster_id": cluster.id, "kind": "service", "entry_point": "a.b"},
            format="json",
        ).status_code
        == 403
    )
    bad = staff_api.post(
        "/api/v1/workloads/",
        {"cluster_id": cluster.id, "kind": "service", "entry_point": "not valid!"},
        format="json",
    )
    assert bad.status_code == 400
    restarted = api.post(f"/api/v1/workloads/{body['id']}/restart/")
    assert restarted.status_code == 200 and restarted.json()["generation"] == 2
    stopped = api.post(
        f"/api/v1/workloads/{body['id']}/desired-state/",
        {"desired_state": "stopped"},
        format="json",
    )
    assert stopped.json()["desired_state"] == "stopped"
    listed = api.get(f"/api/v1/workloads/?cluster={cluster.id}&kind=service").json()
    assert [w["id"] for w in listed["results"]] == [body["id"]]
    # Removing with no live agent on the node finishes at once.
    assert api.delete(f"/api/v1/workloads/{body['id']}/").status_code == 202
    Node.objects.filter(pk=nid).update(last_heartbeat=None)
    second = staff_api.post(
        "/api/v1/workloads/",
        {"cluster_id": cluster.id, "node_id": nid, "kind": "job", "command": ["true"]},
        format="json",
    ).json()
    # The node's agent is gone, so the removal completes at once: 204, not a 500.
    assert api.delete(f"/api/v1/workloads/{second['id']}/").status_code == 204
    assert not Workload.objects.filter(pk=second["id"]).exists()


@pytest.mark.django_db
def test_stale_heartbeat_makes_a_node_not_ready(api, user):
    from datetime import timedelta

    from django.utils import timezone

    nid = uid("n")
    make_cluster(owner=user, nodes=[node_spec(nid)])
    assert api.get(f"/api/v1/nodes/{nid}/").json()["status"] == "ready"
    Node.objects.filter(pk=nid).update(last_heartbeat=timezone.now() - timedelta(minutes=5))
    assert api.get(f"/api/v1/nodes/{nid}/").json()["status"] == "not_ready"
    assert services.mark_stale_nodes() >= 1
    assert Node.objects.get(pk=nid).status == "not_ready"
    services.heartbeat(nid)
    assert Node.objects.get(pk=nid).status == "ready"


@pytest.mark.django_db
def test_admin_pages_render(admin_client, user):
    nid = uid("n")
    cluster = make_cluster(owner=user, nodes=[node_spec(nid, [("A100", 1000)])])
    Workload.objects.create(
        id=uid("w"), cluster=cluster, node_id=nid, kind="job", entry_point="a.b"
    )
    services.gateway_config()
    for url in (
        "/admin/clusters/cluster/",
        f"/admin/clusters/cluster/{cluster.id}/change/",
        "/admin/clusters/node/",
        f"/admin/clusters/node/{nid}/change/",
        "/admin/clusters/gpu/",
        "/admin/clusters/workload/",
        "/admin/clusters/gatewayconfig/",
        "/admin/clusters/gatewayconfig/1/change/",
    ):
        assert admin_client.get(url).status_code == 200, url
    response = admin_client.post(
        "/admin/clusters/node/", {"action": "cordon", "_selected_action": [nid]}, follow=True
    )
    assert response.status_code == 200 and Node.objects.get(pk=nid).schedulable is False
    bad = admin_client.post(
        "/admin/clusters/gatewayconfig/1/change/",
        {
            "actions_policy_map": '{"nope": "a:1.0-x"}',
            "policy_execution_mode": "local",
            "policy_executor_id": "",
        },
    )
    assert bad.status_code == 200 and b"unknown action" in bad.content


def test_workload_env_is_redacted_for_non_staff(api, staff_api, user):
    nid = uid("n")
    cluster = make_cluster(owner=user, nodes=[node_spec(nid)])
    created = staff_api.post(
        "/api/v1/workloads/",
        {
            "cluster_id": cluster.id,
            "kind": "service",
            "entry_point": "pkg.mod:main",
            "env": {"API_TOKEN": "s3cret-value"},
        },
        format="json",
    ).json()
    assert created["env"] == {"API_TOKEN": "s3cret-value"}
    seen = api.get(f"/api/v1/workloads/{created['id']}/")
    assert seen.status_code == 200
    assert seen.json()["env"] == {"API_TOKEN": "***"}
    assert b"s3cret-value" not in api.get("/api/v1/workloads/").content
