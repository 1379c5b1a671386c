"""A small network in the database (and its live metrics in Redis) for the dashboard pages.

Ids carry a random suffix: Redis is shared with other test runs, and the live-metric keys
are named after node and block ids. Every Redis key the fixture writes is deleted after.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.allocator.models import Allocation, GPUAllocation
from apps.blocks.models import Block, Instance
from apps.clusters.models import GPU, Cluster, Node, Workload
from apps.metrics import services as metrics
from apps.metrics.models import NodeMetricSample
from apps.tasks.models import Task
from apps.vdags.models import VDag, VDagController
from block_sdk.vdag.graph import compile_graph

DIAMOND = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}


def node_doc(cpu: float, mem: float, gpus: list[dict] | None = None) -> dict:
    """A node report as ``HardwareSampler.sample()`` shapes it (the fields the pages use)."""
    return {
        "vcpu": {"count": 8, "utilization": cpu, "load_1m": 1.5},
        "memory": {"totalMem": 32768, "usedMem": 8192, "freeMem": 24576, "averageUtil": mem},
        "gpus": {"gpus": gpus or []},
    }


@dataclass
class Network:
    suffix: str
    clusters: dict[str, Cluster] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    gpus: dict[str, GPU] = field(default_factory=dict)
    blocks: dict[str, Block] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    vdag: VDag | None = None
    controller: VDagController | None = None
    tasks: dict[str, Task] = field(default_factory=dict)
    redis_keys: list[str] = field(default_factory=list)

    def id(self, name: str) -> str:
        return f"{name}-{self.suffix}"


def diamond_vdag(net: Network, owner, blocks: dict[str, Block]) -> VDag:
    """A vDAG a -> (b, c) -> d compiled by the data plane's own compiler."""
    nodes = [{"nodeLabel": label, "blockId": blocks[label].pk} for label in DIAMOND]
    connections = [
        {
            "nodeLabel": dst,
            "inputs": [{"nodeLabel": src} for src, succ in DIAMOND.items() if dst in succ],
        }
        for dst in DIAMOND
        if any(dst in succ for succ in DIAMOND.values())
    ]
    compiled = compile_graph(nodes, connections, [{"nodeLabel": "a"}], [{"nodeLabel": "d"}])
    name = f"diamond{net.suffix}"
    return VDag.objects.create(
        vdag_uri=f"{name}:1.0-stable",
        name=name,
        version="1.0",
        release_tag="stable",
        status="active",
        owner=owner,
        nodes=[{"nodeLabel": label, "nodeType": "block"} for label in DIAMOND],
        graph={
            "connections": connections,
            "inputs": [{"nodeLabel": "a"}],
            "outputs": [{"nodeLabel": "d"}],
        },
        assignment={label: blocks[label].pk for label in DIAMOND},
        compiled_graph=compiled.to_dict(),
        block_ids=[blocks[label].pk for label in DIAMOND],
    )


