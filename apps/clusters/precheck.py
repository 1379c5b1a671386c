"""Pre-check policies: governance hooks that allow, deny (with a reason) or rewrite an action.

A policy map (action -> policy rule URI) exists per network (``GatewayConfig``) and per
cluster (``config.actionsPolicyMap``). A missing or empty entry skips the check. The policy
receives the reference input of the action (e.g. ``{"cluster_data": ...}`` for
``add_cluster``) plus ``action``, ``user`` and the same input under ``input_data`` (so both
AIOS-style policies and the built-in allow-list work), and returns
``{"allowed": bool, "input_data": <possibly modified input>, "reason"?: str}``.
"""

from __future__ import annotations

import logging
from typing import Any

from apps.clusters import policy_calls
from apps.core.errors import Forbidden

log = logging.getLogger("aios.clusters.precheck")

_ENVELOPE_KEYS = ("action", "user", "input_data")


class PreCheckDenied(Forbidden):
    code = "precheck_denied"


def user_info(user: Any) -> dict[str, Any] | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return {"id": user.pk, "username": user.get_username(), "is_staff": bool(user.is_staff)}


def run_precheck(
    action: str,
    input_data: dict[str, Any],
    *,
    policy_map: dict[str, str],
    scope: str,
    user: Any = None,
    execution_mode: str = "local",
    executor_id: str = "",
) -> dict[str, Any]:
    """Run the ``action`` pre-check of one scope; returns the (possibly rewritten) input.

    Raises :class:`PreCheckDenied` (403) with the policy's reason when it refuses.
    """
    uri = policy_map.get(action) or ""
    if not uri:
        return input_data
    payload = {**input_data, "action": action, "user": user_info(user), "input_data": input_data}
    result = policy_calls.evaluate(
        uri, payload, execution_mode=execution_mode, executor_id=executor_id
    )
    if not isinstance(result, dict) or not isinstance(result.get("allowed"), bool):
        raise policy_calls.PolicyCallFailed(
            f"pre-check policy {uri} for {action!r} returned {type(result).__name__}; "
            'expected {"allowed": bool, "input_data": ...}',
            code="bad_precheck_output",
        )
    modified = result.get("input_data")
    if not result["allowed"]:
        reason = result.get("reason") or (modified if isinstance(modified, str) else "")
        reason = str(reason or "denied by policy")
        log.info("event=precheck_denied scope=%s action=%s policy=%s", scope, action, uri)
        raise PreCheckDenied(
            f"{scope} pre-check '{action}' denied: {reason}",
            details=[{"action": action, "scope": scope, "policy": uri, "reason": reason}],
        )
    if not isinstance(modified, dict):
        return input_data
    if modified.get("action") == action and "input_data" in modified:
        # The policy echoed the whole payload: keep the action's own keys only.
        modified = {k: v for k, v in modified.items() if k not in _ENVELOPE_KEYS}
    return {**input_data, **modified}
