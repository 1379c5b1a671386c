"""Post-processing policy for conditional routing: even x -> parameters["even"] label, odd x
-> parameters["odd"] label. Written AIOS-style: it reads the packet it is given."""

import json


class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.settings = settings
        self.calls = 0

    def eval(self, parameters, input_data, context):
        packet = input_data["packet"]
        data = packet["data"] if isinstance(packet, dict) else packet.data
        x = json.loads(data)["x"]
        self.calls += 1
        label = parameters["even"] if x % 2 == 0 else parameters["odd"]
        return {"packet": packet, "next": [label]}

    def management(self, action, data):
        return {"calls": self.calls}
