"""Decisions of the built-in policies, and the built-ins as seeded registry records."""

from __future__ import annotations

import importlib.util
from collections import Counter

import pytest

from block_sdk.builtin_policies import builtin_policy_folders, builtin_policy_uri

EXPECTED = {
    "precheck_allow_all",
    "precheck_allow_list",
    "autoscaler_queue_latency",
    "health_replace_after_n",
    "quota_session_global",
    "quality_sampler",
    "lb_round_robin",
    "lb_least_queue",
}


def load(name: str, parameters: dict | None = None, settings: dict | None = None):
    """The built-in's AIOSv1PolicyRule, instantiated as the runtime would."""
    path = builtin_policy_folders()[name] / "code" / "function.py"
    spec = importlib.util.spec_from_file_location(f"builtin_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.AIOSv1PolicyRule(builtin_policy_uri(name), settings or {}, parameters or {})


def run(policy, input_data, parameters=None):
    return policy.eval(parameters if parameters is not None else {}, input_data, {})


def test_every_required_builtin_has_a_folder():
    assert set(builtin_policy_folders()) >= EXPECTED


# -- pre-checks --------------------------------------------------------------------------------


def test_allow_all_allows_and_passes_the_input_through():
    policy = load("precheck_allow_all")
    out = run(policy, {"action": "add_node", "input_data": {"node": "n1"}, "user": "bob"})
    assert out == {"allowed": True, "input_data": {"node": "n1"}}


def test_allow_list_allows_listed_users_per_action():
    params = {"allowed": {"add_node": ["alice"], "remove_node": True}}
    policy = load("precheck_allow_list", params)
    ok = run(policy, {"action": "add_node", "input_data": {"n": 1}, "user": "alice"}, params)
    assert ok["allowed"] is True and ok["input_data"] == {"n": 1}
    denied = run(policy, {"action": "add_node", "input_data": {}, "user": "bob"}, params)
    assert denied["allowed"] is False and "bob" in denied["reason"]
    anyone = run(policy, {"action": "remove_node", "user": None}, params)
    assert anyone["allowed"] is True


def test_allow_list_refuses_unlisted_actions_unless_a_default_rule_exists():
    params = {"allowed": {"add_node": ["alice"]}}
    policy = load("precheck_allow_list", params)
    out = run(policy, {"action": "add_cluster", "user": "alice"}, params)
    assert out["allowed"] is False and "not in the allow-list" in out["reason"]
    with_default = {"allowed": {"*": ["alice"]}}
    assert run(policy, {"action": "add_cluster", "user": {"username": "alice"}}, with_default)[
        "allowed"
    ]


def test_allow_list_management_replaces_rules_of_the_instance():
    params = {"allowed": {"add_node": []}}
    policy = load("precheck_allow_list", params)
    assert run(policy, {"action": "add_node", "user": "carol"}, params)["allowed"] is False
    policy.management("update_allowed", {"allowed": {"add_node": ["carol"]}})
    assert run(policy, {"action": "add_node", "user": "carol"}, params)["allowed"] is True


# -- autoscaler --------------------------------------------------------------------------------

SCALER = {
    "minInstances": 1,
    "maxInstances": 4,
    "target_queue_per_instance": 10,
    "target_latency_ms": 200,
    "scale_up_cooldown": 60,
    "scale_down_cooldown": 120,
}


def scale(input_data, **params):
    policy = load("autoscaler_queue_latency", {**SCALER, **params})
    return run(policy, {"now": 10_000.0, **input_data}, {**SCALER, **params})


def test_autoscaler_scales_up_for_queue_length():
    out = scale({"current_instances": 1, "queue_lengths": [25], "last_scale_time": None})
    assert out["action"] == "scale_up" and out["instances"] == 3


def test_autoscaler_scales_up_for_latency_even_with_short_queues():
    out = scale({"current_instances": 2, "queue_lengths": [1, 1], "latency_p95_ms": 500})
    assert out == {**out, "action": "scale_up", "instances": 3}


def test_scale_up_never_exceeds_max_instances():
    out = scale({"current_instances": 3, "queue_lengths": {"a": 500, "b": 500, "c": 500}})
    assert out["action"] == "scale_up" and out["instances"] == 4
    at_max = scale({"current_instances": 4, "queue_lengths": [500] * 4, "latency_p95_ms": 900})
    assert at_max["action"] == "none" and at_max["instances"] == 4


def test_scale_down_never_goes_below_min_instances():
    out = scale({"current_instances": 2, "queue_lengths": [0, 0], "latency_p95_ms": 10})
    assert out["action"] == "scale_down" and out["instances"] == 1
    at_min = scale({"current_instances": 1, "queue_lengths": [0], "latency_p95_ms": 10})
    assert at_min["action"] == "none" and at_min["instances"] == 1


def test_autoscaler_honours_cooldowns():
    busy = {"current_instances": 1, "queue_lengths": [50]}
    assert scale({**busy, "last_scale_time": 10_000 - 30})["action"] == "none"
    assert scale({**busy, "last_scale_time": 10_000 - 61})["action"] == "scale_up"
    idle = {"current_instances": 3, "queue_lengths": [0, 0, 0], "latency_p95_ms": 5}
    assert scale({**idle, "last_scale_time": 10_000 - 100})["action"] == "none"
    assert scale({**idle, "last_scale_time": 10_000 - 121})["action"] == "scale_down"


def test_autoscaler_corrects_out_of_bounds_counts_at_once():
    assert scale({"current_instances": 0, "last_scale_time": 10_000})["instances"] == 1
    over = scale({"current_instances": 9, "last_scale_time": 10_000})
    assert over == {**over, "action": "scale_down", "instances": 4}


def test_autoscaler_rejects_bad_input():
    with pytest.raises(ValueError):
        scale({"current_instances": "two"})


# -- health ------------------------------------------------------------------------------------


def test_health_replaces_an_instance_after_n_consecutive_failures():
    policy = load("health_replace_after_n", {"unhealthy_threshold": 3})
    params = {"unhealthy_threshold": 3}
    check = {"health_check_data": {"i1": False, "i2": True}}
    assert run(policy, check, params)["replace"] == []
    assert run(policy, check, params)["replace"] == []
    third = run(policy, check, params)
    assert third["replace"] == ["i1"] and third["failures"] == {"i1": 0, "i2": 0}
    assert run(policy, check, params)["replace"] == []  # counting starts again


def test_health_resets_the_count_on_a_healthy_check():
    policy = load("health_replace_after_n")
    params = {"unhealthy_threshold": 2}
    run(policy, {"health_check_data": {"i1": False}}, params)
    run(policy, {"health_check_data": {"i1": True}}, params)
    assert run(policy, {"health_check_data": {"i1": False}}, params)["replace"] == []
    assert policy.management("get_state", {})["failures"] == {"i1": 1}


def test_health_counts_missing_results_as_failures():
    policy = load("health_replace_after_n")
    params = {"unhealthy_threshold": 1}
    out = run(policy, {"health_check_data": {}, "instances": ["i9"]}, params)
    assert out["replace"] == ["i9"]


# -- quota -------------------------------------------------------------------------------------


def test_quota_limits_each_session_and_the_total_within_a_window():
    policy = load("quota_session_global")
    params = {"requests_per_session": 2, "requests_total": 3, "window_s": 60}
    results = [
        run(policy, {"session_id": sid, "now": 120.0}, params)["allowed"]
        for sid in ("s1", "s1", "s1", "s2", "s3")
    ]
    assert results == [True, True, False, True, False]
    reason = run(policy, {"session_id": "s4", "now": 121.0}, params)["reason"]
    assert "global" in reason
    assert run(policy, {"session_id": "s1", "now": 180.0}, params)["allowed"] is True  # new window


def test_quota_uses_counts_the_caller_keeps_in_redis():
    policy = load("quota_session_global")
    params = {"requests_per_session": 5, "requests_total": 100}
    assert run(policy, {"session_id": "s", "session_count": 5, "global_count": 50}, params)[
        "allowed"
    ]
    out = run(policy, {"session_id": "s", "quota": 6}, params)
    assert out["allowed"] is False and out["session_count"] == 6


# -- quality sampler ---------------------------------------------------------------------------


def test_quality_sampler_is_deterministic_and_close_to_the_rate():
    policy = load("quality_sampler")
    params = {"sample_rate": 0.2}
    decisions = [
        run(policy, {"session_id": f"s{i % 50}", "seq_no": i}, params)["record"]
        for i in range(5000)
    ]
    rate = sum(decisions) / len(decisions)
    assert 0.18 < rate < 0.22
    again = [
        run(policy, {"session_id": f"s{i % 50}", "seq_no": i}, params)["record"] for i in range(200)
    ]
    assert again == decisions[:200]


def test_quality_sampler_reads_the_aios_request_response_shape():
    policy = load("quality_sampler")
    pair = {"request": {"session_id": "abc", "seq_no": 7}, "response": {"data": "{}"}}
    out = run(policy, {"vdag_info": {}, "input_data": pair}, {"sample_rate": 1.0})
    assert out == {"record": True, "pair": pair}
    assert run(policy, {"input_data": pair}, {"sample_rate": 0.0}) == {"record": False}


# -- load balancers ----------------------------------------------------------------------------

INSTANCES = [
    {"instance_id": "a", "queue_length": 5, "healthy": True},
    {"instance_id": "b", "queue_length": 1, "healthy": True},
    {"instance_id": "c", "queue_length": 0, "healthy": False},
]


def test_round_robin_rotates_over_healthy_instances():
    policy = load("lb_round_robin")
    chosen = [run(policy, {"instances": INSTANCES})["instance_id"] for _ in range(6)]
    assert Counter(chosen) == {"a": 3, "b": 3}


def test_least_queue_picks_the_shortest_healthy_queue():
    policy = load("lb_least_queue")
    assert run(policy, {"instances": INSTANCES})["instance_id"] == "b"


@pytest.mark.parametrize("name", ["lb_round_robin", "lb_least_queue"])
def test_load_balancers_keep_sessions_sticky_while_healthy(name):
    policy = load(name)
    first = run(policy, {"instances": INSTANCES, "session_id": "sess-1"})["instance_id"]
    for _ in range(5):
        assert run(policy, {"instances": INSTANCES, "session_id": "sess-1"})["instance_id"] == first
    moved = [dict(i, healthy=i["instance_id"] != first) for i in INSTANCES]
    other = run(policy, {"instances": moved, "session_id": "sess-1"})["instance_id"]
    assert other != first
    mapping = policy.management("get_current_mapping", {})["mapping"]
    assert mapping == {"sess-1": other}


def test_load_balancer_without_a_healthy_instance_says_so():
    policy = load("lb_round_robin")
    with pytest.raises(ValueError, match="no healthy instance"):
        run(policy, {"instances": [{"instance_id": "x", "healthy": False}]})


# -- as registry records -------------------------------------------------------------------------


def test_seeding_is_idempotent(builtins_seeded):
    from apps.policies.builtins import seed_builtin_policies
    from apps.policies.models import PolicyRule

    again = seed_builtin_policies()
    assert {r.action for r in again} == {"unchanged"}
    uris = set(PolicyRule.objects.filter(builtin=True).values_list("policy_rule_uri", flat=True))
    assert {builtin_policy_uri(n) for n in EXPECTED} <= uris


def test_seeding_updates_a_record_whose_code_changed(builtins_seeded):
    from apps.policies.builtins import seed_builtin_policies
    from apps.policies.models import PolicyRule

    uri = builtin_policy_uri("precheck_allow_all")
    PolicyRule.objects.filter(policy_rule_uri=uri).update(code_sha256="0" * 64)
    results = {r.uri: r.action for r in seed_builtin_policies()}
    assert results[uri] == "updated"
    assert PolicyRule.objects.get(policy_rule_uri=uri).code_sha256 != "0" * 64


@pytest.mark.parametrize("mode", ["sandbox", "local"])
def test_seeded_builtins_run_through_evaluate_policy(builtins_seeded, mode):
    from apps.policies import services

    out = services.evaluate_policy(
        builtin_policy_uri("lb_least_queue"), {"instances": INSTANCES}, mode=mode
    )
    assert out == {"instance_id": "b"}
    check = services.evaluate_policy(
        builtin_policy_uri("precheck_allow_list"),
        {"action": "add_node", "input_data": {"x": 1}, "user": "dave"},
        parameters={"allowed": {"add_node": ["dave"]}},
        mode=mode,
    )
    assert check["allowed"] is True


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_record_fields_are_valid(name):
    import json

    from apps.policies.schemas import check_management_commands_schema, check_schema, first_error

    path = builtin_policy_folders()[name] / "policy.json"
    meta = json.loads(path.read_text())
    check_schema(meta.get("policy_parameters_schema", {}), "policy_parameters_schema")
    assert (
        first_error(meta.get("policy_parameters_schema"), meta.get("policy_parameters", {})) is None
    )
    check_management_commands_schema(meta.get("management_commands_schema", []))
    policy = load(name, meta.get("policy_parameters"))
    for command in meta.get("management_commands_schema", []):
        if command["name"] in ("get_state", "health_check", "get_current_mapping"):
            assert isinstance(policy.management(command["name"], {}), dict)
