"""Custom templates: a registered policy turns a custom spec into the internal form,
which is validated like a Parser/V1 spec, then run."""

import pytest

from apps.registries import services as registries
from tests.registries.factories import register_test_policy

CONVERTER = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        shape = parameters.get("shape", "values")
        model = input_data["model"]
        values = {
            "componentId": {
                "name": model["name"],
                "version": model["version"],
                "releaseTag": parameters.get("tag", "stable"),
            },
            "componentType": model.get("kind", "model"),
            "containerRegistryInfo": {"componentMode": "aios", "containerImage": model["image"]},
            "componentMetadata": {"converted": True},
        }
        if shape == "values":
            return {"values": values}
        if shape == "envelope":
            return {"header": {"templateUri": "Parser/V1"}, "body": {"spec": {"values": values}}}
        if shape == "bare":
            return values
        if shape == "invalid":
            values["componentId"]["version"] = 3
            values["bogus"] = 1
            return values
        if shape == "loop":
            return {"header": {"templateUri": "other:1-x"}, "body": {}}
        if shape == "list":
            return [values]
        raise ValueError("the custom spec is not acceptable")
"""


@pytest.fixture
def template(user):
    policy = register_test_policy(CONVERTER, name="component-converter")
    registries.create_template(
        name="SimpleComponent",
        version="1.0",
        tag="stable",
        template_policy_rule_uri=policy,
        owner=user,
    )
    return "SimpleComponent:1.0-stable"


def custom_spec(template_uri, **parameters):
    return {
        "header": {"templateUri": template_uri, "parameters": parameters},
        "body": {"model": {"name": "yolo", "version": "5.0", "image": "registry.lab/yolo:5"}},
    }


@pytest.mark.django_db
@pytest.mark.parametrize("shape", ["values", "envelope", "bare"])
def test_custom_spec_becomes_a_component(api, template, shape):
    response = api.post(
        "/api/createComponent", custom_spec(template, shape=shape, tag="beta"), format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["componentURI"] == "model.yolo:5.0-beta"
    assert body["componentMetadata"] == {"converted": True}


@pytest.mark.django_db
def test_converted_spec_is_validated_with_pointers(api, template):
    response = api.post(
        "/api/createComponent", custom_spec(template, shape="invalid"), format="json"
    )
    assert response.status_code == 400
    pointers = {d["pointer"] for d in response.json()["error"]["details"]}
    assert pointers == {"/templateOutput/componentId/version", "/templateOutput/bogus"}


@pytest.mark.django_db
@pytest.mark.parametrize("shape", ["loop", "list", "raise"])
def test_bad_template_outputs_and_policy_errors_are_422(api, template, shape):
    response = api.post("/api/createComponent", custom_spec(template, shape=shape), format="json")
    assert response.status_code == 422, response.content


@pytest.mark.django_db
def test_unknown_template_is_404(api):
    response = api.post(
        "/api/createComponent", custom_spec("NoSuchTemplate:1.0-stable"), format="json"
    )
    assert response.status_code == 404
    assert "NoSuchTemplate:1.0-stable" in response.json()["error"]["message"]
