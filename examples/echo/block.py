"""Echo block: `on_data` returns the input `data` object with `"echo": true` added.

Files pass through unchanged. Parameters: `delay_s` (sleep per request, for demos of queueing
and autoscaling), `tag` (added to the output as `"tag"` when set), updated live by
`on_update`. Written against the public AIOS SDK interface, so it also runs on AIOS.
"""

from __future__ import annotations

import json
import time

from aios_instance import Block, OnDataResult, PreProcessResult


class EchoBlock:
    def __init__(self, context):
        self.context = context
        self.delay_s = float(context.block_init_parameters.get("delay_s", 0.0))
        self.tag = context.block_init_parameters.get("tag")
        self.count = 0

    def on_preprocess(self, packet):
        data = packet.data
        if isinstance(data, str):
            data = json.loads(data) if data else {}
        if not isinstance(data, dict):
            return False, "echo expects a JSON object as data"
        return True, [PreProcessResult(packet=packet, extra_data={"input": data})]

    def on_data(self, entry):
        if self.delay_s:
            time.sleep(self.delay_s)
        self.count += 1
        output = dict(entry.extra_data["input"])
        output["echo"] = True
        if self.tag is not None:
            output["tag"] = self.tag
        return True, OnDataResult(output=output)

    def on_update(self, updated_parameters):
        if "delay_s" in updated_parameters:
            self.delay_s = float(updated_parameters["delay_s"])
        if "tag" in updated_parameters:
            self.tag = updated_parameters["tag"]
        return True, updated_parameters

    def health(self):
        return {"status": "healthy", "processed": self.count}

    def management(self, action, data):
        if action == "get_count":
            return {"count": self.count}
        if action == "reset":
            self.count = 0
            return {"message": "counter reset"}
        return {"message": f"unknown action: {action}"}

    def get_muxer(self):
        return None


if __name__ == "__main__":
    Block(EchoBlock).run()
