"""Fixtures of the vDAG data-plane tests: a real Redis and a module-wide network of block
processes (started once per module, in parallel); controllers and servers per test."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:  # -p no:django does not put the project on sys.path
    sys.path.insert(0, str(REPO_ROOT))

import redis  # noqa: E402

from tests.block_sdk.vdag.harness import Network  # noqa: E402


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
    from aios_site.embedded import ensure_redis_url  # the project's embedded Redis

    url = ensure_redis_url()
    assert _reachable(url), f"no Redis reachable at {url}"
    return url


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture(scope="module")
def module_net(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    net = Network(redis_url, tmp_path_factory.mktemp("vdag-net"))
    try:
        yield net
    finally:
        net.close()


@pytest.fixture(autouse=True)
def _close_servers_of_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Controllers and servers a test started on the module's network stop with the test,
    so idle ones do not pile up (the blocks stay for the next test)."""
    if "module_net" not in request.fixturenames:
        yield
        return
    shared: Network = request.getfixturevalue("module_net")
    before = len(shared.servers)
    yield
    for server in shared.servers[before:]:
        server.close()


@pytest.fixture
def net(redis_url: str, tmp_path: Path) -> Iterator[Network]:
    """A network of its own for a test that kills or breaks processes."""
    n = Network(redis_url, tmp_path)
    try:
        yield n
    finally:
        n.close()
