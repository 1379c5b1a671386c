"""Small transform blocks the vDAG tests run in real instance processes, and the same
functions as plain Python so outputs can be checked against the direct composition.

`CalcBlock` takes `{"x": number, "trace": [...]}` and applies `op` from its parameters:
`add` (x + k), `mul` (x * k), `sum` (fan-in: x = sum of the inputs' x), `fail` (raises when
`x == k`, else passes x on), `sleep` (sleeps `k` seconds per request, passes x on). Every
output appends `<block_id>:<instance_id>` to `trace`, so tests see the path a request took.
"""

from __future__ import annotations

import json
import time
from typing import Any

from block_sdk.sdk import OnDataResult, PreProcessResult


def add(x: float, k: float) -> float:
    return x + k


def mul(x: float, k: float) -> float:
    return x * k


def total(xs: list[float]) -> float:
    return sum(xs)


class CalcBlock:
    def __init__(self, context):
        self.ctx = context
        params = context.block_init_parameters
        self.op = params.get("op", "add")
        self.k = params.get("k", 1)

    def on_preprocess(self, packet):
        data = packet.data
        if isinstance(data, str | bytes):
            data = json.loads(data) if data else {}
        return True, [PreProcessResult(packet=packet, extra_data={"input": data})]

    def _x(self, data: Any) -> tuple[float, list[str]]:
        if self.op == "sum":
            inputs = data["inputs"]
            trace: list[str] = []
            for item in inputs:
                trace.extend(item.get("trace", []))
            return total([item["x"] for item in inputs]), trace
        return data["x"], list(data.get("trace", []))

    def on_data(self, entry):
        data = entry.extra_data["input"]
        x, trace = self._x(data)
        if self.op == "add":
            x = add(x, self.k)
        elif self.op == "mul":
            x = mul(x, self.k)
        elif self.op == "fail" and x == self.k:
            raise ValueError(f"calc refuses x={x}")
        elif self.op == "sleep":
            time.sleep(float(self.k))
        trace.append(f"{self.ctx.block_id}:{self.ctx.instance_id}")
        out = {"x": x, "trace": trace}
        files = entry.packet.files
        if files:
            out["files"] = [f.meta for f in files]
        if entry.packet.frame_ptr:
            fp = entry.packet.frame_ptr
            out["frame_ptr"] = fp.decode() if isinstance(fp, bytes) else fp
        return True, OnDataResult(output=out)


class MuxSumBlock(CalcBlock):
    """A fan-in block written AIOS-style: its own `Muxer(2)` merges the two inputs of a
    request (the router then hands it the inputs one by one instead of merging them)."""

    def __init__(self, context):
        super().__init__(context)
        self.op = "sum"

    def get_muxer(self):
        from block_sdk.sdk import Muxer

        return Muxer(N=2, timeout_s=5.0)
