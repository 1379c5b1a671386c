"""The blocks API without running processes: createBlock validation and dry run, the REST
surface's errors, permissions and the service token's scope, health reports, pre-checks,
search and admin pages. Clusters here are registered rows with a fresh heartbeat."""

from __future__ import annotations

import copy
import json

import pytest
from django.utils import timezone

from apps.allocator.models import Allocation
from apps.blocks import runtime
from apps.blocks.models import Block, Instance
from apps.clusters.models import GatewayConfig
from apps.registries.services import register_component
from apps.search import engine
from apps.tasks.models import Task
from tests.blocks.conftest import ECHO_SPEC
from tests.clusters.helpers import make_cluster, node_spec, uid

pytestmark = pytest.mark.django_db


def echo_values(**changes):
    values = copy.deepcopy(json.loads(ECHO_SPEC.read_text())["body"]["spec"]["values"])
    values.update(changes)
    return values


@pytest.fixture
def echo(user):
    return register_component(echo_values(), owner=user)


def envelope(values, **header_parameters):
    return {
        "header": {"templateUri": "Parser/V1", "parameters": header_parameters},
        "body": {"spec": {"values": values}},
    }


def create(api, values, **header_parameters):
    return api.post("/api/createBlock", envelope(values, **header_parameters), format="json")


def make_block(owner=None, *, status="running", block_id=None, **fields) -> Block:
    block = Block.objects.create(
        id=block_id or uid("b"),
        owner=owner,
        component_uri=fields.pop("component_uri", "utility.echo:1.0.0-stable"),
        status=status,
        min_instances=fields.pop("min_instances", 1),
        max_instances=fields.pop("max_instances", 3),
        **fields,
    )
    return block


def token_for(block: Block) -> str:
    token, token_hash = runtime.issue_token(block.id)
    Block.objects.filter(pk=block.pk).update(service_token_hash=token_hash)
    return token


