"""Fixtures for the clusters tests: node agents as real child processes."""

from __future__ import annotations

import contextlib
import os
import signal

import psutil
import pytest

from tests.support.procs import ManagedProcess, python_argv

FAST = ("--tick", "0.2", "--heartbeat-interval", "0.3", "--metrics-interval", "0.5")


def marked_processes(markers: set[str]) -> list[psutil.Process]:
    """Workload processes started by the agents of this test (found by their env marker)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("AIOS_SUPERVISOR") in markers and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@pytest.fixture
def agent_data_dir(tmp_path):
    return tmp_path / "agent-data"


@pytest.fixture
def start_agent(child_env, tmp_path, agent_data_dir):
    """``start_agent(cluster, node, *args, create=True)`` → a running ``aios_node``."""
    started: list[ManagedProcess] = []
    markers: set[str] = set()

    def start(cluster_id: str, node_id: str, *extra: str, create: bool = True) -> ManagedProcess:
        argv = python_argv(
            "manage.py",
            "aios_node",
            "--cluster",
            cluster_id,
            "--node",
            node_id,
            "--stop-grace",
            "2",
            *FAST,
            *(["--create"] if create else []),
            *extra,
        )
        env = {**child_env, "AIOS_DATA_DIR": str(agent_data_dir)}
        proc = ManagedProcess(
            argv, env=env, log_path=tmp_path / f"agent-{node_id}-{len(started)}.log"
        )
        started.append(proc)
        markers.add(f"{cluster_id}/{node_id}")
        return proc

    start.markers = markers  # type: ignore[attr-defined]
    yield start
    for proc in started:
        proc.stop()
    # Nothing a test started may outlive it, even when an assertion failed half-way.
    for leftover in marked_processes(markers):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leftover.pid, signal.SIGKILL)
