"""Block classes the data-plane tests run inside real instance processes."""

from __future__ import annotations

import json
import os
import time

from block_sdk.sdk import Muxer, OnDataResult, PreProcessResult


class ProbeBlock:
    """Reports which instance processed what; behaviours are chosen by the input data:
    `sleep` (seconds), `raise` (message of a ValueError), `fail` (returns (False, reason)),
    `event` (pushes a block event). Written in the plain return style."""

    def __init__(self, context):
        self.ctx = context
        self.delay = float(os.environ.get("PROBE_DELAY_S", "0"))
        self.count = 0
        self.updates: list[dict] = []
        context.metrics.register_counter("probe_requests_total", "Requests the probe handled")

    def on_preprocess(self, packet):
        data = json.loads(packet.data) if isinstance(packet.data, str) else packet.data
        if data.get("preprocess_fail"):
            return False, "refused in preprocess"
        return [PreProcessResult(packet, extra_data={"input": data})]

    def on_data(self, entry):
        data = entry.extra_data["input"]
        sleep = float(data.get("sleep", self.delay))
        if sleep:
            time.sleep(sleep)
        if data.get("raise"):
            raise ValueError(data["raise"])
        if data.get("fail"):
            return False, data["fail"]
        if data.get("event"):
            self.ctx.events.push_event("probe-event", {"value": data["event"]})
        self.count += 1
        self.ctx.metrics.increment_counter("probe_requests_total")
        packet = entry.packet
        return OnDataResult(
            {
                "input": data,
                "instance_id": self.ctx.instance_id,
                "params": dict(self.ctx.block_init_parameters),
                "files": [f.meta for f in packet.files],
                "session_id": packet.session_id,
                "seq_no": packet.seq_no,
                "query_parameters": packet.query_parameters,
            }
        )

    def on_update(self, params):
        self.updates.append(dict(params))
        return True, params

    def health(self):
        return {"status": "healthy", "count": self.count}

    def management(self, action, data):
        if action == "count":
            return {"count": self.count}
        if action == "updates":
            return {"updates": self.updates}
        if action == "boom":
            raise RuntimeError("management exploded")
        return {"echo": [action, data]}


class MuxBlock:
    """Fan-in of two inputs per (session_id, seq_no): answers with the merged inputs."""

    def __init__(self, context):
        self.ctx = context

    def on_preprocess(self, packet):
        return True, [PreProcessResult(packet=packet, extra_data={"inputs": packet.data})]

    def on_data(self, entry):
        return True, OnDataResult(output={"merged": entry.extra_data["inputs"]})

    def get_muxer(self):
        return Muxer(N=2, timeout_s=3.0)
