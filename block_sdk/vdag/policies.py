"""vDAG node pre/post-processing policies (hooks 15 and 16), run inside the block's instance.

Where they run: in-process (Type 1, `LocalPolicyEvaluator` mode `local`) by default, as AIOS
does: the instance is dedicated to its block and a per-packet policy must cost microseconds.
Set `AIOS_VDAG_POLICY_MODE=sandbox` (or `"mode": "sandbox"` in the node's policy object) to run
them in the sandbox pool instead (the packet is then passed as a JSON object). Policy code is
found by the default resolver: `AIOS_API_URL` (the control plane's policy registry over HTTP,
production) or `AIOS_POLICY_DIR` (a folder of policies, tests and offline use).

Contract: `eval(parameters, {"packet": packet}, context)` with settings `vdag`, `block`,
`node_label`, `block_id`, `model_parameters`; it returns the (modified) packet. In local mode
`packet` is the object itself (attribute access: `packet.data`, `packet.output_ptr`, ...); in
the sandbox a dict with the same keys (files as `{"metadata", "size"}`). A post-processing
policy routes conditionally by returning `{"packet": ..., "next": ["label", ...]}` or a packet
whose `output_ptr` is a JSON object with `"next"`; `next` must name successors of the node
(`[]` ends this branch).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

from block_sdk.packet import (
    FAILED_PRECONDITION,
    INTERNAL,
    INVALID_ARGUMENT,
    DataPlaneError,
    Packet,
    encode_json,
)
from block_sdk.protos import aios_packet_pb2 as pb

MODE_ENV = "AIOS_VDAG_POLICY_MODE"


def policy_ref(value: Any) -> dict[str, Any] | None:
    """A node's policy as `{"uri", "parameters", "settings", "mode"}`, or None."""
    if not value:
        return None
    if isinstance(value, str):
        return {"uri": value, "parameters": {}, "settings": {}, "mode": None}
    if isinstance(value, Mapping):
        uri = value.get("policyRuleURI") or value.get("policy_rule_uri") or value.get("uri")
        if not uri:
            return None
        return {
            "uri": str(uri),
            "parameters": dict(value.get("parameters") or {}),
            "settings": dict(value.get("settings") or {}),
            "mode": value.get("mode") or value.get("executionMode"),
        }
    return None


def packet_dict(packet: Any) -> dict[str, Any]:
    """JSON form of a packet for sandboxed policies."""
    data = packet.data
    return {
        "session_id": packet.session_id,
        "seq_no": int(packet.seq_no),
        "data": data if isinstance(data, str) else encode_json(data),
        "ts": float(packet.ts),
        "output_ptr": packet.output_ptr,
        "files": [{"metadata": f.metadata, "size": len(f.file_data)} for f in packet.files],
    }


