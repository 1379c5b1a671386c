"""Post-processing policy that ends every branch (conditional routing to nowhere)."""


class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        return {"packet": input_data["packet"], "next": []}
