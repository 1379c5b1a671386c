"""The stateful policy function server (Type 4) as a real subprocess over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from block_sdk.policy_runtime.archive import package_folder, sha256_hex
from tests.block_sdk.policy_runtime.policy_helpers import (
    BEHAVIOUR_POLICY,
    COUNTER_POLICY,
    REPO_ROOT,
    Service,
    start_service,
    stop_service,
)

API_KEY = "function-test-key"
MODULE = "block_sdk.policy_runtime.function_server"


def _archive(folder: Path, source: str) -> tuple[Path, str]:
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "function.py").write_text(source)
    data = package_folder(folder)
    path = folder / "policy.tar.gz"
    path.write_bytes(data)
    return path, sha256_hex(data)


def _start(base: Path, source: str, extra: list[str], env: dict[str, str] | None = None) -> Service:
    path, sha = _archive(base / "policy", source)
    return start_service(
        MODULE,
        ["--policy-archive", str(path), "--sha", sha, "--cache-dir", str(base / "cache"), *extra],
        base / "function.log",
        env=env,
    )


@pytest.fixture(scope="module")
def counter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = _start(
        tmp_path_factory.mktemp("counter"),
        COUNTER_POLICY,
        ["--uri", "counter:1.0-fn", "--settings", '{"start": 100}', "--parameters", '{"step": 2}'],
        env={"AIOS_DATA_PLANE_API_KEY": API_KEY},
    )
    yield service
    stop_service(service.proc)


@pytest.fixture(scope="module")
def behaviour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = _start(
        tmp_path_factory.mktemp("behaviour"),
        BEHAVIOUR_POLICY,
        ["--uri", "behaviour:1.0-fn", "--timeout", "1"],
    )
    yield service
    stop_service(service.proc)


def _post(service: Service, path: str, body: Any, key: str | None = None) -> requests.Response:
    headers = {"X-AIOS-Key": key} if key else {}
    return requests.post(f"{service.url}{path}", json=body, headers=headers, timeout=10)


def test_state_is_kept_between_calls_and_managed(counter: Service) -> None:
    assert _post(counter, "/call", {}, API_KEY).json() == {"result": {"total": 102}}
    assert _post(counter, "/call", {"add": 5}, API_KEY).json() == {"result": {"total": 107}}
    state = _post(counter, "/mgmt", {"action": "get_state", "data": {}}, API_KEY)
    assert state.json() == {"result": {"total": 107}}
    reset = _post(counter, "/mgmt", {"mgmt_action": "reset", "mgmt_data": {"to": 1}}, API_KEY)
    assert reset.json() == {"result": {"total": 1}}
    assert _post(counter, "/call", {}, API_KEY).json() == {"result": {"total": 3}}
    bad = _post(counter, "/mgmt", {"action": "explode"}, API_KEY)
    assert bad.status_code == 422
    assert bad.json()["error"]["message"] == "ValueError: unknown action explode"


def test_api_key_guards_calls_but_not_health(counter: Service) -> None:
    assert _post(counter, "/call", {}).status_code == 401
    assert _post(counter, "/call", {}, "wrong").status_code == 401
    health = requests.get(f"{counter.url}/health", timeout=5).json()
    assert health["status"] == "healthy"
    assert health["policy_rule_uri"] == "counter:1.0-fn"


@pytest.mark.parametrize(
    ("op", "code"), [("raise", "exception"), ("set", "bad_output"), ("nan", "bad_output")]
)
def test_policy_failures_answer_422_with_the_error_shape(
    behaviour: Service, op: str, code: str
) -> None:
    reply = _post(behaviour, "/call", {"op": op})
    assert reply.status_code == 422
    assert reply.json()["error"]["code"] == code
    assert _post(behaviour, "/call", {"op": "echo", "value": 1}).json()["result"]["echo"] == 1


def test_slow_call_times_out_and_health_still_answers(behaviour: Service) -> None:
    outcome: dict[str, Any] = {}

    def slow() -> None:
        outcome["reply"] = _post(behaviour, "/call", {"op": "sleep", "seconds": 1.5})

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)
    health = requests.get(f"{behaviour.url}/health", timeout=2).json()
    assert health["busy_for_s"] > 0
    thread.join(timeout=10)
    assert outcome["reply"].status_code == 422
    assert outcome["reply"].json()["error"]["code"] == "timeout"
    # The next call waits for the stuck one to finish, then runs normally.
    assert _post(behaviour, "/call", {"op": "echo", "value": 2}).json()["result"]["echo"] == 2


def test_wrong_sha_refuses_to_start(tmp_path: Path) -> None:
    path, _sha = _archive(tmp_path / "policy", COUNTER_POLICY)
    proc = subprocess.run(
        [sys.executable, "-m", MODULE, "--port", "0", "--policy-archive", str(path),
         "--sha", "0" * 64, "--uri", "counter:1.0-bad", "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, timeout=30, cwd=str(REPO_ROOT), env={"PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    event = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert event["event"] == "error"
    assert event["error"]["code"] == "integrity"
