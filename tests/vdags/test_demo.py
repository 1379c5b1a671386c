"""``manage.py aios_demo`` end to end, as a user runs it: from an empty network to answers
of a fan-out/fan-in vDAG over gRPC, then ``--teardown`` leaves nothing behind."""

from __future__ import annotations

import json
import subprocess

import psutil
import pytest

from apps.blocks.models import Block
from apps.clusters.models import Cluster, Workload
from apps.vdags.models import VDag, VDagController
from tests.support.procs import python_argv
from tests.vdags.live import ROOT
from tests.vdags.support import uid

pytestmark = pytest.mark.django_db(transaction=True)

AGENT_ARGS = "--tick 0.2 --heartbeat-interval 0.3 --metrics-interval 2 --stop-grace 2"


def run(env, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        python_argv("manage.py", "aios_demo", *args),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_demo_builds_serves_and_tears_down_a_network(live_env, tmp_path):
    from apps.policies.builtins import seed_builtin_policies

    seed_builtin_policies()  # what `make up` does after migrating
    prefix = uid("demo")
    env = {**live_env, "AIOS_DATA_DIR": str(tmp_path / "data")}
    built = run(env, "--prefix", prefix, "--inline", "--requests", "3", "--agent-args", AGENT_ARGS)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    out = built.stdout
    assert "tasks run in this process" in out
    assert "3 inference(s) answered" in out
    assert "request 1: x=[5.1, 3.5, 1.4, 0.2] -> class ['setosa']" in out
    assert f"/api/v1/vdags/{prefix}-pipeline:1.0-stable/" in out
    vdag = VDag.objects.get(pk=f"{prefix}-pipeline:1.0-stable")
    assert vdag.status == "active"
    assert vdag.compiled_graph["inputs"]["merge"] == ["classify", "delay"]
    assert VDagController.objects.get(pk=f"{prefix}-controller").status == "running"
    state = json.loads((tmp_path / "data" / "demo" / f"{prefix}.json").read_text())
    agent_pids = [a["pid"] for a in state["agents"]]
    assert len(agent_pids) == 2

    # Run again: everything is reused, nothing is created twice.
    again = run(env, "--prefix", prefix, "--inline", "--requests", "1")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"vDAG {prefix}-pipeline:1.0-stable exists (active)" in again.stdout
    assert "its agent is reporting (reused)" in again.stdout

    removed = run(env, "--prefix", prefix, "--inline", "--teardown")
    assert removed.returncode == 0, removed.stdout[-4000:] + removed.stderr[-4000:]
    assert "demo removed" in removed.stdout
    assert not Block.objects.filter(pk__startswith=prefix).exists()
    assert not VDag.objects.filter(pk__startswith=prefix).exists()
    assert not VDagController.objects.exists()
    assert not Cluster.objects.filter(pk=f"{prefix}-cluster").exists()
    assert not Workload.objects.exists()
    assert not [p for p in agent_pids if _alive(p)]
