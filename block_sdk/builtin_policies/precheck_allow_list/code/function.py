"""Pre-check that allows an action only for the users listed for it.

Hook: gateway and cluster-controller pre-checks (``add_cluster``, ``add_node``, ``add_block``…).

input_data:  ``{"action": str, "input_data": {...}, "user": <username> | {"username": str,
             "is_staff"?: bool}}``.
parameters:  ``{"allowed": {<action> | "*": <rule>}, "allow_staff"?: bool (default false)}``
             where ``<rule>`` is ``true`` or ``"*"`` (anyone, anonymous included), ``false`` or
             ``[]`` (nobody), or a list of usernames. The ``"*"`` key is the rule for actions
             without their own key; with neither, the action is refused.
returns:     ``{"allowed": bool, "reason": str, "input_data": <the action's input, unchanged>}``.

Management: ``get_state`` → the rules; ``update_allowed`` ``{"allowed": {...}}`` replaces the
rules of this instance (the registry record keeps its own defaults).
"""

from __future__ import annotations

from typing import Any

WILDCARD = "*"


def _username(user: Any) -> str | None:
    if isinstance(user, str):
        return user or None
    if isinstance(user, dict):
        name = user.get("username") or user.get("user") or user.get("id")
        return str(name) if name not in (None, "") else None
    return None


class AIOSv1PolicyRule:
    def __init__(self, rule_id: str, settings: Any, parameters: Any) -> None:
        self.rule_id = rule_id
        params = parameters if isinstance(parameters, dict) else {}
        self.allowed: dict[str, Any] = dict(params.get("allowed") or {})
        # After update_allowed, this instance's rules win over the parameters of each call.
        self.updated = False

    def _rules(self, parameters: Any) -> tuple[dict[str, Any], bool]:
        params = parameters if isinstance(parameters, dict) else {}
        allowed = params.get("allowed")
        if self.updated or not isinstance(allowed, dict):
            return self.allowed, bool(params.get("allow_staff", False))
        return dict(allowed), bool(params.get("allow_staff", False))

    def eval(self, parameters: Any, input_data: Any, context: Any) -> dict[str, Any]:
        if not isinstance(input_data, dict):
            raise ValueError("input_data must be an object with 'action' and 'user'")
        action = str(input_data.get("action") or "")
        passed = input_data.get("input_data")
        user = input_data.get("user")
        username = _username(user)
        rules, allow_staff = self._rules(parameters)

        if allow_staff and isinstance(user, dict) and user.get("is_staff") is True:
            return {"allowed": True, "reason": "staff user", "input_data": passed}
        if action in rules:
            rule, scope = rules[action], f"action {action!r}"
        elif WILDCARD in rules:
            rule, scope = rules[WILDCARD], "the default rule"
        else:
            return {
                "allowed": False,
                "reason": f"action {action!r} is not in the allow-list",
                "input_data": passed,
            }
        if rule is True or rule == WILDCARD:
            return {"allowed": True, "reason": f"{scope} allows everyone", "input_data": passed}
        if isinstance(rule, list) and username is not None and username in rule:
            return {
                "allowed": True,
                "reason": f"user {username!r} is allowed by {scope}",
                "input_data": passed,
            }
        who = f"user {username!r}" if username else "an anonymous user"
        return {
            "allowed": False,
            "reason": f"{who} is not allowed to {action or 'do this'} ({scope})",
            "input_data": passed,
        }

    def management(self, action: str, data: Any) -> dict[str, Any]:
        if action == "get_state":
            return {"allowed": self.allowed}
        if action == "update_allowed":
            if not isinstance(data, dict) or not isinstance(data.get("allowed"), dict):
                raise ValueError("update_allowed needs {'allowed': {action: rule}}")
            self.allowed = dict(data["allowed"])
            self.updated = True
            return {"allowed": self.allowed}
        raise ValueError(f"unknown management action {action!r}; known: get_state, update_allowed")
