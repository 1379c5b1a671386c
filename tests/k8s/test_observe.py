"""Reading the cluster back: pods and Jobs become the node agent's workload statuses, nodes
become capacity and GPU facts."""

from __future__ import annotations

import pytest

from apps.clusters.choices import DesiredState, RestartPolicy, WorkloadKind, WorkloadStatus
from apps.clusters.drivers.k8s import config as k8s_config
from apps.clusters.drivers.k8s import manifests, observe
from apps.clusters.drivers.k8s.manifests import WorkloadView
from tests.k8s.conftest import k8s_node, make_pod

CFG = k8s_config.parse("c1", {})


def deployment(kind: str = WorkloadKind.EXECUTOR) -> dict:
    v = WorkloadView(
        id="w1", kind=kind, cluster_id="c1", node_id="n1", entry_point="block_sdk.executor"
    )
    return manifests.workload_manifests(v, CFG)[0]


def seen(pods, *, policy=RestartPolicy.ALWAYS, max_restarts=0, state=DesiredState.RUNNING):
    return observe.observe_deployment(
        pods, desired_state=state, restart_policy=policy, max_restarts=max_restarts
    )


def test_a_ready_running_pod_is_running_with_its_restarts() -> None:
    result = seen([make_pod(deployment(), restarts=2)])
    assert result.status == WorkloadStatus.RUNNING
    assert result.restarts == 2
    assert result.started_at is not None
    assert result.fields()["pid"] is None


def test_a_running_pod_not_ready_yet_is_starting() -> None:
    assert seen([make_pod(deployment(), ready=False)]).status == WorkloadStatus.STARTING


def test_no_pod_yet_is_pending_and_a_stopped_workload_is_stopped() -> None:
    assert seen([]).status == WorkloadStatus.PENDING
    assert seen([], state=DesiredState.STOPPED).status == WorkloadStatus.STOPPED


def test_a_crash_loop_is_backoff_with_the_reason() -> None:
    pod = make_pod(
        deployment(),
        ready=False,
        restarts=4,
        waiting={"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"},
        last_terminated={"exitCode": 3, "reason": "Error", "message": "boom"},
    )
    result = seen([pod])
    assert result.status == WorkloadStatus.BACKOFF
    assert result.exit_code == 3
    assert result.restarts == 4
    assert result.last_error.startswith("CrashLoopBackOff: back-off")


def test_an_image_that_cannot_be_pulled_is_backoff_saying_so() -> None:
    pod = make_pod(
        deployment(),
        phase="Pending",
        ready=False,
        waiting={"reason": "ImagePullBackOff", "message": 'pull "aios/echo:1.0.0" failed'},
    )
    result = seen([pod])
    assert result.status == WorkloadStatus.BACKOFF
    assert "ImagePullBackOff" in result.last_error


def test_a_pod_that_cannot_be_scheduled_is_pending_with_the_schedulers_message() -> None:
    result = seen([make_pod(deployment(), phase="Pending", ready=False, scheduled=False)])
    assert result.status == WorkloadStatus.PENDING
    assert "Insufficient nvidia.com/gpu" in result.last_error


def test_a_never_restart_instance_is_failed_after_its_first_crash() -> None:
    pod = make_pod(
        deployment(WorkloadKind.INSTANCE),
        restarts=1,
        last_terminated={"exitCode": 1, "reason": "Error"},
    )
    result = seen([pod], policy=RestartPolicy.NEVER)
    assert result.status == WorkloadStatus.FAILED
    assert result.exit_code == 1
    # on-failure with max_restarts: failed once that many restarts happened
    assert seen([pod], policy=RestartPolicy.ON_FAILURE, max_restarts=2).status == (
        WorkloadStatus.RUNNING
    )
    pod3 = make_pod(deployment(), restarts=2, last_terminated={"exitCode": 1})
    assert seen([pod3], policy=RestartPolicy.ON_FAILURE, max_restarts=2).status == (
        WorkloadStatus.FAILED
    )


def test_the_ready_replacement_pod_wins_over_an_older_crashed_one() -> None:
    old = make_pod(
        deployment(),
        suffix="old",
        ready=False,
        waiting={"reason": "CrashLoopBackOff"},
        created="2026-01-01T00:00:00Z",
    )
    new = make_pod(deployment(), suffix="new", created="2026-01-01T00:05:00Z")
    assert seen([old, new]).status == WorkloadStatus.RUNNING
    terminating = make_pod(deployment(), suffix="gone")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:06:00Z"
    assert seen([terminating]).status == WorkloadStatus.PENDING


