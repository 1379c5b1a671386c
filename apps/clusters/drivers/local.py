"""The ``local`` driver: each node is a node agent process on some machine
(``manage.py aios_node --cluster C --node N``) that turns the node's workload rows into child
processes. Provisioning writes the control plane's URLs; nodes become ready when their agents
report. Realizing a workload is only a wake-up: the agent reconciles from the database.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from django.conf import settings

from apps.clusters import workloads as workload_services
from apps.clusters.choices import NodeStatus
from apps.clusters.drivers.base import ClusterDriver, ProgressFn, WorkloadSpec, no_progress
from apps.clusters.models import Node, Workload


def agent_command(cluster_id: str, node_id: str) -> str:
    return f"python manage.py aios_node --cluster {cluster_id} --node {node_id}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalDriver(ClusterDriver):
    name = "local"

    def url_map(self) -> dict[str, str]:
        base = settings.AIOS_PUBLIC_URL.rstrip("/")
        cid = self.cluster.id
        return {
            "controllerService": f"{base}/api/v1/clusters/{cid}/",
            "metricsService": f"{base}/api/v1/metrics/clusters/{cid}/",
            "blocksQuery": f"{base}/api/v1/blocks/?cluster={cid}",
            "publicGateway": f"{base}/",
            "parameterUpdater": f"{base}/api/v1/clusters/{cid}/mgmt/",
        }

    def provision_cluster(self, progress: ProgressFn = no_progress) -> dict[str, Any]:
        progress(20, "registering the cluster's service URLs")
        url_map = self.url_map()
        config = dict(self.cluster.config or {})
        config["urlMap"] = url_map
        self.cluster.config = config
        self.cluster.save(update_fields=["config", "updated_at"])
        nodes = list(self.cluster.nodes.all())
        waiting = [n.id for n in nodes if not n.is_healthy]
        progress(
            70,
            f"{len(nodes) - len(waiting)} of {len(nodes)} node agents reporting",
            agent_commands=[agent_command(self.cluster.id, n) for n in waiting],
        )
        return {
            "urlMap": url_map,
            "nodes": [n.id for n in nodes],
            "agent_commands": [agent_command(self.cluster.id, n) for n in waiting],
        }

    def teardown_cluster(
        self, progress: ProgressFn = no_progress, *, timeout_s: float = 60
    ) -> dict[str, Any]:
        queryset = Workload.objects.filter(cluster=self.cluster)
        progress(20, f"stopping {queryset.count()} workloads")
        removed = self.remove_workloads(queryset)
        leftovers = self._wait_or_finalize(removed, timeout_s)
        progress(80, "workloads stopped", leftover_workloads=leftovers)
        return {"removed_workloads": len(removed), "leftover_workloads": leftovers}

    def add_node(self, node: Node, progress: ProgressFn = no_progress) -> dict[str, Any]:
        command = agent_command(self.cluster.id, node.id)
        node.refresh_from_db()
        ready = node.is_healthy
        progress(60, "node agent reporting" if ready else f"waiting for its agent: {command}")
        return {"node_id": node.id, "ready": ready, "agent_command": command}

    def remove_node(
        self, node: Node, progress: ProgressFn = no_progress, *, timeout_s: float = 60
    ) -> dict[str, Any]:
        queryset = Workload.objects.filter(node=node)
        progress(20, f"stopping {queryset.count()} workloads on {node.id}")
        removed = self.remove_workloads(queryset)
        leftovers = self._wait_or_finalize(removed, timeout_s)
        return {"removed_workloads": len(removed), "leftover_workloads": leftovers}

    def _wait_or_finalize(self, ids: list[str], timeout_s: float) -> list[str]:
        """Wait for the agents to stop the processes; rows left after the timeout are
        finalized anyway (their agent stops a removed node's processes when it notices)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and Workload.objects.filter(pk__in=ids).exists():
            time.sleep(0.2)
        leftovers = list(Workload.objects.filter(pk__in=ids))
        for workload in leftovers:
            workload_services.finalize_removal(workload)
        return [w.id for w in leftovers]

    def prepare(self, spec: WorkloadSpec, node: Node) -> WorkloadSpec:
        # Ports asked as 0 get a free port of this machine, written into the row (and env)
        # so clients can find the process.
        spec.ports = {name: port or _free_port() for name, port in spec.ports.items()}
        return spec

    def realize(self, workload: Workload) -> None:
        workload_services.wake_agent(workload.node_id)

    def unrealize(self, workload: Workload) -> None:
        workload_services.wake_agent(workload.node_id)

    def status(self) -> dict[str, Any]:
        nodes = []
        for node in self.cluster.nodes.prefetch_related("gpus"):
            nodes.append(
                {
                    "id": node.id,
                    "status": node.effective_status,
                    "schedulable": node.schedulable,
                    "last_heartbeat": node.last_heartbeat.isoformat()
                    if node.last_heartbeat
                    else None,
                    "gpus": node.gpus.count(),
                    "agent": node.agent_info,
                    "agent_command": agent_command(self.cluster.id, node.id),
                }
            )
        ready = sum(1 for n in nodes if n["status"] == NodeStatus.READY)
        return {
            "driver": self.name,
            "cluster_id": self.cluster.id,
            "cluster_status": self.cluster.status,
            "nodes": nodes,
            "ready_nodes": ready,
            "workloads": self.workload_summary(),
        }
