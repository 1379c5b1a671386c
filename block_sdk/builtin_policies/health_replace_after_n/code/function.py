"""Block health policy: replace an instance after N consecutive failed health checks.

Hook: the block health checker (``stabilityChecker``), run periodically.

input_data:  ``{"health_check_data": {instance_id: bool | {"healthy": bool}}}`` (AIOS shape);
             ``instances`` (list of ids) may name instances with no result this round,
             which counts as a failed check.
parameters:  ``{"unhealthy_threshold": N}`` (default 3; AIOS examples use 3).
returns:     ``{"replace": [instance ids], "failures": {instance_id: consecutive failures}}``.

State: consecutive failures per instance live in this policy instance (and in the ``context``
dict the runtime passes back on every call), so it must run somewhere that keeps its
instance between checks: in-process in the health checker, or as a T4 function. A healthy
check resets an instance's count; an instance reported for replacement starts again from
zero (its replacement is a new instance); instances that vanish from the input are forgotten.

Management: ``get_state`` → ``{"failures": {...}}``; ``reset`` → clears all counts.
"""

from __future__ import annotations

from typing import Any

DEFAULT_THRESHOLD = 3
MAX_TRACKED = 10_000


def _healthy(value: Any) -> bool:
    if isinstance(value, dict):
        value = value.get("healthy", value.get("success", False))
    return value is True


class AIOSv1PolicyRule:
    def __init__(self, rule_id: str, settings: Any, parameters: Any) -> None:
        self.rule_id = rule_id
        params = parameters if isinstance(parameters, dict) else {}
        self.threshold = int(params.get("unhealthy_threshold", DEFAULT_THRESHOLD))
        self.failures: dict[str, int] = {}

    def eval(self, parameters: Any, input_data: Any, context: Any) -> dict[str, Any]:
        params = parameters if isinstance(parameters, dict) else {}
        threshold = int(params.get("unhealthy_threshold", self.threshold))
        if threshold < 1:
            raise ValueError("unhealthy_threshold must be at least 1")
        if not isinstance(input_data, dict):
            raise ValueError("input_data must be an object with health_check_data")
        checks = input_data.get("health_check_data") or {}
        if not isinstance(checks, dict):
            raise ValueError("health_check_data must map instance ids to booleans")
        listed = input_data.get("instances") or []
        seen = {str(i): _healthy(v) for i, v in checks.items()}
        for instance_id in listed:
            seen.setdefault(str(instance_id), False)

        replace: list[str] = []
        failures: dict[str, int] = {}
        for instance_id, ok in seen.items():
            count = 0 if ok else self.failures.get(instance_id, 0) + 1
            if count >= threshold:
                replace.append(instance_id)
                count = 0
            failures[instance_id] = count
        # Only instances in this round are kept: the state is bounded by the block's size.
        self.failures = dict(list(failures.items())[:MAX_TRACKED])
        if isinstance(context, dict):
            context["failures"] = dict(self.failures)
        return {"replace": sorted(replace), "failures": failures}

    def management(self, action: str, data: Any) -> dict[str, Any]:
        if action == "get_state":
            return {"failures": dict(self.failures), "unhealthy_threshold": self.threshold}
        if action == "reset":
            cleared = len(self.failures)
            self.failures.clear()
            return {"cleared": cleared}
        raise ValueError(f"unknown management action {action!r}; known: get_state, reset")
