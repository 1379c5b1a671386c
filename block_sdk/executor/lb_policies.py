"""Built-in `loadBalancer` policies: round-robin and least-queue, both with session stickiness.

They follow the AIOS policy contract (`AIOSv1PolicyRule`: `__init__(rule_id, settings,
parameters)`, `eval(parameters, input_data, context)`, `management(action, data)`), so they can
be registered as ordinary built-in policy records and a user's own load balancer drops in by
entry point. The executor evaluates them in-process on every request (DESIGN.md section 5:
a block's load balancer is that block's own code), so `eval` is kept allocation-light.

`input_data`: `{"session_id", "seq_no", "block_id"}`.
`context`: `{"block_id", "instances": [live ids, stable order], "alive": set of the same,
"inflight": {id: requests this executor is waiting on}, "queue_lengths": {id: waiting +
processing, from Redis}}`. `eval` returns the chosen instance id (a `{"instance_id": ...}` dict
is accepted from user policies too).
"""

from __future__ import annotations

import importlib
import itertools
import threading
import time
from collections import OrderedDict
from typing import Any


class NoInstanceAvailable(LookupError):
    """The policy was asked to choose among zero live instances."""


class StickySessions:
    """session_id -> instance_id with a sliding TTL and an LRU bound."""

    def __init__(self, ttl_s: float = 600.0, max_sessions: int = 100_000) -> None:
        self.ttl_s = float(ttl_s)
        self.max_sessions = int(max_sessions)
        self._map: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str, alive: set[str] | frozenset[str]) -> str | None:
        now = time.monotonic()
        with self._lock:
            item = self._map.get(session_id)
            if item is None:
                return None
            iid, expires = item
            if expires < now or iid not in alive:
                # Expired, or its instance is gone: the session is re-placed.
                del self._map[session_id]
                return None
            self._map[session_id] = (iid, now + self.ttl_s)
            self._map.move_to_end(session_id)
            return iid

    def put(self, session_id: str, instance_id: str) -> None:
        with self._lock:
            self._map[session_id] = (instance_id, time.monotonic() + self.ttl_s)
            self._map.move_to_end(session_id)
            while len(self._map) > self.max_sessions:
                self._map.popitem(last=False)

    def snapshot(self, limit: int = 1000) -> dict[str, str]:
        with self._lock:
            return {k: v[0] for k, v in itertools.islice(reversed(self._map.items()), limit)}

    def clear(self) -> int:
        with self._lock:
            n = len(self._map)
            self._map.clear()
            return n

    def __len__(self) -> int:
        return len(self._map)


def _truthy(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


class _StickyPolicy:
    """Shared stickiness; subclasses implement `_pick`."""

    name = "base"

    def __init__(self, rule_id: str = "", settings: Any = None, parameters: Any = None) -> None:
        self.rule_id = rule_id or self.name
        self.settings = dict(settings or {})
        self.parameters = dict(parameters or {})
        self.sticky = _truthy(self.parameters.get("session_stickiness"), True)
        self.sessions = StickySessions(
            self.parameters.get("sticky_ttl_s", 600.0),
            self.parameters.get("max_sessions", 100_000),
        )

    def eval(self, parameters: Any, input_data: dict[str, Any], context: dict[str, Any]) -> str:
        instances = context["instances"]
        if not instances:
            raise NoInstanceAvailable("no live instance")
        sid = input_data.get("session_id") if self.sticky else None
        if sid:
            iid = self.sessions.get(sid, context["alive"])
            if iid is not None:
                return iid
        iid = self._pick(instances, input_data, context)
        if sid:
            self.sessions.put(sid, iid)
        return iid

    def _pick(self, instances: list[str], input_data: dict, context: dict) -> str:
        raise NotImplementedError

    def management(self, action: str, data: Any) -> Any:
        if action == "get_sessions":
            limit = int((data or {}).get("limit", 1000)) if isinstance(data, dict) else 1000
            return {"sessions": self.sessions.snapshot(limit), "count": len(self.sessions)}
        if action == "clear_sessions":
            return {"cleared": self.sessions.clear()}
        if action == "get_parameters":
            return {"policy": self.name, "parameters": self.parameters}
        raise KeyError(action)


class RoundRobinPolicy(_StickyPolicy):
    """Each new (non-sticky) request goes to the next live instance in order."""

    name = "round_robin"

    def __init__(self, rule_id: str = "", settings: Any = None, parameters: Any = None) -> None:
        super().__init__(rule_id, settings, parameters)
        self._counter = itertools.count()

    def _pick(self, instances: list[str], input_data: dict, context: dict) -> str:
        return instances[next(self._counter) % len(instances)]


class LeastQueuePolicy(_StickyPolicy):
    """The instance with the fewest outstanding requests: this executor's own in-flight
    count, or the Redis queue snapshot when that is larger (other executors' work). Ties
    rotate so equal instances share load."""

    name = "least_queue"

    def __init__(self, rule_id: str = "", settings: Any = None, parameters: Any = None) -> None:
        super().__init__(rule_id, settings, parameters)
        self._counter = itertools.count()

    def _pick(self, instances: list[str], input_data: dict, context: dict) -> str:
        inflight = context.get("inflight") or {}
        queued = context.get("queue_lengths") or {}
        n = len(instances)
        start = next(self._counter) % n
        best, best_load = instances[start], None
        for k in range(n):
            iid = instances[(start + k) % n]
            load = max(inflight.get(iid, 0), queued.get(iid, 0))
            if best_load is None or load < best_load:
                best, best_load = iid, load
                if load == 0:
                    break
        return best


BUILTIN_POLICIES: dict[str, type] = {
    "round_robin": RoundRobinPolicy,
    "round-robin": RoundRobinPolicy,
    "roundrobin": RoundRobinPolicy,
    "rr": RoundRobinPolicy,
    "least_queue": LeastQueuePolicy,
    "least-queue": LeastQueuePolicy,
    "leastqueue": LeastQueuePolicy,
    "lq": LeastQueuePolicy,
}


def load_policy(
    name: str, settings: dict[str, Any] | None = None, parameters: dict[str, Any] | None = None
) -> Any:
    """A built-in by name, or any AIOSv1PolicyRule-shaped class by `module:Class` (a bare
    module path means its `AIOSv1PolicyRule`)."""
    cls = BUILTIN_POLICIES.get(name.strip().lower())
    if cls is None:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"unknown load-balancer policy {name!r}: {exc}") from None
        cls = getattr(module, attr or "AIOSv1PolicyRule", None)
        if cls is None:
            raise ValueError(f"{name!r} has no policy class")
    return cls(name, settings or {}, parameters or {})


def chosen_instance(result: Any) -> str:
    """Normalise a policy's answer to an instance id."""
    if isinstance(result, str):
        return result
    if isinstance(result, dict) and isinstance(result.get("instance_id"), str):
        return result["instance_id"]
    raise TypeError(f"load-balancer policy returned {result!r}; expected an instance id")
