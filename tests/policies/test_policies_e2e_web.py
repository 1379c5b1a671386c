"""End to end over a real web server (daphne in a child process): a user uploads a policy,
executes it, and the server keeps answering other requests while a policy loops."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from rest_framework.authtoken.models import Token

from tests.policies.conftest import SANDBOX_TIMEOUT
from tests.policies.policies_support import BEHAVIOUR_POLICY, ECHO_POLICY, policy_archive
from tests.support.procs import ManagedProcess, free_port, port_open, python_argv, wait_until


@pytest.fixture
def web(child_env, tmp_path):
    port = free_port()
    server = ManagedProcess(
        python_argv(
            "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "aios_site.asgi:application"
        ),
        env=child_env,
        log_path=tmp_path / "daphne.log",
    )
    try:
        wait_until(lambda: port_open(port), 60, "daphne to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _client(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}, timeout=30.0)


def _upload(client: httpx.Client, name: str, source: str) -> httpx.Response:
    return client.post(
        "/api/v1/policies/",
        data={"name": name, "version": "1.0", "release_tag": "e2e"},
        files={"code": ("policy.tar.gz", policy_archive(source), "application/gzip")},
    )


def test_web_server_keeps_answering_while_a_policy_loops(web, user):
    token = Token.objects.get_or_create(user=user)[0].key
    client = _client(web, token)
    assert _upload(client, "loopy", BEHAVIOUR_POLICY).status_code == 201
    assert _upload(client, "echo", ECHO_POLICY).status_code == 201
    # Warm the server's sandbox pool so timings below measure requests, not worker start-up.
    warm = client.post("/api/v1/policies/echo:1.0-e2e/execute/", json={"input_data": {}})
    assert warm.status_code == 200, warm.text

    outcome: dict = {}

    def loop() -> None:
        with _client(web, token) as other:
            outcome["response"] = other.post(
                "/api/v1/policies/loopy:1.0-e2e/execute/", json={"input_data": {"op": "loop"}}
            )

    thread = threading.Thread(target=loop)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert client.get("/api/health/").status_code == 200
    assert client.get("/api/v1/policies/?name=echo").json()["count"] == 1
    echoed = client.post("/api/v1/policies/echo:1.0-e2e/execute/", json={"input_data": {"n": 7}})
    assert echoed.json()["result"]["input"] == {"n": 7}
    assert time.monotonic() - started < SANDBOX_TIMEOUT
    thread.join(30)
    looped = outcome["response"]
    assert looped.status_code == 422
    assert looped.json()["error"]["code"] == "timeout"
    # ... and the looping policy's worker was replaced: it answers normally again.
    again = client.post(
        "/api/v1/policies/loopy:1.0-e2e/execute/", json={"input_data": {"op": "ok"}}
    )
    assert again.json() == {"result": {"ok": True}}


def test_the_runtime_http_resolver_reads_records_and_archives_from_the_api(web, user, tmp_path):
    from block_sdk.policy_runtime.cache import PolicyCache
    from block_sdk.policy_runtime.evaluator import HttpPolicyResolver, LocalPolicyEvaluator
    from block_sdk.policy_runtime.loader import PolicyLoader

    token = Token.objects.get_or_create(user=user)[0].key
    with _client(web, token) as client:
        created = _upload(client, "remote-read", ECHO_POLICY).json()
    cache = PolicyCache(tmp_path / "data-plane-cache")
    resolver = HttpPolicyResolver(web, cache=cache)
    record = resolver.resolve("remote-read:1.0-e2e")
    assert record.sha256 == created["sha256"] and isinstance(record.archive, bytes)
    evaluator = LocalPolicyEvaluator(
        "remote-read:1.0-e2e", mode="local", resolver=resolver, loader=PolicyLoader(cache)
    )
    assert evaluator.execute_policy_rule({"k": 1})["input"] == {"k": 1}


@pytest.mark.django_db
def test_evaluators_built_without_a_resolver_read_this_registry(api):
    from block_sdk.policy_runtime.evaluator import LocalPolicyEvaluator
    from tests.policies.policies_support import upload

    assert upload(api, "default-resolver", ECHO_POLICY).status_code == 201
    evaluator = LocalPolicyEvaluator("default-resolver:1.0-test", mode="local")
    assert evaluator.execute_policy_rule({"via": "default"})["input"] == {"via": "default"}
