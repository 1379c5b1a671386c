"""Parser/V1 validation of every action: missing, wrong-typed and unknown fields are all
reported together, each with a JSON pointer and what was expected."""

import copy

import pytest

from tests.parser.specs import AT_BODY, BREAKAGES, VALID
from tests.registries.factories import envelope


def values_pointer(action: str) -> str:
    return "/body/values" if action in AT_BODY else "/body/spec/values"


@pytest.fixture
def echo_handlers(settings):
    # Validation is what is tested: every action's handler just echoes.
    settings.AIOS_PARSER_HANDLERS = {
        key: "tests.parser.handlers.echo"
        for key in (
            "createCluster",
            "addNode",
            "createComponent",
            "createBlock",
            "createvDAG",
            "search",
            "filter",
            "executeMgmtCommand.blockId",
            "executeMgmtCommand.clusterId",
        )
    }


@pytest.mark.django_db
@pytest.mark.parametrize("action", sorted(VALID))
def test_valid_spec_passes_validation(api, echo_handlers, action):
    response = api.post(
        f"/api/{action}", envelope(VALID[action], at_body=action in AT_BODY), format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["action"] == action
    assert response.json()["user"] == "alice"


@pytest.mark.django_db
@pytest.mark.parametrize("action", sorted(VALID))
def test_missing_wrong_typed_and_unknown_fields_all_reported(api, echo_handlers, action):
    missing, (wrong_key, wrong_value) = BREAKAGES[action]
    values = copy.deepcopy(VALID[action])
    del values[missing]
    values[wrong_key] = wrong_value
    values["surpriseField"] = True
    response = api.post(
        f"/api/{action}", envelope(values, at_body=action in AT_BODY), format="json"
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "spec_validation_error"
    base = values_pointer(action)
    by_pointer = {d["pointer"]: d for d in error["details"]}
    assert f"{base}/{missing}" in by_pointer
    assert by_pointer[f"{base}/{missing}"]["message"] == f"'{missing}' is required"
    assert any(p.startswith(f"{base}/{wrong_key}") for p in by_pointer), by_pointer
    assert by_pointer[f"{base}/surpriseField"]["message"] == "unknown field 'surpriseField'"
    assert "expected" in by_pointer[f"{base}/surpriseField"]
    assert error["message"].startswith(f"the {action} spec is invalid: ")


@pytest.mark.django_db
def test_wrong_type_says_what_was_expected(api, echo_handlers):
    values = copy.deepcopy(VALID["createBlock"])
    values["maxInstances"] = "five"
    response = api.post("/api/createBlock", envelope(values), format="json")
    detail = response.json()["error"]["details"][0]
    assert detail == {
        "pointer": "/body/spec/values/maxInstances",
        "message": "expected integer, got string",
        "expected": "integer",
        "validator": "type",
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    "action,change,pointer",
    [
        ("createBlock", {"minInstances": 4, "maxInstances": 2}, "/maxInstances"),
        ("createBlock", {"blockId": "Not_A_Slug"}, "/blockId"),
        ("createCluster", {"id": "x" * 64}, "/id"),
        ("createCluster", {"reputation": 101}, "/reputation"),
        ("executeMgmtCommand", {"clusterId": "c-1"}, "/clusterId"),
        ("executeMgmtCommand", {"service": "teleporter"}, "/service"),
        ("addNode", {"gpus": {"count": 1, "gpus": [{"modelName": 3}]}}, "/gpus/gpus/0/modelName"),
        ("createComponent", {"componentType": "has space"}, "/componentType"),
        ("createComponent", {"componentURI": "model.other:1-x"}, "/componentURI"),
        ("search", {"matchType": "with space"}, "/matchType"),
    ],
)
def test_cross_field_and_format_rules(api, echo_handlers, action, change, pointer):
    values = {**copy.deepcopy(VALID[action]), **change}
    response = api.post(
        f"/api/{action}", envelope(values, at_body=action in AT_BODY), format="json"
    )
    assert response.status_code == 400, response.content
    pointers = [d["pointer"] for d in response.json()["error"]["details"]]
    assert f"{values_pointer(action)}{pointer}" in pointers


@pytest.mark.django_db
def test_vdag_graph_rules(api, echo_handlers):
    values = copy.deepcopy(VALID["createvDAG"])
    values["nodes"].append({"nodeLabel": "tracker"})  # duplicate
    values["nodes"].append({"nodeLabel": "nested", "nodeType": "vdag"})  # needs vdagURI
    values["graph"]["connections"].append(
        {"nodeLabel": "detector", "inputs": [{"nodeLabel": "tracker"}]}
    )
    values["graph"]["outputs"].append({"nodeLabel": "ghost"})
    values["nodes"][0]["IOMap"] = []  # system-filled, specs must not carry it
    response = api.post("/api/createvDAG", envelope(values), format="json")
    assert response.status_code == 400
    messages = {d["pointer"]: d["message"] for d in response.json()["error"]["details"]}
    base = "/body/spec/values"
    assert messages[f"{base}/nodes/2/nodeLabel"] == "duplicate nodeLabel 'tracker'"
    assert messages[f"{base}/nodes/3/vdagURI"] == "'vdagURI' is required"
    assert "cycle" in messages[f"{base}/graph/connections"]
    assert messages[f"{base}/graph/outputs/1/nodeLabel"] == "nodeLabel 'ghost' is not in nodes"
    assert messages[f"{base}/nodes/0/IOMap"] == "unknown field 'IOMap'"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "payload,pointer",
    [
        ([], ""),
        ({"body": {}}, "/header"),
        ({"header": {}, "body": {}}, "/header/templateUri"),
        ({"header": {"templateUri": "Parser/V1", "extra": 1}, "body": {}}, "/header/extra"),
        ({"header": {"templateUri": "Parser/V1"}, "body": {}}, "/body/spec"),
        ({"header": {"templateUri": "Parser/V1"}, "body": {"spec": []}}, "/body/spec"),
        ({"header": {"templateUri": "Parser/V1"}, "body": {"spec": {}}}, "/body/spec/values"),
        ({"header": {"templateUri": "Parser/V1"}, "body": "x"}, "/body"),
        (
            {
                "header": {"templateUri": "Parser/V1"},
                "head": {"templateUri": "Parser/V1"},
                "body": {},
            },
            "/head",
        ),
        (
            {"header": {"templateUri": "Parser/V1", "parameters": []}, "body": {}},
            "/header/parameters",
        ),
    ],
)
def test_envelope_errors(api, echo_handlers, payload, pointer):
    response = api.post("/api/createBlock", payload, format="json")
    assert response.status_code == 400, response.content
    assert pointer in [d["pointer"] for d in response.json()["error"]["details"]]


@pytest.mark.django_db
def test_search_and_filter_values_sit_at_body_values(api, echo_handlers):
    wrong_level = envelope(VALID["filter"])  # body.spec.values instead of body.values
    response = api.post("/api/filter", wrong_level, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["pointer"] == "/body/values"
