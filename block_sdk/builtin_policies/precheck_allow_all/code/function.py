"""Pre-check that allows every action (the default gateway / cluster-controller pre-check).

Hook: gateway and cluster-controller pre-checks (``add_cluster``, ``add_node``, ``add_block``…).

input_data:  ``{"action": str, "input_data": {...}, "user": ...}`` (any other keys ignored).
             A bare document without ``input_data`` is treated as the action's input itself.
parameters:  none.
returns:     ``{"allowed": true, "input_data": <the action's input, unchanged>}``.
"""

from __future__ import annotations

from typing import Any


class AIOSv1PolicyRule:
    def __init__(self, rule_id: str, settings: Any, parameters: Any) -> None:
        self.rule_id = rule_id

    def eval(self, parameters: Any, input_data: Any, context: Any) -> dict[str, Any]:
        if isinstance(input_data, dict) and "input_data" in input_data:
            passed = input_data["input_data"]
        else:
            passed = input_data
        return {"allowed": True, "input_data": passed}

    def management(self, action: str, data: Any) -> dict[str, Any]:
        if action == "get_state":
            return {"policy": "precheck_allow_all"}
        raise ValueError(f"unknown management action {action!r}; known: get_state")
