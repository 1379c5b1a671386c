"""A whole local network for the vDAG tests, for real: the control plane over HTTP (the live
server, which block controllers call back), a Celery worker on a private queue, node agents
as child processes, blocks created through ``createBlock``, vDAGs through ``createvDAG`` and
controllers through ``POST /api/v1/vdag-controllers/``; requests go over gRPC."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import grpc
import psutil
import redis
from django.conf import settings

from apps.clusters.models import Node
from block_sdk.protos import vdag_packet_pb2 as vpb
from block_sdk.protos import vdag_packet_pb2_grpc as vpb_grpc
from block_sdk.queues import BlockKeys
from tests.support.procs import ManagedProcess, python_argv, wait_until
from tests.vdags.support import envelope

ROOT = Path(__file__).resolve().parents[2]
AGENT_FAST = ("--tick", "0.2", "--heartbeat-interval", "0.3", "--metrics-interval", "2")
AFFINE = "tests.vdags.blocks:AffineBlock"

# The block runtime and the vDAG controllers, sped up for test time (read by the Celery
# worker, the live server and, through workload environments, the processes).
FAST_ENV = {
    "AIOS_BLOCK_CONTROLLER_DEFAULTS": json.dumps(
        {
            "mapper_interval_s": 0.5,
            "autoscaler_interval_s": 2.0,
            "health_interval_s": 1.0,
            "health_timeout_s": 2.0,
            "startup_grace_s": 10.0,
            "report_interval_s": 2.0,
            "api_timeout_s": 10.0,
            "http_host": "127.0.0.1",
        }
    ),
    "AIOS_BLOCK_INSTANCE_ENV": json.dumps(
        {
            "AIOS_HEARTBEAT_INTERVAL_S": "0.3",
            "AIOS_HEARTBEAT_TTL_S": "3.0",
            "AIOS_TAKE_TIMEOUT_S": "0.5",
            "AIOS_SHUTDOWN_GRACE_S": "2",
            "AIOS_INSTANCE_HTTP_HOST": "127.0.0.1",
        }
    ),
    "AIOS_BLOCK_EXECUTOR_CONFIG": json.dumps({"watch_interval_s": 0.2, "request_timeout_s": 20}),
    "AIOS_BLOCK_START_TIMEOUT_S": "90",
    "AIOS_BLOCK_REMOVAL_WAIT_S": "20",
    "AIOS_VDAG_CONTROLLER_DEFAULTS": json.dumps(
        {"metrics_interval_s": 0.5, "health_interval_s": 1.0, "request_timeout_s": 15}
    ),
    "AIOS_VDAG_CONTROLLER_START_TIMEOUT_S": "60",
}


def component_values(name: str, entrypoint: str = AFFINE) -> dict[str, Any]:
    return {
        "componentId": {"name": name, "version": "1.0.0", "releaseTag": "test"},
        "componentType": "utility",
        "componentMode": "aios",
        "containerRegistryInfo": {
            "containerImageMetadata": {"entrypoint": entrypoint, "image": "aios/test:1"}
        },
        "componentMetadata": {"description": "x -> x*mul + add"},
        "componentInitData": {},
        "componentInitSettings": {},
        "componentParameters": {"mul": 1.0, "add": 0.0},
        "componentInputProtocol": {"type": "object"},
        "componentOutputProtocol": {"type": "object"},
        "tags": ["test"],
    }


def pinned(cluster_id: str) -> list[dict[str, Any]]:
    """A block's policyRulesSpec that places it on one cluster."""
    return [
        {
            "values": {
                "name": "clusterAllocator",
                "policyRuleURI": "aios.allocator_best_fit:1.0-stable",
                "parameters": {"filter": {"clusterQuery": {"id": cluster_id}}},
            }
        }
    ]


def marked_processes(markers: set[str]) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
            if env.get("AIOS_SUPERVISOR") in markers and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


