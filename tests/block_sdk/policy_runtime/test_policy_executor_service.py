"""The policy executor service (Type 2) as a real subprocess over HTTP, and mode="remote"."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from block_sdk.policy_runtime.archive import package_folder, sha256_hex
from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode
from block_sdk.policy_runtime.evaluator import InMemoryPolicyResolver, LocalPolicyEvaluator
from tests.block_sdk.policy_runtime.policy_helpers import (
    BEHAVIOUR_POLICY,
    COUNTER_POLICY,
    Service,
    start_service,
    stop_service,
)

API_KEY = "executor-test-key"
URI = "behaviour:1.0-remote"
REGISTERED_URI = "counter:1.0-stable"


def _build(folder: Path, source: str) -> bytes:
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "function.py").write_text(source)
    return package_folder(folder)


@pytest.fixture(scope="module")
def behaviour_archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _build(tmp_path_factory.mktemp("behaviour"), BEHAVIOUR_POLICY)


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    base = tmp_path_factory.mktemp("executor")
    policy_dir = base / "policies"
    policy_dir.mkdir()
    (policy_dir / f"{REGISTERED_URI}.tar.gz").write_bytes(_build(base / "counter", COUNTER_POLICY))
    (policy_dir / f"{REGISTERED_URI}.json").write_text(
        json.dumps({"policy_settings": {"start": 100}, "policy_parameters": {"step": 5}})
    )
    service = start_service(
        "block_sdk.policy_runtime.executor",
        ["--workers", "2", "--timeout", "2", "--memory-mb", "512",
         "--cache-dir", str(base / "cache"), "--policy-dir", str(policy_dir)],
        base / "executor.log",
        env={"AIOS_DATA_PLANE_API_KEY": API_KEY, "SECRET_KEY": "executor-parent-secret"},
    )  # fmt: skip
    yield service
    stop_service(service.proc)


def _post(service: Service, path: str, body: Any, key: str | None = API_KEY) -> requests.Response:
    headers = {"X-AIOS-Key": key} if key else {}
    return requests.post(f"{service.url}{path}", json=body, headers=headers, timeout=15)


def test_health_is_open_and_reports_the_pool(executor: Service) -> None:
    reply = requests.get(f"{executor.url}/health", timeout=5)
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "healthy"
    assert body["pool"]["workers"] == 2


def test_api_key_is_required_when_configured(executor: Service) -> None:
    body = {"policy_rule_uri": REGISTERED_URI, "input_data": {}}
    for key in (None, "wrong-key"):
        reply = _post(executor, "/execute", body, key=key)
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "unauthorized"


def test_code_is_sent_once_then_run_by_sha256(executor: Service, behaviour_archive: bytes) -> None:
    sha = sha256_hex(behaviour_archive)
    body = {"policy_rule_uri": URI, "sha256": sha, "input_data": {"op": "echo", "value": 1}}
    first = _post(executor, "/execute", body)
    assert first.status_code == 409
    assert first.json()["error"]["code"] == "archive_required"

    upload = {**body, "archive_b64": base64.b64encode(behaviour_archive).decode()}
    second = _post(executor, "/execute", upload)
    assert second.status_code == 200, second.text
    assert second.json()["result"]["echo"] == 1

    third = _post(executor, "/execute", {**body, "input_data": {"op": "echo", "value": 3}})
    assert third.json()["result"]["echo"] == 3

    wrong = {**upload, "sha256": "0" * 64}
    reply = _post(executor, "/execute", wrong)
    assert reply.status_code == 422
    assert reply.json()["error"]["code"] == "integrity"


def test_registry_policies_get_their_defaults_merged(executor: Service) -> None:
    reply = _post(executor, "/execute", {"policy_rule_uri": REGISTERED_URI, "input_data": {}})
    assert reply.json() == {"result": {"total": 105}}
    override = _post(
        executor,
        "/execute",
        {"policy_rule_uri": REGISTERED_URI, "input_data": {}, "parameters": {"step": 1}},
    )
    assert override.json() == {"result": {"total": 101}}
    missing = _post(executor, "/execute", {"policy_rule_uri": "absent:1-a", "input_data": {}})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_bad_requests_get_the_error_shape(executor: Service) -> None:
    raw = requests.post(
        f"{executor.url}/execute",
        data=b"{not json",
        headers={"X-AIOS-Key": API_KEY, "Content-Type": "application/json"},
        timeout=5,
    )
    assert raw.status_code == 400
    assert raw.json()["error"]["code"] == "bad_request"
    reply = _post(executor, "/execute", {"input_data": {}})
    assert reply.status_code == 422
    assert reply.json()["error"]["code"] == "bad_input"


@pytest.fixture
def remote_evaluator(
    executor: Service, behaviour_archive: bytes, monkeypatch: pytest.MonkeyPatch
) -> LocalPolicyEvaluator:
    monkeypatch.setenv("AIOS_DATA_PLANE_API_KEY", API_KEY)
    resolver = InMemoryPolicyResolver()
    resolver.add_archive(URI, behaviour_archive, parameters={"p": "remote"})
    resolver.add_executor("executor-001", executor.url)
    return LocalPolicyEvaluator(URI, mode="remote", executor_id="executor-001", resolver=resolver)


def test_remote_mode_runs_on_the_executor(remote_evaluator: LocalPolicyEvaluator) -> None:
    result = remote_evaluator.execute_policy_rule({"op": "echo", "value": "hi"})
    assert result["echo"] == "hi"
    assert result["parameters"] == {"p": "remote"}
    assert remote_evaluator.execute_mgmt_command("ping", {"n": 1}) == {
        "action": "ping",
        "data": {"n": 1},
    }
    environ = remote_evaluator.execute_policy_rule({"op": "environ"})
    assert "SECRET_KEY" not in environ["environ"]
    assert "AIOS_DATA_PLANE_API_KEY" not in environ["environ"]


@pytest.mark.parametrize(
    ("op", "code"),
    [("raise", "exception"), ("allocate", "memory"), ("exit", "exception"), ("set", "bad_output")],
)
def test_remote_errors_arrive_as_policy_errors(
    remote_evaluator: LocalPolicyEvaluator, op: str, code: str
) -> None:
    with pytest.raises(PolicyError) as excinfo:
        remote_evaluator.execute_policy_rule({"op": op})
    assert excinfo.value.code == code


def test_stuck_policy_times_out_while_the_executor_keeps_answering(
    remote_evaluator: LocalPolicyEvaluator,
) -> None:
    remote_evaluator.execute_policy_rule({"op": "echo"})  # archive uploaded, worker warm
    outcome: dict[str, Any] = {}

    def stuck() -> None:
        started = time.monotonic()
        try:
            remote_evaluator.execute_policy_rule({"op": "loop"})
        except PolicyError as exc:
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - started
        outcome["done"] = time.monotonic()

    thread = threading.Thread(target=stuck)
    thread.start()
    time.sleep(0.3)
    good_started = time.monotonic()
    assert remote_evaluator.execute_policy_rule({"op": "echo", "value": 7})["echo"] == 7
    good_done = time.monotonic()
    thread.join(timeout=15)
    assert good_done - good_started < 1.5
    assert good_done < outcome["done"]
    assert outcome["error"].code == PolicyErrorCode.TIMEOUT
    assert outcome["elapsed"] < 4
