"""Block classes the vDAG tests run in real instance processes.

``AffineBlock`` computes ``x -> x * mul + add`` (``mul``/``add`` from the block's
parameters) and appends its ``name`` to ``path``. A fan-in node receives
``{"inputs": [...]}`` (one output per predecessor, in the declared order); it sums their
``x`` and joins their paths. Input ``{"raise_at": <name>}`` makes that block raise.
"""

from __future__ import annotations

import json

from aios_instance import OnDataResult, PreProcessResult


class AffineBlock:
    def __init__(self, context):
        params = context.block_init_parameters or {}
        self.name = str(params.get("name", context.block_id))
        self.mul = float(params.get("mul", 1.0))
        self.add = float(params.get("add", 0.0))

    def on_preprocess(self, packet):
        data = packet.data
        if isinstance(data, str):
            data = json.loads(data) if data else {}
        if not isinstance(data, dict):
            return False, "expects a JSON object"
        return True, [PreProcessResult(packet=packet, extra_data={"input": data})]

    def on_data(self, entry):
        data = entry.extra_data["input"]
        if "inputs" in data:  # fan-in: the outputs of every predecessor
            inputs = data["inputs"]
            x = sum(float(i["x"]) for i in inputs)
            path = [p for i in inputs for p in i.get("path", [])]
            raise_at = next((i.get("raise_at") for i in inputs if i.get("raise_at")), None)
        else:
            x, path, raise_at = float(data["x"]), list(data.get("path", [])), data.get("raise_at")
        if raise_at == self.name:
            raise ValueError(f"{self.name} was asked to fail")
        out = {"x": x * self.mul + self.add, "path": [*path, self.name]}
        if raise_at:
            out["raise_at"] = raise_at
        return True, OnDataResult(output=out)

    def on_update(self, params):
        self.mul = float(params.get("mul", self.mul))
        self.add = float(params.get("add", self.add))
        return True, params

    def health(self):
        return {"status": "healthy"}

    def management(self, action, data):
        return {"name": self.name, "mul": self.mul, "add": self.add}

    def get_muxer(self):
        return None
