"""Quality checker that samples a fraction of request/response pairs for recording.

Hook: the vDAG controller ``qualityChecker`` (called in the background, per request).

input_data:  ``{"session_id": str, "seq_no": int, "request"?: ..., "response"?: ...}``, or the
             AIOS shape ``{"vdag_info", "input_data": {"request": {"session_id", "seq_no", …},
             "response": …}}``.
parameters:  ``{"sample_rate": 0.0..1.0 (default 0.1), "salt"?: str}``.
returns:     ``{"record": bool}``; when ``record`` is true, also ``"pair": {"request",
             "response"}`` for the caller to store.

The choice is deterministic: ``sha256(salt + session_id + ":" + seq_no)`` read as a fraction in
[0, 1) is compared with ``sample_rate``. A retried request gets the same answer, every replica
agrees without coordination, and the observed rate over many pairs converges on the target.
"""

from __future__ import annotations

import hashlib
from typing import Any

_SCALE = float(1 << 64)


def sample_fraction(salt: str, session_id: str, seq_no: Any) -> float:
    digest = hashlib.sha256(f"{salt}{session_id}:{seq_no}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


class AIOSv1PolicyRule:
    def __init__(self, rule_id: str, settings: Any, parameters: Any) -> None:
        self.rule_id = rule_id
        self.seen = 0
        self.recorded = 0

    def eval(self, parameters: Any, input_data: Any, context: Any) -> dict[str, Any]:
        p = parameters if isinstance(parameters, dict) else {}
        rate = float(p.get("sample_rate", 0.1))
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"sample_rate must be within [0, 1], got {rate}")
        if not isinstance(input_data, dict):
            raise ValueError("input_data must be an object")
        pair = input_data.get("input_data") if "input_data" in input_data else input_data
        pair = pair if isinstance(pair, dict) else {}
        request = pair.get("request")
        source = request if isinstance(request, dict) else input_data
        session_id = input_data.get("session_id", source.get("session_id"))
        seq_no = input_data.get("seq_no", source.get("seq_no"))
        if session_id is None or seq_no is None:
            raise ValueError("session_id and seq_no are needed to sample deterministically")

        record = sample_fraction(str(p.get("salt", "")), str(session_id), seq_no) < rate
        self.seen += 1
        result: dict[str, Any] = {"record": record}
        if record:
            self.recorded += 1
            result["pair"] = {"request": pair.get("request"), "response": pair.get("response")}
        return result

    def management(self, action: str, data: Any) -> dict[str, Any]:
        if action == "get_state":
            return {"seen": self.seen, "recorded": self.recorded}
        raise ValueError(f"unknown management action {action!r}; known: get_state")
