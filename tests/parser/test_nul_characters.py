"""Regression (found by the property-based tests): PostgreSQL cannot store NUL
characters, so a NUL in a spec, a query, a stored JSON value or a path is a clear 4xx,
never a database error answered as a 500."""

import pytest

from apps.parser.models import ParserTask
from tests.registries.factories import component_values, envelope


@pytest.mark.django_db
def test_nul_in_a_spec_is_400_with_its_pointer_and_still_logged(api):
    values = component_values()
    values["componentMetadata"] = {"usecase": "a\x00b"}
    response = api.post("/api/createComponent", envelope(values), format="json")
    assert response.status_code == 400
    detail = response.json()["error"]["details"][0]
    assert detail["pointer"] == "/body/spec/values/componentMetadata/usecase"
    assert detail["validator"] == "nul"
    task = ParserTask.objects.get()
    assert task.response_status == 400
    usecase = task.spec["body"]["spec"]["values"]["componentMetadata"]["usecase"]
    assert usecase == "a\ufffdb"


@pytest.mark.django_db
def test_nul_in_a_key_or_template_uri(api):
    spec = envelope(component_values(), template="Parser/V1\x00")
    spec["body"]["spec"]["values"]["k\x00"] = 1
    response = api.post("/api/createComponent", spec, format="json")
    assert response.status_code == 400
    assert ParserTask.objects.get().template_uri == "Parser/V1\ufffd"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["/api/v1/components/query/", "/api/v1/parser-tasks/query/", "/api/v1/search/"]
)
def test_nul_in_a_query_is_400(api, url):
    body = {"query": {"componentType": "a\x00"}}
    if "search" in url:
        body = {"matchType": "component", "filter": {"componentQuery": body["query"]}}
    response = api.post(url, body, format="json")
    assert response.status_code == 400


@pytest.mark.django_db
def test_nul_in_stored_json_and_paths(api):
    spec = {
        "specName": "s",
        "specVersion": {"version": "1", "tag": "x"},
        "specType": "search",
        "specData": {"matchType": "component\x00"},
    }
    assert api.post("/api/v1/specs/", spec, format="json").status_code == 400
    registry = {
        "container_registry_name": "r",
        "container_registry_public_url": "http://r",
        "container_registry_metadata": {"a": "\x00"},
    }
    assert api.post("/api/v1/container-registries/", registry, format="json").status_code == 400
    assert api.get("/api/v1/components/model.a%00:1-x/").status_code == 404
    assert api.post("/api/with-spec/createComponent?specUri=a%00").status_code == 404