# -- createBlock -----------------------------------------------------------------------------------
def test_create_block_needs_a_registered_component(api):
    response = create(
        api,
        {"blockComponentURI": "utility.nothing:1.0-stable", "minInstances": 1, "maxInstances": 1},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "component_not_found"
    assert error["details"][0]["pointer"] == "/blockComponentURI"
    assert not Block.objects.exists()


def test_create_block_refuses_a_component_row_without_anything_to_run(api, echo):
    # The registry requires an entry point; a row written some other way is caught here.
    echo.container_registry_info = {"componentMode": "aios"}
    echo.save()
    response = create(
        api, {"blockComponentURI": echo.component_uri, "minInstances": 1, "maxInstances": 1}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert "neither containerImageMetadata.entrypoint" in error["message"]
    assert error["details"][0]["pointer"] == "/component/containerRegistryInfo"
    assert not Block.objects.exists()


def test_a_component_row_with_a_malformed_entrypoint_is_refused(api, echo):
    echo.container_registry_info = {"containerImageMetadata": {"entrypoint": "a/b.py"}}
    echo.save()
    response = create(
        api, {"blockComponentURI": echo.component_uri, "minInstances": 1, "maxInstances": 1}
    )
    assert response.status_code == 400
    assert "module.path:ClassName" in response.json()["error"]["message"]


def test_create_block_validates_bounds_and_anonymous_is_refused(api, anon_client, echo):
    bad = create(
        api, {"blockComponentURI": echo.component_uri, "minInstances": 3, "maxInstances": 2}
    )
    assert bad.status_code == 400
    anonymous = create(
        anon_client, {"blockComponentURI": echo.component_uri, "minInstances": 1, "maxInstances": 1}
    )
    assert anonymous.status_code == 401
    assert not Block.objects.exists()


def test_create_block_conflicts_with_an_existing_block_id(api, echo):
    make_block(block_id="taken-1")
    response = create(
        api,
        {
            "blockComponentURI": echo.component_uri,
            "blockId": "taken-1",
            "minInstances": 1,
            "maxInstances": 1,
        },
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "block_exists"


def test_create_block_without_a_cluster_fails_the_task_not_the_request(api, echo):
    from apps.blocks.tasks import block_alloc

    response = create(
        api, {"blockComponentURI": echo.component_uri, "minInstances": 1, "maxInstances": 2}
    )
    assert response.status_code == 202, response.content
    body = response.json()
    block = Block.objects.get(pk=body["block_id"])
    assert block.status == "pending"
    assert block.last_task_id is not None and str(block.last_task_id) == body["task_id"]
    # What the worker runs (in-process here: this test's transaction never commits).
    block_alloc.apply(args=[body["task_id"]], kwargs={"block_id": block.id})
    block.refresh_from_db()
    assert block.status == "failed"
    assert "no live cluster" in block.status_reason
    task = Task.objects.get(pk=body["task_id"])
    assert task.task_type == "block_alloc" and task.task_status == "failed"
    assert "no live cluster" in task.error
    # A failed block that holds nothing is removed at once.
    removed = api.delete(f"/api/v1/blocks/{block.id}/")
    assert removed.status_code == 200 and removed.json()["removed"] is True
    assert not Block.objects.filter(pk=block.id).exists()


def test_dry_run_returns_the_placement_and_creates_nothing(api, echo):
    cluster = make_cluster(nodes=[node_spec(uid("n"), [("A100", 40960), ("A100", 40960)])])
    values = {
        "blockComponentURI": echo.component_uri,
        "blockId": "dry-1",
        "minInstances": 2,
        "maxInstances": 2,
        "mode": "dry-run",
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
    response = create(api, values)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["mode"] == "dry_run" and body["created"] is False
    placement = body["placement"]
    assert placement["cluster_id"] == cluster.id and placement["dry_run"] is True
    assert len(placement["instances"]) == 2
    assert sorted(g for i in placement["instances"] for g in i["gpus"]) == [0, 1]
    assert not Block.objects.exists() and not Allocation.objects.exists()
    assert not Task.objects.filter(task_type="block_alloc").exists()

    # The spelling with an underscore, given in the header's parameters.
    del values["mode"]
    again = create(api, values, mode="dry_run")
    assert again.status_code == 200 and again.json()["mode"] == "dry_run"

    # Nothing fits: the allocator's reason, and still nothing created.
    values["policyRulesSpec"][0]["values"]["parameters"] = {"gpus": 3}
    none_fits = create(api, values, mode="dry_run")
    assert none_fits.status_code == 409
    assert none_fits.json()["error"]["code"] == "no_capacity"
    assert not Block.objects.exists() and not Allocation.objects.exists()


def test_add_block_precheck_denial_is_a_403_and_creates_nothing(api, echo):
    from apps.policies.builtins import seed_builtin_policies

    seed_builtin_policies(only=["precheck_allow_list"])
    GatewayConfig.objects.update_or_create(
        pk=GatewayConfig.SINGLETON_ID,
        defaults={"actions_policy_map": {"add_block": "aios.precheck_allow_list:1.0-stable"}},
    )
    response = create(
        api, {"blockComponentURI": echo.component_uri, "minInstances": 1, "maxInstances": 1}
    )
    assert response.status_code == 403, response.content
    assert response.json()["error"]["code"] == "precheck_denied"
    assert not Block.objects.exists()


# -- the REST surface -------------------------------------------------------------------------
def test_list_filter_query_and_retrieve(api, user, other_user):
    mine = make_block(user, status="running", tags=["a"])
    make_block(other_user, status="failed")
    Instance.objects.create(instance_id=f"{mine.id}-i1", block=mine, gpus=[0], health="healthy")
    listed = api.get("/api/v1/blocks/").json()
    assert listed["count"] == 2
    running = api.get("/api/v1/blocks/?status=running").json()["results"]
    assert [b["id"] for b in running] == [mine.id]
    tagged = api.get("/api/v1/blocks/?tag=a").json()["results"]
    assert [b["id"] for b in tagged] == [mine.id]
    queried = api.post(
        "/api/v1/blocks/query/",
        {"query": {"variable": "status", "operator": "==", "value": "failed"}},
        format="json",
    ).json()["results"]
    assert len(queried) == 1 and queried[0]["status"] == "failed"
    bad_query = api.post("/api/v1/blocks/query/", {"query": {"nope": 1}}, format="json")
    assert bad_query.status_code == 400
    doc = api.get(f"/api/v1/blocks/{mine.id}/").json()
    assert doc["instances"][0] == {
        **doc["instances"][0],
        "id": f"{mine.id}-i1",
        "gpus": [0],
        "health": "healthy",
    }
    assert "service_token_hash" not in json.dumps(doc)
    assert api.get("/api/v1/blocks/nope-1/").status_code == 404


def test_writes_are_the_owners_or_staffs(api, staff_api, anon_client, other_user):
    block = make_block(other_user, status="failed")
    assert anon_client.delete(f"/api/v1/blocks/{block.id}/").status_code == 401
    forbidden = api.delete(f"/api/v1/blocks/{block.id}/")
    assert forbidden.status_code == 403
    assert (
        api.post(f"/api/v1/blocks/{block.id}/scale/", {"delta": 1}, format="json").status_code
        == 403
    )
    assert staff_api.delete(f"/api/v1/blocks/{block.id}/").status_code == 200


def test_operations_on_a_block_that_is_not_running_are_conflicts(api, user):
    block = make_block(user, status="starting")
    scale = api.post(f"/api/v1/blocks/{block.id}/scale/", {"instances": 2}, format="json")
    assert scale.status_code == 409 and scale.json()["error"]["code"] == "block_not_running"
    block.status = "failed"
    block.save()
    mgmt = api.post(
        f"/api/v1/blocks/{block.id}/mgmt/",
        {"service": "executor", "mgmt_action": "get_mapping"},
        format="json",
    )
    assert mgmt.status_code == 409
    params = api.post(
        f"/api/v1/blocks/{block.id}/parameters/", {"parameters": {"a": 1}}, format="json"
    )
    assert params.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"instances": 2, "delta": 1},
        {"instances": "two"},
        {"remove": "x"},
        [1, 2],
    ],
)
def test_scale_rejects_bad_bodies(api, user, body):
    block = make_block(user)
    response = api.post(f"/api/v1/blocks/{block.id}/scale/", body, format="json")
    assert response.status_code == 400, response.content


def test_parameters_and_mgmt_reject_bad_bodies(api, user):
    block = make_block(user)
    assert (
        api.post(
            f"/api/v1/blocks/{block.id}/parameters/", {"parameters": "x"}, format="json"
        ).status_code
        == 400
    )
    assert (
        api.post(
            f"/api/v1/blocks/{block.id}/parameters/",
            {"parameters": {}, "wait_s": 99},
            format="json",
        ).status_code
        == 400
    )
    unknown = api.post(
        f"/api/v1/blocks/{block.id}/mgmt/",
        {"service": "toaster", "mgmt_action": "x"},
        format="json",
    )
    assert unknown.status_code == 400
    no_action = api.post(f"/api/v1/blocks/{block.id}/mgmt/", {"service": "executor"}, format="json")
    assert no_action.status_code == 400
    parser = api.post(
        "/api/executeMgmtCommand",
        envelope({"blockId": block.id, "service": "toaster", "mgmtCommand": "x"}),
        format="json",
    )
    assert parser.status_code == 400
    missing = api.post(
        "/api/executeMgmtCommand",
        envelope({"blockId": "ghost-1", "service": "executor", "mgmtCommand": "x"}),
        format="json",
    )
    assert missing.status_code == 404


def test_service_token_is_scoped_to_its_block(anon_client, user):
    block = make_block(user, status="running")
    other = make_block(user, status="running")
    instance = Instance.objects.create(instance_id=f"{block.id}-i1", block=block)
    token = token_for(block)
    client = anon_client
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    try:
        report = client.post(
            f"/api/v1/blocks/{block.id}/health-report/",
            {
                "instances": {
                    instance.instance_id: {"healthy": False, "detail": {"error": "refused"}}
                },
                "metrics": {"queue_total": 3},
            },
            format="json",
        )
        assert report.status_code == 200, report.content
        assert report.json()["updated"] == 1
        instance.refresh_from_db()
        assert instance.health == "unhealthy" and instance.consecutive_failures == 1
        assert instance.health_detail == {"error": "refused"}
        # Scaling is allowed (here: out of bounds), forcing and other blocks are not.
        over = client.post(f"/api/v1/blocks/{block.id}/scale/", {"instances": 9}, format="json")
        assert over.status_code == 409 and over.json()["error"]["code"] == "instance_bounds"
        forced = client.post(
            f"/api/v1/blocks/{block.id}/scale/", {"instances": 9, "force": True}, format="json"
        )
        assert forced.status_code == 403
        assert (
            client.post(
                f"/api/v1/blocks/{other.id}/scale/", {"instances": 2}, format="json"
            ).status_code
            == 403
        )
        assert client.delete(f"/api/v1/blocks/{block.id}/").status_code == 403
        assert (
            client.post(
                f"/api/v1/blocks/{block.id}/parameters/", {"parameters": {"a": 1}}, format="json"
            ).status_code
            == 403
        )
        created = client.post(
            "/api/v1/blocks/",
            {
                "blockComponentURI": "utility.echo:1.0.0-stable",
                "minInstances": 1,
                "maxInstances": 1,
            },
            format="json",
        )
        assert created.status_code == 403
        # The token is no key to the rest of the API.
        assert client.post("/api/createComponent", {}, format="json").status_code == 401
        client.credentials(HTTP_AUTHORIZATION="Bearer aios-blk-not-a-token")
        assert (
            client.post(
                f"/api/v1/blocks/{block.id}/health-report/", {"instances": {}}, format="json"
            ).status_code
            == 401
        )
    finally:
        runtime.clear_block_keys(block.id)


def test_health_report_ignores_unknown_and_starting_instances(api, user):
    block = make_block(user)
    Instance.objects.create(instance_id=f"{block.id}-i1", block=block, status="starting")
    response = api.post(
        f"/api/v1/blocks/{block.id}/health-report/",
        {"instances": {f"{block.id}-i1": {"healthy": None}, "ghost": {"healthy": True}}},
        format="json",
    )
    assert response.status_code == 200 and response.json()["updated"] == 0
    healthy = api.post(
        f"/api/v1/blocks/{block.id}/health-report/",
        {"instances": {f"{block.id}-i1": {"healthy": True, "processed": 5}}},
        format="json",
    )
    assert healthy.json()["updated"] == 1
    row = Instance.objects.get(pk=f"{block.id}-i1")
    assert (row.status, row.health, row.requests_processed) == ("running", "healthy", 5)
    assert row.last_health_at <= timezone.now()
    bad = api.post(f"/api/v1/blocks/{block.id}/health-report/", {"instances": []}, format="json")
    assert bad.status_code == 400


def test_replace_of_an_unknown_instance_is_404(api, user):
    block = make_block(user)
    response = api.post(
        f"/api/v1/blocks/{block.id}/instances/{block.id}-nope/replace/", {}, format="json"
    )
    assert response.status_code == 404


def test_blocks_are_searchable_by_their_fields_and_component(user, echo):
    cluster = make_cluster(nodes=[node_spec(uid("n"))])
    block = make_block(user, cluster=cluster, tags=["vision"], component_uri=echo.component_uri)
    make_block(user, status="failed", component_uri=echo.component_uri)
    make_block(user, status="running", component_uri="model.other:1.0-stable")
    found = engine.filter_entities(
        "block",
        {
            "blockQuery": {"variable": "status", "operator": "==", "value": "running"},
            "componentQuery": {"variable": "componentType", "operator": "==", "value": "utility"},
        },
    )
    assert [b["id"] for b in found] == [block.id]
    assert found[0]["cluster"] == cluster.id and found[0]["tags"] == ["vision"]
    by_tag = engine.filter_entities(
        "block", {"blockQuery": {"variable": "tags", "operator": "==", "value": ["vision"]}}
    )
    assert [b["id"] for b in by_tag] == [block.id]


def test_admin_pages_render_and_actions_report_errors(client, django_user_model, user):
    admin_user = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root")
    block = make_block(user, status="pending")
    Instance.objects.create(instance_id=f"{block.id}-i1", block=block)
    client.force_login(admin_user)
    assert client.get("/admin/blocks/block/").status_code == 200
    assert client.get(f"/admin/blocks/block/{block.id}/change/").status_code == 200
    assert client.get("/admin/blocks/instance/").status_code == 200
    assert client.get(f"/admin/blocks/instance/{block.id}-i1/change/").status_code == 200
    response = client.post(
        "/admin/blocks/block/",
        {"action": "scale_up", "_selected_action": [block.id]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"only a running block can be scaled" in response.content


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for p in (ECHO_SPEC.parents[1] / "specs").glob("*.json")
        if p.name.startswith(("echo.", "slow."))  # the blocks' examples (vDAGs have others)
    ),
    ids=lambda p: p.name,
)
def test_example_specs_pass_the_parser(path):
    from apps.parser.services import prepare

    action = "executeMgmtCommand" if ".mgmt." in path.name else "createBlock"
    request = prepare(action, json.loads(path.read_text()))
    assert request.values


def test_rest_create_is_create_block(api, echo):
    response = api.post(
        "/api/v1/blocks/",
        {"blockComponentURI": echo.component_uri, "minInstances": 1, "maxInstances": 2},
        format="json",
    )
    assert response.status_code == 202, response.content
    block = Block.objects.get(pk=response.json()["block_id"])
    assert block.status == "pending" and block.owner is not None
    assert block.parameters == {"delay_s": 0.0, "tag": None}  # the component's defaults
    assert block.component_data["componentURI"] == echo.component_uri
    invalid = api.post("/api/v1/blocks/", {"blockComponentURI": echo.component_uri}, format="json")
    assert invalid.status_code == 400
    assert invalid.json()["error"]["code"] == "spec_validation_error"


def test_management_command_lists_shows_and_refuses_what_the_api_refuses(user):
    from io import StringIO

    from django.core.management import CommandError, call_command

    block = make_block(user, status="pending")
    out = StringIO()
    call_command("aios_blocks", "list", stdout=out)
    assert [b["id"] for b in json.loads(out.getvalue())] == [block.id]
    out = StringIO()
    call_command("aios_blocks", "show", block.id, stdout=out)
    assert json.loads(out.getvalue())["status"] == "pending"
    with pytest.raises(CommandError, match="block_not_running"):
        call_command("aios_blocks", "scale", block.id, "--delta", "1")
    with pytest.raises(CommandError, match="not_found"):
        call_command("aios_blocks", "show", "ghost-1")
    with pytest.raises(CommandError, match="not JSON"):
        call_command("aios_blocks", "params", block.id, "{oops")
