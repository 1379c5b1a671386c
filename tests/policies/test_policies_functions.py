"""T4: long-lived stateful policy processes with replicas, called round robin."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.policies.conftest import SANDBOX_TIMEOUT
from tests.policies.policies_support import BEHAVIOUR_POLICY, COUNTER_POLICY, upload
from tests.support.procs import wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def functions():
    """Deletes (and so stops) every function a test created, even when it fails."""
    yield
    from apps.policies import services
    from apps.policies.models import PolicyFunction, PolicyGraph

    PolicyGraph.objects.all().delete()
    for function in PolicyFunction.objects.all():
        services.delete_function(function)


def _pids(body: dict) -> list[int]:
    return [r["pid"] for r in body["replica_state"]]


def test_function_keeps_state_per_replica_and_round_robins(api, functions):
    upload(api, "counter", COUNTER_POLICY, policy_parameters={"step": 1})
    created = api.post(
        "/api/v1/policy-functions/",
        {
            "name": "counter-fn",
            "policy_rule_uri": "counter:1.0-test",
            "policy_rule_parameters": {"step": 10},
            "replicas": 2,
            "autoscaling": {"enabled": True, "min_replicas": 1, "max_replicas": 3},
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["status"] == "running" and len(body["replica_state"]) == 2
    assert all(psutil.pid_exists(pid) for pid in _pids(body))

    calls = [
        api.post("/api/v1/policy-functions/counter-fn/call/", {"n": i}, format="json").json()
        for i in range(4)
    ]
    replicas = [c["replica"] for c in calls]
    assert sorted(replicas) == [0, 0, 1, 1] and replicas[0] != replicas[1]
    counts = {}
    for call in calls:
        counts.setdefault(call["replica"], []).append(call["result"]["count"])
    assert counts == {0: [10, 20], 1: [10, 20]}  # state kept between calls, per replica
    assert calls[3]["result"]["input"] == {"n": 3}

    state = api.post(
        "/api/v1/policy-functions/counter-fn/mgmt/", {"action": "get_state"}, format="json"
    ).json()
    assert sorted(r["result"]["count"] for r in state["results"]) == [20, 20]

    pids = _pids(body)
    assert api.delete("/api/v1/policy-functions/counter-fn/").status_code == 204
    wait_until(lambda: not any(psutil.pid_exists(p) for p in pids), 10, "replicas to stop")
    assert api.get("/api/v1/policy-functions/counter-fn/").status_code == 404


def test_a_dead_replica_is_restarted_on_the_next_call(api, functions):
    upload(api, "counter", COUNTER_POLICY)
    body = api.post(
        "/api/v1/policy-functions/",
        {"name": "phoenix", "policy_rule_uri": "counter:1.0-test", "replicas": 1},
        format="json",
    ).json()
    first = api.post("/api/v1/policy-functions/phoenix/call/", {}, format="json").json()
    assert first["result"]["count"] == 1
    os.killpg(body["replica_state"][0]["pid"], signal.SIGKILL)
    wait_until(
        lambda: (
            not psutil.pid_exists(body["replica_state"][0]["pid"])
            or psutil.Process(body["replica_state"][0]["pid"]).status() == psutil.STATUS_ZOMBIE
        ),
        10,
        "the replica to die",
    )
    again = api.post("/api/v1/policy-functions/phoenix/call/", {}, format="json")
    assert again.status_code == 200, again.json()
    assert again.json()["result"]["count"] == 1  # a new process: its state starts afresh
    replica = api.get("/api/v1/policy-functions/phoenix/").json()["replica_state"][0]
    assert replica["restarts"] == 1 and replica["pid"] != body["replica_state"][0]["pid"]

    # Reconciling (endpoint, admin action, periodic Celery task) restarts it without a call.
    os.killpg(replica["pid"], signal.SIGKILL)
    reconciled = api.post("/api/v1/policy-functions/phoenix/reconcile/").json()
    assert reconciled["status"] == "running"
    assert reconciled["replica_state"][0]["restarts"] == 2
    assert psutil.pid_exists(reconciled["replica_state"][0]["pid"])


def test_a_replica_stuck_in_a_call_times_out_and_is_replaced(api, functions):
    upload(api, "behaviour", BEHAVIOUR_POLICY)
    body = api.post(
        "/api/v1/policy-functions/",
        {"name": "stuck", "policy_rule_uri": "behaviour:1.0-test"},
        format="json",
    ).json()
    started = time.monotonic()
    looped = api.post("/api/v1/policy-functions/stuck/call/", {"op": "loop"}, format="json")
    assert looped.status_code == 422 and looped.json()["error"]["code"] == "timeout"
    assert time.monotonic() - started < SANDBOX_TIMEOUT + 5
    answered = api.post("/api/v1/policy-functions/stuck/call/", {"op": "ok"}, format="json")
    assert answered.status_code == 200 and answered.json()["result"] == {"ok": True}
    replica = api.get("/api/v1/policy-functions/stuck/").json()["replica_state"][0]
    assert replica["pid"] != body["replica_state"][0]["pid"]
    wait_until(
        lambda: not psutil.pid_exists(body["replica_state"][0]["pid"]), 10, "the old replica to go"
    )


def test_function_creation_validates_and_fails_cleanly(api, functions):
    from apps.policies.models import PolicyFunction

    upload(api, "counter", COUNTER_POLICY)
    upload(api, "broken", "class AIOSv1PolicyRule(:\n    pass\n")
    broken = api.post(
        "/api/v1/policy-functions/",
        {"name": "broken-fn", "policy_rule_uri": "broken:1.0-test"},
        format="json",
    )
    assert broken.status_code == 422
    assert broken.json()["error"]["code"] == "load_error"
    assert "SyntaxError" in broken.json()["error"]["message"]
    assert not PolicyFunction.objects.filter(name="broken-fn").exists()
    for body, status in [
        ({"name": "Bad_Name", "policy_rule_uri": "counter:1.0-test"}, 400),
        ({"name": "too-many", "policy_rule_uri": "counter:1.0-test", "replicas": 99}, 400),
        ({"name": "no-policy", "policy_rule_uri": "nope:1.0-x"}, 404),
    ]:
        assert api.post("/api/v1/policy-functions/", body, format="json").status_code == status
    ok = {"name": "once", "policy_rule_uri": "counter:1.0-test"}
    assert api.post("/api/v1/policy-functions/", ok, format="json").status_code == 201
    assert api.post("/api/v1/policy-functions/", ok, format="json").status_code == 409
    in_use = api.delete("/api/v1/policies/counter:1.0-test/")
    assert in_use.status_code == 409 and "once" in in_use.json()["error"]["message"]


def test_calling_an_unknown_function_is_404(api):
    assert api.post("/api/v1/policy-functions/ghost/call/", {}, format="json").status_code == 404
