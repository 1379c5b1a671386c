"""The registry-facing contract of the built-in load balancers, over the executor's classes.

The executor evaluates ``block_sdk.executor.lb_policies`` in-process with a live ``context``
(instance list, in-flight counts, Redis queue lengths). A policy *record* is called with JSON
only, so this adapter reads the same facts from ``input_data`` and answers in the AIOS
``loadBalancer`` shape:

input_data:  ``{"instances": [{"instance_id", "queue_length"?, "healthy"?}, ...] | [ids],
             "session_id"?: str}`` (AIOS's ``{"instances": [ids], "packet": {"session_id"}}``
             works too). Instances with ``healthy: false`` are never chosen.
returns:     ``{"instance_id": str}``; a session keeps its instance while that instance stays
             healthy (sticky for ``sticky_ttl_s``, default 600 s).
parameters:  ``session_stickiness`` [true], ``sticky_ttl_s`` [600], ``max_sessions`` [100000].

Management: ``health_check`` → ``{"instances": <ids of the last call>, "status": "healthy"}``;
``get_current_mapping`` → ``{"mapping": {session_id: instance_id}}``; ``get_sessions``,
``clear_sessions``, ``get_parameters`` as in the executor.
"""

from __future__ import annotations

from typing import Any


def parse_instances(input_data: Any) -> tuple[list[str], dict[str, int], str | None]:
    """``(healthy ids in order, {id: queue length}, session id)`` from a JSON input."""
    if not isinstance(input_data, dict):
        raise ValueError("input_data must be an object with 'instances'")
    raw = input_data.get("instances")
    if not isinstance(raw, list):
        raise ValueError("input_data.instances must be a list")
    ids: list[str] = []
    queues: dict[str, int] = {}
    for item in raw:
        if isinstance(item, str):
            ids.append(item)
            continue
        if not isinstance(item, dict) or not item.get("instance_id"):
            raise ValueError(f"an instance is an id or {{'instance_id', ...}}, got {item!r}")
        if item.get("healthy", True) is False:
            continue
        iid = str(item["instance_id"])
        ids.append(iid)
        queues[iid] = int(item.get("queue_length") or 0)
    if not ids:
        raise ValueError("no healthy instance to choose from")
    session_id = input_data.get("session_id")
    packet = input_data.get("packet")
    if session_id is None and isinstance(packet, dict):
        session_id = packet.get("session_id")
    return ids, queues, str(session_id) if session_id not in (None, "") else None


class RegistryLoadBalancerMixin:
    """Turns a JSON ``input_data`` into the executor's context; put it before the base class."""

    def eval(self, parameters: Any, input_data: Any, context: Any) -> dict[str, str]:
        ids, queues, session_id = parse_instances(input_data)
        self.last_instances = ids
        live = {"instances": ids, "alive": frozenset(ids), "inflight": {}, "queue_lengths": queues}
        chosen = super().eval(parameters, {"session_id": session_id}, live)  # type: ignore[misc]
        return {"instance_id": chosen}

    def management(self, action: str, data: Any) -> Any:
        if action == "health_check":
            return {"instances": list(getattr(self, "last_instances", [])), "status": "healthy"}
        if action == "get_current_mapping":
            return {"mapping": self.sessions.snapshot()}  # type: ignore[attr-defined]
        try:
            return super().management(action, data)  # type: ignore[misc]
        except KeyError:
            raise ValueError(
                f"unknown management action {action!r}; known: health_check, "
                "get_current_mapping, get_sessions, clear_sessions, get_parameters"
            ) from None
