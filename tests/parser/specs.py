"""A valid minimal spec for every parser action, and test handlers."""

from tests.registries.factories import component_values

NODE = {
    "id": "node-1",
    "clusterId": "cluster-1",
    "gpus": {"count": 1, "memory": 16000, "gpus": [{"modelName": "A100", "memory": 16000}]},
    "vcpus": {"count": 8},
    "memory": 32000,
    "swap": 0,
    "storage": {"disks": 1, "size": 500000},
    "network": {"interfaces": 1, "txBandwidth": 0, "rxBandwidth": 0},
    "tags": ["gpu"],
    "nodeMetadata": {"vendor": "lab"},
}

CLUSTER = {
    "id": "cluster-1",
    "regionId": "eu-west",
    "status": "live",
    "nodes": {"count": 1, "nodeData": [{k: v for k, v in NODE.items() if k != "clusterId"}]},
    "gpus": {"count": 1, "memory": 16000},
    "vcpus": {"count": 8},
    "memory": 32000,
    "swap": 0,
    "storage": {"disks": 1, "size": 500000},
    "network": {"interfaces": 1, "txBandwidth": 0, "rxBandwidth": 0},
    "config": {"policyExecutionMode": "local", "publicHostname": "127.0.0.1", "useGateway": True},
    "tags": ["lab"],
    "clusterMetadata": {"name": "lab", "description": "a lab", "owner": "ana", "vendor": "dma"},
    "reputation": 50,
}

BLOCK = {
    "blockId": "echo-blk",
    "blockComponentURI": "model.echo:1.0.0-stable",
    "minInstances": 1,
    "maxInstances": 3,
    "blockInitData": {},
    "policyRulesSpec": [
        {"values": {"name": "loadBalancer", "policyRuleURI": "aios.round-robin:1.0-stable"}}
    ],
}

VDAG = {
    "vdagName": "pipeline",
    "vdagVersion": {"version": "1.0", "release-tag": "stable"},
    "nodes": [
        {"nodeLabel": "detector", "nodeType": "block", "manualBlockId": "det-1"},
        {"nodeLabel": "tracker", "nodeType": "block", "manualBlockId": "trk-1"},
    ],
    "graph": {
        "connections": [{"nodeLabel": "tracker", "inputs": [{"nodeLabel": "detector"}]}],
        "inputs": [{"nodeLabel": "detector"}],
        "outputs": [{"nodeLabel": "tracker"}],
    },
}

SEARCH = {
    "matchType": "component",
    "rankingPolicyRule": {"policyRuleURI": "ranker:1.0-test", "parameters": {"return": 1}},
}
FILTER = {"matchType": "component", "filter": {"componentQuery": {"componentType": "model"}}}
MGMT = {"blockId": "echo-blk", "service": "executor", "mgmtCommand": "reset", "mgmtData": {}}

VALID = {
    "createCluster": CLUSTER,
    "addNode": NODE,
    "createComponent": component_values(),
    "createBlock": BLOCK,
    "createvDAG": VDAG,
    "search": SEARCH,
    "filter": FILTER,
    "executeMgmtCommand": MGMT,
}

# For each action: (a required key to drop, (a key to set, a wrong-typed value)).
BREAKAGES = {
    "createCluster": ("regionId", ("memory", "a lot")),
    "addNode": ("clusterId", ("vcpus", {"count": "eight"})),
    "createComponent": (
        "componentType",
        ("componentId", {"name": 1, "version": "1", "releaseTag": "x"}),
    ),
    "createBlock": ("minInstances", ("maxInstances", 2.5)),
    "createvDAG": ("graph", ("nodes", "detector")),
    "search": ("rankingPolicyRule", ("limit", "ten")),
    "filter": ("matchType", ("filter", [1])),
    "executeMgmtCommand": ("mgmtCommand", ("service", 7)),
}

AT_BODY = {"search", "filter"}
