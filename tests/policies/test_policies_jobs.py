"""T3: a policy job runs once in a real Celery worker; result and status land on the job
record and in the tasks DB."""

from __future__ import annotations

from tests.policies.policies_support import BEHAVIOUR_POLICY, ECHO_POLICY, upload
from tests.support.procs import wait_until


def _wait_finished(client, job_id: str) -> dict:
    def finished():
        job = client.get(f"/api/v1/policy-jobs/{job_id}/").json()
        return job if job["status"] in ("completed", "failed") else None

    return wait_until(finished, 60, "the policy job to finish", interval=0.2)


def test_jobs_run_once_and_record_their_result_or_error(celery_worker, client_for, user):
    # One worker for both cases: starting a real worker is the slow part of this test.
    client = client_for(user)
    upload(client, "echo", ECHO_POLICY, policy_parameters={"a": 1})
    upload(client, "behaviour", BEHAVIOUR_POLICY)
    response = client.post(
        "/api/v1/policy-jobs/",
        {
            "name": "nightly-report",
            "policy_rule_uri": "echo:1.0-test",
            "policy_rule_parameters": {"b": 2},
            "inputs": {"day": "2025-05-01"},
        },
        format="json",
    )
    assert response.status_code == 202, response.json()
    created = response.json()
    assert created["status"] == "pending" and created["task_id"]
    failing = client.post(
        "/api/v1/policy-jobs/",
        {"name": "bad", "policy_rule_uri": "behaviour:1.0-test", "inputs": {"op": "raise"}},
        format="json",
    ).json()

    job = _wait_finished(client, created["job_id"])
    assert job["status"] == "completed", job
    assert job["result"]["input"] == {"day": "2025-05-01"}
    assert job["result"]["parameters"] == {"a": 1, "b": 2}
    task = client.get(created["status_url"]).json()
    assert task["task_type"] == "policy_job"
    assert task["task_status"] == "completed"
    assert task["task_status_data"]["result"] == job["result"]

    failed = _wait_finished(client, failing["job_id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "exception"
    assert "boom from policy" in failed["error"]["message"]
    failed_task = client.get(failing["status_url"]).json()
    assert failed_task["task_status"] == "failed" and "boom from policy" in failed_task["error"]


def test_job_submission_validates_before_queueing(db, api):
    unknown = api.post(
        "/api/v1/policy-jobs/", {"name": "x", "policy_rule_uri": "nope:1.0-x"}, format="json"
    )
    assert unknown.status_code == 404
    upload(api, "echo", ECHO_POLICY)
    no_executor = api.post(
        "/api/v1/policy-jobs/",
        {"name": "x", "policy_rule_uri": "echo:1.0-test", "executor_id": "ghost"},
        format="json",
    )
    assert no_executor.status_code == 404
    assert api.post("/api/v1/policy-jobs/", {"name": "x"}, format="json").status_code == 400
