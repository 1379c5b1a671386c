"""Fixtures of the vdags tests that need no processes: Celery tasks run inline, a cluster
row, block rows, and policies registered in the policies system."""

from __future__ import annotations

import pytest

from tests.clusters.helpers import make_cluster
from tests.vdags.support import uid


@pytest.fixture
def eager_tasks():
    """Tasks queued on commit run inline in this process (never on a shared queue)."""
    from aios_site.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = previous


@pytest.fixture
def cluster(db):
    return make_cluster(uid("vc"), [])


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return settings.MEDIA_ROOT


@pytest.fixture
def register_policy(media, user):
    """``register_policy(source) -> uri``: a policy record in the registry (sandboxed)."""
    from apps.policies.services import register_policy as register
    from tests.policies.policies_support import policy_archive

    def make(source: str, name: str | None = None) -> str:
        rule = register(
            name=name or uid("vdag-assign"),
            version="1.0",
            release_tag="test",
            archive=policy_archive(source),
            owner=user,
        )
        return rule.policy_rule_uri

    return make


@pytest.fixture
def fast_env(monkeypatch) -> dict[str, str]:
    from tests.vdags.live import FAST_ENV

    for key, value in FAST_ENV.items():
        monkeypatch.setenv(key, value)
    return dict(FAST_ENV)


@pytest.fixture
def live_env(child_env, live_server, fast_env, settings) -> dict[str, str]:
    """Child processes see the test database, Redis, the live server and the fast runtime."""
    settings.AIOS_PUBLIC_URL = live_server.url
    return {**child_env, **fast_env, "AIOS_PUBLIC_URL": live_server.url}


@pytest.fixture
def threaded_worker(live_env, tmp_path):
    """A Celery worker with a few threads (blocks allocate in parallel) on a private queue:
    workers of other runs sharing this Redis never take its tasks."""
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
            "-P",
            "threads",
            "--concurrency",
            "4",
            "-l",
            "INFO",
            "-n",
            f"{queue}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ),
        env=live_env,
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
            "celery worker ready",
        )
        assert worker.proc.poll() is None, worker.log_text()
        yield worker
    finally:
        app.conf.task_default_queue = previous
        worker.stop()


@pytest.fixture
def live_network(live_env, threaded_worker, tmp_path, api):
    from tests.vdags.live import LiveNetwork

    network = LiveNetwork(live_env, tmp_path, api)
    try:
        yield network
    finally:
        network.close()
