"""Pre-processing policy: multiplies the incoming x by 10 before the block sees it, and
records which node it ran for (from its settings) in the data."""

import json


class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.node_label = settings.get("node_label")

    def eval(self, parameters, input_data, context):
        packet = input_data["packet"]
        raw = packet["data"] if isinstance(packet, dict) else packet.data
        data = json.loads(raw) if isinstance(raw, str) else raw
        data["x"] = data["x"] * 10
        data.setdefault("trace", []).append(f"pre@{self.node_label}")
        if isinstance(packet, dict):
            packet["data"] = json.dumps(data)
        else:
            packet.data = json.dumps(data)
        return packet