def job(status: dict, *, suspend: bool = False) -> dict:
    v = WorkloadView(id="j1", kind=WorkloadKind.JOB, cluster_id="c1", node_id="n1", entry_point="m")
    doc = manifests.workload_manifests(v, CFG)[0]
    doc["spec"]["suspend"] = suspend
    doc["status"] = status
    return doc


def test_job_states_map_to_exited_failed_running_and_stopped() -> None:
    done = job({"succeeded": 1, "completionTime": "2026-01-01T00:01:00Z"})
    result = observe.observe_job(done, [], desired_state=DesiredState.RUNNING)
    assert (result.status, result.exit_code) == (WorkloadStatus.EXITED, 0)
    assert result.finished_at is not None

    failed_pod = make_pod(
        job({}), terminated={"exitCode": 2, "reason": "Error", "message": "bad input"}
    )
    failed = job(
        {
            "failed": 1,
            "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}],
        }
    )
    result = observe.observe_job(failed, [failed_pod], desired_state=DesiredState.RUNNING)
    assert result.status == WorkloadStatus.FAILED
    assert result.exit_code == 2
    assert "BackoffLimitExceeded" in result.last_error and "bad input" in result.last_error

    active = job({"active": 1, "startTime": "2026-01-01T00:00:00Z"})
    result = observe.observe_job(active, [make_pod(job({}))], desired_state=DesiredState.RUNNING)
    assert result.status == WorkloadStatus.RUNNING
    suspended = job({}, suspend=True)
    assert observe.observe_job(suspended, [], desired_state=DesiredState.STOPPED).status == (
        WorkloadStatus.STOPPED
    )
    assert observe.observe_job(None, [], desired_state=DesiredState.RUNNING).status == (
        WorkloadStatus.PENDING
    )


def test_a_job_result_comes_from_the_termination_message_else_the_log() -> None:
    pod = make_pod(job({}), terminated={"exitCode": 0, "message": '{"score": 0.9}'})
    assert observe.job_result(pod) == {
        "exit_code": 0,
        "source": "termination-message",
        "json": True,
        "result": {"score": 0.9},
        "raw": '{"score": 0.9}',
    }
    silent = make_pod(job({}), terminated={"exitCode": 0})
    result = observe.job_result(silent, 'loading\n{"allowed": true}\nbye\n')
    assert (result["source"], result["result"]) == ("log", {"allowed": True})
    plain = observe.job_result(silent, "just text\n")
    assert (plain["json"], plain["result"]) == (False, "just text")
    assert observe.job_result(None)["source"] is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("3920m", 3.92), ("8", 8.0), ("16Gi", 16 * 2**30), ("1500M", 1.5e9), ("", 0.0)],
)
def test_kubernetes_quantities(text, value) -> None:
    assert observe.quantity(text) == pytest.approx(value)


def test_node_facts_read_capacity_allocatable_and_gpus() -> None:
    facts = observe.node_facts(
        k8s_node("gpu-1", gpus=4, gpu_product="NVIDIA-H100-80GB-HBM3", memory="512Gi")
    )
    assert facts.ready and not facts.unschedulable
    assert facts.vcpus == 8.0 and facts.memory_mb == 512 * 1024
    assert facts.gpu_count == 4
    assert (facts.gpu_model, facts.gpu_memory_mb) == ("NVIDIA-H100-80GB-HBM3", 81920)
    assert facts.metadata["allocatable"] == {
        "cpu": 7.8,
        "memory_mb": 30 * 1024,
        "gpus": 4,
        "pods": 110,
    }
    down = observe.node_facts(k8s_node("cpu-1", ready=False))
    assert not down.ready and down.message == "kubelet stopped"
    cordoned = observe.node_facts(k8s_node("cpu-2", unschedulable=True))
    assert cordoned.unschedulable and "cordoned" in cordoned.message


def test_the_aios_node_label_and_aios_legacy_nodeid_label_both_name_a_node() -> None:
    assert observe.aios_node_label({"aios.io/node-id": "a"}) == "a"
    assert observe.aios_node_label({"nodeID": "b"}) == "b"
    assert observe.aios_node_label({}) == ""
