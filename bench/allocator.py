"""Placement decision benchmark: the full allocation flow with the built-in policies.

For simulated networks of 10, 100 and 1,000 clusters x 8 nodes x 8 GPUs (rows in
PostgreSQL, live node metrics in Redis, fresh heartbeats), it times complete decisions —
candidates → ``selection`` → ``dry_run`` per candidate → ``post_dry_run`` → ``allocation``
with the row locks and the reservation written — and dry-runs alone, releasing each
reservation so every decision sees the same network. It prints p50/p95 in ms, decisions per
second, and the growth against the smallest network (linear growth would be x10, x100).

Needs PostgreSQL and Redis; it uses its own database (created and migrated if missing):

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/aios_bench_allocator \\
    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/allocator.py [--decisions 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aios_site.settings")
os.environ.setdefault("AIOS_LOG_LEVEL", "WARNING")

NODES_PER_CLUSTER = 8
GPUS_PER_NODE = 8
SIZES = (10, 100, 1000)
KUBE_SCHEDULER_FLOOR = "680-1,100 pods/s at 5k-15k nodes (kube-scheduler CI floor)"


def ensure_database() -> None:
    import psycopg

    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("set DATABASE_URL to a database the benchmark may fill (it creates it)")
    base, _, name = url.rpartition("/")
    name = name.split("?")[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def metrics_doc(node_id: str, cluster_id: str, rng_seed: int) -> dict:
    free = [40960 - (rng_seed * 37 + i * 911) % 20000 for i in range(GPUS_PER_NODE)]
    return {
        "node_id": node_id,
        "cluster_id": cluster_id,
        "ts": time.time(),
        "vcpu": {"count": 64, "load_15m": (rng_seed % 17) / 2.0, "utilization": 20.0},
        "memory": {"totalMem": 524288, "freeMem": 400000, "usedMem": 124288},
        "gpus": {
            "count": GPUS_PER_NODE,
            "totalFreeMem": sum(free),
            "gpus": [
                {
                    "gpu_id": i,
                    "totalMem": 40960,
                    "freeMem": f,
                    "usedMem": 40960 - f,
                    "cudaUtilization": 10.0,
                    "memUtilization": 30.0,
                    "temperature": 50.0,
                }
                for i, f in enumerate(free)
            ],
        },
    }


def seed(prefix: str, clusters: int) -> list[str]:
    """Clusters, nodes and GPUs in PostgreSQL; live metrics in Redis."""
    from django.utils import timezone

    from apps.clusters.models import GPU, Cluster, Node
    from apps.metrics.services import NODE_KEY, _redis

    now = timezone.now()
    cluster_rows, node_rows, gpu_specs = [], [], []
    for c in range(clusters):
        cid = f"{prefix}-c{c}"
        cluster_rows.append(
            Cluster(
                id=cid,
                region_id=f"r{c % 7}",
                status="live",
                driver="local",
                gpus={"count": 64, "memory": 64 * 40960},
                vcpus={"count": 512},
                memory=8 * 524288,
                cluster_metadata={"vendor": f"v{c % 5}"},
            )
        )
        for n in range(NODES_PER_CLUSTER):
            nid = f"{cid}-n{n}"
            node_rows.append(
                Node(
                    id=nid,
                    cluster_id=cid,
                    status="ready",
                    last_heartbeat=now,
                    vcpus={"count": 64},
                    memory=524288,
                )
            )
            gpu_specs.extend((nid, i) for i in range(GPUS_PER_NODE))
    Cluster.objects.bulk_create(cluster_rows, batch_size=2000)
    Node.objects.bulk_create(node_rows, batch_size=2000)
    GPU.objects.bulk_create(
        [GPU(node_id=nid, index=i, model="A100", memory_mb=40960) for nid, i in gpu_specs],
        batch_size=5000,
    )
    # A live system's autovacuum keeps planner statistics current; freshly bulk-loaded
    # tables need it done by hand, or the planner guesses "2 rows" for thousands.
    from django.db import connection

    with connection.cursor() as cursor:
        for table in (
            "clusters_cluster",
            "clusters_node",
            "clusters_gpu",
            "allocator_allocation",
            "allocator_gpuallocation",
            "metrics_liveclustermetrics",
        ):
            cursor.execute(f"VACUUM ANALYZE {table}")
    pipe = _redis().pipeline(transaction=False)
    for index, node in enumerate(node_rows):
        doc = metrics_doc(node.id, node.cluster_id, index)
        pipe.set(NODE_KEY.format(node.id), json.dumps(doc), ex=3600)
    pipe.execute()
    return [c.id for c in cluster_rows]


def cleanup(prefix: str) -> None:
    """Delete what ``seed`` made, table by table (no ORM cascade: other apps' tables that
    point at clusters need not exist in the benchmark's database)."""
    from django.db import connection

    from apps.clusters.models import Node
    from apps.metrics.services import NODE_KEY, _redis

    node_ids = list(Node.objects.filter(id__startswith=prefix).values_list("id", flat=True))
    for start in range(0, len(node_ids), 5000):
        _redis().delete(*[NODE_KEY.format(n) for n in node_ids[start : start + 5000]])
    like = prefix + "%"
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM allocator_gpuallocation WHERE allocation_id IN "
            "(SELECT id FROM allocator_allocation WHERE cluster_id LIKE %s)",
            [like],
        )
        cursor.execute("DELETE FROM allocator_allocation WHERE cluster_id LIKE %s", [like])
        cursor.execute("DELETE FROM clusters_workload WHERE cluster_id LIKE %s", [like])
        cursor.execute("DELETE FROM clusters_gpu WHERE node_id LIKE %s", [like])
        cursor.execute("DELETE FROM clusters_node WHERE cluster_id LIKE %s", [like])
        cursor.execute("DELETE FROM metrics_liveclustermetrics WHERE cluster_id LIKE %s", [like])
        cursor.execute("DELETE FROM clusters_cluster WHERE id LIKE %s", [like])


