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


# The live network's fixtures are shared with tests/inference.
from tests.vdags.fixtures import (  # noqa: E402, F401
    executor_map_key,
    fast_env,
    live_env,
    live_network,
    threaded_worker,
)
