"""Serving workloads (vDAG controllers, adhoc inference servers): where they answer and
whether they do. Shared by the vdags and inference apps."""

from __future__ import annotations

import socket
from typing import Any

from apps.clusters.choices import WorkloadStatus
from apps.clusters.models import Cluster, Node, Workload
from apps.vdags import conf


def advertise_host(cluster: Cluster, node: Node | None) -> str:
    """The host clients use to reach a process on ``node`` (the blocks app's rule)."""
    try:
        from apps.blocks.runtime import advertise_host as blocks_advertise_host
    except ImportError:  # pragma: no cover - the blocks app is always installed
        return "127.0.0.1"
    return blocks_advertise_host(cluster, node)


def service_port(cluster: Cluster, default: int) -> int:
    """A port for a serving process: a free one of this machine on the local driver (all
    its processes share one host), the conventional one elsewhere (a pod has its own IP)."""
    if cluster.driver != "local":
        return default
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def endpoint(workload: Workload, cluster: Cluster) -> dict[str, Any]:
    """``{workload_id, node_id, grpc: host:port, http: http://host:port}`` of a workload
    with ``grpc``/``http`` ports."""
    host = advertise_host(cluster, workload.node)
    ports = workload.ports or {}
    return {
        "workload_id": workload.id,
        "node_id": workload.node_id,
        "grpc": f"{host}:{ports['grpc']}" if ports.get("grpc") else "",
        "http": f"http://{host}:{ports['http']}" if ports.get("http") else "",
    }


def grpc_answers(address: str, timeout_s: float | None = None) -> bool:
    """True when ``host:port`` accepts a TCP connection (its gRPC server listens)."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit():
        return False
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s or conf.PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def observed_status(
    current: str,
    reason: str,
    endpoints: list[dict[str, Any]],
    workloads: list[Workload],
    *,
    running: str,
    starting: str,
    failed: str,
) -> tuple[str, str]:
    """``running`` while a replica's gRPC port answers; a running service that stops
    answering is ``starting`` again (its node agent restarts it), ``failed`` when all its
    workloads failed for good."""
    if any(grpc_answers(e.get("grpc", "")) for e in endpoints or []):
        return running, ""
    if workloads and all(w.status == WorkloadStatus.FAILED for w in workloads):
        return failed, workloads[0].last_error or "its workloads failed"
    if current == running:
        return starting, "its gRPC port stopped answering"
    return current, reason
