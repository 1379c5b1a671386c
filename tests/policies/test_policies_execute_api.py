"""Executing policies through the API: modes, overrides, schemas, management, and every bad
case of issue 3 end to end (upload, then execute): each is a clear 422 within the timeout."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from tests.policies.conftest import SANDBOX_TIMEOUT
from tests.policies.policies_support import (
    BEHAVIOUR_POLICY,
    COUNTER_POLICY,
    ECHO_POLICY,
    execute,
    upload,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def behaviour(api) -> str:
    assert upload(api, "behaviour", BEHAVIOUR_POLICY).status_code == 201
    return "behaviour:1.0-test"


def test_execute_runs_sandboxed_by_default(api):
    upload(api, "echo", ECHO_POLICY, policy_parameters={"a": 1, "b": 2}, policy_settings={"s": 1})
    response = execute(api, "echo:1.0-test", {"x": 1})
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["input"] == {"x": 1}
    assert result["rule_id"] == "echo:1.0-test"
    assert result["parameters"] == {"a": 1, "b": 2} and result["settings"] == {"s": 1}


def test_caller_parameters_and_settings_override_the_defaults(api):
    upload(api, "echo", ECHO_POLICY, policy_parameters={"a": 1, "b": 2}, policy_settings={"s": 1})
    result = execute(
        api, "echo:1.0-test", {}, parameters={"b": 20, "c": 30}, settings={"s": 2}
    ).json()["result"]
    assert result["parameters"] == {"a": 1, "b": 20, "c": 30}
    assert result["settings"] == {"s": 2}


def test_local_mode_is_for_staff_only(api, staff_api):
    upload(api, "echo", ECHO_POLICY)
    denied = execute(api, "echo:1.0-test", {"x": 1}, mode="local")
    assert denied.status_code == 403 and "staff" in denied.json()["error"]["message"]
    allowed = execute(staff_api, "echo:1.0-test", {"x": 1}, mode="local")
    assert allowed.status_code == 200 and allowed.json()["result"]["input"] == {"x": 1}


def test_execute_needs_authentication_and_a_known_uri(api, anon_client):
    upload(api, "echo", ECHO_POLICY)
    assert execute(anon_client, "echo:1.0-test", {}).status_code == 401
    missing = execute(api, "nope:1.0-test", {})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    bad_mode = execute(api, "echo:1.0-test", {}, mode="remote")
    assert bad_mode.status_code == 400


def test_input_and_output_schemas_are_enforced(api):
    upload(
        api,
        "typed",
        ECHO_POLICY,
        policy_input_schema={"type": "object", "required": ["x"], "properties": {"x": {"min": 0}}},
        policy_output_schema={"type": "object", "required": ["nothing_like_this"]},
    )
    bad_input = execute(api, "typed:1.0-test", {"x": -1})
    assert bad_input.status_code == 422
    assert bad_input.json()["error"]["code"] == "bad_input"
    assert "x" in bad_input.json()["error"]["message"]
    bad_output = execute(api, "typed:1.0-test", {"x": 1})
    assert bad_output.status_code == 422 and bad_output.json()["error"]["code"] == "bad_output"


def test_parameters_schema_is_enforced_on_the_merged_parameters(api):
    upload(
        api,
        "params",
        ECHO_POLICY,
        policy_parameters_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
    )
    response = execute(api, "params:1.0-test", {}, parameters={"n": "many"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "bad_input"


def test_mgmt_runs_management(api):
    upload(api, "counter", COUNTER_POLICY)
    response = api.post(
        "/api/v1/policies/counter:1.0-test/mgmt/", {"action": "get_state"}, format="json"
    )
    assert response.status_code == 200 and response.json()["result"] == {"count": 0}
    unknown = api.post("/api/v1/policies/counter:1.0-test/mgmt/", {"action": "x"}, format="json")
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "exception"
    no_mgmt = upload(
        api,
        "nomgmt",
        "class AIOSv1PolicyRule:\n def __init__(s,*a): pass\n def eval(s, p, i, c): return 1\n",
    )
    assert no_mgmt.status_code == 201
    missing = api.post("/api/v1/policies/nomgmt:1.0-test/mgmt/", {"action": "x"}, format="json")
    assert missing.status_code == 422 and "management" in missing.json()["error"]["message"]


@pytest.mark.parametrize(
    "op,code,fragment",
    [
        ("raise", "exception", "ValueError: boom from policy"),
        ("loop", "timeout", ""),
        ("allocate", "memory", ""),
        ("exit", "exception", ""),
        ("not_json", "bad_output", "JSON"),
    ],
)
def test_misbehaving_policies_give_a_clear_error_within_the_timeout(
    api, behaviour, op, code, fragment
):
    started = time.monotonic()
    response = execute(api, behaviour, {"op": op})
    elapsed = time.monotonic() - started
    assert response.status_code == 422, response.json()
    error = response.json()["error"]
    assert error["code"] == code
    assert fragment in error["message"]
    assert elapsed < SANDBOX_TIMEOUT + 3
    # The pool replaced whatever died: the same policy answers again right away.
    assert execute(api, behaviour, {"op": "ok"}).json()["result"] == {"ok": True}


def test_a_policy_that_forks_leaves_no_process_behind(api, behaviour):
    import psutil

    response = execute(api, behaviour, {"op": "fork"})
    assert response.status_code == 200
    child = response.json()["result"]["forked"]
    time.sleep(0.3)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_a_policy_cannot_read_secrets_from_its_environment(api, behaviour, settings):
    env = execute(api, behaviour, {"op": "env"}).json()["result"]["env"]
    assert "DATABASE_URL" not in env and "REDIS_URL" not in env and "SECRET_KEY" not in env
    assert settings.SECRET_KEY not in str(env)
    assert not any("KEY" in name or "TOKEN" in name or "PASSWORD" in name for name in env)


@pytest.mark.parametrize(
    "source,fragment",
    [
        ("class Other:\n    pass\n", "AIOSv1PolicyRule"),
        ("class AIOSv1PolicyRule(:\n    pass\n", "SyntaxError"),
        ("raise RuntimeError('at import')\n", "RuntimeError: at import"),
        (
            "class AIOSv1PolicyRule:\n"
            "    def __init__(self, r, s, p):\n        raise KeyError('x')\n"
            "    def eval(self, p, i, c):\n        return 1\n",
            "__init__",
        ),
    ],
    ids=["missing-class", "syntax-error", "import-raises", "init-raises"],
)
def test_code_that_cannot_load_is_a_load_error(api, source, fragment):
    assert upload(api, "broken", source).status_code == 201
    response = execute(api, "broken:1.0-test", {})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "load_error"
    assert fragment in response.json()["error"]["message"]


def test_a_tampered_stored_archive_is_an_integrity_error(api):
    created = upload(api, "tamper", ECHO_POLICY).json()
    assert execute(api, "tamper:1.0-test", {"x": 1}).status_code == 200
    from apps.policies.models import PolicyRule

    rule = PolicyRule.objects.get(policy_rule_uri="tamper:1.0-test")
    path = Path(default_storage.path(rule.code.name))
    original = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(original[:-8] + b"tampered")
    try:
        for mode_client in (api,):
            response = execute(mode_client, "tamper:1.0-test", {"x": 1})
            assert response.status_code == 422
            assert response.json()["error"]["code"] == "integrity"
            assert created["sha256"][:16] in response.json()["error"]["message"]
        download = api.get("/api/v1/policies/tamper:1.0-test/archive/")
        assert download.status_code == 422 and download.json()["error"]["code"] == "integrity"
    finally:
        path.write_bytes(original)
    assert execute(api, "tamper:1.0-test", {"x": 1}).status_code == 200


HELPER_POLICY = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.get_metrics = settings["get_metrics"]
        self.client = settings["cluster_client"]

    def eval(self, parameters, input_data, context):
        return {"metrics": self.get_metrics(input_data["block"]),
                "cluster": self.client.get_cluster("c1")}
"""