def block_spec() -> dict:
    return {
        "blockId": "bench-block",
        "minInstances": 1,
        "policyRulesSpec": [
            {
                "values": {
                    "name": "resourceAllocator",
                    "policyRuleURI": "aios.allocator_best_fit:1.0-stable",
                    "parameters": {
                        "gpus": 1,
                        "min_gpu_free_memory": 20000,
                        "vcpus": 2,
                        "memory": 4096,
                    },
                }
            },
        ],
    }


def time_decisions(cluster_ids: list[str], count: int, *, dry_run: bool) -> list[float]:
    from django.utils import timezone

    from apps.allocator import services
    from apps.clusters.models import Node

    Node.objects.filter(cluster_id__in=cluster_ids).update(last_heartbeat=timezone.now())
    spec = block_spec()
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        decision = services.allocate(spec, dry_run=dry_run, clusters=None)
        timings.append((time.perf_counter() - started) * 1000)
        if not dry_run:
            services.release(decision.instances[0].instance_id)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=30)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = parser.parse_args()
    ensure_database()
    setup_django()
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    try:
        for size in sizes:
            t0 = time.perf_counter()
            ids = seed(f"{prefix}s{size}", size)
            seeded = time.perf_counter() - t0
            time_decisions(ids, 2, dry_run=False)  # warm caches (policy import, connections)
            full = time_decisions(ids, args.decisions, dry_run=False)
            dry = time_decisions(ids, args.decisions, dry_run=True)
            results[size] = (full, dry)
            print(
                f"{size:>5} clusters ({size * NODES_PER_CLUSTER} nodes, "
                f"{size * NODES_PER_CLUSTER * GPUS_PER_NODE} GPUs; seeded in {seeded:.1f}s): "
                f"decision p50 {statistics.median(full):7.1f} ms p95 "
                f"{sorted(full)[int(len(full) * 0.95) - 1]:7.1f} ms "
                f"({1000 / statistics.median(full):6.1f}/s); dry-run p50 "
                f"{statistics.median(dry):7.1f} ms",
                flush=True,
            )
            cleanup(f"{prefix}s{size}")
    finally:
        cleanup(prefix)
    base = sizes[0]
    print("\ngrowth of the p50 decision time against", base, "clusters:")
    for size in sizes:
        ratio = statistics.median(results[size][0]) / statistics.median(results[base][0])
        print(f"  {size:>5} clusters: x{ratio:5.1f} (linear would be x{size / base:.0f})")
    largest = statistics.median(results[sizes[-1]][0])
    print(
        f"\ntarget: < 200 ms p50 at 1,000 clusters -> {largest:.1f} ms "
        f"({'met' if largest < 200 else 'NOT met'})"
    )
    print(
        f"one decision places one instance against every candidate cluster; at "
        f"{1000 / largest:.0f} decisions/s over {sizes[-1] * NODES_PER_CLUSTER} nodes, compared "
        f"with {KUBE_SCHEDULER_FLOOR}, which places pods one node pool at a time."
    )


if __name__ == "__main__":
    main()
