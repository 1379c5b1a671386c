"""Fixtures of the inference tests: the vdags tests' live network and helpers."""

from __future__ import annotations

from tests.vdags.conftest import cluster, eager_tasks  # noqa: F401
from tests.vdags.fixtures import (  # noqa: F401
    executor_map_key,
    fast_env,
    live_env,
    live_network,
    threaded_worker,
)