def build_network(owner, other_owner) -> Network:
    now = timezone.now()
    net = Network(suffix=uuid.uuid4().hex[:6])
    east = Cluster.objects.create(id=net.id("east"), region_id="eu", status="live", owner=owner)
    west = Cluster.objects.create(id=net.id("west"), region_id="us", status="provisioning")
    net.clusters = {"east": east, "west": west}
    net.nodes = {
        # up: ready with a fresh heartbeat
        "e1": Node.objects.create(
            id=net.id("e1"), cluster=east, status="ready", last_heartbeat=now, vcpus={"count": 8}
        ),
        # down: says ready, but its agent stopped reporting ten minutes ago
        "e2": Node.objects.create(
            id=net.id("e2"),
            cluster=east,
            status="ready",
            last_heartbeat=now - timedelta(minutes=10),
        ),
        # down: never reported
        "w1": Node.objects.create(id=net.id("w1"), cluster=west, status="pending"),
    }
    net.gpus = {
        "e1g0": GPU.objects.create(node=net.nodes["e1"], index=0, model="A100", memory_mb=40960),
        "e1g1": GPU.objects.create(node=net.nodes["e1"], index=1, model="A100", memory_mb=40960),
        "e2g0": GPU.objects.create(
            node=net.nodes["e2"], index=0, model="L4", memory_mb=24576, shared=True
        ),
    }
    statuses = {"a": "running", "b": "running", "c": "failed", "d": "starting"}
    for label, status in statuses.items():
        net.blocks[label] = Block.objects.create(
            id=net.id(f"blk-{label}"),
            component_uri="model.echo:1.0-stable",
            cluster=east,
            status=status,
            owner=owner,
            endpoints={"grpc": f"10.0.0.1:5005{len(net.blocks)}", "http": "http://10.0.0.1:18000"},
        )
    ia = Instance.objects.create(
        instance_id=net.id("blk-a-i1"),
        block=net.blocks["a"],
        node=net.nodes["e1"],
        gpus=[0],
        status="running",
        health="healthy",
        workload_id=net.id("wl-a-i1"),
        requests_processed=42,
    )
    ib = Instance.objects.create(
        instance_id=net.id("blk-b-i1"),
        block=net.blocks["b"],
        node=net.nodes["e2"],
        status="running",
        health="unhealthy",
        consecutive_failures=3,
    )
    net.instances = {"a": ia, "b": ib}
    Workload.objects.create(
        id=net.id("wl-a-i1"),
        cluster=east,
        node=net.nodes["e1"],
        kind="instance",
        block_id=net.blocks["a"].pk,
        instance_id=ia.pk,
        status="running",
        restarts=2,
    )
    allocation = Allocation.objects.create(
        instance_id=ia.pk, block_id=net.blocks["a"].pk, cluster=east, node=net.nodes["e1"]
    )
    GPUAllocation.objects.create(allocation=allocation, gpu=net.gpus["e1g0"], instance_id=ia.pk)
    net.vdag = diamond_vdag(net, owner, net.blocks)
    net.controller = VDagController.objects.create(
        vdag_controller_id=net.id("ctl"),
        vdag=net.vdag,
        cluster=east,
        status="running",
        public_url="10.0.0.1:50100",
        owner=owner,
    )
    net.tasks = {
        "running": Task.objects.create(
            task_type="block_alloc",
            task_status="in_progress",
            progress=40,
            owner=owner,
            progress_message="placing instances",
        ),
        "done": Task.objects.create(
            task_type="vdag_creation", task_status="completed", progress=100, owner=owner
        ),
        "failed": Task.objects.create(
            task_type="block_alloc", task_status="failed", error="no GPU fits", owner=owner
        ),
        "system": Task.objects.create(task_type="node_addition", task_status="pending"),
        "theirs": Task.objects.create(
            task_type="secret_of_bob", task_status="in_progress", owner=other_owner
        ),
    }
    # Live metrics (Redis + latest rows) and an hour of history for node e1.
    metrics.record_node_metrics(
        net.nodes["e1"].pk,
        east.pk,
        node_doc(
            37.0,
            25.0,
            [{"gpu_id": 0, "cudaUtilization": 88.0, "usedMem": 30000, "totalMem": 40960}],
        ),
    )
    net.redis_keys += [
        metrics.NODE_KEY.format(net.nodes["e1"].pk),
        metrics.CLUSTER_KEY.format(east.pk),
        metrics.HISTORY_GATE_KEY.format(net.nodes["e1"].pk),
    ]
    NodeMetricSample.objects.bulk_create(
        [
            NodeMetricSample(
                node_id=net.nodes["e1"].pk,
                cluster_id=east.pk,
                ts=now - timedelta(minutes=50 - i * 5),
                values={"vcpu.utilization": 10.0 + i * 5, "memory.averageUtil": 20.0 + i},
            )
            for i in range(10)
        ]
    )
    metrics.record_entity_metrics(
        "block", net.blocks["a"].pk, {"queue_total": 7, "latency_p50_ms": 12.5, "fps": 30}
    )
    net.redis_keys += [
        metrics.ENTITY_KEY.format("block", net.blocks["a"].pk),
        metrics.HISTORY_GATE_KEY.format(f"block:{net.blocks['a'].pk}"),
    ]
    return net


@pytest.fixture
def network(user, other_user):
    client = metrics._redis()  # the real one, even if a test swaps it out
    net = build_network(user, other_user)
    yield net
    client.delete(*net.redis_keys)


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client
