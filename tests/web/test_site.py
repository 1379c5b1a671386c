"""The site as a user meets it: OpenAPI, docs, admin, metrics, health, auth commands."""

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from apps.tasks.models import Task


def test_openapi_schema_validates_without_warnings(db, tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    assert "/api/v1/tasks/{task_id}/retry/" in text


def test_schema_and_swagger_ui_answer(anon_client, db):
    schema = anon_client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"openapi:" in schema.content
    docs = anon_client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


def test_prometheus_metrics_are_exposed(anon_client, db):
    anon_client.get("/api/health/")
    response = anon_client.get("/metrics")
    assert response.status_code == 200
    assert b"django_http_requests_total_by_method_total" in response.content


def test_health_reports_database_and_redis(anon_client, db):
    response = anon_client.get("/api/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_admin_lists_tasks_with_filters(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "r@example.com", "pw-root-123")
    Task.objects.create(task_type="block_alloc", task_data={"blockId": "b1"})
    client.force_login(admin)
    page = client.get("/admin/tasks/task/?task_status__exact=pending")
    assert page.status_code == 200
    assert b"block_alloc" in page.content
    detail = client.get(f"/admin/tasks/task/{Task.objects.get().pk}/change/")
    assert b"&quot;blockId&quot;: &quot;b1&quot;" in detail.content


def test_drf_create_token_command_creates_a_working_token(db, django_user_model, anon_client):
    user = django_user_model.objects.create_user("dave", password="pw-dave-123")
    call_command("drf_create_token", "dave")
    token = Token.objects.get(user=user)
    anon_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert anon_client.get("/api/v1/tasks/").status_code == 200


def test_bad_token_is_401_in_error_shape(anon_client, db):
    anon_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = anon_client.get("/api/v1/tasks/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_bootstrap_creates_admin_and_prints_token_once(db, capsys, monkeypatch):
    monkeypatch.setenv("AIOS_ADMIN_PASSWORD", "pw-admin-123")
    call_command("aios_bootstrap")
    first = capsys.readouterr().out
    assert "API token for admin (shown once)" in first
    call_command("aios_bootstrap")
    second = capsys.readouterr().out
    assert "shown once" not in second
    token = Token.objects.get(user__username="admin")
    assert token.key in first and token.key not in second


@pytest.mark.parametrize("path", ["/api/v1/tasks/", "/api/v1/tasks/query/"])
def test_unauthenticated_writes_are_401(anon_client, db, path):
    response = anon_client.post(path, {}, format="json")
    assert response.status_code == 401
