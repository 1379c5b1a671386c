"""Per-session and global request quota over a fixed time window.

Hooks: the vDAG controller ``quotaChecker`` and the ad-hoc inference server quota check.

input_data:
    ``session_id`` (str, required)
    ``now``        epoch seconds (optional; defaults to the clock; tests pass it)
    ``session_count`` / ``global_count`` (optional ints): counts *including this request*
    kept by the caller. AIOS's ``quota`` key (current + 1) is read as ``session_count``.
parameters:
    ``requests_per_session`` [null: unlimited], ``requests_total`` [null: unlimited],
    ``window_s`` [60]: the counting window; ``max_sessions`` [100000] bounds the state.
returns:
    ``{"allowed": bool, "reason": str, "session_count": int, "global_count": int}``

Where the counts live: the vDAG controller (and the inference server) keep the counters in
Redis, with a TTL of one window, shared by all their replicas, and pass them in as
``session_count`` / ``global_count``; the policy then only decides. Called without counts
(a test, a single-process caller) it keeps its own counters in this instance: a request is
counted only when it is allowed, and counters reset when the window rolls over.

Management: ``get_state`` → counters of the current window; ``reset`` → clears them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any


def _limit(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number or null, got {value!r}")
    return int(value)


class AIOSv1PolicyRule:
    def __init__(self, rule_id: str, settings: Any, parameters: Any) -> None:
        self.rule_id = rule_id
        self.window_index: int | None = None
        self.global_count = 0
        self.sessions: OrderedDict[str, int] = OrderedDict()

    def _roll(self, window_s: float, now: float) -> None:
        index = int(now // window_s)
        if index != self.window_index:
            self.window_index = index
            self.global_count = 0
            self.sessions.clear()

    def eval(self, parameters: Any, input_data: Any, context: Any) -> dict[str, Any]:
        p = parameters if isinstance(parameters, dict) else {}
        if not isinstance(input_data, dict) or not input_data.get("session_id"):
            raise ValueError("input_data must be an object with a session_id")
        session_id = str(input_data["session_id"])
        per_session = _limit(p.get("requests_per_session"), "requests_per_session")
        total = _limit(p.get("requests_total"), "requests_total")
        window_s = float(p.get("window_s", 60))
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        max_sessions = int(p.get("max_sessions", 100_000))

        passed_session = input_data.get("session_count", input_data.get("quota"))
        passed_global = input_data.get("global_count")
        external = passed_session is not None or passed_global is not None
        if external:
            session_count = int(passed_session or 0)
            global_count = int(passed_global or 0)
        else:
            self._roll(window_s, float(input_data.get("now", time.time())))
            session_count = self.sessions.get(session_id, 0) + 1
            global_count = self.global_count + 1

        if per_session is not None and session_count > per_session:
            allowed, reason = False, f"session {session_id!r} is over its quota of {per_session}"
        elif total is not None and global_count > total:
            allowed, reason = False, f"the global quota of {total} requests is used up"
        else:
            allowed, reason = True, "within quota"

        if allowed and not external:
            self.global_count = global_count
            self.sessions[session_id] = session_count
            self.sessions.move_to_end(session_id)
            while len(self.sessions) > max_sessions:
                self.sessions.popitem(last=False)
        if not allowed and not external:
            session_count -= 1
            global_count -= 1
        return {
            "allowed": allowed,
            "reason": reason,
            "session_count": session_count,
            "global_count": global_count,
        }

    def management(self, action: str, data: Any) -> dict[str, Any]:
        if action == "get_state":
            return {
                "window_index": self.window_index,
                "global_count": self.global_count,
                "sessions": dict(self.sessions),
            }
        if action == "reset":
            self.window_index, self.global_count = None, 0
            self.sessions.clear()
            return {"reset": True}
        raise ValueError(f"unknown management action {action!r}; known: get_state, reset")
