"""The failure-policy endpoint and its log, the admin pages, and the manage.py commands."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.policies.policies_support import BEHAVIOUR_POLICY, COUNTER_POLICY, ECHO_POLICY, upload

pytestmark = pytest.mark.django_db

NOTIFIER = '''
class AIOSv1PolicyRule:
    """A failure policy: would post to a webhook; here it reports what it would send."""

    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        return {"notified": parameters.get("channel"), "about": input_data["block_id"]}
'''


def test_failure_policy_runs_sandboxed_and_is_logged(api):
    from apps.policies.models import FailurePolicyRun

    upload(api, "notify", NOTIFIER)
    response = api.post(
        "/api/v1/policies/execute-failure-policy/",
        {
            "failure_policy_id": "notify:1.0-test",
            "inputs": {"block_id": "blk-1", "unhealthy_count": 4},
            "parameters": {"channel": "#ops"},
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["data"] == {"notified": "#ops", "about": "blk-1"}
    run = FailurePolicyRun.objects.get(run_id=body["run_id"])
    assert run.status == "succeeded" and run.requested_by.username == "alice"
    assert run.inputs["unhealthy_count"] == 4


def test_failure_policy_errors_are_422_and_logged(api):
    from apps.policies.models import FailurePolicyRun

    upload(api, "behaviour", BEHAVIOUR_POLICY)
    response = api.post(
        "/api/v1/policies/execute-failure-policy/",
        {"failure_policy_id": "behaviour:1.0-test", "inputs": {"op": "raise"}, "parameters": {}},
        format="json",
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "exception"
    run_id = next(d["run_id"] for d in error["details"] if "run_id" in d)
    run = FailurePolicyRun.objects.get(run_id=run_id)
    assert run.status == "failed" and run.error["code"] == "exception"


def test_failure_policy_request_needs_all_three_fields_and_a_known_policy(api, anon_client):
    missing = api.post(
        "/api/v1/policies/execute-failure-policy/",
        {"failure_policy_id": "x:1-y", "inputs": {}},
        format="json",
    )
    assert missing.status_code == 400 and "parameters" in missing.json()["error"]["message"]
    unknown = api.post(
        "/api/v1/policies/execute-failure-policy/",
        {"failure_policy_id": "x:1-y", "inputs": {}, "parameters": {}},
        format="json",
    )
    assert unknown.status_code == 404
    anon = anon_client.post("/api/v1/policies/execute-failure-policy/", {}, format="json")
    assert anon.status_code == 401


@pytest.fixture
def admin_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    return client


def test_admin_pages_render_with_code_preview(admin_client, api):
    from apps.policies import services
    from apps.policies.models import FailurePolicyRun, PolicyRule

    upload(api, "shown", COUNTER_POLICY)
    upload(api, "notify", NOTIFIER)
    services.register_executor(executor_id="adm-ex", executor_host_uri="http://127.0.0.1:9")
    services.execute_failure_policy("notify:1.0-test", {"block_id": "b"}, {"channel": "c"})
    rule = PolicyRule.objects.get(policy_rule_uri="shown:1.0-test")
    page = admin_client.get(f"/admin/policies/policyrule/{rule.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "code/function.py" in html and "Counts calls in its own state" in html
    for model in (
        "policyrule",
        "policyexecutor",
        "policyjob",
        "policyfunction",
        "policygraph",
        "failurepolicyrun",
    ):
        listing = admin_client.get(f"/admin/policies/{model}/")
        assert listing.status_code == 200, model
    run = FailurePolicyRun.objects.get()
    assert admin_client.get(f"/admin/policies/failurepolicyrun/{run.pk}/change/").status_code == 200


def test_admin_verify_action_reports_a_tampered_archive(admin_client, api):
    from django.core.files.storage import default_storage

    from apps.policies.models import PolicyRule

    upload(api, "tampered", ECHO_POLICY)
    rule = PolicyRule.objects.get(policy_rule_uri="tampered:1.0-test")
    path = Path(default_storage.path(rule.code.name))
    original = path.read_bytes()
    path.write_bytes(original + b"junk")
    try:
        response = admin_client.post(
            "/admin/policies/policyrule/",
            {"action": "verify_archives", "_selected_action": [rule.pk]},
            follow=True,
        )
        assert "Tampered or missing: tampered:1.0-test" in response.content.decode()
    finally:
        path.write_bytes(original)


def test_package_command_packages_and_registers_a_folder(tmp_path):
    from apps.policies import services

    folder = tmp_path / "my_policy"
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "function.py").write_text(ECHO_POLICY)
    (folder / "code" / "helpers.py").write_text("X = 1\n")
    (folder / "code" / "__pycache__").mkdir()
    (folder / "code" / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    output = tmp_path / "out.tar.gz"
    call_command(
        "aios_policy_package",
        str(folder),
        "--name",
        "packaged",
        "--version",
        "2.1",
        "--release-tag",
        "stable",
        "--output",
        str(output),
        "--register",
        "--default-parameters",
        '{"k": 1}',
        "--tags",
        "a,b",
    )
    with tarfile.open(output) as tf:
        assert sorted(m.name for m in tf.getmembers() if m.isfile()) == [
            "code/function.py",
            "code/helpers.py",
        ]
    rule = services.get_policy("packaged:2.1-stable")
    assert rule.policy_parameters == {"k": 1} and rule.tags == ["a", "b"]
    assert services.evaluate_policy("packaged:2.1-stable", {"z": 1})["input"] == {"z": 1}
    with pytest.raises(CommandError, match="already exists"):
        call_command(
            "aios_policy_package",
            str(folder),
            "--name",
            "packaged",
            "--version",
            "2.1",
            "--release-tag",
            "stable",
            "--output",
            str(output),
            "--register",
        )


def test_package_command_refuses_a_folder_without_function_py(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CommandError, match=r"function\.py"):
        call_command(
            "aios_policy_package",
            str(tmp_path / "empty"),
            "--name",
            "x",
            "--version",
            "1",
            "--release-tag",
            "t",
            "--output",
            str(tmp_path / "x.tar.gz"),
        )


def test_seed_command_is_idempotent(capsys):
    call_command("aios_seed_policies")
    capsys.readouterr()
    call_command("aios_seed_policies")
    out = capsys.readouterr().out
    assert "0 changed" in out and "unchanged aios.lb_round_robin:1.0-stable" in out
