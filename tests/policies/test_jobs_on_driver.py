"""T3 policy jobs on a cluster driver.

The job runner (``python -m block_sdk.policy_runtime.job_runner``) as a real process: a good
policy, a raising one, the result file, bad arguments. Then a job submitted with ``cluster_id``
on a local cluster: a real node agent starts the runner as a ``job`` workload, the runner
fetches the policy from the control plane (daphne) and the Celery worker records the result
(or the error) on the job and its task."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.utils import timezone

from apps.clusters.choices import ClusterStatus
from apps.clusters.models import Cluster, Workload
from apps.policies.models import PolicyJob
from block_sdk.policy_runtime import job_runner
from tests.clusters.helpers import forget_redis, make_cluster, node_spec, uid
from tests.policies.policies_support import (
    BEHAVIOUR_POLICY,
    ECHO_POLICY,
    policy_archive,
    upload,
)
from tests.support.procs import ROOT, ManagedProcess, free_port, port_open, python_argv, wait_until

FAST_AGENT = ("--tick", "0.2", "--heartbeat-interval", "0.3", "--metrics-interval", "5")


# -- the job runner as a process ----------------------------------------------------------------
def run_runner(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIOS_RESULT")}
    return subprocess.run(
        [sys.executable, "-m", "block_sdk.policy_runtime.job_runner", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def archives(tmp_path):
    echo = tmp_path / "echo.tar.gz"
    echo.write_bytes(policy_archive(ECHO_POLICY))
    behaviour = tmp_path / "behaviour.zip"
    behaviour.write_bytes(policy_archive(BEHAVIOUR_POLICY, fmt="zip"))
    return echo, behaviour


def test_runner_good_policy_prints_and_writes_its_result(archives, tmp_path):
    echo, _ = archives
    result_file = tmp_path / "out" / "result.json"

    done = run_runner(
        "--uri", "echo:1.0-x", "--archive", str(echo), "--input", '{"day": 3}',
        "--parameters", '{"k": 1}', "--cache-dir", str(tmp_path / "cache"),
        env={"AIOS_RESULT_PATH": str(result_file)},
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["result"]["input"] == {"day": 3}
    assert printed["result"]["parameters"] == {"k": 1}
    assert printed["policy_rule_uri"] == "echo:1.0-x"
    assert json.loads(result_file.read_text()) == printed


def test_runner_raising_policy_exits_1_with_the_error_shape(archives, tmp_path):
    _, behaviour = archives
    result_file = tmp_path / "result.json"

    done = run_runner(
        "--uri", "behaviour:1.0-x", "--archive", str(behaviour), "--input", '{"op": "raise"}',
        "--result-path", str(result_file), "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip

    assert done.returncode == 1
    error = json.loads(done.stdout.strip().splitlines()[-1])["error"]
    assert error["code"] == "exception"
    assert "boom from policy" in error["message"]
    assert json.loads(result_file.read_text())["error"] == error


def test_runner_times_out_a_looping_policy_in_both_modes(archives, tmp_path):
    _, behaviour = archives
    for mode in ("sandbox", "local"):
        done = run_runner(
            "--uri", "behaviour:1.0-x", "--archive", str(behaviour), "--input", '{"op": "loop"}',
            "--timeout", "1", "--mode", mode, "--cache-dir", str(tmp_path / "cache"),
        )  # fmt: skip
        assert done.returncode == 1, (mode, done.stdout, done.stderr)
        assert json.loads(done.stdout.strip().splitlines()[-1])["error"]["code"] == "timeout"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((), "--uri"),
        (("--uri", "x:1.0-a", "--input", "{nope"), "--input is not valid JSON"),
        (("--uri", "x:1.0-a", "--parameters", "[1]", "--archive", "x"), "JSON object"),
        (("--uri", "x:1.0-a"), "no policy source"),
        (("--uri", "x:1.0-a", "--archive", "/no/such/file.zip"), "cannot read --archive"),
    ],
)
def test_runner_bad_arguments_exit_2(args, fragment):
    done = run_runner(*args, env={"AIOS_API_URL": "", "AIOS_CONTROL_PLANE_URL": ""})
    assert done.returncode == 2
    error = json.loads(done.stdout.strip().splitlines()[-1])["error"]
    assert error["code"] == "bad_input" and fragment in error["message"]


def test_termination_message_keeps_errors_small_and_leaves_big_results_to_the_log():
    big_error = {"error": {"code": "exception", "message": "x" * 9000, "details": ["y" * 5000]}}
    fitted = job_runner._fit_termination_message(big_error, json.dumps(big_error))
    assert len(fitted.encode()) <= job_runner.TERMINATION_LIMIT
    assert json.loads(fitted)["error"]["code"] == "exception"
    big_result = {"result": "z" * 5000}
    assert job_runner._fit_termination_message(big_result, json.dumps(big_result)) is None
    small = {"result": 1}
    assert job_runner._fit_termination_message(small, json.dumps(small)) == json.dumps(small)


# -- submission checks ----------------------------------------------------------------------------
def test_cluster_job_submission_is_checked_before_queueing(
    db, api, user, client_for, other_user, staff_api
):
    upload(api, "echo", ECHO_POLICY)
    node_id = uid("n")
    mine = make_cluster(nodes=[node_spec(node_id)], owner=user)
    theirs = make_cluster(nodes=[node_spec(uid("n"))], owner=other_user)

    def submit(client, **body):
        payload = {"name": "j", "policy_rule_uri": "echo:1.0-test", **body}
        return client.post("/api/v1/policy-jobs/", payload, format="json")

    assert submit(api, cluster_id="no-such-cluster").status_code == 404
    assert submit(api, cluster_id=theirs.id).status_code == 403
    assert submit(api, cluster_id=mine.id, executor_id="x").status_code == 400
    pinned_elsewhere = submit(api, cluster_id=mine.id, node_selector={"node_id": "nope"})
    assert pinned_elsewhere.status_code == 404
    Cluster.objects.filter(pk=mine.pk).update(status=ClusterStatus.PROVISIONING)
    assert submit(api, cluster_id=mine.id).status_code == 409
    assert not PolicyJob.objects.exists()
    forget_redis(node_id)


# -- end to end on the local driver -------------------------------------------------------------
@pytest.fixture
def control_plane(child_env, tmp_path):
    """daphne serving the API: the job runner fetches the policy archive from it."""
    port = free_port()
    server = ManagedProcess(
        python_argv(
            "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "aios_site.asgi:application"
        ),
        env=child_env,
        log_path=tmp_path / "daphne.log",
    )
    try:
        wait_until(lambda: port_open(port), 60, "daphne to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def local_cluster(transactional_db, user):
    node_id = uid("n")
    cluster = make_cluster(nodes=[node_spec(node_id)], owner=user, ready=False)
    yield cluster, node_id
    forget_redis(node_id, cluster_ids=(cluster.id,))


@pytest.fixture
def node_agent(child_env, tmp_path, control_plane, local_cluster):
    cluster, node_id = local_cluster
    env = {**child_env, "AIOS_DATA_DIR": str(tmp_path / "agent"), "AIOS_PUBLIC_URL": control_plane}
    argv = ["manage.py", "aios_node", "--cluster", cluster.id, "--node", node_id]
    agent = ManagedProcess(
        python_argv(*argv, "--stop-grace", "2", *FAST_AGENT),
        env=env,
        log_path=tmp_path / "agent.log",
    )
    try:
        wait_until(
            lambda: Cluster.objects.get(pk=cluster.pk).nodes.get(pk=node_id).is_healthy,
            60,
            "the node agent to report",
        )
        yield agent
    finally:
        agent.stop()


def _wait_job(client, job_id: str) -> dict:
    def finished():
        job = client.get(f"/api/v1/policy-jobs/{job_id}/").json()
        return job if job["status"] in ("completed", "failed") else None

    return wait_until(finished, 90, "the cluster job to finish", interval=0.3)


def test_cluster_job_runs_on_a_node_agent_and_records_result_and_error(
    celery_worker, node_agent, local_cluster, client_for, user
):
    cluster, node_id = local_cluster
    client = client_for(user)
    assert upload(client, "echo", ECHO_POLICY, policy_parameters={"a": 1}).status_code == 201
    assert upload(client, "behaviour", BEHAVIOUR_POLICY).status_code == 201

    good = client.post(
        "/api/v1/policy-jobs/",
        {
            "name": "on-cluster",
            "policy_rule_uri": "echo:1.0-test",
            "policy_rule_parameters": {"b": 2},
            "inputs": {"day": "2025-05-01"},
            "cluster_id": cluster.id,
            "node_selector": {"node_id": node_id},
        },
        format="json",
    )
    assert good.status_code == 202, good.json()
    assert good.json()["cluster_id"] == cluster.id
    bad = client.post(
        "/api/v1/policy-jobs/",
        {
            "name": "raises",
            "policy_rule_uri": "behaviour:1.0-test",
            "inputs": {"op": "raise"},
            "cluster_id": cluster.id,
        },
        format="json",
    ).json()

    job = _wait_job(client, good.json()["job_id"])
    assert job["status"] == "completed", (job, celery_worker.log_text(), node_agent.log_text())
    assert job["result"]["input"] == {"day": "2025-05-01"}
    assert job["result"]["parameters"] == {"a": 1, "b": 2}
    assert job["workload_id"].startswith("policy-job-")
    task = client.get(job["status_url"]).json()
    assert task["task_status"] == "completed"
    assert task["task_status_data"]["result"] == job["result"]
    assert task["task_status_data"]["workload_id"] == job["workload_id"]

    failed = _wait_job(client, bad["job_id"])
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "exception"
    assert "boom from policy" in failed["error"]["message"]
    failed_task = client.get(bad["status_url"]).json()
    assert failed_task["task_status"] == "failed" and "boom from policy" in failed_task["error"]

    # The runs are recorded; their workloads (processes, rows) are cleaned up.
    wait_until(
        lambda: (
            not Workload.objects.filter(pk__in=[job["workload_id"], failed["workload_id"]]).exists()
        ),
        30,
        "the job workloads to be removed",
    )
    assert PolicyJob.objects.get(pk=job["job_id"]).finished_at <= timezone.now()


def test_cluster_job_without_a_running_node_agent_fails_with_the_reason(db, api, user):
    from apps.policies import services

    upload(api, "echo", ECHO_POLICY)
    node_id = uid("n")
    cluster = make_cluster(nodes=[node_spec(node_id)], owner=user, ready=False)
    job = services.submit_job(
        name="nobody-home", policy_rule_uri="echo:1.0-test", cluster_id=cluster.id, owner=user
    )

    with pytest.raises(Exception, match="no ready, schedulable node"):
        services.run_job(str(job.job_id))  # what the Celery task does

    job.refresh_from_db()
    assert job.status == "failed" and job.error["code"] == "no_ready_node"
    assert not Workload.objects.filter(cluster=cluster).exists()


class _PodReader:
    """The read-back of the Kubernetes driver over a pod document (``observe.job_result``)."""

    def __init__(self, message: str, exit_code: int, log: str = "") -> None:
        self.pod = {
            "metadata": {"name": "p", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "job"}]},
            "status": {
                "containerStatuses": [
                    {
                        "name": "job",
                        "state": {"terminated": {"exitCode": exit_code, "message": message}},
                    }
                ]
            },
        }
        self.log = log

    def job_result(self, workload_id: str) -> dict:
        from apps.clusters.drivers.k8s import observe

        result = observe.job_result(self.pod)
        if result["source"] is None:
            result = observe.job_result(self.pod, self.log)
        return {"workload_id": workload_id, **result}


def test_kubernetes_read_back_is_interpreted_like_the_local_one():
    from types import SimpleNamespace

    from apps.policies.services import _job_outcome

    row = SimpleNamespace(id="policy-job-1", exit_code=None, last_error="", log_path="")
    ok = json.dumps({"result": {"n": 1}, "policy_rule_uri": "a:1.0-b"})
    err = json.dumps({"error": {"code": "timeout", "message": "slow", "details": []}})
    big = json.dumps({"result": list(range(2000))})

    assert _job_outcome(_PodReader(ok, 0), row, None) == ({"n": 1}, None)
    result, error = _job_outcome(_PodReader(err, 1), row, None)
    assert result is None and error["code"] == "timeout"
    assert _job_outcome(_PodReader("", 0, log=f"starting\n{big}\n"), row, None)[0] == list(
        range(2000)
    )
    result, error = _job_outcome(_PodReader("", 137, log="Killed"), row, None)
    assert result is None and "exited with code 137" in error["message"]
