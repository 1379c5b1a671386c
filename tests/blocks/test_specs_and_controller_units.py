"""Pure rules: component inheritance and policy merge of a block spec, the load-balancer
name of a loadBalancer rule, the autoscaler's reading of policy answers (always within
min/max), and the block controller's configuration."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from apps.blocks import specs
from apps.core.errors import ValidationFailed
from block_sdk.block_controller.autoscaler import normalize
from block_sdk.block_controller.config import ControllerConfigError, load_config
from block_sdk.block_controller.policies import DEFAULT_HEALTH, PolicyHandle


def component(**changes):
    base = {
        "name": "det",
        "component_uri": "model.det:1.0-stable",
        "container_registry_info": {
            "componentMode": "aios",
            "containerImage": "img:1",
            "containerImageMetadata": {"entrypoint": "pkg.mod:Det"},
        },
        "component_init_data": {"weights": "w1", "device": "cpu"},
        "component_init_settings": {"batch_size": 4},
        "component_init_parameters": {"threshold": 0.5, "nms": 0.4},
        "component_metadata": {"usecase": "detection"},
        "component_input_protocol": {"image": {"type": "string"}},
        "component_output_protocol": {"boxes": {"type": "array"}},
        "policies": {
            "loadBalancer": {"policyRuleURI": "aios.lb_round_robin:1.0-stable"},
            "autoscaler": {
                "policyRuleURI": "aios.autoscaler_queue_latency:1.0-stable",
                "parameters": {"target_queue_per_instance": 2},
            },
        },
        "tags": ["vision"],
    }
    base.update(changes)
    return SimpleNamespace(**base)


def test_block_inherits_the_components_defaults_and_overrides_key_by_key():
    merged = specs.build(
        {
            "blockComponentURI": "model.det:1.0-stable",
            "blockId": "det-1",
            "minInstances": 1,
            "maxInstances": 3,
            "blockInitData": {"device": "cuda"},
            "parameters": {"threshold": 0.7},
            "tags": ["edge", "vision"],
        },
        component(),
    )
    assert merged.block_init_data == {"weights": "w1", "device": "cuda"}
    assert merged.init_settings == {"batch_size": 4}
    assert merged.parameters == {"threshold": 0.7, "nms": 0.4}
    assert merged.block_metadata == {"usecase": "detection"}
    assert merged.input_protocol == {"image": {"type": "string"}}
    assert merged.tags == ["vision", "edge"]
    assert merged.entrypoint == "pkg.mod:Det" and merged.image == "img:1"


def test_policies_merge_by_name_block_entries_replace_and_add():
    merged = specs.build(
        {
            "blockComponentURI": "model.det:1.0-stable",
            "minInstances": 1,
            "maxInstances": 2,
            "policyRulesSpec": [
                {
                    "values": {
                        "name": "autoscaler",
                        "policyRuleURI": "policy.autoscaler.gpu:v1-beta",
                        "settings": {"scale_up_cooldown": 60},
                    }
                },
                {"values": {"name": "stabilityChecker", "policyRuleURI": "aios.health:1.0-x"}},
            ],
        },
        component(),
    )
    assert merged.block_id.startswith("det-")
    assert merged.policies["loadBalancer"] == {
        "policyRuleURI": "aios.lb_round_robin:1.0-stable",
        "parameters": {},
        "settings": {},
    }
    assert merged.policies["autoscaler"] == {
        "policyRuleURI": "policy.autoscaler.gpu:v1-beta",
        "parameters": {},
        "settings": {"scale_up_cooldown": 60},
    }
    assert merged.policies["stabilityChecker"]["policyRuleURI"] == "aios.health:1.0-x"
    names = [rule["values"]["name"] for rule in merged.policy_rules_spec()]
    assert names == ["loadBalancer", "autoscaler", "stabilityChecker"]


def test_without_policy_rules_spec_the_components_policies_apply_unchanged():
    merged = specs.build(
        {"blockComponentURI": "model.det:1.0-stable", "minInstances": 0, "maxInstances": 1},
        component(policies=[{"values": {"name": "loadBalancer", "policyRuleURI": "x:1-a"}}]),
    )
    assert merged.policies == {
        "loadBalancer": {"policyRuleURI": "x:1-a", "parameters": {}, "settings": {}}
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"minInstances": 3, "maxInstances": 2}, "maxInstances (2) < minInstances (3)"),
        ({"minInstances": 0, "maxInstances": 0}, "must be at least 1"),
        ({"blockId": "Not_A_Slug"}, "invalid blockId"),
        ({"policyRulesSpec": [{"values": {"policyRuleURI": "a:1-b"}}]}, "needs a name"),
        (
            {
                "policyRulesSpec": [
                    {"values": {"name": "x", "policyRuleURI": "a:1-b"}},
                    {"values": {"name": "x", "policyRuleURI": "a:1-b"}},
                ]
            },
            "given twice",
        ),
    ],
)
def test_invalid_block_specs_are_refused_with_the_reason(values, message):
    spec = {"blockComponentURI": "model.det:1.0-stable", "minInstances": 1, "maxInstances": 1}
    with pytest.raises(ValidationFailed) as caught:
        specs.build({**spec, **values}, component())
    assert message in json.dumps(caught.value.as_dict())


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        ("aios.lb_round_robin:1.0-stable", "round_robin"),
        ("aios.lb_least_queue:1.0-stable", "least_queue"),
        ("policy.loadBalancer.roundrobin:v0.0.1", "round_robin"),
        ("builtin.load-balancer.round-robin:1.0-stable", "round_robin"),
        ("my.sticky-gpu-balancer:1.0-beta", ""),
    ],
)
def test_load_balancer_names(uri, name):
    assert specs.lb_policy_name({"policyRuleURI": uri}) == name


def test_dry_run_spellings():
    assert specs.is_dry_run({"mode": "dry-run"})
    assert specs.is_dry_run({"mode": "dry_run"})
    assert specs.is_dry_run({}, {"mode": "DRY_RUN"})
    assert not specs.is_dry_run({"mode": "create"})


# -- the autoscaler's reading of policy answers ---------------------------------------------------
@pytest.mark.parametrize(
    ("result", "current", "expected"),
    [
        ({"action": "none", "instances": 2}, 2, None),
        ({"action": "scale_up", "instances": 4}, 2, ("upscale", 4, None)),
        ({"action": "scale_up", "instances": 40}, 2, ("upscale", 5, None)),
        ({"action": "scale_down", "instances": 0}, 3, ("downscale", 1, None)),
        ({"skip": True}, 2, None),
        ({"skip": False, "operation": "upscale", "instances_count": 9}, 2, ("upscale", 5, None)),
        (
            {"skip": False, "operation": "downscale", "instances_list": ["a", "b", "c"]},
            3,
            ("downscale", 1, ["a", "b"]),
        ),
        ({"skip": False, "operation": "downscale", "instances_count": 1}, 1, None),
    ],
)
def test_autoscaler_decisions_never_leave_the_bounds(result, current, expected):
    decision = normalize(result, current, 1, 5)
    if expected is None:
        assert decision is None
    else:
        assert (decision.operation, decision.target, decision.remove) == expected
        assert 1 <= decision.target <= 5


@pytest.mark.parametrize(
    "result",
    [
        [],
        {"action": "scale_up"},
        {"skip": False, "operation": "sideways"},
        {"skip": False, "operation": "upscale", "instances_count": 0},
    ],
)
def test_autoscaler_rejects_unusable_answers(result):
    with pytest.raises(ValueError):
        normalize(result, 2, 1, 5)


# -- the controller's configuration and policies ---------------------------------------------
def test_controller_config_from_environment_and_document():
    config = load_config(
        json.dumps({"min_instances": 1, "max_instances": 3, "health_interval_s": 0.5}),
        env={
            "BLOCK_ID": "b-1",
            "AIOS_CONTROL_PLANE_URL": "http://cp:8000/",
            "REDIS_URL": "redis://r:6379/1",
        },
    )
    assert (config.block_id, config.api_url, config.redis_url) == (
        "b-1",
        "http://cp:8000",
        "redis://r:6379/1",
    )
    assert config.health_interval_s == 0.5
    assert config.to_dict()["token"] == ""


@pytest.mark.parametrize(
    "doc",
    [
        {"unknown": 1},
        {"min_instances": 3, "max_instances": 2},
        {"health_interval_s": 0},
        {"autoscaler": {"parameters": {}}},
        {"mapper_interval_s": "fast"},
    ],
)
def test_controller_config_errors(doc):
    with pytest.raises(ControllerConfigError):
        load_config(json.dumps(doc), env={"BLOCK_ID": "b", "AIOS_CONTROL_PLANE_URL": "http://x"})


def test_builtin_health_policy_runs_in_process_and_keeps_state():
    import asyncio

    handle = PolicyHandle(
        {"policyRuleURI": DEFAULT_HEALTH, "parameters": {"unhealthy_threshold": 2}},
        api_url="http://unused",
        timeout_s=5,
    )
    assert handle.builtin

    async def rounds():
        first = await handle.eval({"health_check_data": {"a": False, "b": True}})
        second = await handle.eval({"health_check_data": {"a": False, "b": True}})
        state = await handle.management("get_state", None)
        return first, second, state

    first, second, state = asyncio.run(rounds())
    assert first["replace"] == [] and second["replace"] == ["a"]
    assert state["failures"] == {"a": 0, "b": 0}
