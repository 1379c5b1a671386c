"""``POST /api/with-spec/<action>?specUri=``: run specs from the spec store."""

import pytest

from apps.parser.models import ParserTask
from apps.registries import services as registries
from tests.registries.factories import component_values, envelope

COMPONENT_YAML = """
componentId: {name: from-yaml, version: "1.0", releaseTag: stable}
componentType: model
containerRegistryInfo:
  componentMode: aios
  containerImageMetadata: {entrypoint: "examples.echo.block:EchoBlock"}
"""


def store(user, name, spec_type, data):
    return registries.create_spec(
        name=name, version="1.0", tag="stable", spec_type=spec_type, spec_data=data, owner=user
    ).spec_uri


@pytest.mark.django_db
def test_bare_values_and_envelopes_from_the_store(api, user):
    bare = store(user, "bare", "component", component_values(name="bare"))
    response = api.post(f"/api/with-spec/createComponent?specUri={bare}", format="json")
    assert response.status_code == 201, response.content
    assert response.json()["componentURI"] == "model.bare:1.0.0-stable"
    task = ParserTask.objects.get()
    assert task.spec_uri == bare
    assert task.spec["header"]["templateUri"] == "Parser/V1"

    wrapped = store(user, "wrapped", "component", envelope(component_values(name="wrapped")))
    response = api.post(f"/api/with-spec/addComponent?specUri={wrapped}")
    assert response.status_code == 201

    yaml_spec = store(user, "yaml", "component", COMPONENT_YAML)
    response = api.post(f"/api/with-spec/createComponent/?specUri={yaml_spec}")
    assert response.status_code == 201
    assert response.json()["componentURI"] == "model.from-yaml:1.0-stable"


@pytest.mark.django_db
def test_search_spec_runs_filter(api, user):
    registries.register_component(component_values(), owner=user)
    uri = store(
        user,
        "all-models",
        "search",
        {"matchType": "component", "filter": {"componentQuery": {"componentType": "model"}}},
    )
    response = api.post(f"/api/with-spec/filter?specUri={uri}")
    assert response.status_code == 200
    assert response.json()["count"] == 1


@pytest.mark.django_db
def test_errors(api, user, anon_client):
    uri = store(user, "comp", "component", component_values())
    missing = api.post("/api/with-spec/createComponent")
    assert missing.status_code == 400
    assert missing.json()["error"]["details"][0]["field"] == "specUri"
    assert api.post("/api/with-spec/createComponent?specUri=nope:1-x").status_code == 404
    mismatch = api.post(f"/api/with-spec/createBlock?specUri={uri}")
    assert mismatch.status_code == 400
    assert "'component' spec" in mismatch.json()["error"]["message"]
    assert api.post(f"/api/with-spec/flyAway?specUri={uri}").status_code == 404
    assert anon_client.post(f"/api/with-spec/createComponent?specUri={uri}").status_code == 401
    # Every call but the unknown action is logged.
    assert ParserTask.objects.filter(status="failed").count() == 3


@pytest.mark.django_db
def test_parameters_in_the_body_reach_the_template(api, user, settings):
    settings.AIOS_PARSER_HANDLERS = {"createComponent": "tests.parser.handlers.echo"}
    uri = store(user, "params", "component", envelope(component_values(), parameters={"a": 1}))
    response = api.post(
        f"/api/with-spec/createComponent?specUri={uri}", {"parameters": {"b": 2}}, format="json"
    )
    assert response.status_code == 200
    task = ParserTask.objects.get()
    assert task.spec["header"]["parameters"] == {"a": 1, "b": 2}
