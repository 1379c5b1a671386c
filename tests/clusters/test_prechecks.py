"""Pre-check policies run through the real policies system (sandboxed): the network gateway's
map and each cluster's ``config.actionsPolicyMap`` can allow, deny with a reason (403), or
rewrite the input."""

from __future__ import annotations

import io
import uuid
import zipfile

import pytest

from apps.clusters import gateway
from apps.clusters.models import Cluster, Node
from apps.policies.services import register_policy
from tests.clusters.helpers import make_cluster, node_spec, uid

pytestmark = pytest.mark.django_db

OWNER_ALLOW_LIST = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.parameters = parameters or {}

    def eval(self, parameters, input_data, context):
        owner = (input_data["cluster_data"].get("clusterMetadata") or {}).get("owner")
        allowed = (parameters or self.parameters).get("owners", [])
        if owner in allowed:
            return {"allowed": True, "input_data": input_data}
        return {"allowed": False, "input_data": f"owner {owner!r} is not on the allow-list"}
"""

REWRITE = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        data = dict(input_data["cluster_data"])
        meta = dict(data.get("clusterMetadata") or {})
        meta["vendor"] = "approved-vendor"
        data["clusterMetadata"] = meta
        data["tags"] = sorted(set(data.get("tags") or []) | {"governed"})
        return {"allowed": True, "input_data": {"cluster_data": data}}
"""

NODE_GUARD = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        node = input_data["node_data"]
        if node["gpus"].get("count", 0) == 0:
            return {"allowed": False, "reason": "this cluster only takes GPU nodes",
                    "input_data": input_data}
        node = dict(node, tags=["checked-by-cluster"])
        return {"allowed": True, "input_data": {**input_data, "node_data": node}}
"""

BROKEN = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        return "yes"
"""


def policy(source: str, **fields) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        # A unique comment keeps archives distinct across tests (content addressing).
        zf.writestr("code/function.py", f"# {uuid.uuid4()}\n{source}")
    name = f"test.precheck.{uuid.uuid4().hex[:8]}"
    rule = register_policy(
        name=name, version="1.0", release_tag="stable", archive=buf.getvalue(), **fields
    )
    return rule.policy_rule_uri


def spec(cid: str, owner: str, **extra) -> dict:
    return {"id": cid, "regionId": "eu", "clusterMetadata": {"owner": owner}, **extra}


def test_gateway_denies_a_cluster_whose_owner_is_not_allow_listed(api):
    uri = policy(OWNER_ALLOW_LIST, policy_parameters={"owners": ["alice", "team-a"]})
    gateway.update_precheck_policies({"add_cluster": uri})
    denied = api.post("/api/v1/clusters/", spec(uid("c"), "mallory"), format="json")
    assert denied.status_code == 403
    err = denied.json()["error"]
    assert err["code"] == "precheck_denied"
    assert "owner 'mallory' is not on the allow-list" in err["message"]
    assert err["details"][0]["policy"] == uri and err["details"][0]["action"] == "add_cluster"
    assert not Cluster.objects.filter(cluster_metadata__owner="mallory").exists()

    allowed = api.post("/api/v1/clusters/", spec(uid("c"), "alice"), format="json")
    assert allowed.status_code == 202


def test_a_pre_check_may_rewrite_the_input(api):
    gateway.update_precheck_policies({"add_cluster": policy(REWRITE)})
    cid = uid("c")
    response = api.post("/api/v1/clusters/", spec(cid, "alice", tags=["gpu"]), format="json")
    assert response.status_code == 202
    cluster = Cluster.objects.get(pk=cid)
    assert cluster.cluster_metadata["vendor"] == "approved-vendor"
    assert cluster.tags == ["governed", "gpu"]


def test_cluster_controller_pre_check_guards_add_node(api, user):
    cluster = make_cluster(
        owner=user, config={"actionsPolicyMap": {"add_node": policy(NODE_GUARD)}}
    )
    cpu_only = api.post(
        "/api/v1/nodes/", {**node_spec(uid("n")), "clusterId": cluster.id}, format="json"
    )
    assert cpu_only.status_code == 403
    assert "only takes GPU nodes" in cpu_only.json()["error"]["message"]
    assert cpu_only.json()["error"]["details"][0]["scope"] == f"cluster {cluster.id}"
    nid = uid("n")
    gpu = api.post(
        "/api/v1/nodes/",
        {**node_spec(nid, [("A10", 24576)]), "clusterId": cluster.id},
        format="json",
    )
    assert gpu.status_code == 202
    assert Node.objects.get(pk=nid).tags == ["checked-by-cluster"]


def test_removal_and_update_and_mgmt_pre_checks(api, user):
    deny_all = policy(OWNER_ALLOW_LIST, policy_parameters={"owners": []})
    cluster = make_cluster(owner=user, clusterMetadata={"owner": "alice"})
    gateway.update_precheck_policies({"remove_cluster": deny_all, "update_cluster": deny_all})
    removal = api.delete(f"/api/v1/clusters/{cluster.id}/")
    assert removal.status_code == 403 and "remove_cluster" in removal.json()["error"]["message"]
    update = api.patch(f"/api/v1/clusters/{cluster.id}/", {"tags": ["a"]}, format="json")
    assert update.status_code == 403
    assert Cluster.objects.get(pk=cluster.id).tags == []

    gateway.update_precheck_policies({"update_cluster": ""})
    Cluster.objects.filter(pk=cluster.id).update(
        config={"actionsPolicyMap": {"cluster_mgmt": deny_all}}
    )
    mgmt = api.post(f"/api/v1/clusters/{cluster.id}/mgmt/", {"action": "status"}, format="json")
    assert mgmt.status_code == 403


def test_a_pre_check_with_a_wrong_answer_is_a_clear_422(api):
    gateway.update_precheck_policies({"add_cluster": policy(BROKEN)})
    response = api.post("/api/v1/clusters/", spec(uid("c"), "alice"), format="json")
    assert response.status_code == 422
    assert "expected" in response.json()["error"]["message"]


def test_unknown_pre_check_policy_is_404_not_500(api):
    gateway.update_precheck_policies({"add_cluster": "no.such.policy:1.0-stable"})
    response = api.post("/api/v1/clusters/", spec(uid("c"), "alice"), format="json")
    assert response.status_code == 404
