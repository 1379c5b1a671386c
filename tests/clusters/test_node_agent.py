"""Node agents as real processes: registration, heartbeat, metrics, and workloads turned into
child processes that are restarted, stopped, removed and adopted across agent restarts."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from apps.clusters.drivers import WorkloadSpec, get_driver
from apps.clusters.models import Cluster, Node, Workload
from tests.clusters.conftest import marked_processes
from tests.clusters.helpers import forget_redis, uid
from tests.support.procs import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SLEEPER = "tests.clusters.programs:sleep_forever"


def node_ready(node_id: str) -> bool:
    node = Node.objects.filter(pk=node_id).first()
    return node is not None and node.is_healthy


def start_ready(start_agent, cluster_id, node_id, *extra):
    agent = start_agent(cluster_id, node_id, *extra)
    wait_until(
        lambda: node_ready(node_id) or agent.proc.poll() is not None, 60, f"node {node_id} ready"
    )
    assert agent.proc.poll() is None, agent.log_text()
    return agent


def workload(wid: str) -> Workload | None:
    return Workload.objects.filter(pk=wid).first()


def running_pid(wid: str, *, not_pid: int | None = None) -> int | None:
    row = workload(wid)
    if row and row.status == "running" and row.pid and row.pid != not_pid:
        return row.pid
    return None


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_of(markers, wid: str) -> list[psutil.Process]:
    return [p for p in marked_processes(markers) if p.environ().get("AIOS_WORKLOAD_ID") == wid]


def test_agent_registers_node_heartbeats_and_reports_metrics(start_agent, api):
    cid, other_cid = uid("c"), uid("c")
    n1, n2, n3 = uid("n"), uid("n"), uid("n")
    gpus = json.dumps([{"model": "A100", "memory_mb": 40960}, {"model": "T4", "memory_mb": 16384}])
    try:
        start_ready(start_agent, cid, n1, "--declare-gpus", gpus)
        start_ready(start_agent, cid, n2)
        start_ready(start_agent, other_cid, n3)

        node = api.get(f"/api/v1/nodes/{n1}/").json()
        assert node["status"] == "ready"
        assert node["clusterId"] == cid
        assert [(g["modelName"], g["memory"]) for g in node["gpus"]["gpus"]] == [
            ("A100", 40960),
            ("T4", 16384),
        ]
        cluster = api.get(f"/api/v1/clusters/{cid}/").json()
        assert cluster["status"] == "live" and cluster["driver"] == "local"
        assert cluster["nodes"]["count"] == 2
        assert cluster["gpus"]["count"] == 2
        assert cluster["config"]["urlMap"]["metricsService"].endswith(f"/metrics/clusters/{cid}/")
        assert api.get(f"/api/v1/clusters/{other_cid}/").json()["nodes"]["count"] == 1

        def metrics():
            body = api.get(f"/api/v1/metrics/nodes/{n1}/").json()
            return body if body.get("healthy") else None

        live = wait_until(metrics, 30, "live node metrics")
        assert isinstance(live["vcpu"]["load_15m"], float)
        assert live["memory"]["freeMem"] > 0 and live["memory"]["totalMem"] > 0
        assert live["gpus"]["count"] == 2 and live["gpus"]["totalFreeMem"] == 57344
        assert set(live["gpus"]["gpus"][0]) >= {
            "usedMem",
            "freeMem",
            "totalMem",
            "memUtilization",
            "cudaUtilization",
            "temperature",
        }
        wait_until(
            lambda: api.get(f"/api/v1/metrics/clusters/{cid}/").json()["nodes"]["reporting"] == 2,
            30,
            "both nodes in the cluster aggregate",
        )
        aggregate = api.get(f"/api/v1/metrics/clusters/{cid}/").json()
        assert aggregate["gpus"]["totalMem"] == 57344
        assert aggregate["memory"]["totalMem"] >= live["memory"]["totalMem"]
    finally:
        forget_redis(n1, n2, n3, cluster_ids=(cid, other_cid))


def test_a_second_agent_for_the_same_node_is_refused(start_agent):
    cid, nid = uid("c"), uid("n")
    start_ready(start_agent, cid, nid)
    second = start_agent(cid, nid)
    wait_until(lambda: second.proc.poll() is not None, 60, "the second agent to exit")
    assert second.proc.returncode != 0
    assert "already has a running agent" in second.log_text()
    forget_redis(nid, cluster_ids=(cid,))


def test_workload_runs_restarts_with_backoff_stops_and_is_removed(start_agent):
    cid, nid = uid("c"), uid("n")
    start_ready(start_agent, cid, nid)
    driver = get_driver(Cluster.objects.get(pk=cid))
    wid = uid("w")
    driver.create_workload(
        WorkloadSpec(
            kind="instance",
            id=wid,
            entry_point="tests.clusters.programs:env_dump",
            block_id="blk",
            instance_id=wid,
            gpu_ids=[1],
            ports={"grpc": 0},
            env={"EXTRA": "1"},
        )
    )
    pid = wait_until(lambda: running_pid(wid), 30, "the workload to run")
    proc = psutil.Process(pid)
    assert proc.environ()["AIOS_WORKLOAD_ID"] == wid
    row = workload(wid)
    log_file = Path(row.log_path)
    log_text = wait_until(
        lambda: "CUDA_VISIBLE_DEVICES" in log_file.read_text() and log_file.read_text(),
        10,
        "the workload's log",
    )
    assert "CUDA_VISIBLE_DEVICES=1" in log_text
    assert "BLOCK_ID=blk" in log_text
    assert f"AIOS_PORT_GRPC={row.ports['grpc']}" in log_text
    assert "DATABASE_URL" not in log_text  # control-plane secrets stay out of workloads

    # A crash is restarted; a second crash soon after waits longer (back-off).
    os.kill(pid, signal.SIGKILL)
    pid2 = wait_until(lambda: running_pid(wid, not_pid=pid), 30, "the first restart")
    assert workload(wid).restarts == 1
    killed_at = time.monotonic()
    os.kill(pid2, signal.SIGKILL)
    wait_until(lambda: workload(wid).status == "backoff", 10, "the back-off state")
    assert workload(wid).next_restart_at is not None
    pid3 = wait_until(lambda: running_pid(wid, not_pid=pid2), 30, "the second restart")
    assert time.monotonic() - killed_at >= 0.9  # 0.5 s, then 1 s of back-off
    assert workload(wid).restarts == 2
    assert not alive(pid) and not alive(pid2)

    # Desired state stopped: the process goes (graceful, code 0); running again: it returns.
    driver.set_desired_state(wid, "stopped")
    wait_until(lambda: workload(wid).status == "stopped" and not alive(pid3), 30, "stop")
    driver.set_desired_state(wid, "running")
    pid4 = wait_until(lambda: running_pid(wid, not_pid=pid3), 30, "start again")

    # Removal: the process is stopped and the row deleted.
    driver.remove_workload(wid)
    wait_until(lambda: workload(wid) is None, 30, "the row to be deleted")
    assert not alive(pid4)
    forget_redis(nid, cluster_ids=(cid,))


def test_restart_policies_and_sigkill_after_grace(start_agent):
    cid, nid = uid("c"), uid("n")
    start_ready(start_agent, cid, nid)
    driver = get_driver(Cluster.objects.get(pk=cid))
    ok, bad, stubborn = uid("ok"), uid("bad"), uid("stubborn")
    exit_now = "tests.clusters.programs:exit_now"
    driver.create_workload(
        WorkloadSpec(kind="job", id=ok, entry_point=exit_now, restart_policy="on-failure")
    )
    driver.create_workload(
        WorkloadSpec(
            kind="job",
            id=bad,
            entry_point=exit_now,
            env={"EXIT_CODE": "3"},
            restart_policy="on-failure",
            max_restarts=2,
        )
    )
    driver.create_workload(
        WorkloadSpec(
            kind="service",
            id=stubborn,
            entry_point="tests.clusters.programs:ignore_sigterm",
            stop_grace_s=1.0,
        )
    )
    wait_until(lambda: workload(ok).status == "exited", 30, "the job to exit")
    assert workload(ok).exit_code == 0 and workload(ok).restarts == 0
    wait_until(lambda: workload(bad).status == "failed", 60, "the failing job to give up")
    assert workload(bad).restarts == 2 and workload(bad).exit_code == 3
    assert "2 restarts reached" in workload(bad).last_error

    pid = wait_until(lambda: running_pid(stubborn), 30, "the stubborn workload")
    time.sleep(1.2)  # let it install its SIGTERM handler
    started = time.monotonic()
    driver.remove_workload(stubborn)
    wait_until(lambda: not alive(pid), 30, "SIGKILL after the grace period")
    assert time.monotonic() - started >= 0.9
    wait_until(lambda: workload(stubborn) is None, 30, "the row to go")
    forget_redis(nid, cluster_ids=(cid,))


def test_agent_restart_adopts_live_children_restarts_lost_ones_and_kills_stale(start_agent):
    cid, nid = uid("c"), uid("n")
    agent = start_ready(start_agent, cid, nid)
    driver = get_driver(Cluster.objects.get(pk=cid))
    keep, lost, stale = uid("keep"), uid("lost"), uid("stale")
    for wid in (keep, lost, stale):
        driver.create_workload(WorkloadSpec(kind="service", id=wid, entry_point=SLEEPER))
    pids = {
        wid: wait_until(lambda w=wid: running_pid(w), 30, f"{wid} running")
        for wid in (keep, lost, stale)
    }

    # The agent crashes; its children live on. Meanwhile one child dies and one row goes.
    agent.signal(signal.SIGKILL)
    agent.proc.wait(10)
    assert all(alive(p) for p in pids.values())
    os.kill(pids[lost], signal.SIGKILL)
    Workload.objects.filter(pk=stale).delete()
    wait_until(lambda: not alive(pids[lost]), 10, "the lost child to die")

    second = start_agent(cid, nid)
    wait_until(lambda: running_pid(lost, not_pid=pids[lost]), 60, "the lost child restarted")
    wait_until(lambda: not alive(pids[stale]), 30, "the stale child killed")
    time.sleep(1.0)  # a few more ticks: nothing else may change
    assert running_pid(keep) == pids[keep] and alive(pids[keep])
    assert workload(keep).restarts == 0
    assert "not running" in workload(lost).last_error
    assert len(processes_of(start_agent.markers, keep)) == 1
    assert len(processes_of(start_agent.markers, lost)) == 1

    # A graceful stop of the agent stops its workloads: nothing is orphaned.
    second.signal(signal.SIGTERM)
    second.proc.wait(20)
    assert not marked_processes(start_agent.markers)
    assert workload(keep).status == "stopped"
    forget_redis(nid, cluster_ids=(cid,))


def test_keep_workloads_on_exit_then_adopt(start_agent):
    cid, nid = uid("c"), uid("n")
    agent = start_ready(start_agent, cid, nid, "--keep-workloads-on-exit")
    driver = get_driver(Cluster.objects.get(pk=cid))
    wid = uid("w")
    driver.create_workload(WorkloadSpec(kind="service", id=wid, entry_point=SLEEPER))
    pid = wait_until(lambda: running_pid(wid), 30, "the workload to run")
    agent.signal(signal.SIGTERM)
    agent.proc.wait(20)
    assert alive(pid)
    start_agent(cid, nid)
    time.sleep(2.0)
    assert running_pid(wid) == pid and workload(wid).restarts == 0
    assert len(processes_of(start_agent.markers, wid)) == 1
    forget_redis(nid, cluster_ids=(cid,))
