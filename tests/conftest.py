"""Shared fixtures: API clients, users, and an environment that points child processes
(Celery workers, daphne, node agents) at the test database and Redis."""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def pytest_configure(config):
    # Password hashing is deliberately slow; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def user(db, django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "pw-alice-123")


@pytest.fixture
def other_user(db, django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob-123")


@pytest.fixture
def staff_user(db, django_user_model):
    return django_user_model.objects.create_user(
        "carol", "carol@example.com", "pw-carol-123", is_staff=True
    )


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


def _client_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def client_for():
    return _client_for


@pytest.fixture
def api(user) -> APIClient:
    """An authenticated API client (token auth) for a regular user."""
    return _client_for(user)


@pytest.fixture
def staff_api(staff_user) -> APIClient:
    return _client_for(staff_user)


@pytest.fixture
def child_env(transactional_db) -> dict[str, str]:
    """Environment for a child process that must see the test database's committed rows."""
    db = settings.DATABASES["default"]
    url = f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    if db.get("PASSWORD"):
        url = url.replace(f"{db['USER']}@", f"{db['USER']}:{db['PASSWORD']}@")
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        REDIS_URL=settings.REDIS_URL,
        DJANGO_SETTINGS_MODULE="aios_site.settings",
        AIOS_DATA_DIR=str(settings.AIOS_DATA_DIR),
        SECRET_KEY=settings.SECRET_KEY,
        AIOS_FERNET_KEY=settings.AIOS_FERNET_KEY,
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def celery_worker(child_env, tmp_path):
    """A real Celery worker on a private queue, seeing the test database.

    Tasks sent from the test process go to that queue while the fixture is active, so
    workers of other test runs sharing the Redis server never take them.
    """
    import uuid

    from aios_site.celery import app
    from tests.support.procs import ManagedProcess, python_argv, wait_until

    queue = f"test-{uuid.uuid4().hex[:12]}"
    log_path = tmp_path / "celery-worker.log"
    worker = ManagedProcess(
        python_argv(
            "-m",
            "celery",
            "-A",
            "aios_site",
            "worker",
            "-Q",
            queue,
            "--concurrency",
            "1",
            "-P",
            "solo",
            "-l",
            "INFO",
            "-n",
            f"{queue}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ),
        env=child_env,
        log_path=log_path,
    )
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    try:
        wait_until(
            lambda: (
                "ready" in log_path.read_text(errors="replace") or worker.proc.poll() is not None
            ),
            60,
            "celery worker to be ready",
        )
        assert worker.proc.poll() is None, worker.log_text()
        yield worker
    finally:
        app.conf.task_default_queue = previous
        worker.stop()
