"""What the network dashboard shows, read from the other apps' models and metric services.

Read-only. Each page's data comes from one function here with a fixed number of queries
whatever the size of the network (rows are fetched in bulk and joined in Python, live
metrics with one Redis MGET/pipeline), so the views stay thin and a large network does not
turn a page into hundreds of queries. Live metrics are best effort: with Redis unreachable a
page still renders and says the live values are unavailable.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from django.db.models import (
    BooleanField,
    Count,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Window,
)
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import RowNumber
from django.http import Http404
from django.utils import timezone

from apps.allocator.models import GPUAllocation
from apps.blocks.choices import BlockStatus, InstanceHealth, InstanceStatus
from apps.blocks.models import Block, Instance
from apps.clusters import conf as clusters_conf
from apps.clusters.choices import ClusterStatus, NodeStatus
from apps.clusters.models import GPU, Cluster, Node, Workload
from apps.metrics import services as metrics
from apps.metrics.models import LiveEntityMetrics, NodeMetricSample
from apps.tasks.choices import TaskStatus
from apps.tasks.models import Task
from apps.vdags.choices import ControllerStatus, VDagStatus
from apps.vdags.models import VDag, VDagController
from block_sdk.vdag.graph import CompiledGraph, GraphError

from . import svg

log = logging.getLogger("aios.dashboard")

# History drawn in a sparkline: the last hour, at most SPARK_READ points read per node (an
# hour at the default 15 s sampling interval), averaged down to SPARK_POINTS to draw.
SPARK_WINDOW = timedelta(hours=1)
SPARK_READ = 240
SPARK_POINTS = 60
BLOCK_CHARTS = ("queue_total", "latency_p50_ms", "fps")
CPU_KEY = "vcpu.utilization"
MEMORY_KEY = "memory.averageUtil"
# Block metrics the health checker reports (block_sdk.block_controller.health), in the
# order the block page lists them; other recorded names follow alphabetically.
BLOCK_METRICS = (
    "queue_total",
    "pending",
    "fps",
    "latency_p50_ms",
    "current_instances",
    "healthy_instances",
)
# Bounds of the lists a page renders (the admin and the API page through the rest).
MAX_WORKLOADS = 500
MAX_TASKS = 100
RECENT_TASKS = 8
LIVE_TASK_SOCKETS = 25  # unfinished tasks the tasks page follows over websockets at once


# -- helpers ----------------------------------------------------------------------------------
def _by_status(queryset: QuerySet, choices: Any, column: str = "status") -> dict[str, int]:
    """``{status: count}`` for every choice (zeros included), one grouped query."""
    counts = dict.fromkeys(choices.values, 0)
    for status, n in queryset.values_list(column).annotate(n=Count("pk")).order_by():
        counts[status] = counts.get(status, 0) + n
    return counts


def node_up_q(now: datetime | None = None) -> Q:
    """Nodes that are up: ready and heartbeating recently (``Node.effective_status``)."""
    cutoff = (now or timezone.now()) - timedelta(seconds=clusters_conf.NODE_STALE_S)
    return Q(status=NodeStatus.READY, last_heartbeat__gte=cutoff)


def _live_nodes(node_ids: list[str]) -> tuple[dict[str, dict[str, Any] | None], bool]:
    """Live node documents (one MGET) and whether Redis answered."""
    try:
        return metrics.nodes_live_metrics(node_ids), True
    except redis.RedisError as exc:
        log.warning("event=dashboard_live_metrics_unavailable error=%r", exc)
        return dict.fromkeys(node_ids), False


def _live_entity(entity_type: str, entity_id: str) -> tuple[dict[str, float] | None, bool]:
    try:
        return metrics.entity_live_metrics(entity_type, entity_id), True
    except redis.RedisError as exc:
        log.warning("event=dashboard_live_metrics_unavailable error=%r", exc)
        return None, False


def latest_entity_metrics(entity_type: str, entity_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The latest recorded values of many entities in one query (the metrics app keeps one
    row per entity): ``{id: {"values": {...}, "ts": datetime, "fresh": bool}}``."""
    if not entity_ids:
        return {}
    cutoff = timezone.now() - timedelta(seconds=metrics.ENTITY_TTL_S)
    rows = LiveEntityMetrics.objects.filter(entity_type=entity_type, entity_id__in=entity_ids)
    return {
        row.entity_id: {"values": row.values, "ts": row.ts, "fresh": row.ts >= cutoff}
        for row in rows
    }


