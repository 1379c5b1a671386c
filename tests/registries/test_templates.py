"""Template store: CRUD, query, and executing the linked policy (sandboxed)."""

import pytest

from tests.registries.factories import register_test_policy

URL = "/api/v1/templates/"

TO_UPPER = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.parameters = parameters

    def eval(self, parameters, input_data, context):
        suffix = parameters.get("suffix", "")
        return {k: str(v).upper() + suffix for k, v in input_data.items()}
"""

RAISES = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        raise RuntimeError("custom spec rejected")
"""


def template_body(policy_uri, name="upper", version="1.0", tag="stable"):
    return {
        "templateName": name,
        "templateVersion": {"templateVersion": version, "tag": tag},
        "templatePolicyRuleUri": policy_uri,
        "templateDescription": "upper-cases every value",
        "templateMetadata": {"owner": "ml"},
        "templateTags": ["demo"],
        "templateData": '{"type": "object"}',
    }


@pytest.mark.django_db
def test_create_get_query_update_delete(api, client_for, other_user):
    response = api.post(URL, template_body("some.policy:v1"), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["templateUri"] == "upper:1.0-stable"
    assert body["templateVersion"] == {"templateVersion": "1.0", "tag": "stable"}
    assert body["templateData"] == '{"type": "object"}'
    assert api.post(URL, template_body("some.policy:v1"), format="json").status_code == 409

    url = f"{URL}upper:1.0-stable/"
    assert api.get(url).json()["templatePolicyRuleUri"] == "some.policy:v1"
    query = {"query": {"templateMetadata.owner": "ml"}}
    assert api.post(f"{URL}query/", query, format="json").json()["count"] == 1
    assert api.get(URL, {"templatePolicyRuleUri": "some.policy:v1"}).json()["count"] == 1

    assert api.patch(url, {"templatePolicyRuleUri": "other:1-x"}, format="json").status_code == 200
    assert (
        api.patch(
            url, {"templateVersion": {"templateVersion": "2", "tag": "x"}}, format="json"
        ).status_code
        == 400
    )
    assert client_for(other_user).delete(url).status_code == 403
    assert api.delete(url).status_code == 204


@pytest.mark.django_db
def test_missing_policy_uri_is_400(api):
    body = template_body("x")
    body["templatePolicyRuleUri"] = "  "
    assert api.post(URL, body, format="json").status_code == 400


@pytest.mark.django_db
def test_execute_runs_the_policy_in_the_sandbox(api, anon_client, client_for, other_user):
    policy = register_test_policy(TO_UPPER)
    api.post(URL, template_body(policy), format="json")
    url = f"{URL}upper:1.0-stable/execute/"
    payload = {"input_data": {"a": "x", "b": 1}, "parameters": {"suffix": "!"}}
    response = api.post(url, payload, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"result": {"a": "X!", "b": "1!"}}
    # Anyone signed in may execute a template; nobody anonymous.
    assert client_for(other_user).post(url, payload, format="json").status_code == 200
    assert anon_client.post(url, payload, format="json").status_code == 401


@pytest.mark.django_db
def test_execute_errors(api):
    failing = register_test_policy(RAISES)
    api.post(URL, template_body(failing, name="fails"), format="json")
    response = api.post(f"{URL}fails:1.0-stable/execute/", {"input_data": {}}, format="json")
    assert response.status_code == 422
    assert "custom spec rejected" in response.content.decode()

    api.post(URL, template_body("ghost.policy:1.0-x", name="ghost"), format="json")
    response = api.post(f"{URL}ghost:1.0-stable/execute/", {"input_data": {}}, format="json")
    assert response.status_code == 404

    assert (
        api.post(f"{URL}nope:1.0-x/execute/", {"input_data": {}}, format="json").status_code == 404
    )
    bad = api.post(f"{URL}fails:1.0-stable/execute/", {"parameters": []}, format="json")
    assert bad.status_code == 400
