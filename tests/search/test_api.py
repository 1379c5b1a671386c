"""POST /api/v1/search/ and GET /api/v1/search/entities/."""

import pytest

from apps.registries import services as registries
from tests.registries.factories import component_values, register_test_policy

URL = "/api/v1/search/"

FIRST = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        return input_data["candidates"][:1]
"""


@pytest.fixture
def components(user):
    registries.register_component(component_values(name="a"), owner=user)
    registries.register_component(
        {**component_values(name="b"), "componentType": "utility"}, owner=user
    )


@pytest.mark.django_db
def test_filter_over_rest(api, components):
    body = {"matchType": "component", "filter": {"componentQuery": {"componentType": "utility"}}}
    response = api.post(URL, body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["count"] == 1
    assert response.json()["results"][0]["componentURI"] == "utility.b:1.0.0-stable"


@pytest.mark.django_db
def test_ranked_over_rest(api, components):
    uri = register_test_policy(FIRST)
    body = {"matchType": "component", "rankingPolicyRule": {"policyRuleURI": uri}}
    response = api.post(URL, body, format="json")
    assert response.status_code == 200, response.content
    assert [r["componentURI"] for r in response.json()["results"]] == ["model.a:1.0.0-stable"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,pointer_or_message",
    [
        ({}, "/matchType"),
        ({"matchType": "component", "filter": []}, "/filter"),
        ({"matchType": "component", "filter": {"nonsense": {}}}, "/filter/nonsense"),
        ({"matchType": "component", "limit": 0}, "/limit"),
        ({"matchType": "component", "rankingPolicyRule": {}}, "/rankingPolicyRule/policyRuleURI"),
    ],
)
def test_bad_requests_are_400_with_pointers(api, body, pointer_or_message):
    response = api.post(URL, body, format="json")
    assert response.status_code == 400
    assert pointer_or_message in {d.get("pointer") for d in response.json()["error"]["details"]}


@pytest.mark.django_db
def test_unknown_match_type_and_anonymous(api, anon_client):
    response = api.post(URL, {"matchType": "starship"}, format="json")
    assert response.status_code == 400
    assert "starship" in response.json()["error"]["message"]
    assert anon_client.post(URL, {"matchType": "component"}, format="json").status_code == 401


@pytest.mark.django_db
def test_entities_lists_registered_types(api):
    response = api.get(f"{URL}entities/")
    assert response.status_code == 200
    by_type = {e["matchType"]: e for e in response.json()}
    assert by_type["component"]["queryKey"] == "componentQuery"
    assert "componentMetadata.<key>" in by_type["component"]["fields"]
    assert by_type["component"]["idKey"] == "componentURI"
    assert "policy" in by_type
