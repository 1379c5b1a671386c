"""createvDAG without processes: compiled routes of chains, diamonds and nested vDAGs,
dry runs, every validation error with its pointer, node assignment by policy, the REST
registry (retrieve by URI, filters, query, delete rules) and the search adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import transaction

from apps.tasks.models import Task
from apps.vdags.models import VDag, VDagController
from tests.vdags.support import envelope, make_block, node, uid, vdag_values

pytestmark = pytest.mark.django_db


def create(api, values, capture, *, expect: int = 202):
    with capture(execute=True):
        response = api.post("/api/createvDAG", envelope(values), format="json")
    assert response.status_code == expect, response.content
    return response.json()


def pointers(body) -> list[str]:
    return [d["pointer"] for d in body["error"]["details"]]


def messages(body) -> str:
    return " | ".join(d["message"] for d in body["error"]["details"])


@pytest.fixture
def three(cluster):
    ids = [uid("blk") for _ in range(3)]
    for block_id in ids:
        make_block(block_id, cluster, grpc=f"127.0.0.1:{5000 + len(block_id)}")
    return ids


# -- creation ----------------------------------------------------------------------------------
def test_chain_is_created_pending_then_active_with_its_compiled_route(
    api, three, eager_tasks, django_capture_on_commit_callbacks
):
    a, b, c = three
    name = uid("chain")
    values = vdag_values(
        name,
        [node("a", a), node("b", b), node("c", c)],
        [("a", "b"), ("b", "c")],
        ["a"],
        ["c"],
        version="2.1",
        tag="beta",
        discoveryTags=["demo"],
    )
    body = create(api, values, django_capture_on_commit_callbacks)
    uri = f"{name}:2.1-beta"
    assert body["vdagURI"] == uri
    task = Task.objects.get(pk=body["task_id"])
    assert task.task_type == "vdag_creation"
    assert task.task_status == "completed", task.error

    detail = api.get(f"/api/v1/vdags/{uri}/").json()
    assert detail["status"] == "active"
    assert detail["assignment"] == {"a": a, "b": b, "c": c}
    graph = detail["compiled_graph"]
    assert graph["edges"] == {"a": ["b"], "b": ["c"], "c": []}
    assert graph["heads"] == ["a"] and graph["tails"] == ["c"]
    assert graph["nodes"]["b"]["block_id"] == b
    assert graph["nodes"]["b"]["executor"]["grpc"].startswith("127.0.0.1:")
    assert detail["block_ids"] == sorted(three)
    assert detail["vdag_version"] == {"version": "2.1", "release-tag": "beta"}
    io_map = {n["nodeLabel"]: n["IOMap"] for n in detail["nodes"]}
    assert {"direction": "input", "nodeLabel": "a"} in io_map["b"]
    assert {"direction": "output", "nodeLabel": "c"} in io_map["b"]


def test_version_defaults_to_1_0_stable(
    api, three, eager_tasks, django_capture_on_commit_callbacks
):
    values = vdag_values(uid("v"), [node("a", three[0])], [], ["a"], ["a"])
    del values["vdagVersion"]
    body = create(api, values, django_capture_on_commit_callbacks)
    assert body["vdagURI"].endswith(":1.0-stable")


def test_diamond_fans_out_and_merges_in_declared_input_order(
    api, three, eager_tasks, django_capture_on_commit_callbacks
):
    a, b, c = three
    name = uid("diamond")
    values = vdag_values(
        name,
        [node("split", a), node("left", b), node("right", c), node("join", a)],
        [("split", "left"), ("split", "right"), ("right", "join"), ("left", "join")],
        ["split"],
        ["join"],
    )
    create(api, values, django_capture_on_commit_callbacks)
    vdag = VDag.objects.get(pk=f"{name}:1.0-stable")
    graph = vdag.compiled_graph
    assert graph["edges"]["split"] == ["left", "right"]
    assert graph["inputs"]["join"] == ["right", "left"]  # the spec's order: the fan-in order
    # One block serves two nodes of the same vDAG.
    assert vdag.assignment["split"] == vdag.assignment["join"] == a
    assert vdag.block_ids == sorted({a, b, c})


def test_nested_vdag_expands_every_inner_tail_into_the_outer_successor(
    api, three, eager_tasks, django_capture_on_commit_callbacks
):
    a, b, c = three
    inner_name = uid("inner")
    # inner: h -> (t1, t2): one head, two tails.
    inner = vdag_values(
        inner_name,
        [node("h", a), node("t1", b), node("t2", c)],
        [("h", "t1"), ("h", "t2")],
        ["h"],
        ["t1", "t2"],
    )
    create(api, inner, django_capture_on_commit_callbacks)
    inner_uri = f"{inner_name}:1.0-stable"
    outer_name = uid("outer")
    outer = vdag_values(
        outer_name,
        [
            node("pre", a),
            {"nodeLabel": "sub", "nodeType": "vdag", "vdagURI": inner_uri},
            node("post", b),
        ],
        [("pre", "sub"), ("sub", "post")],
        ["pre"],
        ["post"],
    )
    create(api, outer, django_capture_on_commit_callbacks)
    detail = api.get(f"/api/v1/vdags/{outer_name}:1.0-stable/").json()
    graph = detail["compiled_graph"]
    assert detail["status"] == "active"
    assert graph["edges"]["pre"] == ["sub/h"]
    assert graph["edges"]["sub/h"] == ["sub/t1", "sub/t2"]
    assert graph["edges"]["sub/t1"] == ["post"] and graph["edges"]["sub/t2"] == ["post"]
    assert sorted(graph["inputs"]["post"]) == ["sub/t1", "sub/t2"]
    assert detail["assignment"]["sub/h"] == a and detail["assignment"]["post"] == b
    assert detail["nested_vdags"] == [inner_uri]
    # The nested vDAG cannot go while the outer one uses it.
    response = api.delete(f"/api/v1/vdags/{inner_uri}/")
    assert response.status_code == 409, response.content
    assert "nested" in response.json()["error"]["message"]


def test_dry_run_answers_the_assignment_and_compiled_graph_and_stores_nothing(api, three):
    a, b, _ = three
    name = uid("dry")
    values = vdag_values(name, [node("a", a), node("b", b)], [("a", "b")], ["a"], ["b"])
    values["mode"] = "dry-run"
    response = api.post("/api/createvDAG", envelope(values), format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["vdagURI"] == f"{name}:1.0-stable"
    assert body["assignment"] == {"a": a, "b": b}
    assert body["compiled_graph"]["edges"]["a"] == ["b"]
    assert not VDag.objects.filter(pk=body["vdagURI"]).exists()
    assert not Task.objects.filter(task_type="vdag_creation").exists()


def test_a_uri_is_unique_but_a_failed_vdag_can_be_replaced(
    api, three, eager_tasks, django_capture_on_commit_callbacks
):
    name = uid("dup")
    values = vdag_values(name, [node("a", three[0])], [], ["a"], ["a"])
    create(api, values, django_capture_on_commit_callbacks)
    again = create(api, values, django_capture_on_commit_callbacks, expect=409)
    assert again["error"]["code"] == "conflict"
    VDag.objects.filter(pk=f"{name}:1.0-stable").update(status="failed", status_reason="x")
    replaced = create(api, values, django_capture_on_commit_callbacks)
    assert VDag.objects.get(pk=replaced["vdagURI"]).status == "active"


def test_writes_need_authentication(anon_client, three):
    values = vdag_values(uid("anon"), [node("a", three[0])], [], ["a"], ["a"])
    response = anon_client.post("/api/createvDAG", envelope(values), format="json")
    assert response.status_code == 401


# -- validation errors -------------------------------------------------------------------------
BASE = "/body/spec/values"


def test_unknown_labels_are_reported_where_they_are(api, three):
    values = vdag_values(uid("e"), [node("a", three[0])], [("a", "ghost")], ["a"], ["nobody"])
    response = api.post("/api/createvDAG", envelope(values), format="json")
    assert response.status_code == 400
    body = response.json()
    assert f"{BASE}/graph/connections/0/nodeLabel" in pointers(body)
    assert f"{BASE}/graph/outputs/0/nodeLabel" in pointers(body)
    assert "'ghost' is not in nodes" in messages(body)


def test_a_cycle_is_refused_and_named(api, three):
    a, b, c = three
    values = vdag_values(
        uid("e"),
        [node("a", a), node("b", b), node("c", c)],
        [("a", "b"), ("b", "c"), ("c", "b")],
        ["a"],
        ["c"],
    )
    body = api.post("/api/createvDAG", envelope(values), format="json").json()
    assert body["error"]["code"] == "spec_validation_error"
    assert "cycle" in messages(body)
    assert "b -> c -> b" in messages(body)


def test_an_unreachable_node_is_refused(api, three):
    a, b, c = three
    # c feeds b but nothing feeds c and it is not a declared input.
    values = vdag_values(
        uid("e"), [node("a", a), node("b", b), node("c", c)], [("a", "b"), ("c", "b")], ["a"], ["b"]
    )
    response = api.post("/api/createvDAG", envelope(values), format="json")
    assert response.status_code == 400
    body = response.json()
    assert pointers(body) == [f"{BASE}/nodes/2"]
    assert "unreachable" in messages(body) and "c" in messages(body)


def test_a_missing_tail_is_refused(api, three):
    a, b, c = three
    values = vdag_values(
        uid("e"), [node("a", a), node("b", b), node("c", c)], [("a", "b"), ("a", "c")], ["a"], ["b"]
    )
    body = api.post("/api/createvDAG", envelope(values), format="json").json()
    assert pointers(body) == [f"{BASE}/graph/outputs"]
    assert "missing tail: c" in messages(body)


def test_a_declared_head_with_inputs_is_refused(api, three):
    a, b, _ = three
    values = vdag_values(uid("e"), [node("a", a), node("b", b)], [("a", "b")], ["a", "b"], ["b"])
    body = api.post("/api/createvDAG", envelope(values), format="json").json()
    assert pointers(body) == [f"{BASE}/graph/inputs/1/nodeLabel"]
    assert "heads are the nodes without inputs" in messages(body)


def test_missing_heads_or_tails_are_schema_errors(api, three):
    values = vdag_values(uid("e"), [node("a", three[0])], [], [], [])
    body = api.post("/api/createvDAG", envelope(values), format="json").json()
    assert f"{BASE}/graph/inputs" in pointers(body)
    assert f"{BASE}/graph/outputs" in pointers(body)


def test_a_nested_vdag_that_does_not_exist_or_is_not_active_is_refused(api, three, cluster):
    missing = f"{uid('nope')}:1.0-stable"
    pending = VDag.objects.create(
        vdag_uri=f"{uid('pend')}:1.0-stable", name="p", version="1.0", release_tag="stable"
    )
    name = uid("outer")
    values = vdag_values(
        name,
        [
            node("a", three[0]),
            {"nodeLabel": "x", "nodeType": "vdag", "vdagURI": missing},
            {"nodeLabel": "y", "nodeType": "vdag", "vdagURI": pending.pk},
            {"nodeLabel": "z", "nodeType": "vdag", "vdagURI": f"{name}:1.0-stable"},
        ],
        [("a", "x"), ("a", "y"), ("a", "z")],
        ["a"],
        ["x", "y", "z"],
    )
    body = api.post("/api/createvDAG", envelope(values), format="json").json()
    assert pointers(body) == [
        f"{BASE}/nodes/1/vdagURI",
        f"{BASE}/nodes/2/vdagURI",
        f"{BASE}/nodes/3/vdagURI",
    ]
    text = messages(body)
    assert f"vDAG {missing!r} does not exist" in text
    assert "is pending, not active" in text
    assert "cannot contain itself" in text


def test_manual_blocks_must_exist_and_run(api, three, cluster):
    stopped = uid("stopped")
    make_block(stopped, cluster, status="failed")
    values = vdag_values(
        uid("e"),
        [node("a", three[0]), node("b", "no-such-block"), node("c", stopped)],
        [("a", "b"), ("a", "c")],
        ["a"],
        ["b", "c"],
    )
    body = api.post("/api/createvDAG", envelope(values), format="json").json()
    assert pointers(body) == [f"{BASE}/nodes/1/manualBlockId", f"{BASE}/nodes/2/manualBlockId"]
    assert "block 'no-such-block' does not exist" in messages(body)
    assert "is failed, not running" in messages(body)


def test_a_node_needs_a_block_or_an_assignment_rule(api, three):
    values = vdag_values(uid("e"), [node("a", three[0]), node("b")], [("a", "b")], ["a"], ["b"])
    body = api.post("/api/createvDAG", envelope(values), format="json").json()
    assert pointers(body) == [f"{BASE}/nodes/1"]
    assert "neither manualBlockId nor assignmentPolicyRule" in messages(body)


def test_blocks_with_incompatible_protocols_are_refused_at_the_edge(api, cluster):
    producer, consumer, head = uid("p"), uid("q"), uid("h")
    make_block(head, cluster)
    make_block(
        producer,
        cluster,
        output_protocol={"type": "object", "properties": {"text": {"type": "string"}}},
    )
    make_block(
        consumer,
        cluster,
        input_protocol={
            "type": "object",
            "properties": {"image": {"type": "string"}},
            "required": ["image"],
        },
    )
    values = vdag_values(
        uid("e"),
        [node("h", head), node("src", producer), node("dst", consumer)],
        [("h", "src"), ("src", "dst")],
        ["h"],
        ["dst"],
    )
    body = api.post("/api/createvDAG", envelope(values), format="json").json()
    assert body["error"]["code"] == "spec_validation_error"
    assert pointers(body) == [f"{BASE}/graph/connections/1/inputs/0"]
    detail = body["error"]["details"][0]
    assert "incompatible protocols" in detail["message"]
    assert detail["protocol"]["missing"] == ["image"]
    assert detail["protocol"]["from_block"] == producer


def test_a_fan_in_node_must_accept_the_merged_inputs(api, cluster):
    consumer, a, b = uid("q"), uid("a"), uid("b")
    for block_id in (a, b):
        make_block(block_id, cluster)
    make_block(
        consumer,
        cluster,
        input_protocol={"type": "object", "properties": {"x": {}}, "required": ["x"]},
    )
    values = vdag_values(
        uid("e"),
        [node("a", a), node("b", b), node("join", consumer)],
        [("a", "join"), ("b", "join")],
        ["a", "b"],
        ["join"],
    )
    body = api.post("/api/createvDAG", envelope(values), format="json").json()
    assert pointers(body) == [f"{BASE}/graph/connections/0"]
    assert "merges several inputs" in messages(body)


def test_every_schema_error_is_listed_at_once(api):
    values = {"vdagName": "bad name!", "nodes": [], "graph": {"inputs": [], "outputs": []}}
    body = api.post("/api/createvDAG", envelope(values), format="json").json()
    found = pointers(body)
    assert f"{BASE}/vdagName" in found and f"{BASE}/nodes" in found


# -- assignment by policy ----------------------------------------------------------------------
PICK_HIGHEST = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.key = parameters.get("key", "score")

    def eval(self, parameters, input_data, context):
        best = max(input_data, key=lambda b: (b.get("blockMetadata") or {}).get(self.key, 0))
        return best.get("id") or best.get("blockId")
"""

