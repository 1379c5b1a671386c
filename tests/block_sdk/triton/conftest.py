"""Fixtures for the Triton-backed block tests: one real Triton server (CPU) with the example
repository for the whole session, Redis keys isolated per test, and helpers that start the
data plane's real executor and instance processes.

Triton tests skip only when no `tritonserver` binary exists on the machine; every other
failure to start it is a test failure, with Triton's own log in the message.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:  # also runs with -p no:django
    sys.path.insert(0, str(REPO_ROOT))

from block_sdk.triton.server import TritonServer  # noqa: E402
from examples.triton_model.model_repository import build  # noqa: E402
from tests.block_sdk.triton.helpers import TRITON_OK, TRITON_WHY  # noqa: E402


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture
def rds(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def block_id(rds: redis.Redis) -> Iterator[str]:
    """A block id unique to this test; its Redis keys are removed afterwards."""
    bid = f"tri-{uuid.uuid4().hex[:10]}"
    yield bid
    keys = list(rds.scan_iter(match=f"aios:block:{{{bid}}}:*", count=500))
    if keys:
        rds.delete(*keys)


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("triton-repo"))


@pytest.fixture(scope="session")
def triton(model_repository: Path) -> Iterator[TritonServer]:
    """The example repository served by a real tritonserver for the whole session."""
    if not TRITON_OK:
        pytest.skip(f"tritonserver binary not installed here: {TRITON_WHY}")
    server = TritonServer(model_repository, startup_timeout_s=90)
    server.start()
    yield server
    server.stop()
