"""Component registry over REST: register, URI generation, 409, read by URI, query,
filters, update rules, owner checks, delete."""

import pytest

from apps.registries.models import Component
from tests.registries.factories import component_values

URL = "/api/v1/components/"


def register(api, **kwargs):
    return api.post(URL, component_values(**kwargs), format="json")


@pytest.mark.django_db
def test_register_generates_uri_and_get_by_uri(api):
    response = register(api)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["componentURI"] == "model.echo:1.0.0-stable"
    assert body["owner"] == "alice"
    assert body["lastModifiedAt"]

    got = api.get(f"{URL}model.echo:1.0.0-stable/")
    assert got.status_code == 200
    doc = got.json()
    assert doc["componentId"] == {"name": "echo", "version": "1.0.0", "releaseTag": "stable"}
    assert doc["containerRegistryInfo"]["componentMode"] == "aios"
    assert doc["componentInitParameters"] == {"temperature": 0.7}
    assert doc["tags"] == ["echo", "text"]


@pytest.mark.django_db
def test_duplicate_uri_is_409(api):
    assert register(api).status_code == 201
    again = register(api)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    assert "model.echo:1.0.0-stable" in again.json()["error"]["message"]


@pytest.mark.django_db
def test_dotted_name_and_tag_with_dash_round_trip(api):
    response = register(api, name="object.detector", version="2.0.0", tag="release-candidate")
    assert response.status_code == 201
    uri = response.json()["componentURI"]
    assert uri == "model.object.detector:2.0.0-release-candidate"
    assert api.get(f"{URL}{uri}/").status_code == 200


@pytest.mark.django_db
def test_writes_need_authentication(anon_client):
    response = anon_client.post(URL, component_values(), format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert anon_client.get(URL).status_code == 200  # the catalogue is readable


@pytest.mark.django_db
def test_unknown_uri_is_404(api):
    response = api.get(f"{URL}model.nope:1.0-x/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
def test_validation_errors_point_at_fields(api):
    values = component_values()
    values["componentId"]["version"] = 1
    values["bogus"] = True
    del values["componentType"]
    response = api.post(URL, values, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    pointers = {d["pointer"] for d in error["details"]}
    assert pointers == {"/componentId/version", "/bogus", "/componentType"}


@pytest.mark.django_db
def test_aios_component_without_image_needs_entrypoint_shape(api):
    values = component_values()
    values["containerRegistryInfo"]["containerImageMetadata"]["entrypoint"] = "not a path"
    response = api.post(URL, values, format="json")
    assert response.status_code == 400
    detail = response.json()["error"]["details"][0]
    assert detail["pointer"] == "/containerRegistryInfo/containerImageMetadata/entrypoint"

    values["containerRegistryInfo"]["containerImageMetadata"] = {"author": "x"}
    response = api.post(URL, values, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["pointer"] == (
        "/containerRegistryInfo/containerImageMetadata/entrypoint"
    )

    # With an image, the entrypoint is the image's business.
    values["containerRegistryInfo"]["containerImage"] = "registry.local/echo:1"
    assert api.post(URL, values, format="json").status_code == 201


@pytest.mark.django_db
def test_aliases_and_third_party_spelling_are_accepted(api):
    values = component_values(name="vllm")
    values.pop("componentInitParameters")
    values["componentParameters"] = {"top_k": 5}
    values["containerRegistryInfo"] = {
        "componentMode": "third-party",
        "containerImage": "vllm/vllm:latest",
        "containerRegistryId": "dockerhub",
        "initContainer": {"containerImage": "init:1", "componentMode": "third-party"},
    }
    response = api.post(URL, values, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["componentInitParameters"] == {"top_k": 5}
    assert body["containerRegistryInfo"]["componentMode"] == "third_party"
    assert body["containerRegistryInfo"]["initContainer"]["componentMode"] == "third_party"


@pytest.mark.django_db
def test_top_level_component_mode_is_moved_into_registry_info(api):
    values = component_values(name="echo2")
    values["componentMode"] = "aios"
    del values["containerRegistryInfo"]["componentMode"]
    response = api.post(URL, values, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["containerRegistryInfo"]["componentMode"] == "aios"


@pytest.mark.django_db
def test_query_by_type_json_path_and_mongo(api):
    register(api, name="a")
    register(api, name="b", version="2.0")
    api.post(
        URL,
        {
            **component_values(name="c"),
            "componentType": "utility",
            "componentMetadata": {"framework": "onnx"},
        },
        format="json",
    )
    query = {
        "query": {"variable": "componentMetadata.framework", "operator": "==", "value": "onnx"}
    }
    response = api.post(f"{URL}query/", query, format="json")
    assert response.status_code == 200
    assert [r["componentURI"] for r in response.json()["results"]] == ["utility.c:1.0.0-stable"]

    mongo = {
        "query": {"$and": [{"componentType": "model"}, {"componentId.version": {"$in": ["2.0"]}}]}
    }
    response = api.post(f"{URL}query/", mongo, format="json")
    assert [r["componentURI"] for r in response.json()["results"]] == ["model.b:2.0-stable"]

    bad = api.post(f"{URL}query/", {"query": {"secret_column": 1}}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_query"


@pytest.mark.django_db
def test_list_filters(api):
    register(api, name="a")
    api.post(
        URL,
        {**component_values(name="b"), "componentType": "utility", "tags": ["vision"]},
        format="json",
    )
    names = lambda r: sorted(x["componentURI"] for x in r.json()["results"])  # noqa: E731
    assert names(api.get(URL, {"componentType": "utility"})) == ["utility.b:1.0.0-stable"]
    assert names(api.get(URL, {"tags": "vision"})) == ["utility.b:1.0.0-stable"]
    assert names(api.get(URL, {"componentMode": "aios"})) == [
        "model.a:1.0.0-stable",
        "utility.b:1.0.0-stable",
    ]
    assert api.get(URL, {"componentMode": "weird"}).status_code == 400


@pytest.mark.django_db
def test_patch_merges_and_identity_cannot_change(api):
    register(api)
    url = f"{URL}model.echo:1.0.0-stable/"
    response = api.patch(url, {"componentMetadata": {"usecase": "chat"}}, format="json")
    assert response.status_code == 200
    assert response.json()["componentMetadata"] == {"usecase": "chat"}
    assert response.json()["componentInitData"] == {"greeting": "hi"}  # untouched

    moved = api.patch(
        url, {"componentId": {"name": "x", "version": "1", "releaseTag": "y"}}, format="json"
    )
    assert moved.status_code == 400

    bad = api.patch(url, {"componentInitData": "nope"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["details"][0]["pointer"] == "/componentInitData"


@pytest.mark.django_db
def test_put_replaces_the_spec(api):
    register(api)
    url = f"{URL}model.echo:1.0.0-stable/"
    values = component_values()
    values.pop("componentInitData")
    response = api.put(url, values, format="json")
    assert response.status_code == 200
    assert response.json()["componentInitData"] == {}


@pytest.mark.django_db
def test_only_owner_or_staff_change_a_component(api, client_for, other_user, staff_api):
    register(api)
    url = f"{URL}model.echo:1.0.0-stable/"
    other = client_for(other_user)
    assert other.patch(url, {"tags": ["x"]}, format="json").status_code == 403
    assert other.delete(url).status_code == 403
    assert staff_api.patch(url, {"tags": ["x"]}, format="json").status_code == 200
    assert api.delete(url).status_code == 204
    assert not Component.objects.exists()


@pytest.mark.django_db
def test_non_json_body_is_415(api):
    response = api.post(URL, {"a": "b"})  # multipart
    assert response.status_code == 415