class _ClusterClient:
    __aios_helper_methods__ = ("get_cluster",)  # what a sandboxed policy may call back

    def get_cluster(self, cluster_id):
        return {"id": cluster_id, "nodes": 3}


@pytest.mark.parametrize("mode", ["sandbox", "local"])
def test_settings_helpers_work_in_every_mode(api, mode):
    from apps.policies import services

    upload(api, "helpers", HELPER_POLICY)
    calls = []

    def get_metrics(block_id):
        calls.append(block_id)
        return {"block": block_id, "qps": 12.5}

    result = services.evaluate_policy(
        "helpers:1.0-test",
        {"block": "blk-1"},
        settings={"get_metrics": get_metrics, "cluster_client": _ClusterClient()},
        mode=mode,
    )
    assert result == {
        "metrics": {"block": "blk-1", "qps": 12.5},
        "cluster": {"id": "c1", "nodes": 3},
    }
    assert calls == ["blk-1"]  # called back in this process, even from the sandbox


def test_non_object_overrides_are_bad_input(api):
    from apps.policies import services
    from apps.policies.errors import PolicyExecutionError

    upload(api, "echo", ECHO_POLICY)
    with pytest.raises(PolicyExecutionError) as caught:
        services.evaluate_policy("echo:1.0-test", {}, parameters=["not", "a", "dict"])
    assert caught.value.code == "bad_input" and caught.value.status_code == 422