class NodePolicies:
    """Evaluators per (node, policy), created on a node's first packet and kept."""

    def __init__(self, block_id: str, instance_id: str = "") -> None:
        self.block_id = block_id
        self.instance_id = instance_id
        self._evaluators: dict[tuple[str, str, str, str], Any] = {}
        self._lock = threading.Lock()

    def _evaluator(self, which: str, ref: dict[str, Any], vdag: str, node: Any) -> Any:
        key = (which, vdag, node.label, json.dumps(ref, sort_keys=True, default=str))
        ev = self._evaluators.get(key)
        if ev is not None:
            return ev
        from block_sdk.policy_runtime import LocalPolicyEvaluator, PolicyError

        settings = {
            "vdag": vdag,
            "block": {"block_id": self.block_id, "instance_id": self.instance_id},
            "node_label": node.label,
            "block_id": self.block_id,
            "model_parameters": dict(node.model_parameters or {}),
            **ref["settings"],
        }
        mode = ref.get("mode") or os.environ.get(MODE_ENV, "local")
        try:
            ev = LocalPolicyEvaluator(
                ref["uri"], parameters=ref["parameters"], settings=settings, mode=mode
            )
        except PolicyError as exc:
            raise DataPlaneError(
                FAILED_PRECONDITION,
                f"{which}-processing policy {ref['uri']} of node {node.label} cannot be "
                f"loaded: {exc}",
                node=node.label,
                policy=ref["uri"],
                stage=f"{which}processing_policy",
            ) from None
        with self._lock:
            if len(self._evaluators) > 1024:  # bounded: vDAGs come and go
                self._evaluators.clear()
            self._evaluators[key] = ev
        return ev

    def _call(self, which: str, ref: dict[str, Any], vdag: str, node: Any, packet: Any) -> Any:
        from block_sdk.policy_runtime import PolicyError

        ev = self._evaluator(which, ref, vdag, node)
        arg = packet if ev.mode == "local" else packet_dict(packet)
        try:
            return ev.execute_policy_rule({"packet": arg})
        except PolicyError as exc:
            raise DataPlaneError(
                INTERNAL,
                f"{which}-processing policy {ref['uri']} of node {node.label} failed: {exc}",
                node=node.label,
                policy=ref["uri"],
                stage=f"{which}processing_policy",
            ) from None

    # -- hook 15 -------------------------------------------------------------------------
    def run_pre(self, ref: dict[str, Any], vdag: str, node: Any, packet: Packet) -> Packet:
        result = self._call("pre", ref, vdag, node, packet)
        returned, _ = _unwrap(result)
        if returned is None or returned is packet:
            return packet
        if isinstance(returned, Packet):
            return returned
        if isinstance(returned, pb.AIOSPacket):
            return Packet.from_proto(
                returned,
                frame_ptr=packet.frame_ptr,
                query_parameters=packet.query_parameters,
                block_id=packet.block_id,
                request_id=packet.request_id,
            )
        if isinstance(returned, Mapping):
            out = packet.copy()
            _apply_fields(out, returned)
            return out
        raise _bad_result("pre", ref, node, returned)

    # -- hook 16 -------------------------------------------------------------------------
    def run_post(
        self, ref: dict[str, Any], vdag: str, node: Any, packet: pb.AIOSPacket
    ) -> tuple[pb.AIOSPacket, list[str] | None]:
        """(the packet to send on, the successors chosen or None for all of them)."""
        original_ptr = packet.output_ptr
        result = self._call("post", ref, vdag, node, packet)
        returned, nxt = _unwrap(result)
        if returned is None:
            out = packet
        elif isinstance(returned, pb.AIOSPacket):
            out = returned
        elif isinstance(returned, Packet):
            out = returned.to_proto()
        elif isinstance(returned, Mapping):
            out = pb.AIOSPacket()
            out.CopyFrom(packet)
            _apply_fields(out, returned)
        else:
            raise _bad_result("post", ref, node, returned)
        if nxt is None and out.output_ptr != original_ptr:
            # AIOS style: the policy rewrote output_ptr; a "next" there picks the branches.
            try:
                doc = json.loads(out.output_ptr) if out.output_ptr else {}
            except ValueError:
                doc = {}
            if isinstance(doc, dict) and "next" in doc:
                nxt = doc["next"]
        if out.output_ptr != original_ptr:
            out.output_ptr = original_ptr  # the route itself is not the policy's to change
        if nxt is not None:
            if isinstance(nxt, str):
                nxt = [nxt]
            if not isinstance(nxt, list) or not all(isinstance(x, str) for x in nxt):
                raise DataPlaneError(
                    INVALID_ARGUMENT,
                    f"post-processing policy {ref['uri']} of node {node.label} returned a "
                    f"'next' that is not a list of node labels: {nxt!r}",
                    node=node.label,
                )
        return out, nxt


def _unwrap(result: Any) -> tuple[Any, Any]:
    """(packet-like or None, next or None) from a policy's result."""
    if isinstance(result, Mapping) and ("packet" in result or "next" in result):
        return result.get("packet"), result.get("next")
    return result, None


def _apply_fields(target: Any, doc: Mapping[str, Any]) -> None:
    for name in ("session_id", "seq_no", "ts", "output_ptr"):
        if name in doc and doc[name] is not None:
            setattr(target, name, type(getattr(target, name))(doc[name]))
    if "data" in doc:
        data = doc["data"]
        if isinstance(target, pb.AIOSPacket) and not isinstance(data, str):
            data = encode_json(data)
        target.data = data


def _bad_result(which: str, ref: dict[str, Any], node: Any, value: Any) -> DataPlaneError:
    return DataPlaneError(
        INVALID_ARGUMENT,
        f"{which}-processing policy {ref['uri']} of node {node.label} returned "
        f"{type(value).__name__}; expected the packet (or {{'packet': ..., 'next': [...]}})",
        node=node.label,
    )