class LiveNetwork:
    def __init__(self, env: dict[str, str], tmp_path: Path, api) -> None:
        self.env = env
        self.tmp_path = tmp_path
        self.api = api
        self.agents: list[ManagedProcess] = []
        self.markers: set[str] = set()
        self.block_ids: set[str] = set()
        self.controller_ids: set[str] = set()
        self.channels: list[grpc.Channel] = []
        self.redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)

    # -- nodes -------------------------------------------------------------------------------
    def agent(self, cluster_id: str, node_id: str, *, wait: bool = True) -> ManagedProcess:
        argv = python_argv(
            "manage.py",
            "aios_node",
            "--cluster",
            cluster_id,
            "--node",
            node_id,
            "--create",
            "--stop-grace",
            "2",
            *AGENT_FAST,
        )
        env = {**self.env, "AIOS_DATA_DIR": str(self.tmp_path / "agent-data")}
        proc = ManagedProcess(
            argv, env=env, log_path=self.tmp_path / f"agent-{node_id}-{len(self.agents)}.log"
        )
        self.agents.append(proc)
        self.markers.add(f"{cluster_id}/{node_id}")
        if wait:
            self.wait_node(node_id, proc)
        return proc

    def wait_node(self, node_id: str, proc: ManagedProcess) -> None:
        def ready() -> bool:
            node = Node.objects.filter(pk=node_id).first()
            return (node is not None and node.is_healthy) or proc.proc.poll() is not None

        wait_until(ready, 90, f"node {node_id} ready")
        assert proc.proc.poll() is None, proc.log_text()

    # -- the API -----------------------------------------------------------------------------
    def component(self, name: str, entrypoint: str = AFFINE) -> str:
        response = self.api.post(
            "/api/createComponent", envelope(component_values(name, entrypoint)), format="json"
        )
        assert response.status_code in (200, 201), response.content
        body = response.json()
        return body.get("componentURI") or body["component"]["componentURI"]

    def block(self, component_uri: str, block_id: str, cluster_id: str, **parameters: Any) -> str:
        values = {
            "blockComponentURI": component_uri,
            "blockId": block_id,
            "minInstances": 1,
            "maxInstances": 1,
            "parameters": parameters,
            "policyRulesSpec": pinned(cluster_id),
        }
        response = self.api.post("/api/createBlock", envelope(values), format="json")
        assert response.status_code == 202, response.content
        self.block_ids.add(block_id)
        return block_id

    def wait_blocks(self, block_ids: list[str], timeout: float = 120) -> dict[str, Any]:
        docs: dict[str, Any] = {}

        def running() -> bool:
            for block_id in block_ids:
                doc = self.api.get(f"/api/v1/blocks/{block_id}/").json()
                if doc.get("status") == "failed":
                    raise AssertionError(f"block {block_id} failed: {doc}\n{self.logs()}")
                docs[block_id] = doc
            return all(d.get("status") == "running" for d in docs.values())

        try:
            wait_until(running, timeout, f"blocks {block_ids} running", interval=0.3)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None
        return docs

    def create_vdag(self, values: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        response = self.api.post("/api/createvDAG", envelope(values), format="json")
        assert response.status_code == 202, response.content
        uri = response.json()["vdagURI"]

        def active():
            doc = self.api.get(f"/api/v1/vdags/{uri}/").json()
            if doc["status"] == "failed":
                raise AssertionError(f"vDAG failed: {doc['status_reason']}")
            return doc if doc["status"] == "active" else None

        return wait_until(active, timeout, f"vDAG {uri} active", interval=0.2)

    def controller(
        self, vdag_uri: str, cluster_id: str, timeout: float = 90, **config: Any
    ) -> dict[str, Any]:
        controller_id = f"ctl-{uuid.uuid4().hex[:8]}"
        body = {
            "vdag_controller_id": controller_id,
            "vdag_uri": vdag_uri,
            "cluster_id": cluster_id,
            "config": {"policy_execution_mode": "local", "replicas": 1, **config},
        }
        response = self.api.post("/api/v1/vdag-controllers/", body, format="json")
        assert response.status_code == 202, response.content
        self.controller_ids.add(controller_id)
        return self.wait_controller(controller_id, timeout)

    def wait_controller(self, controller_id: str, timeout: float = 90) -> dict[str, Any]:
        def running():
            doc = self.api.get(f"/api/v1/vdag-controllers/{controller_id}/").json()
            if doc["status"] == "failed":
                raise AssertionError(f"controller failed: {doc['status_reason']}\n{self.logs()}")
            return doc if doc["status"] == "running" else None

        try:
            return wait_until(running, timeout, f"controller {controller_id} running", 0.2)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    # -- the data plane ------------------------------------------------------------------------
    def vdag_stub(self, address: str) -> vpb_grpc.vDAGInferenceServiceStub:
        channel = grpc.insecure_channel(address)
        self.channels.append(channel)
        return vpb_grpc.vDAGInferenceServiceStub(channel)

    def infer(
        self, address: str, data: Any, *, session: str = "s", seq: int = 1, timeout: float = 20
    ) -> Any:
        packet = vpb.vDAGInferencePacket(
            session_id=session, seq_no=seq, data=json.dumps(data), ts=time.time()
        )
        reply = self.vdag_stub(address).infer(packet, timeout=timeout)
        assert reply.session_id == session and reply.seq_no == seq
        return json.loads(reply.data)

    def executor_proxy_count(self, block_doc: dict[str, Any]) -> float:
        """How many packets the block's executor took over InferenceProxy (gRPC hops)."""
        _, text = http_get(f"{block_doc['endpoints']['http']}/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith("aios_executor_tasks_processed_total") and 'method="proxy"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def logs(self) -> str:
        parts = []
        for path in sorted(self.tmp_path.rglob("*.log"), key=lambda p: p.stat().st_mtime)[-14:]:
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        for proc in self.agents:  # TERM all first: they stop their children in parallel
            proc.signal(signal.SIGTERM)
        for proc in self.agents:
            proc.stop(timeout=15)
        for leftover in marked_processes(self.markers):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(leftover.pid, signal.SIGKILL)
        patterns = [f"{BlockKeys(b).base}:*" for b in self.block_ids]
        patterns += [f"aios:vdag:{{{c}}}:*" for c in self.controller_ids]
        for pattern in patterns:
            escaped = pattern.replace("{", "\\{").replace("}", "\\}")
            keys = list(self.redis.scan_iter(match=escaped, count=500))
            if keys:
                self.redis.delete(*keys)
        self.redis.close()