def downsample(values: list[float], points: int = SPARK_POINTS) -> list[float]:
    """At most ``points`` values: consecutive runs averaged (a sparkline is ~120 px wide)."""
    if len(values) <= points:
        return values
    size = len(values) / points
    out = []
    for i in range(points):
        chunk = values[int(i * size) : int((i + 1) * size)] or [values[int(i * size)]]
        out.append(sum(chunk) / len(chunk))
    return out


def node_history_series(
    node_ids: list[str], *, window: timedelta = SPARK_WINDOW, points: int = SPARK_READ
) -> dict[str, dict[str, list[float]]]:
    """CPU and memory utilisation history of many nodes in one query: the latest ``points``
    samples of each node within ``window``, oldest first. Only the two numbers are read (not
    the whole sample document). ``metrics.node_history`` serves one node; a row per node
    calling it would be one query per node."""
    if not node_ids:
        return {}
    since = timezone.now() - window
    rows = (
        NodeMetricSample.objects.filter(node_id__in=node_ids, ts__gte=since)
        .annotate(
            rank=Window(RowNumber(), partition_by=[F("node_id")], order_by=F("ts").desc()),
            cpu=KeyTransform(CPU_KEY, "values"),
            mem=KeyTransform(MEMORY_KEY, "values"),
        )
        .filter(rank__lte=points)
        .order_by("node_id", "ts")
        .values_list("node_id", "cpu", "mem")
    )
    out: dict[str, dict[str, list[float]]] = {n: {"cpu": [], "mem": []} for n in node_ids}
    for node_id, cpu, mem in rows:
        if isinstance(cpu, int | float):
            out[node_id]["cpu"].append(float(cpu))
        if isinstance(mem, int | float):
            out[node_id]["mem"].append(float(mem))
    return out


def node_sparkline(history: dict[str, list[float]] | None) -> Any:
    history = history or {}
    return svg.sparkline_svg(
        [
            svg.Series("CPU", "spark-cpu", downsample(history.get("cpu", []))),
            svg.Series("memory", "spark-mem", downsample(history.get("mem", []))),
        ]
    )


