"""Task records driven by a real Celery worker: progress, completion, failure, retry."""

import pytest

from apps.tasks import services
from apps.tasks.choices import TaskStatus
from apps.tasks.models import Task
from apps.tasks.tasks import selftest
from tests.support.procs import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def finished(task_id):
    task = Task.objects.get(pk=task_id)
    return task if task.is_finished else None


def test_task_reports_progress_and_completes(celery_worker, user):
    task = services.submit("selftest", selftest, owner=user, steps=4, delay=0.05)
    assert Task.objects.get(pk=task.pk).task_status == TaskStatus.PENDING
    done = wait_until(lambda: finished(task.pk), 60, "selftest to finish")
    assert done.task_status == TaskStatus.COMPLETED
    assert done.progress == 100
    assert done.task_status_data == {"steps": 4, "ok": True}
    assert done.started_at and done.finished_at and done.finished_at >= done.started_at
    assert done.attempts == 1


def test_failing_task_is_recorded_and_can_be_retried(celery_worker, user, client_for):
    task = services.submit("selftest", selftest, owner=user, steps=3, delay=0.01, fail_at=1)
    failed = wait_until(lambda: finished(task.pk), 60, "selftest to fail")
    assert failed.task_status == TaskStatus.FAILED
    assert "asked to fail at step 1" in failed.error
    assert failed.progress < 100  # it got one step in before failing

    # Retry through the API runs the same runner again (it fails again, the same way).
    response = client_for(user).post(f"/api/v1/tasks/{task.pk}/retry/")
    assert response.status_code == 202
    assert response.json()["task_status"] == "pending"
    wait_until(
        lambda: Task.objects.get(pk=task.pk).attempts == 2 and finished(task.pk), 60, "retry"
    )
    assert Task.objects.get(pk=task.pk).task_status == TaskStatus.FAILED
