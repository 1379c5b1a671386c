"""The tasks REST API: auth, owner scoping, filters, delete, retry rules, query."""

import pytest

from apps.tasks.choices import TaskStatus
from apps.tasks.models import Task


@pytest.fixture
def tasks(user, other_user):
    return {
        "mine": Task.objects.create(task_type="block_alloc", owner=user),
        "mine_failed": Task.objects.create(
            task_type="selftest",
            owner=user,
            task_status=TaskStatus.FAILED,
            runner="aios.tasks.selftest",
        ),
        "theirs": Task.objects.create(task_type="block_alloc", owner=other_user),
        "system": Task.objects.create(task_type="vdag_creation", task_status=TaskStatus.COMPLETED),
    }


def ids(response):
    return {row["task_id"] for row in response.json()["results"]}


def test_listing_needs_authentication(anon_client, tasks):
    response = anon_client.get("/api/v1/tasks/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_users_see_their_own_and_system_tasks_only(api, tasks):
    response = api.get("/api/v1/tasks/")
    assert response.status_code == 200
    assert ids(response) == {
        str(tasks["mine"].pk),
        str(tasks["mine_failed"].pk),
        str(tasks["system"].pk),
    }
    assert api.get(f"/api/v1/tasks/{tasks['theirs'].pk}/").status_code == 404


def test_staff_see_everything(staff_api, tasks):
    assert len(ids(staff_api.get("/api/v1/tasks/"))) == 4


def test_filters_by_type_and_status(staff_api, tasks):
    assert ids(staff_api.get("/api/v1/tasks/?task_type=block_alloc")) == {
        str(tasks["mine"].pk),
        str(tasks["theirs"].pk),
    }
    assert ids(staff_api.get("/api/v1/tasks/?task_status=completed")) == {str(tasks["system"].pk)}
    bad = staff_api.get("/api/v1/tasks/?task_status=bogus")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "validation_error"


def test_pagination_is_bounded(staff_api, tasks):
    body = staff_api.get("/api/v1/tasks/?page_size=2").json()
    assert body["count"] == 4
    assert len(body["results"]) == 2
    assert body["next"]


def test_query_endpoint_uses_the_query_language(staff_api, tasks):
    response = staff_api.post(
        "/api/v1/tasks/query/",
        {"query": {"task_type": {"$in": ["vdag_creation"]}}},
        format="json",
    )
    assert response.status_code == 200
    assert ids(response) == {str(tasks["system"].pk)}
    bad = staff_api.post("/api/v1/tasks/query/", {"query": {"$where": "1"}}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_query"
    assert "$where" in bad.json()["error"]["message"]


def test_owner_deletes_own_task_but_not_others(api, client_for, other_user, tasks):
    assert api.delete(f"/api/v1/tasks/{tasks['mine'].pk}/").status_code == 204
    assert not Task.objects.filter(pk=tasks["mine"].pk).exists()
    # A system task is visible but only staff may delete it.
    response = api.delete(f"/api/v1/tasks/{tasks['system'].pk}/")
    assert response.status_code == 403
    assert (
        client_for(other_user).delete(f"/api/v1/tasks/{tasks['mine_failed'].pk}/").status_code
        == 404
    )


def test_unauthenticated_delete_is_401(anon_client, tasks):
    assert anon_client.delete(f"/api/v1/tasks/{tasks['mine'].pk}/").status_code == 401


def test_retry_refuses_tasks_that_did_not_fail(api, tasks):
    response = api.post(f"/api/v1/tasks/{tasks['mine'].pk}/retry/")
    assert response.status_code == 409
    assert "only failed tasks" in response.json()["error"]["message"]


def test_tasks_cannot_be_created_through_the_api(api):
    assert api.post("/api/v1/tasks/", {"task_type": "x"}, format="json").status_code == 405


def test_unknown_task_is_404_in_error_shape(api, db):
    response = api.get("/api/v1/tasks/00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_nul_in_a_query_is_400_not_500(staff_api, tasks):
    response = staff_api.post(
        "/api/v1/tasks/query/", {"query": {"task_type": "a\x00"}}, format="json"
    )
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]["message"]


def test_nul_in_a_filter_parameter_is_400_not_500(staff_api, tasks):
    response = staff_api.get("/api/v1/tasks/?task_type=a%00b")
    assert response.status_code == 400
