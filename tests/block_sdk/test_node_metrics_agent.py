"""The node-metrics agent (``python -m block_sdk.node_metrics``) as a real process.

It pushes to a control plane served by daphne, keeps running with a bounded buffer while the
control plane is down (and delivers the buffer when it is back), keeps running when its token
is refused, reads its node id from the driver's node-name map, and exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from rest_framework.authtoken.models import Token

from apps.clusters.choices import NodeStatus
from apps.clusters.models import Node
from apps.metrics.models import NodeMetricSample
from block_sdk.node_metrics import AgentConfig, Backoff, SampleBuffer
from block_sdk.node_metrics.agent import NodeMetricsAgent
from tests.clusters.helpers import forget_redis, make_cluster, node_spec, uid
from tests.support.procs import ROOT, ManagedProcess, free_port, port_open, python_argv, wait_until

DECLARED = json.dumps([{"model": "T4", "memory_mb": 16000}])


# -- helpers -------------------------------------------------------------------------------------
def start_daphne(child_env: dict[str, str], port: int, log_path) -> ManagedProcess:
    server = ManagedProcess(
        python_argv(
            "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "aios_site.asgi:application"
        ),
        env=child_env,
        log_path=log_path,
    )
    wait_until(lambda: port_open(port), 60, "daphne to listen")
    return server


def agent_env(**values: str) -> dict[str, str]:
    """A bare environment: no DATABASE_URL or Django settings, as in the agent's image."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", AIOS_DECLARED_GPUS=DECLARED)
    env.update(values)
    return env


