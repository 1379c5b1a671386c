"""Fixtures of a live local network (node agents, Celery worker, live server), shared by
the vdags and inference tests (each conftest imports them)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(autouse=True)
def executor_map_key(monkeypatch):
    """A private executor-map key: the default one is shared by every run on this Redis."""
    from apps.inference import conf

    key = f"test:{uuid.uuid4().hex[:12]}:block-executors"
    monkeypatch.setattr(conf, "EXECUTOR_MAP_KEY", key)
    monkeypatch.setenv("AIOS_EXECUTOR_MAP_KEY", key)
    yield key
    from apps.inference.services import _redis

    _redis().delete(key)


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