PICK_STRANGER = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        return ["not-a-candidate"]
"""


def test_a_node_is_assigned_by_its_policy_among_running_blocks_its_filter_selects(
    api, cluster, register_policy, eager_tasks, django_capture_on_commit_callbacks
):
    tag = uid("gpu")
    low, high, stopped, untagged = uid("low"), uid("high"), uid("stop"), uid("untagged")
    make_block(low, cluster, metadata={"score": 1, "pool": tag})
    make_block(high, cluster, metadata={"score": 9, "pool": tag})
    make_block(stopped, cluster, status="failed", metadata={"score": 99, "pool": tag})
    make_block(untagged, cluster, metadata={"score": 50})
    uri = register_policy(PICK_HIGHEST)
    rule = {
        "policyRuleURI": uri,
        "parameters": {"key": "score"},
        "filter": {"blockQuery": {"blockMetadata.pool": tag}},
    }
    name = uid("assigned")
    values = vdag_values(name, [node("a", assignmentPolicyRule=rule)], [], ["a"], ["a"])
    body = create(api, values, django_capture_on_commit_callbacks)
    vdag = VDag.objects.get(pk=body["vdagURI"])
    assert vdag.status == "active", vdag.status_reason
    assert vdag.assignment == {"a": high}


def test_a_policy_choosing_no_candidate_fails_the_vdag_with_the_reason(
    api, cluster, register_policy, eager_tasks, django_capture_on_commit_callbacks
):
    make_block(uid("cand"), cluster)
    uri = register_policy(PICK_STRANGER)
    values = vdag_values(
        uid("stranger"), [node("a", assignmentPolicyRule={"policyRuleURI": uri})], [], ["a"], ["a"]
    )
    body = create(api, values, django_capture_on_commit_callbacks)
    vdag = VDag.objects.get(pk=body["vdagURI"])
    assert vdag.status == "failed"
    assert "chose 'not-a-candidate'" in vdag.status_reason
    task = Task.objects.get(pk=body["task_id"])
    assert task.task_status == "failed"
    assert task.task_status_data["errors"][0]["pointer"] == f"{BASE}/nodes/0/assignmentPolicyRule"


def test_a_dry_run_runs_the_assignment_policy_too(api, cluster, register_policy):
    make_block(uid("cand"), cluster)
    uri = register_policy(PICK_STRANGER)
    values = vdag_values(
        uid("stranger"), [node("a", assignmentPolicyRule={"policyRuleURI": uri})], [], ["a"], ["a"]
    )
    values["mode"] = "dry-run"
    response = api.post("/api/createvDAG", envelope(values), format="json")
    assert response.status_code == 400
    assert "not one of the 1 running candidates" in messages(response.json())


# -- the REST registry --------------------------------------------------------------------------
def _active(name: str, block_id: str, **fields) -> VDag:
    return VDag.objects.create(
        vdag_uri=f"{name}:1.0.2-rc-1",
        name=name,
        version="1.0.2",
        release_tag="rc-1",
        status="active",
        block_ids=[block_id],
        **fields,
    )


def test_vdags_are_listed_filtered_queried_and_retrieved_by_uri(api, anon_client, three):
    first = _active(uid("reg.one"), three[0], discovery_tags=["vision"])
    second = _active(uid("reg_two"), three[1])
    VDag.objects.filter(pk=second.pk).update(status="failed")

    detail = anon_client.get(f"/api/v1/vdags/{first.pk}/")
    assert detail.status_code == 200, detail.content
    assert detail.json()["vdagURI"] == first.pk
    assert anon_client.get("/api/v1/vdags/nope:1.0-x/").status_code == 404

    listed = api.get("/api/v1/vdags/", {"status": "active"}).json()["results"]
    assert [v["vdagURI"] for v in listed] == [first.pk]
    assert "compiled_graph" not in listed[0]
    by_tag = api.get("/api/v1/vdags/", {"tag": "vision"}).json()["results"]
    assert [v["vdagURI"] for v in by_tag] == [first.pk]
    by_block = api.get("/api/v1/vdags/", {"block": three[1]}).json()["results"]
    assert [v["vdagURI"] for v in by_block] == [second.pk]

    queried = api.post(
        "/api/v1/vdags/query/",
        {"query": {"$and": [{"status": "failed"}, {"vdagName": {"$regex": "reg_two"}}]}},
        format="json",
    )
    assert queried.status_code == 200, queried.content
    assert [v["vdagURI"] for v in queried.json()["results"]] == [second.pk]
    bad = api.post("/api/v1/vdags/query/", {"query": {"secret": 1}}, format="json")
    assert bad.status_code == 400


def test_a_vdag_served_by_a_controller_cannot_be_deleted(api, anon_client, three, cluster, user):
    vdag = _active(uid("served"), three[0], owner=user)
    VDagController.objects.create(vdag_controller_id=uid("ctl"), vdag=vdag, cluster=cluster)
    assert anon_client.delete(f"/api/v1/vdags/{vdag.pk}/").status_code == 401
    response = api.delete(f"/api/v1/vdags/{vdag.pk}/")
    assert response.status_code == 409
    assert "remove them first" in response.json()["error"]["message"]
    VDagController.objects.filter(vdag=vdag).delete()
    assert api.delete(f"/api/v1/vdags/{vdag.pk}/").status_code == 204
    assert not VDag.objects.filter(pk=vdag.pk).exists()


def test_only_the_owner_or_staff_delete_a_vdag(client_for, other_user, user, three):
    vdag = _active(uid("owned"), three[0], owner=user)
    assert client_for(other_user).delete(f"/api/v1/vdags/{vdag.pk}/").status_code == 403
    assert client_for(user).delete(f"/api/v1/vdags/{vdag.pk}/").status_code == 204


def test_vdags_and_their_controllers_are_searchable(api, three, cluster):
    vdag = _active(uid("findme"), three[0], discovery_tags=["pose"])
    _active(uid("other"), three[1])
    controller = VDagController.objects.create(
        vdag_controller_id=uid("ctl"), vdag=vdag, cluster=cluster
    )
    response = api.post(
        "/api/v1/search/",
        {
            "matchType": "vdag",
            "filter": {
                "vdagQuery": {"variable": "discoveryTags", "operator": "==", "value": ["pose"]}
            },
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    assert [r["vdagURI"] for r in response.json()["results"]] == [vdag.pk]
    # Controllers are narrowed by their vDAG's query.
    response = api.post(
        "/api/v1/search/",
        {
            "matchType": "vdagController",
            "filter": {"vdagQuery": {"vdagURI": vdag.pk}},
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    found = response.json()["results"]
    assert [r["vdag_controller_id"] for r in found] == [controller.pk]


def test_a_failed_creation_leaves_nothing_half_written(api, three):
    """The handler's writes are one transaction: a refused spec stores nothing."""
    values = vdag_values(uid("tx"), [node("a", three[0]), node("b")], [("a", "b")], ["a"], ["b"])
    with transaction.atomic():
        response = api.post("/api/createvDAG", envelope(values), format="json")
    assert response.status_code == 400
    assert not VDag.objects.exists()


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parents[2] / "examples" / "specs").glob("vdag_*.json")),
    ids=lambda p: p.name,
)
def test_example_vdag_specs_pass_the_parser(path):
    import json

    from apps.parser.services import prepare

    request = prepare("createvDAG", json.loads(path.read_text()))
    assert request.values["nodes"]