def _dict(value: Any) -> dict[str, Any]:
    """A JSON column that should hold an object; anything else reads as empty (a page shows
    what it can rather than fail on one odd row)."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _age_s(when: datetime | None, now: datetime) -> float | None:
    return None if when is None else max(0.0, (now - when).total_seconds())


# -- overview ---------------------------------------------------------------------------------
def visible_tasks(user: Any) -> QuerySet[Task]:
    """Tasks the user may see: staff see all; others their own and ownerless (system) ones,
    as in the tasks API and its websocket."""
    queryset = Task.objects.select_related("owner")
    if getattr(user, "is_staff", False):
        return queryset
    return queryset.filter(Q(owner_id=user.pk) | Q(owner__isnull=True))


def overview(user: Any) -> dict[str, Any]:
    """Counts and health of the whole network, one grouped query per kind of thing."""
    now = timezone.now()
    nodes = Node.objects.aggregate(
        total=Count("pk"),
        up=Count("pk", filter=node_up_q(now)),
        never=Count("pk", filter=Q(last_heartbeat__isnull=True)),
        cordoned=Count("pk", filter=Q(schedulable=False)),
    )
    nodes["down"] = nodes["total"] - nodes["up"]
    held = GPUAllocation.objects.filter(gpu=OuterRef("pk"))
    gpus = GPU.objects.annotate(held=Exists(held)).aggregate(
        total=Count("pk"),
        reserved=Count("pk", filter=Q(held=True)),
        shared=Count("pk", filter=Q(shared=True)),
    )
    gpus["free"] = gpus["total"] - gpus["reserved"]
    clusters = _by_status(Cluster.objects.all(), ClusterStatus)
    blocks = _by_status(Block.objects.all(), BlockStatus)
    instances = _by_status(
        Instance.objects.exclude(status=InstanceStatus.REMOVING), InstanceHealth, "health"
    )
    vdags = _by_status(VDag.objects.all(), VDagStatus)
    controllers = _by_status(VDagController.objects.all(), ControllerStatus)
    tasks = _by_status(visible_tasks(user), TaskStatus, "task_status")
    recent = list(visible_tasks(user).order_by("-created_at")[:RECENT_TASKS])
    return {
        "now": now,
        "stale_s": clusters_conf.NODE_STALE_S,
        "clusters": {"total": sum(clusters.values()), "by_status": clusters},
        "nodes": nodes,
        "gpus": gpus,
        "blocks": {"total": sum(blocks.values()), "by_status": blocks},
        "instances": {"total": sum(instances.values()), "by_health": instances},
        "vdags": {"total": sum(vdags.values()), "by_status": vdags},
        "controllers": {"total": sum(controllers.values()), "by_status": controllers},
        "tasks": {
            "total": sum(tasks.values()),
            "by_status": tasks,
            "running": tasks[TaskStatus.IN_PROGRESS],
            "recent": recent,
        },
    }


# -- clusters ---------------------------------------------------------------------------------
@dataclass(slots=True)
class ClusterRow:
    cluster: Cluster
    nodes_total: int = 0
    nodes_up: int = 0
    gpus_total: int = 0
    gpus_reserved: int = 0
    blocks: int = 0
    live: dict[str, Any] = field(default_factory=dict)

    @property
    def nodes_down(self) -> int:
        return self.nodes_total - self.nodes_up

    @property
    def gpus_free(self) -> int:
        return self.gpus_total - self.gpus_reserved


def cluster_rows(queryset: QuerySet[Cluster] | None = None) -> tuple[list[ClusterRow], bool]:
    """Every cluster with node, GPU and block counts and its live aggregate."""
    clusters = list(
        (queryset if queryset is not None else Cluster.objects.all()).select_related("owner")
    )
    ids = [c.pk for c in clusters]
    rows = {c.pk: ClusterRow(c) for c in clusters}
    now = timezone.now()
    node_ids_by_cluster: dict[str, list[str]] = defaultdict(list)
    for node_id, cluster_id, up in (
        Node.objects.filter(cluster_id__in=ids)
        .annotate(up=ExpressionWrapper(node_up_q(now), output_field=BooleanField()))
        .values_list("id", "cluster_id", "up")
    ):
        node_ids_by_cluster[cluster_id].append(node_id)
        rows[cluster_id].nodes_total += 1
        rows[cluster_id].nodes_up += int(bool(up))
    held = GPUAllocation.objects.filter(gpu=OuterRef("pk"))
    for cluster_id, total, reserved in (
        GPU.objects.filter(node__cluster_id__in=ids)
        .annotate(held=Exists(held))
        .values_list("node__cluster_id")
        .annotate(total=Count("pk"), reserved=Count("pk", filter=Q(held=True)))
        .values_list("node__cluster_id", "total", "reserved")
        .order_by()
    ):
        rows[cluster_id].gpus_total = total
        rows[cluster_id].gpus_reserved = reserved
    for cluster_id, n in (
        Block.objects.filter(cluster_id__in=ids)
        .values_list("cluster_id")
        .annotate(n=Count("pk"))
        .order_by()
    ):
        rows[cluster_id].blocks = n
    all_nodes = [n for nodes in node_ids_by_cluster.values() for n in nodes]
    live, ok = _live_nodes(all_nodes)
    for cluster_id, row in rows.items():
        docs = {n: live.get(n) for n in node_ids_by_cluster.get(cluster_id, [])}
        row.live = metrics.aggregate(cluster_id, docs)
    return list(rows.values()), ok


@dataclass(slots=True)
class GPUView:
    gpu: GPU
    holders: list[GPUAllocation] = field(default_factory=list)
    live: dict[str, Any] = field(default_factory=dict)

    @property
    def reserved_mb(self) -> int:
        return sum(h.memory_mb for h in self.holders if not h.exclusive)

    @property
    def state(self) -> str:
        if not self.holders:
            return "free"
        return "shared" if all(not h.exclusive for h in self.holders) else "exclusive"


@dataclass(slots=True)
class NodeView:
    node: Node
    live: dict[str, Any] | None
    sparkline: Any
    gpus: list[GPUView] = field(default_factory=list)
    workloads: int = 0
    heartbeat_age_s: float | None = None

    @property
    def up(self) -> bool:
        return self.node.is_healthy

    @property
    def cpu(self) -> float | None:
        return ((self.live or {}).get("vcpu") or {}).get("utilization")

    @property
    def memory(self) -> dict[str, Any]:
        return (self.live or {}).get("memory") or {}


def cluster_detail(cluster_id: str) -> dict[str, Any]:
    """A cluster with its nodes (live CPU/memory/GPU metrics, history sparkline), its GPUs
    and who holds them, its workloads, blocks and vDAG controllers."""
    cluster = Cluster.objects.select_related("owner").filter(pk=cluster_id).first()
    if cluster is None:
        raise Http404(f"no cluster {cluster_id!r}")
    now = timezone.now()
    nodes = list(Node.objects.filter(cluster=cluster).prefetch_related("gpus").order_by("id"))
    node_ids = [n.pk for n in nodes]
    live, live_ok = _live_nodes(node_ids)
    history = node_history_series(node_ids)
    holders: dict[int, list[GPUAllocation]] = defaultdict(list)
    for allocation in GPUAllocation.objects.filter(gpu__node__cluster=cluster).select_related(
        "allocation"
    ):
        holders[allocation.gpu_id].append(allocation)
    workloads = list(
        Workload.objects.filter(cluster=cluster)
        .exclude(remove_requested=True)
        .order_by("node_id", "kind", "id")[: MAX_WORKLOADS + 1]
    )
    workloads_truncated = len(workloads) > MAX_WORKLOADS
    workloads = workloads[:MAX_WORKLOADS]
    per_node = Counter(w.node_id for w in workloads)
    node_views: list[NodeView] = []
    gpu_views: list[GPUView] = []
    for node in nodes:
        doc = live.get(node.pk)
        live_gpus = {
            g.get("gpu_id"): g for g in ((doc or {}).get("gpus") or {}).get("gpus", []) or []
        }
        view = NodeView(
            node=node,
            live=doc,
            sparkline=node_sparkline(history.get(node.pk)),
            workloads=per_node.get(node.pk, 0),
            heartbeat_age_s=_age_s(node.last_heartbeat, now),
        )
        for gpu in node.gpus.all():
            gview = GPUView(gpu, holders.get(gpu.pk, []), live_gpus.get(gpu.index) or {})
            view.gpus.append(gview)
            gpu_views.append(gview)
        node_views.append(view)
    blocks = list(
        Block.objects.filter(cluster=cluster)
        .annotate(instance_count=Count("instances"))
        .order_by("id")
    )
    controllers = list(VDagController.objects.filter(cluster=cluster).order_by("pk"))
    agg = metrics.aggregate(cluster.pk, live)
    return {
        "cluster": cluster,
        "nodes": node_views,
        "gpus": gpu_views,
        "gpus_reserved": sum(1 for g in gpu_views if g.holders),
        "workloads": workloads,
        "workloads_truncated": workloads_truncated,
        "blocks": blocks,
        "controllers": controllers,
        "live": agg,
        "live_ok": live_ok,
        "nodes_up": sum(1 for v in node_views if v.up),
    }


# -- blocks -----------------------------------------------------------------------------------
@dataclass(slots=True)
class BlockRow:
    block: Block
    instances: int = 0
    healthy: int = 0
    unhealthy: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


def block_rows(queryset: QuerySet[Block] | None = None) -> list[BlockRow]:
    """Blocks with instance health counts and their latest recorded metrics."""
    blocks = list(
        (queryset if queryset is not None else Block.objects.all())
        .select_related("owner", "cluster")
        .order_by("id")
    )
    rows = {b.pk: BlockRow(b) for b in blocks}
    for block_id, health, n in (
        Instance.objects.filter(block_id__in=list(rows))
        .exclude(status=InstanceStatus.REMOVING)
        .values_list("block_id", "health")
        .annotate(n=Count("pk"))
        .order_by()
    ):
        row = rows[block_id]
        row.instances += n
        if health == InstanceHealth.HEALTHY:
            row.healthy += n
        elif health == InstanceHealth.UNHEALTHY:
            row.unhealthy += n
    for block_id, latest in latest_entity_metrics("block", list(rows)).items():
        rows[block_id].metrics = latest
    return list(rows.values())


@dataclass(slots=True)
class InstanceView:
    instance: Instance
    gpus: list[GPUAllocation] = field(default_factory=list)
    workload: Workload | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def _ordered_metrics(values: dict[str, float] | None) -> list[tuple[str, float]]:
    values = {k: v for k, v in (values or {}).items() if not k.startswith("_")}
    known = [(k, values[k]) for k in BLOCK_METRICS if k in values]
    rest = sorted((k, v) for k, v in values.items() if k not in BLOCK_METRICS)
    return known + rest


def block_detail(block_id: str) -> dict[str, Any]:
    """A block: its instances (node, GPUs held, health, workload state), endpoints, live
    metrics with an hour of history, and the vDAGs that route through it."""
    block = (
        Block.objects.select_related("owner", "cluster", "component").filter(pk=block_id).first()
    )
    if block is None:
        raise Http404(f"no block {block_id!r}")
    instances = list(block.instances.select_related("node").order_by("created_at", "pk"))
    ids = [i.pk for i in instances]
    gpus: dict[str, list[GPUAllocation]] = defaultdict(list)
    for held in GPUAllocation.objects.filter(instance_id__in=ids).select_related("gpu"):
        gpus[held.instance_id].append(held)
    # The block's own services (executor, block controller, init container) by name.
    service_ids = {
        name: str(entry.get("workload_id"))
        for name, entry in _dict(block.services).items()
        if isinstance(entry, dict) and entry.get("workload_id")
    }
    workload_ids = [i.workload_id for i in instances if i.workload_id]
    workloads = {
        w.pk: w for w in Workload.objects.filter(pk__in=[*workload_ids, *service_ids.values()])
    }
    instance_metrics = latest_entity_metrics("instance", ids)
    views = [
        InstanceView(
            instance=i,
            gpus=gpus.get(i.pk, []),
            workload=workloads.get(i.workload_id),
            metrics=instance_metrics.get(i.pk, {}),
        )
        for i in instances
    ]
    live, live_ok = _live_entity("block", block.pk)
    history: dict[str, list[float]] = defaultdict(list)
    for name in BLOCK_CHARTS:  # one bounded query per chart: a constant three
        for point in metrics.entity_history(
            "block", block.pk, name=name, since=timezone.now() - SPARK_WINDOW, limit=SPARK_READ
        ):
            history[name].append(point["value"])
    charts = [
        (
            name,
            svg.sparkline_svg(
                [svg.Series(name, "spark-block", downsample(history[name]), unit="")], hi=None
            ),
        )
        for name in BLOCK_CHARTS
        if history.get(name)
    ]
    services = [
        (name, _dict(block.services).get(name), workloads.get(workload_id))
        for name, workload_id in sorted(service_ids.items())
    ]
    vdags = list(VDag.objects.filter(block_ids__contains=[block.pk]).order_by("pk"))
    # "blk", not "block": inside a template's {% block %} tag, "block" is the tag itself.
    return {
        "blk": block,
        "instances": views,
        "healthy": sum(1 for v in views if v.instance.health == InstanceHealth.HEALTHY),
        "services": services,
        "endpoints": sorted((str(k), v) for k, v in _dict(block.endpoints).items()),
        "live": _ordered_metrics(live),
        "live_ok": live_ok,
        "charts": charts,
        "vdags": vdags,
    }


# -- vDAGs ------------------------------------------------------------------------------------
def vdag_rows(queryset: QuerySet[VDag] | None = None) -> list[VDag]:
    return list(
        (queryset if queryset is not None else VDag.objects.all())
        .select_related("owner")
        .prefetch_related("controllers")
        .order_by("pk")
    )


def graph_of(vdag: VDag) -> tuple[list[str], list[tuple[str, str]], dict[str, str], str]:
    """Nodes, edges and block ids to draw: the compiled graph when the vDAG has one (nested
    vDAGs expanded, ``outer/inner`` labels), else the spec's own nodes and connections (a
    pending or failed vDAG). The last item says which one was used."""
    if vdag.compiled_graph:
        try:
            compiled = CompiledGraph.from_dict(vdag.compiled_graph)
        except (GraphError, TypeError, ValueError, AttributeError) as exc:
            # A stored graph this code cannot read: draw the spec instead of failing.
            log.warning("event=dashboard_bad_compiled_graph vdag=%s error=%r", vdag.pk, exc)
        else:
            edges = [(src, dst) for src in compiled.order for dst in compiled.successors(src)]
            block_ids = {label: node.block_id or "" for label, node in compiled.nodes.items()}
            return list(compiled.order), edges, block_ids, "compiled"
    labels: list[str] = []
    spec = _dict(vdag.spec)
    for node in _list(vdag.nodes) or _list(spec.get("nodes")):
        label = node.get("nodeLabel") if isinstance(node, dict) else None
        if isinstance(label, str) and label and label not in labels:
            labels.append(label)
    graph = _dict(vdag.graph) or _dict(spec.get("graph"))
    edges = []
    for connection in _list(graph.get("connections")):
        if not isinstance(connection, dict):
            continue
        dst = connection.get("nodeLabel")
        for item in _list(connection.get("inputs")):
            src = item.get("nodeLabel") if isinstance(item, dict) else item
            if isinstance(src, str) and isinstance(dst, str) and (src, dst) not in edges:
                edges.append((src, dst))
    assignment = {k: v for k, v in _dict(vdag.assignment).items() if isinstance(v, str)}
    return labels, edges, assignment, "spec"


def vdag_detail(vdag_uri: str, *, block_url: Any = None) -> dict[str, Any]:
    """A vDAG drawn as a graph (inline SVG), its node assignment with block statuses, its
    controllers and live metrics. ``block_url(block_id)`` makes the nodes links."""
    vdag = VDag.objects.select_related("owner").filter(pk=vdag_uri).first()
    if vdag is None:
        raise Http404(f"no vDAG {vdag_uri!r}")
    labels, edges, block_ids, source = graph_of(vdag)
    statuses = dict(
        Block.objects.filter(pk__in=set(block_ids.values()) - {""}).values_list("id", "status")
    )
    layout = svg.layout_graph(labels, edges, block_ids=block_ids)
    for node in layout.nodes.values():
        if node.block_id:
            node.status = statuses.get(node.block_id, "missing")
            if block_url is not None and node.block_id in statuses:
                node.href = block_url(node.block_id)
    controllers = list(vdag.controllers.select_related("cluster").order_by("pk"))
    live, live_ok = _live_entity("vdag", vdag.pk)
    controller_metrics = latest_entity_metrics("vdag_controller", [c.pk for c in controllers])
    return {
        "vdag": vdag,
        "svg": svg.render_graph_svg(layout, title=f"vDAG {vdag.pk}"),
        "layout": layout,
        "graph_source": source,
        "assignment": [
            (label, block_ids.get(label, ""), statuses.get(block_ids.get(label, ""), ""))
            for label in labels
        ],
        "edges": edges,
        "controllers": [(c, controller_metrics.get(c.pk, {})) for c in controllers],
        "live": _ordered_metrics(live),
        "live_ok": live_ok,
    }


# -- tasks ------------------------------------------------------------------------------------
def task_page(queryset: QuerySet[Task]) -> dict[str, Any]:
    """The most recent tasks of a (filtered) queryset, and which of them to follow live."""
    tasks = list(queryset.order_by("-created_at")[:MAX_TASKS])
    follow = [str(t.pk) for t in tasks if not t.is_finished][:LIVE_TASK_SOCKETS]
    return {"tasks": tasks, "follow": follow, "limit": MAX_TASKS}