def health(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()


def stop_with_sigterm(agent: ManagedProcess, timeout: float = 10) -> int:
    agent.signal(signal.SIGTERM)
    return agent.proc.wait(timeout=timeout)


@pytest.fixture
def owned_node(transactional_db, user):
    node_id = uid("n")
    cluster = make_cluster(nodes=[node_spec(node_id)], owner=user, ready=False)
    yield cluster, node_id
    forget_redis(node_id, cluster_ids=(cluster.id,))


@pytest.fixture
def daphne(child_env, tmp_path):
    port = free_port()
    server = start_daphne(child_env, port, tmp_path / "daphne.log")
    yield port
    server.stop()


@pytest.fixture
def agents(tmp_path):
    started: list[ManagedProcess] = []

    def start(env: dict[str, str]) -> ManagedProcess:
        proc = ManagedProcess(
            python_argv("-m", "block_sdk.node_metrics"),
            env=env,
            log_path=tmp_path / f"agent-{len(started)}.log",
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


# -- the process against a live control plane ---------------------------------------------------
def test_agent_pushes_live_metrics_and_exits_0_on_sigterm(daphne, owned_node, user, api, agents):
    cluster, node_id = owned_node
    token, _ = Token.objects.get_or_create(user=user)
    health_port = free_port()
    agent = agents(
        agent_env(
            AIOS_NODE_ID=node_id,
            AIOS_CLUSTER_ID=cluster.id,
            AIOS_CONTROL_PLANE_URL=f"http://127.0.0.1:{daphne}",
            AIOS_API_TOKEN=token.key,
            AIOS_HEALTH_PORT=str(health_port),
            AIOS_NODE_METRICS_INTERVAL_S="0.3",
        )
    )

    def live():
        body = api.get(f"/api/v1/metrics/nodes/{node_id}/").json()
        return body if not body["stale"] else None

    body = wait_until(live, 30, "the agent's metrics to be live", interval=0.2)
    assert body["healthy"] is True and body["status"] == NodeStatus.READY
    assert body["gpus"]["count"] == 1 and body["gpus"]["source"] == "declared"
    assert body["gpus"]["gpus"][0]["modelName"] == "T4"
    assert body["vcpu"]["count"] >= 1 and body["memory"]["totalMem"] > 0
    assert Node.objects.get(pk=node_id).last_heartbeat is not None
    state = wait_until(lambda: (h := health(health_port))["pushed"] >= 2 and h, 10, "pushes")
    assert state["healthy"] and state["status"] == "ok" and state["buffered"] <= 1
    assert (
        "aios_node_metrics_pushed_total"
        in httpx.get(f"http://127.0.0.1:{health_port}/metrics", timeout=2).text
    )

    assert stop_with_sigterm(agent) == 0, agent.log_text()
    assert "node_metrics_stopped" in agent.log_text()


def test_agent_outlives_control_plane_outage_with_bounded_buffer(
    child_env, owned_node, user, api, agents, tmp_path
):
    cluster, node_id = owned_node
    token, _ = Token.objects.get_or_create(user=user)
    cp_port, health_port = free_port(), free_port()
    agent = agents(
        agent_env(
            AIOS_NODE_ID=node_id,
            AIOS_CLUSTER_ID=cluster.id,
            AIOS_CONTROL_PLANE_URL=f"http://127.0.0.1:{cp_port}",  # nobody listens yet
            AIOS_API_TOKEN=token.key,
            AIOS_HEALTH_PORT=str(health_port),
            AIOS_NODE_METRICS_INTERVAL_S="0.05",
            AIOS_NODE_METRICS_BUFFER="8",
            AIOS_NODE_METRICS_BACKOFF_MAX_S="0.5",
            AIOS_NODE_METRICS_TIMEOUT_S="1",
        )
    )

    down = wait_until(
        lambda: (h := health(health_port))["dropped"] >= 5 and h, 20, "the buffer to overflow"
    )
    assert agent.proc.poll() is None
    assert down["healthy"] is True  # sampling goes on: an outage is not the agent's fault
    assert down["buffered"] <= 8 and down["pushed"] == 0
    assert down["consecutive_failures"] >= 1 and down["last_error"]

    server = start_daphne(child_env, cp_port, tmp_path / "daphne-late.log")
    try:
        back = wait_until(
            lambda: (h := health(health_port))["pushed"] >= 8 and h, 30, "the buffer to drain"
        )
        assert back["consecutive_failures"] == 0 and back["buffered"] <= 2
        body = api.get(f"/api/v1/metrics/nodes/{node_id}/").json()
        assert body["stale"] is False and body["healthy"] is True
        assert NodeMetricSample.objects.filter(node_id=node_id).exists()
        assert stop_with_sigterm(agent) == 0, agent.log_text()
    finally:
        server.stop()


def test_refused_token_keeps_agent_running_and_reported_in_health(
    daphne, owned_node, other_user, api, agents
):
    _, node_id = owned_node
    stranger, _ = Token.objects.get_or_create(user=other_user)  # not the cluster's owner
    health_port = free_port()
    agent = agents(
        agent_env(
            AIOS_NODE_ID=node_id,
            AIOS_CONTROL_PLANE_URL=f"http://127.0.0.1:{daphne}",
            AIOS_API_TOKEN=stranger.key,
            AIOS_HEALTH_PORT=str(health_port),
            AIOS_NODE_METRICS_INTERVAL_S="0.1",
            AIOS_NODE_METRICS_BACKOFF_MAX_S="0.3",
        )
    )

    refused = wait_until(
        lambda: (h := health(health_port))["last_status"] == 403 and h, 20, "a 403"
    )
    assert "owner" in refused["last_error"]
    assert refused["pushed"] == 0 and refused["healthy"] is True
    time.sleep(0.5)
    assert agent.proc.poll() is None
    assert api.get(f"/api/v1/metrics/nodes/{node_id}/").json()["stale"] is True
    assert stop_with_sigterm(agent) == 0


# -- configuration ------------------------------------------------------------------------------
def test_node_id_comes_from_the_drivers_node_name_map(tmp_path, agents):
    ids_file = tmp_path / "node-ids.json"
    ids_file.write_text(json.dumps({"other-node": "n-other"}))
    health_port = free_port()
    agent = agents(
        agent_env(
            AIOS_K8S_NODE_NAME="worker-7",
            AIOS_NODE_ID_FILE=str(ids_file),
            AIOS_CONTROL_PLANE_URL=f"http://127.0.0.1:{free_port()}",
            AIOS_HEALTH_PORT=str(health_port),
            AIOS_NODE_METRICS_INTERVAL_S="0.1",
        )
    )
    waiting = wait_until(lambda: health(health_port), 20, "the health endpoint")
    assert waiting["status"] == "waiting_for_node_id" and waiting["node_id"] == ""

    ids_file.write_text(json.dumps({"worker-7": "n-seven"}))  # the ConfigMap was updated

    wait_until(lambda: health(health_port)["node_id"] == "n-seven", 20, "the node id")
    assert stop_with_sigterm(agent) == 0


def test_missing_configuration_exits_2_with_a_reason():
    result = subprocess.run(
        [sys.executable, "-m", "block_sdk.node_metrics"],
        env=agent_env(AIOS_NODE_ID="n1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "AIOS_CONTROL_PLANE_URL" in result.stderr


def test_agent_modules_import_no_django():
    code = (
        "import sys, block_sdk.node_metrics.agent, block_sdk.node_metrics.__main__;"
        "sys.exit(any(m == 'django' or m.startswith('django.') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=agent_env(), cwd=ROOT, timeout=30, check=False
    )
    assert result.returncode == 0


# -- buffer, back-off, and what the agent does with each answer ---------------------------------
def test_buffer_drops_oldest_when_full():
    buffer = SampleBuffer(3)
    for i in range(5):
        buffer.append({"ts": i})
    assert len(buffer) == 3 and buffer.dropped == 2
    assert [s["ts"] for s in buffer.oldest(10)] == [2, 3, 4]
    buffer.discard_oldest(2)
    assert [s["ts"] for s in buffer.oldest(10)] == [4]


def test_backoff_grows_and_is_capped():
    backoff = Backoff(0.5, 4.0)
    delays = [backoff.next_delay() for _ in range(10)]
    assert all(0.25 <= d <= 4.0 for d in delays)
    assert max(delays[-3:]) > 1.9  # reached the cap's range
    backoff.reset()
    assert backoff.next_delay() <= 0.5


class _FixedSampler:
    def __init__(self) -> None:
        self.n = 0

    def sample(self) -> dict:
        self.n += 1
        return {"ts": time.time(), "vcpu": {"count": 1, "load_1m": float(self.n)}}


class _Answers:
    """A tiny real HTTP server answering each push with the next status of a script."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.bodies: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                owner.bodies.append(json.loads(self.rfile.read(length)))
                status = owner.statuses.pop(0) if owner.statuses else 200
                payload = json.dumps({"error": {"code": "x", "message": f"status {status}"}})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_refused_batch_is_dropped_and_failed_batch_is_kept():
    answers = _Answers([400, 503])
    config = AgentConfig(
        control_plane_url=answers.url, node_id="n1", cluster_id="c1", backoff_initial_s=0.01
    )
    agent = NodeMetricsAgent(config, sampler=_FixedSampler())
    try:
        agent.sample_once()
        agent.flush()  # 400: cannot succeed by resending, so dropped
        assert agent.rejected == 1 and len(agent.buffer) == 0
        agent.sample_once()
        agent.flush()  # 503: kept for later, with back-off
        assert len(agent.buffer) == 1 and agent.backoff.failures == 1
        agent.sample_once()
        agent.flush()  # 200: both delivered in one batch, oldest first
        assert len(agent.buffer) == 0 and agent.pushed == 2
        last = answers.bodies[-1]
        assert last["node_id"] == "n1" and last["cluster_id"] == "c1"
        assert [s["vcpu"]["load_1m"] for s in last["samples"]] == [2.0, 3.0]
    finally:
        agent.close()
        answers.close()
