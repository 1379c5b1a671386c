"""Autoscaler driven by queue length and latency, with cooldowns and instance bounds.

Hook: the block ``autoscaler`` (run periodically beside the executor).

input_data:
    ``current_instances`` (int, required)
    ``queue_lengths``     list of ints, or ``{instance_id: int}`` (waiting requests per instance)
    ``latency_p50_ms``, ``latency_p95_ms`` (numbers, optional)
    ``last_scale_time``   epoch seconds of the last scale operation (optional; ``null``: never)
    ``now``               epoch seconds (optional; defaults to the clock; tests pass it)
parameters (AIOS spelling; defaults in brackets):
    ``minInstances`` [1], ``maxInstances`` [10],
    ``target_queue_per_instance`` [4]: waiting requests one instance should carry,
    ``target_latency_ms`` [null]: p95 above it asks for one more instance,
    ``scale_up_cooldown`` [60] and ``scale_down_cooldown`` [120] seconds since the last scale,
    ``scale_down_threshold`` [0.5]: scale down only while the queue per instance and p95 are
    below this fraction of their targets,
    ``max_scale_up_step`` [null: unbounded], ``max_scale_down_step`` [1].
returns:
    ``{"action": "scale_up" | "scale_down" | "none", "instances": N, "reason": str}`` where
    ``N`` is the instance count wanted after the action. ``N`` is never below ``minInstances``
    nor above ``maxInstances``; a count outside the bounds is corrected at once (bounds are
    not decisions, so no cooldown applies); any other change waits for its cooldown.
"""

from __future__ import annotations

import math
import time
from typing import Any

DEFAULTS: dict[str, Any] = {
    "minInstances": 1,
    "maxInstances": 10,
    "target_queue_per_instance": 4,
    "target_latency_ms": None,
    "scale_up_cooldown": 60,
    "scale_down_cooldown": 120,
    "scale_down_threshold": 0.5,
    "max_scale_up_step": None,
    "max_scale_down_step": 1,
}


def _number(value: Any, name: str, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _total_queue(queue_lengths: Any) -> float:
    if queue_lengths is None:
        return 0.0
    values = queue_lengths.values() if isinstance(queue_lengths, dict) else queue_lengths
    if not isinstance(values, list | tuple) and not isinstance(queue_lengths, dict):
        raise ValueError("queue_lengths must be a list of numbers or {instance_id: number}")
    return float(sum(max(0.0, _number(v, "queue length")) for v in values))


class AIOSv1PolicyRule:
    def __init__(self, rule_id: str, settings: Any, parameters: Any) -> None:
        self.rule_id = rule_id
        self.defaults = {**DEFAULTS, **(parameters if isinstance(parameters, dict) else {})}
        self.last_decision: dict[str, Any] | None = None

    def eval(self, parameters: Any, input_data: Any, context: Any) -> dict[str, Any]:
        p = {**self.defaults, **(parameters if isinstance(parameters, dict) else {})}
        if not isinstance(input_data, dict):
            raise ValueError("input_data must be an object with current_instances")
        lo = int(_number(p["minInstances"], "minInstances"))
        hi = int(_number(p["maxInstances"], "maxInstances"))
        if lo < 0 or hi < lo:
            raise ValueError(f"need 0 <= minInstances <= maxInstances, got {lo} and {hi}")
        current = int(_number(input_data.get("current_instances"), "current_instances"))
        now = _number(input_data.get("now", time.time()), "now")
        last = _number(input_data.get("last_scale_time"), "last_scale_time", allow_none=True)
        since_last = math.inf if last is None else now - last

        decision = self._decide(p, input_data, current, lo, hi, since_last)
        self.last_decision = decision
        return decision

    def _decide(
        self, p: dict, data: dict, current: int, lo: int, hi: int, since_last: float
    ) -> dict[str, Any]:
        if current < lo:
            return {"action": "scale_up", "instances": lo, "reason": "below minInstances"}
        if current > hi:
            return {"action": "scale_down", "instances": hi, "reason": "above maxInstances"}

        target_queue = _number(p["target_queue_per_instance"], "target_queue_per_instance")
        if target_queue <= 0:
            raise ValueError("target_queue_per_instance must be > 0")
        target_latency = _number(p["target_latency_ms"], "target_latency_ms", allow_none=True)
        p95 = _number(data.get("latency_p95_ms"), "latency_p95_ms", allow_none=True)
        queue = _total_queue(data.get("queue_lengths"))

        wanted = math.ceil(queue / target_queue) if queue > 0 else 0
        reasons = [f"queue {queue:g} for target {target_queue:g}/instance"]
        latency_high = target_latency is not None and p95 is not None and p95 > target_latency
        if latency_high:
            wanted = max(wanted, current + 1)
            reasons.append(f"p95 {p95:g} ms over target {target_latency:g} ms")

        if wanted > current:
            step = p["max_scale_up_step"]
            if step is not None:
                wanted = min(wanted, current + max(1, int(step)))
            wanted = min(wanted, hi)
            if wanted <= current:
                return self._none(current, "at maxInstances; " + "; ".join(reasons))
            cooldown = _number(p["scale_up_cooldown"], "scale_up_cooldown")
            if since_last < cooldown:
                return self._none(current, f"scale-up cooldown ({since_last:g}s < {cooldown:g}s)")
            return {"action": "scale_up", "instances": wanted, "reason": "; ".join(reasons)}

        threshold = _number(p["scale_down_threshold"], "scale_down_threshold")
        quiet_queue = queue / max(current, 1) < target_queue * threshold
        quiet_latency = target_latency is None or p95 is None or p95 < target_latency * threshold
        if current > lo and quiet_queue and quiet_latency and not latency_high:
            step = max(1, int(p["max_scale_down_step"] or 1))
            wanted = max(lo, max(wanted, current - step))
            if wanted < current:
                cooldown = _number(p["scale_down_cooldown"], "scale_down_cooldown")
                if since_last < cooldown:
                    return self._none(
                        current, f"scale-down cooldown ({since_last:g}s < {cooldown:g}s)"
                    )
                return {"action": "scale_down", "instances": wanted, "reason": "; ".join(reasons)}
        return self._none(current, "within targets; " + "; ".join(reasons))

    @staticmethod
    def _none(current: int, reason: str) -> dict[str, Any]:
        return {"action": "none", "instances": current, "reason": reason}

    def management(self, action: str, data: Any) -> dict[str, Any]:
        if action == "get_state":
            return {"parameters": self.defaults, "last_decision": self.last_decision}
        raise ValueError(f"unknown management action {action!r}; known: get_state")
