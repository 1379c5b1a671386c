"""What the detail pages say about clusters, blocks, vDAGs and tasks, and that they stay a
fixed number of queries whatever the size of the network."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.allocator.models import Allocation, GPUAllocation
from apps.blocks.models import Block, Instance
from apps.clusters.models import GPU, Cluster, Node
from apps.metrics.models import NodeMetricSample
from apps.tasks.models import Task
from apps.vdags.models import VDag
from tests.dashboard.conftest import DIAMOND

pytestmark = pytest.mark.django_db
SVG_NS = "{http://www.w3.org/2000/svg}"


def page(client, name, *args) -> str:
    response = client.get(reverse(f"dashboard:{name}", args=list(args)))
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def graph_svg(html: str) -> ET.Element:
    match = re.search(r'<svg class="vdag-graph".*?</svg>', html, re.S)
    assert match, "no vDAG graph on the page"
    return ET.fromstring(match.group(0))


def drawn(svg: ET.Element) -> tuple[dict[str, ET.Element], set[tuple[str, str]]]:
    nodes = {g.get("data-label"): g for g in svg.iter(f"{SVG_NS}g") if g.get("data-label")}
    edges = {
        (p.get("data-from"), p.get("data-to"))
        for p in svg.iter(f"{SVG_NS}path")
        if p.get("class") == "edge"
    }
    return nodes, edges


def node_x(node: ET.Element) -> float:
    return float(next(node.iter(f"{SVG_NS}rect")).get("x"))


# -- clusters ---------------------------------------------------------------------------------
def test_cluster_page_shows_live_node_metrics_and_a_history_sparkline(signed_in, network):
    html = page(signed_in, "cluster", network.clusters["east"].pk)
    e1 = re.search(rf'<tr id="node-{network.nodes["e1"].pk}".*?</tr>', html, re.S).group(0)
    assert "37%" in e1  # CPU utilisation from the live report
    assert "8.0 GB / 32.0 GB" in e1
    assert "0: 88%" in e1  # the GPU's live utilisation
    spark = ET.fromstring(re.search(r'<svg class="spark".*?</svg>', e1, re.S).group(0))
    lines = {p.get("class"): p.get("points").split() for p in spark.iter(f"{SVG_NS}polyline")}
    assert set(lines) == {"spark-cpu", "spark-mem"}
    # Every sample of the last hour: the ten written and the one the live report recorded.
    samples = NodeMetricSample.objects.filter(node_id=network.nodes["e1"].pk).count()
    assert len(lines["spark-cpu"]) == samples == 11
    # CPU rose from 10% to 37%: in SVG coordinates y falls.
    first_y = float(lines["spark-cpu"][0].split(",")[1])
    last_y = float(lines["spark-cpu"][-1].split(",")[1])
    assert last_y < first_y
    e2 = re.search(rf'<tr id="node-{network.nodes["e2"].pk}".*?</tr>', html, re.S).group(0)
    assert "not ready" in e2  # said ready, but its heartbeat is ten minutes old
    assert "no live metrics" in e2


def test_cluster_page_says_who_holds_each_gpu(signed_in, network):
    html = page(signed_in, "cluster", network.clusters["east"].pk)
    rows = dict(re.findall(r'<tr data-gpu="([^"]+)">(.*?)</tr>', html, re.S))
    held = rows[f"{network.nodes['e1'].pk}/0"]
    assert reverse("dashboard:block", args=[network.blocks["a"].pk]) in held
    assert network.instances["a"].pk in held
    assert "reserved" in held
    assert "free" in rows[f"{network.nodes['e1'].pk}/1"]
    assert "shared" in rows[f"{network.nodes['e2'].pk}/0"]


def test_cluster_list_counts_nodes_gpus_and_blocks(signed_in, network):
    html = page(signed_in, "clusters")
    east = re.search(rf'<tr data-cluster="{network.clusters["east"].pk}">(.*?)</tr>', html, re.S)
    cells = re.findall(r"<td>(.*?)</td>", east.group(1), re.S)
    text = [re.sub(r"<[^>]+>", "", c).strip() for c in cells]
    assert "1 / 2" in text  # nodes up
    assert "2 / 3" in text  # GPUs free
    assert "37%" in text  # live CPU average of the reporting node
    west = re.search(rf'<tr data-cluster="{network.clusters["west"].pk}">(.*?)</tr>', html, re.S)
    assert "no node reporting" in west.group(1)


# -- blocks -----------------------------------------------------------------------------------
def test_block_page_shows_instances_gpus_health_endpoints_and_metrics(signed_in, network):
    block = network.blocks["a"]
    html = page(signed_in, "block", block.pk)
    assert f"Block {block.pk}" in html
    assert "model.echo:1.0-stable" in html
    assert reverse("dashboard:cluster", args=[network.clusters["east"].pk]) in html
    row = re.search(rf'<tr data-instance="{network.instances["a"].pk}">(.*?)</tr>', html, re.S)
    assert network.nodes["e1"].pk in row.group(1)
    assert "gpu0" in row.group(1)
    assert "healthy" in row.group(1)
    assert "42 / 0" in row.group(1)
    assert "2 restarts" in row.group(1)
    assert "10.0.0.1:50050" in html  # the executor's gRPC endpoint
    metrics = dict(re.findall(r'data-metric="([^"]+)">([^<]+)<', html))
    assert metrics == {"queue_total": "7", "fps": "30", "latency_p50_ms": "12.50"}
    assert "queue_total, last hour" in html
    assert reverse("dashboard:vdag", args=[network.vdag.pk]) in html


def test_block_list_shows_health_and_latest_metrics(signed_in, network):
    html = page(signed_in, "blocks")
    a = re.search(rf'<tr data-block="{network.blocks["a"].pk}">(.*?)</tr>', html, re.S).group(1)
    assert "1 / 1" in a and "12.50 ms" in a and "live" in a
    b = re.search(rf'<tr data-block="{network.blocks["b"].pk}">(.*?)</tr>', html, re.S).group(1)
    assert '<span class="warn">0 / 1</span>' in b  # its one instance is unhealthy


# -- vDAGs ------------------------------------------------------------------------------------
def test_diamond_vdag_is_drawn_with_its_nodes_blocks_and_edges(signed_in, network):
    html = page(signed_in, "vdag", network.vdag.pk)
    nodes, edges = drawn(graph_svg(html))
    assert set(nodes) == set(DIAMOND)
    for label, node in nodes.items():
        block_id = network.blocks[label].pk
        assert node.get("data-block") == block_id
        texts = [t.text for t in node.iter(f"{SVG_NS}text")]
        assert texts == [label, block_id]  # the label over its block id
    assert edges == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
    # Layered by depth: a, then b and c in one column, then d.
    assert node_x(nodes["a"]) < node_x(nodes["b"]) == node_x(nodes["c"]) < node_x(nodes["d"])
    # Each node links to its block; colours follow the block's status.
    assert "status-failed" in nodes["c"].get("class")
    assert "status-running" in nodes["a"].get("class")
    assert reverse("dashboard:block", args=[network.blocks["d"].pk]) in html
    assert 'marker-end="url(#arrow)"' in html


def test_vdag_without_compiled_graph_draws_the_spec_and_escapes_labels(signed_in, network):
    vdag = VDag.objects.create(
        vdag_uri="pending-one:1.0-dev",
        name="pending-one",
        version="1.0",
        release_tag="dev",
        nodes=[{"nodeLabel": "in"}, {"nodeLabel": "<script>x</script>"}],
        graph={
            "connections": [
                {"nodeLabel": "<script>x</script>", "inputs": [{"nodeLabel": "in"}]},
            ]
        },
    )
    html = page(signed_in, "vdag", vdag.pk)
    assert "<script>x</script>" not in html
    assert "The spec's graph" in html
    nodes, edges = drawn(graph_svg(html))
    assert set(nodes) == {"in", "<script>x</script>"}  # parsed back from escaped markup
    assert edges == {("in", "<script>x</script>")}
    assert "(not assigned)" in html


def test_vdag_with_an_unreadable_compiled_graph_draws_its_spec(signed_in, network):
    vdag = VDag.objects.create(
        vdag_uri="odd:1.0-dev",
        name="odd",
        version="1.0",
        release_tag="dev",
        compiled_graph={"nodes": "not an object"},
        nodes=[{"nodeLabel": "x"}, "not a node", {"nodeLabel": "y"}],
        graph={"connections": [{"nodeLabel": "y", "inputs": "x"}, 7]},
        assignment=["not", "a", "map"],
        spec=[],
    )
    html = page(signed_in, "vdag", vdag.pk)
    assert "The spec's graph" in html
    nodes, edges = drawn(graph_svg(html))
    assert set(nodes) == {"x", "y"} and edges == set()


def test_block_with_odd_json_columns_still_renders(signed_in, network):
    Block.objects.filter(pk=network.blocks["b"].pk).update(endpoints=["x"], services="y")
    html = page(signed_in, "block", network.blocks["b"].pk)
    assert "No endpoints yet." in html


def test_vdag_whose_name_has_a_slash_is_listed_and_drawn(signed_in, network):
    vdag = VDag.objects.create(
        vdag_uri="team/pipe:1.0-dev",
        name="team/pipe",
        version="1.0",
        release_tag="dev",
        nodes=[{"nodeLabel": "only"}],
    )
    url = reverse("dashboard:vdag", args=[vdag.pk])
    assert url == "/dashboard/vdags/team/pipe:1.0-dev/"
    assert url in page(signed_in, "vdags")
    nodes, edges = drawn(graph_svg(page(signed_in, "vdag", vdag.pk)))
    assert set(nodes) == {"only"} and edges == set()


def test_vdag_page_lists_controllers_with_their_status(signed_in, network):
    html = page(signed_in, "vdag", network.vdag.pk)
    row = re.search(rf'<tr data-controller="{network.controller.pk}">(.*?)</tr>', html, re.S)
    assert "running" in row.group(1)
    assert "10.0.0.1:50100" in row.group(1)


# -- tasks ------------------------------------------------------------------------------------
def test_tasks_page_follows_only_unfinished_visible_tasks(signed_in, network):
    html = page(signed_in, "tasks")
    follow = re.search(r'<script id="follow-tasks" type="application/json">(.*?)</script>', html)
    ids = set(re.findall(r'"([0-9a-f-]{36})"', follow.group(1)))
    assert ids == {str(network.tasks["running"].pk), str(network.tasks["system"].pk)}
    assert "secret_of_bob" not in html
    assert 'style="width: 40%"' in html
    assert "/static/dashboard/tasks.js" in html


def test_tasks_page_filters_by_type_and_status(signed_in, network):
    html = page(signed_in, "tasks") + ""
    filtered = signed_in.get(reverse("dashboard:tasks") + "?task_status=failed").content.decode()
    assert str(network.tasks["failed"].pk) in filtered
    assert str(network.tasks["running"].pk) not in filtered
    assert str(network.tasks["running"].pk) in html


# -- query counts -----------------------------------------------------------------------------
def grow(network, n: int) -> None:
    """n more clusters, each with two nodes, two GPUs (one held), a block with an instance,
    node history and a vDAG: every page then has many more rows than before."""
    now = timezone.now()
    for i in range(n):
        cluster = Cluster.objects.create(id=f"more-{i}-{network.suffix}", region_id="x")
        nodes = [
            Node.objects.create(
                id=f"more-{i}-{j}-{network.suffix}",
                cluster=cluster,
                status="ready",
                last_heartbeat=now,
            )
            for j in range(2)
        ]
        gpus = [GPU.objects.create(node=node, index=0, memory_mb=1024) for node in nodes]
        block = Block.objects.create(
            id=f"more-blk-{i}-{network.suffix}", component_uri="m.x:1.0-a", cluster=cluster
        )
        instance = Instance.objects.create(
            instance_id=f"more-inst-{i}-{network.suffix}", block=block, node=nodes[0]
        )
        allocation = Allocation.objects.create(
            instance_id=instance.pk, block_id=block.pk, cluster=cluster, node=nodes[0]
        )
        GPUAllocation.objects.create(allocation=allocation, gpu=gpus[0], instance_id=instance.pk)
        NodeMetricSample.objects.bulk_create(
            NodeMetricSample(
                node_id=node.pk,
                cluster_id=cluster.pk,
                ts=now - timedelta(minutes=k),
                values={"vcpu.utilization": 5.0, "memory.averageUtil": 5.0},
            )
            for node in nodes
            for k in range(3)
        )
        Task.objects.create(task_type="block_alloc", task_status="in_progress")
        VDag.objects.create(
            vdag_uri=f"more{i}:1.0-x", name=f"more{i}", version="1.0", release_tag="x"
        )


def count_queries(client, url) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


PAGES = [
    ("overview", lambda net: []),
    ("clusters", lambda net: []),
    ("cluster", lambda net: [net.clusters["east"].pk]),
    ("blocks", lambda net: []),
    ("block", lambda net: [net.blocks["a"].pk]),
    ("vdags", lambda net: []),
    ("vdag", lambda net: [net.vdag.pk]),
    ("tasks", lambda net: []),
]


@pytest.mark.parametrize(("name", "args"), PAGES, ids=[p[0] for p in PAGES])
def test_page_queries_do_not_grow_with_the_network(
    signed_in, network, name, args, django_assert_max_num_queries
):
    url = reverse(f"dashboard:{name}", args=args(network))
    before = count_queries(signed_in, url)
    grow(network, 6)
    # The east cluster's page grows too: its nodes get more GPUs, workloads and holders.
    east = network.clusters["east"]
    for j in range(5):
        node = Node.objects.create(id=f"east-x{j}-{network.suffix}", cluster=east)
        GPU.objects.create(node=node, index=0)
    with django_assert_max_num_queries(14):
        assert signed_in.get(url).status_code == 200
    assert count_queries(signed_in, url) == before
