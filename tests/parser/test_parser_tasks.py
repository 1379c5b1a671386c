"""The parser task log: every call recorded (who, action, template, spec, outcome,
duration), readable by its owner and staff, re-executable as the caller."""

import pytest

from apps.parser.models import ParserTask
from tests.parser.specs import VALID
from tests.registries.factories import component_values, envelope

URL = "/api/v1/parser-tasks/"


@pytest.mark.django_db
def test_success_and_failure_are_logged(api):
    ok = api.post("/api/createComponent", envelope(component_values()), format="json")
    bad = api.post("/api/createComponent", envelope({"componentType": "model"}), format="json")
    assert (ok.status_code, bad.status_code) == (201, 400)

    listing = api.get(URL).json()["results"]
    assert [t["status"] for t in listing] == ["failed", "succeeded"]  # newest first
    failed, succeeded = listing
    assert succeeded["action"] == "createComponent"
    assert succeeded["owner"] == "alice"
    assert succeeded["template_uri"] == "Parser/V1"
    assert succeeded["response_status"] == 201
    assert succeeded["response_body"]["componentURI"] == "model.echo:1.0.0-stable"
    assert succeeded["spec"]["body"]["spec"]["values"]["componentId"]["name"] == "echo"
    assert succeeded["duration_ms"] > 0
    assert succeeded["finished_at"]
    assert failed["response_status"] == 400
    assert failed["response_body"]["error"]["code"] == "spec_validation_error"
    assert ok["X-AIOS-Parser-Task"] == succeeded["id"]


@pytest.mark.django_db
def test_log_is_owner_scoped_and_filterable(api, client_for, other_user, staff_api):
    api.post("/api/createComponent", envelope(component_values()), format="json")
    client_for(other_user).post(
        "/api/filter", envelope(VALID["filter"], at_body=True), format="json"
    )
    assert api.get(URL).json()["count"] == 1
    assert client_for(other_user).get(URL).json()["count"] == 1
    assert staff_api.get(URL).json()["count"] == 2
    assert staff_api.get(URL, {"action": "filter"}).json()["count"] == 1
    assert staff_api.get(URL, {"status": "succeeded", "owner": "alice"}).json()["count"] == 1
    query = {"query": {"response_body.componentURI": "model.echo:1.0.0-stable"}}
    assert staff_api.post(f"{URL}query/", query, format="json").json()["count"] == 1
    mine = api.get(URL).json()["results"][0]["id"]
    assert client_for(other_user).get(f"{URL}{mine}/").status_code == 404


@pytest.mark.django_db
def test_anonymous_cannot_read_the_log(anon_client):
    assert anon_client.get(URL).status_code == 401


@pytest.mark.django_db
def test_re_execute_runs_the_same_spec_as_the_caller(
    api, staff_api, staff_user, client_for, other_user
):
    created = api.post("/api/createComponent", envelope(component_values()), format="json")
    task_id = created["X-AIOS-Parser-Task"]

    # Same spec again: now it is a duplicate.
    again = api.post(f"{URL}{task_id}/re-execute/")
    assert again.status_code == 409
    new_task = ParserTask.objects.get(pk=again["X-AIOS-Parser-Task"])
    assert str(new_task.re_executed_from_id) == task_id
    assert new_task.status == "failed"

    # After deleting the component, staff re-executes: it is created again, owned by staff.
    api.delete("/api/v1/components/model.echo:1.0.0-stable/")
    redo = staff_api.post(f"{URL}{task_id}/re-execute/")
    assert redo.status_code == 201
    assert redo.json()["owner"] == staff_user.username
    assert ParserTask.objects.get(pk=redo["X-AIOS-Parser-Task"]).owner == staff_user

    # Someone else cannot see it, so cannot re-execute it.
    assert client_for(other_user).post(f"{URL}{task_id}/re-execute/").status_code == 404


@pytest.mark.django_db
def test_huge_answers_are_logged_truncated(api, settings, monkeypatch):
    from apps.parser import services

    monkeypatch.setattr(services, "MAX_LOGGED_BODY", 200)
    api.post("/api/createComponent", envelope(component_values()), format="json")
    task = ParserTask.objects.get()
    assert task.response_body["truncated"] is True
    assert task.response_body["size"] > 200


@pytest.mark.django_db
def test_old_records_are_pruned(api):
    import io
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    api.post("/api/filter", envelope(VALID["filter"], at_body=True), format="json")
    api.post("/api/filter", envelope(VALID["filter"], at_body=True), format="json")
    old = ParserTask.objects.order_by("created_at").first()
    ParserTask.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=100))
    out = io.StringIO()
    call_command("aios_prune_parser_tasks", "--days", "90", stdout=out)
    assert "deleted 1 " in out.getvalue()
    assert ParserTask.objects.count() == 1
