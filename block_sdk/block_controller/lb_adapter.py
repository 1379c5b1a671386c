"""A registry ``loadBalancer`` policy inside the executor.

The executor loads load balancers by ``module:Class``; a block whose ``loadBalancer`` rule names
a policy from the registry gets ``lb_policy =
"block_sdk.block_controller.lb_adapter:RegistryLoadBalancer"`` with ``lb_settings =
{"policy_rule_uri", "api_url", "settings"}``. The policy is fetched once at executor start
(archive verified by its sha256) and then evaluated in-process on every request with the AIOS
input ``{"instances": [ids], "packet": {"session_id", "seq_no"}, "session_id",
"queue_lengths"}``; it answers an instance id or ``{"instance_id": ...}``.
"""

from __future__ import annotations

from typing import Any

from block_sdk.executor.lb_policies import NoInstanceAvailable


class RegistryLoadBalancer:
    def __init__(self, rule_id: str, settings: Any, parameters: Any) -> None:
        from block_sdk.policy_runtime import HttpPolicyResolver, LocalPolicyEvaluator

        settings = dict(settings or {})
        uri = settings.get("policy_rule_uri")
        api_url = settings.get("api_url")
        if not isinstance(uri, str) or not isinstance(api_url, str):
            raise ValueError("RegistryLoadBalancer needs settings.policy_rule_uri and api_url")
        self.rule_id = uri
        self.parameters = dict(parameters or {})
        # Resolved here, at executor start, so the request path never waits on the network.
        self.evaluator = LocalPolicyEvaluator(
            uri,
            parameters=self.parameters,
            settings=dict(settings.get("settings") or {}),
            mode="local",
            resolver=HttpPolicyResolver(api_url, token="", timeout=10.0),
        )

    def eval(self, parameters: Any, input_data: dict[str, Any], context: dict[str, Any]) -> Any:
        instances = list(context.get("instances") or [])
        if not instances:
            raise NoInstanceAvailable("no live instance")
        session_id = input_data.get("session_id") or ""
        return self.evaluator.execute_policy_rule(
            {
                "instances": instances,
                "session_id": session_id,
                "packet": {"session_id": session_id, "seq_no": input_data.get("seq_no", 0)},
                "queue_lengths": dict(context.get("queue_lengths") or {}),
            }
        )

    def management(self, action: str, data: Any) -> Any:
        return self.evaluator.execute_mgmt_command(action, data)
