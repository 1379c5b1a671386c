"""T2: the executor registry, and policies run on a real executor service process."""

from __future__ import annotations

import json
import re

import pytest

from tests.policies.policies_support import BEHAVIOUR_POLICY, ECHO_POLICY, upload
from tests.support.procs import ManagedProcess, free_port, python_argv, wait_until


def _ready_port(proc: ManagedProcess) -> int:
    def port():
        for line in proc.log_text().splitlines():
            if line.startswith("{") and '"ready"' in line:
                return json.loads(line)["port"]
        assert proc.proc.poll() is None, proc.log_text()
        return None

    return wait_until(port, 60, "executor service to be ready")


@pytest.fixture
def executor_service(tmp_path):
    """``python -m block_sdk.policy_runtime.executor`` with its own, empty policy cache."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY")}
    env["AIOS_POLICY_CACHE_DIR"] = str(tmp_path / "executor-cache")
    proc = ManagedProcess(
        python_argv(
            "-m",
            "block_sdk.policy_runtime.executor",
            "--port",
            "0",
            "--workers",
            "1",
            "--timeout",
            "2",
        ),
        env=env,
        log_path=tmp_path / "executor.log",
    )
    try:
        yield f"http://127.0.0.1:{_ready_port(proc)}", proc
    finally:
        proc.stop()


@pytest.mark.django_db
def test_executor_registry_crud(api, anon_client):
    body = {
        "executor_id": "executor-001",
        "executor_host_uri": "http://127.0.0.1:10250",
        "executor_hardware_info": {"vcpu": {"count": 4}},
    }
    created = api.post("/api/v1/policy-executors/", body, format="json")
    assert created.status_code == 201
    assert created.json()["executor_status"] == "healthy"
    assert api.post("/api/v1/policy-executors/", body, format="json").status_code == 409
    assert anon_client.post("/api/v1/policy-executors/", body, format="json").status_code == 401
    bad = api.post(
        "/api/v1/policy-executors/",
        {"executor_id": "Bad_ID", "executor_host_uri": "ftp://x"},
        format="json",
    )
    assert bad.status_code == 400
    got = anon_client.get("/api/v1/policy-executors/executor-001/").json()
    assert got["executor_hardware_info"] == {"vcpu": {"count": 4}}
    patched = api.patch(
        "/api/v1/policy-executors/executor-001/", {"executor_status": "busy"}, format="json"
    )
    assert patched.json()["executor_status"] == "busy"
    busy = api.get("/api/v1/policy-executors/?executor_status=busy").json()["results"]
    assert [e["executor_id"] for e in busy] == ["executor-001"]
    assert api.delete("/api/v1/policy-executors/executor-001/").status_code == 204


@pytest.mark.django_db
def test_policy_runs_on_a_real_executor_service(api, executor_service):
    url, _proc = executor_service
    upload(api, "echo", ECHO_POLICY, policy_parameters={"p": 1})
    upload(api, "behaviour", BEHAVIOUR_POLICY)
    api.post(
        "/api/v1/policy-executors/",
        {"executor_id": "ex1", "executor_host_uri": url},
        format="json",
    )
    for attempt in range(2):  # the first call ships the archive, the second uses its cache
        response = api.post(
            "/api/v1/policy-executors/ex1/execute/",
            {
                "policy_rule_uri": "echo:1.0-test",
                "input_data": {"n": attempt},
                "parameters": {"q": 2},
            },
            format="json",
        )
        assert response.status_code == 200, response.json()
        result = response.json()["result"]
        assert result["input"] == {"n": attempt}
        assert result["parameters"] == {"p": 1, "q": 2}

    failing = api.post(
        "/api/v1/policy-executors/ex1/execute/",
        {"policy_rule_uri": "behaviour:1.0-test", "input_data": {"op": "raise"}},
        format="json",
    )
    assert failing.status_code == 422
    assert failing.json()["error"]["code"] == "exception"
    looping = api.post(
        "/api/v1/policy-executors/ex1/execute/",
        {"policy_rule_uri": "behaviour:1.0-test", "input_data": {"op": "loop"}},
        format="json",
    )
    assert looping.status_code == 422 and looping.json()["error"]["code"] == "timeout"
    unknown = api.post(
        "/api/v1/policy-executors/ex1/execute/",
        {"policy_rule_uri": "nope:1.0-x", "input_data": {}},
        format="json",
    )
    assert unknown.status_code == 404
    checked = api.post("/api/v1/policy-executors/ex1/health-check/").json()
    assert checked["executor_status"] == "healthy"


@pytest.mark.django_db
def test_remote_mode_of_evaluate_policy_uses_a_healthy_executor(api, executor_service):
    from apps.policies import services

    url, _proc = executor_service
    upload(api, "echo", ECHO_POLICY)
    services.register_executor(executor_id="ex2", executor_host_uri=url)
    result = services.evaluate_policy("echo:1.0-test", {"r": 1}, mode="remote")
    assert result["input"] == {"r": 1}


@pytest.mark.django_db
def test_an_unreachable_executor_is_503_and_marked_unreachable(api):
    from apps.policies.models import PolicyExecutor

    upload(api, "echo", ECHO_POLICY)
    dead = f"http://127.0.0.1:{free_port()}"
    api.post(
        "/api/v1/policy-executors/",
        {"executor_id": "dead", "executor_host_uri": dead},
        format="json",
    )
    response = api.post(
        "/api/v1/policy-executors/dead/execute/",
        {"policy_rule_uri": "echo:1.0-test", "input_data": {}},
        format="json",
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert PolicyExecutor.objects.get(executor_id="dead").executor_status == "unreachable"
    assert api.post("/api/v1/policy-executors/nobody/execute/", {}, format="json").status_code in (
        400,
        404,
    )


def test_manage_command_starts_and_registers_an_executor(child_env, tmp_path, client_for, user):
    from apps.policies.models import PolicyExecutor

    client = client_for(user)
    upload(client, "echo", ECHO_POLICY)
    command = ManagedProcess(
        python_argv("manage.py", "aios_policy_executor", "--port", "0", "--register", "cmd-ex"),
        env=child_env,
        log_path=tmp_path / "command.log",
    )
    try:
        wait_until(
            lambda: PolicyExecutor.objects.filter(executor_id="cmd-ex").exists(),
            60,
            "the executor to be registered",
        )
        executor = PolicyExecutor.objects.get(executor_id="cmd-ex")
        assert re.match(r"^http://127\.0\.0\.1:\d+$", executor.executor_host_uri)
        assert executor.executor_hardware_info["vcpu"]["count"] >= 1
        response = client.post(
            "/api/v1/policy-executors/cmd-ex/execute/",
            {"policy_rule_uri": "echo:1.0-test", "input_data": {"via": "command"}},
            format="json",
        )
        assert response.status_code == 200, response.json()
        assert response.json()["result"]["input"] == {"via": "command"}
    finally:
        command.stop()
    assert PolicyExecutor.objects.get(executor_id="cmd-ex").executor_status == "unreachable"
