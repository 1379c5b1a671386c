"""Fixtures for the blocks tests: a whole local network for real.

``network`` gives: the control plane over HTTP (pytest-django's live server, which the block
controllers call back), a Celery worker on a private queue (``block_alloc`` / ``block_removal``),
and node agents started on demand; every block process is a real child of an agent. The
intervals of the block runtime are shortened through the environment so that failure
detection and autoscaling fit in test time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
import redis
from django.conf import settings

from apps.clusters.models import Node
from block_sdk.packet import make_block_packet
from block_sdk.protos import aios_packet_pb2_grpc as pb_grpc
from block_sdk.queues import BlockKeys
from tests.support.procs import ManagedProcess, python_argv, wait_until

ROOT = Path(__file__).resolve().parents[2]
ECHO_SPEC = ROOT / "examples" / "echo" / "component.json"
SLOW_SPEC = ROOT / "examples" / "slow" / "component.json"
AGENT_FAST = ("--tick", "0.2", "--heartbeat-interval", "0.3", "--metrics-interval", "1")

# The block runtime, sped up (read by the Celery worker, the live server and the processes).
FAST_ENV = {
    "AIOS_BLOCK_CONTROLLER_DEFAULTS": json.dumps(
        {
            "mapper_interval_s": 0.5,
            "autoscaler_interval_s": 0.5,
            "health_interval_s": 0.4,
            "health_timeout_s": 1.0,
            "startup_grace_s": 4.0,
            "report_interval_s": 1.0,
            "api_timeout_s": 10.0,
            "http_host": "127.0.0.1",
        }
    ),
    "AIOS_BLOCK_INSTANCE_ENV": json.dumps(
        {
            "AIOS_HEARTBEAT_INTERVAL_S": "0.2",
            "AIOS_HEARTBEAT_TTL_S": "1.0",
            "AIOS_TAKE_TIMEOUT_S": "0.5",
            "AIOS_SHUTDOWN_GRACE_S": "2",
            "AIOS_INSTANCE_HTTP_HOST": "127.0.0.1",
        }
    ),
    "AIOS_BLOCK_EXECUTOR_CONFIG": json.dumps({"watch_interval_s": 0.2, "request_timeout_s": 20}),
    "AIOS_BLOCK_START_TIMEOUT_S": "60",
    "AIOS_BLOCK_REMOVAL_WAIT_S": "30",
}


@pytest.fixture
def fast_env(monkeypatch) -> dict[str, str]:
    for key, value in FAST_ENV.items():
        monkeypatch.setenv(key, value)
    return dict(FAST_ENV)


@pytest.fixture
def child_env(child_env, live_server, fast_env, settings) -> dict[str, str]:
    """The root fixture's environment, plus the control plane's URL and the fast runtime."""
    settings.AIOS_PUBLIC_URL = live_server.url
    return {**child_env, **fast_env, "AIOS_PUBLIC_URL": live_server.url}


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


class Network:
    """Node agents on demand, and helpers to drive the API as a user would."""

    def __init__(self, env: dict[str, str], tmp_path: Path, api) -> None:
        self.env = env
        self.tmp_path = tmp_path
        self.api = api
        self.agents: list[ManagedProcess] = []
        self.markers: set[str] = set()
        self.block_ids: set[str] = set()
        self.channels: list[grpc.Channel] = []
        self.redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)

    # -- nodes ---------------------------------------------------------------------------
    def agent(self, cluster_id: str, node_id: str, *extra: str) -> ManagedProcess:
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
            *extra,
        )
        env = {**self.env, "AIOS_DATA_DIR": str(self.tmp_path / "agent-data")}
        proc = ManagedProcess(
            argv, env=env, log_path=self.tmp_path / f"agent-{node_id}-{len(self.agents)}.log"
        )
        self.agents.append(proc)
        self.markers.add(f"{cluster_id}/{node_id}")
        wait_until(
            lambda: _node_ready(node_id) or proc.proc.poll() is not None,
            60,
            f"node {node_id} ready",
        )
        assert proc.proc.poll() is None, proc.log_text()
        return proc

    # -- the API ------------------------------------------------------------------------------
    def create_component(self, path: Path = ECHO_SPEC, **changes: Any) -> str:
        spec = json.loads(path.read_text())
        spec["body"]["spec"]["values"].update(changes)
        response = self.api.post("/api/createComponent", spec, format="json")
        assert response.status_code in (200, 201), response.content
        body = response.json()
        return body.get("componentURI") or body["component"]["componentURI"]

    def create_block(self, values: dict[str, Any], *, expect: int = 202) -> dict[str, Any]:
        envelope = {
            "header": {"templateUri": "Parser/V1", "parameters": {}},
            "body": {"spec": {"values": values}},
        }
        response = self.api.post("/api/createBlock", envelope, format="json")
        assert response.status_code == expect, response.content
        body = response.json()
        if expect == 202:
            self.block_ids.add(body["block_id"])
        return body

    def block(self, block_id: str) -> dict[str, Any]:
        response = self.api.get(f"/api/v1/blocks/{block_id}/")
        assert response.status_code == 200, response.content
        return response.json()

    def wait_status(self, block_id: str, status: str, timeout: float = 90) -> dict[str, Any]:
        def check():
            doc = self.block(block_id)
            if doc["status"] == "failed" and status != "failed":
                raise AssertionError(f"block failed: {doc['status_reason']}\n{self.logs()}")
            return doc if doc["status"] == status else None

        return wait_until(check, timeout, f"block {block_id} {status}", interval=0.2)

    def wait_instances(self, block_id: str, predicate, timeout: float, what: str):
        return wait_until(
            lambda: (doc := self.block(block_id)) and predicate(doc) and doc,
            timeout,
            what,
            interval=0.2,
        )

    def mgmt(self, block_id: str, service: str, command: str, data: Any = None):
        values: dict[str, Any] = {"blockId": block_id, "service": service, "mgmtCommand": command}
        if data is not None:
            values["mgmtData"] = data
        envelope = {
            "header": {"templateUri": "Parser/V1"},
            "body": {"spec": {"values": values}},
        }
        return self.api.post("/api/executeMgmtCommand", envelope, format="json")

    # -- the data plane ----------------------------------------------------------------------
    def stub(self, endpoint: str) -> pb_grpc.BlockInferenceServiceStub:
        channel = grpc.insecure_channel(endpoint)
        self.channels.append(channel)
        return pb_grpc.BlockInferenceServiceStub(channel)

    def infer(self, endpoint: str, data: Any, *, timeout: float = 15.0, **kw: Any):
        return self.stub(endpoint).infer(make_block_packet(data, **kw), timeout=timeout)

    def logs(self) -> str:
        parts = []
        for path in sorted(self.tmp_path.rglob("*.log"))[-12:]:
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        for proc in self.agents:
            proc.stop()
        for leftover in marked_processes(self.markers):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(leftover.pid, signal.SIGKILL)
        for block_id in self.block_ids:
            keys = list(self.redis.scan_iter(match=f"{BlockKeys(block_id).base}:*", count=500))
            if keys:
                self.redis.delete(*keys)
        self.redis.close()


def _node_ready(node_id: str) -> bool:
    node = Node.objects.filter(pk=node_id).first()
    return node is not None and node.is_healthy


@pytest.fixture
def network(child_env, celery_worker, tmp_path, api):
    net = Network(child_env, tmp_path, api)
    try:
        yield net
    finally:
        net.close()


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def wait_gone(pids: list[int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while pids_alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pids_alive(pids), f"processes still alive: {pids_alive(pids)}"
