"""Spec store: JSON/YAML specData parsed and validated against the action's schema,
versioned URIs, query, filters, update rules."""

import json

import pytest

from tests.registries.factories import component_values, envelope

URL = "/api/v1/specs/"


def spec_body(name="echo-spec", version="1.0", tag="stable", spec_type="component", data=None):
    return {
        "specName": name,
        "specVersion": {"version": version, "tag": tag},
        "specType": spec_type,
        "specDescription": "the echo component",
        "specMetadata": {"team": "ml", "level": 3},
        "specTags": "demo, echo",
        "specData": data if data is not None else envelope(component_values()),
    }


@pytest.mark.django_db
def test_create_with_object_and_get_by_uri(api):
    response = api.post(URL, spec_body(), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["specUri"] == "echo-spec:1.0-stable"
    assert body["specFormat"] == "object"
    assert body["specTags"] == ["demo", "echo"]
    got = api.get(f"{URL}echo-spec:1.0-stable/")
    assert got.status_code == 200
    assert got.json()["specData"]["body"]["spec"]["values"]["componentType"] == "model"


@pytest.mark.django_db
def test_spec_data_as_json_and_yaml_strings(api):
    text = json.dumps(component_values())
    response = api.post(URL, spec_body(name="as-json", data=text), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["specFormat"] == "json"
    assert response.json()["specData"]["componentId"]["name"] == "echo"

    yaml_text = """
matchType: component
filter:
  componentQuery:
    variable: componentType
    operator: "=="
    value: model
"""
    response = api.post(
        URL, spec_body(name="as-yaml", spec_type="search", data=yaml_text), format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["specFormat"] == "yaml"
    assert response.json()["specData"]["filter"]["componentQuery"]["value"] == "model"


@pytest.mark.django_db
def test_invalid_spec_data_reports_pointer_under_spec_data(api):
    values = component_values()
    values["componentId"]["releaseTag"] = "bad tag!"
    response = api.post(URL, spec_body(data=envelope(values)), format="json")
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert details[0]["pointer"] == "/specData/body/spec/values/componentId/releaseTag"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "data,message",
    [
        ("key: [unclosed", "neither JSON nor YAML"),
        ("- a\n- b\n", "must hold an object"),
        ("a: &x [1]\nb: *x\n", "aliases"),
        (42, "expected an object or a string"),
        ("", "empty"),
    ],
)
def test_unparseable_spec_data_is_400(api, data, message):
    response = api.post(URL, spec_body(name="bad", data=data), format="json")
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


@pytest.mark.django_db
def test_custom_template_envelope_is_only_shape_checked(api):
    data = {"header": {"templateUri": "my-template:1.0-stable"}, "body": {"anything": [1, 2]}}
    assert api.post(URL, spec_body(data=data), format="json").status_code == 201
    broken = {"head": {"templateUri": "x:1-y"}, "header": {"templateUri": "x:1-y"}, "body": {}}
    response = api.post(URL, spec_body(name="other", data=broken), format="json")
    assert response.status_code == 400


@pytest.mark.django_db
def test_cluster_spec_type_validates_node_specs_too(api):
    node = {
        "id": "node-1",
        "clusterId": "cluster-1",
        "gpus": {"count": 0},
        "vcpus": {"count": 4},
        "memory": 8192,
        "storage": {"disks": 1, "size": 100000},
        "network": {"interfaces": 1},
    }
    response = api.post(URL, spec_body(name="node", spec_type="cluster", data=node), format="json")
    assert response.status_code == 201, response.content
    node["memory"] = "lots"
    response = api.post(URL, spec_body(name="node2", spec_type="cluster", data=node), format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["pointer"] == "/specData/memory"


@pytest.mark.django_db
def test_duplicate_is_409_and_bad_names_are_400(api):
    assert api.post(URL, spec_body(), format="json").status_code == 201
    assert api.post(URL, spec_body(), format="json").status_code == 409
    response = api.post(URL, spec_body(name="a/b"), format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "specName"
    response = api.post(URL, spec_body(version="1-0"), format="json")
    assert response.status_code == 400
    assert api.post(URL, spec_body(spec_type="nope"), format="json").status_code == 400


@pytest.mark.django_db
def test_update_cannot_change_uri_but_can_change_data(api, client_for, other_user):
    api.post(URL, spec_body(), format="json")
    url = f"{URL}echo-spec:1.0-stable/"
    assert api.patch(url, {"specName": "renamed"}, format="json").status_code == 400
    values = component_values(name="changed")
    response = api.patch(url, {"specData": envelope(values)}, format="json")
    assert response.status_code == 200
    assert response.json()["specData"]["body"]["spec"]["values"]["componentId"]["name"] == "changed"
    assert api.patch(url, {"specType": "block"}, format="json").status_code == 400  # not a block
    assert client_for(other_user).delete(url).status_code == 403
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404


@pytest.mark.django_db
def test_query_and_filters(api):
    api.post(URL, spec_body(), format="json")
    api.post(
        URL,
        spec_body(name="find", spec_type="search", data={"matchType": "component"}),
        format="json",
    )
    response = api.post(
        f"{URL}query/",
        {
            "query": {
                "logicalOperator": "AND",
                "conditions": [
                    {"variable": "specType", "operator": "==", "value": "search"},
                    {"variable": "specMetadata.level", "operator": ">=", "value": 3},
                ],
            }
        },
        format="json",
    )
    assert [r["specUri"] for r in response.json()["results"]] == ["find:1.0-stable"]
    response = api.post(
        f"{URL}query/", {"query": {"specData.matchType": "component"}}, format="json"
    )
    assert [r["specUri"] for r in response.json()["results"]] == ["find:1.0-stable"]
    listed = api.get(URL, {"specType": "component"}).json()["results"]
    assert [r["specUri"] for r in listed] == ["echo-spec:1.0-stable"]
    assert api.get(URL, {"tags": "demo"}).json()["count"] == 2
