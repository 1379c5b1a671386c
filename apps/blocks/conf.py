"""Tunables of the blocks app, read from the environment (defaults suit a laptop; the tests
shorten the intervals so that failure detection and autoscaling fit in test time)."""

from __future__ import annotations

import json
import os
from typing import Any


def _float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


# block_alloc waits this long for the executor and minInstances instances to be up.
START_TIMEOUT_S = _float("AIOS_BLOCK_START_TIMEOUT_S", 120.0)
# ... and this long for a managed third-party system to publish its finish data.
INIT_TIMEOUT_S = _float("AIOS_BLOCK_INIT_TIMEOUT_S", 300.0)
# Removal waits this long for the block's processes to stop before finishing anyway.
REMOVAL_WAIT_S = _float("AIOS_BLOCK_REMOVAL_WAIT_S", 60.0)
# A block workload that restarted this many times while the block starts fails the start.
START_MAX_RESTARTS = int(_float("AIOS_BLOCK_START_MAX_RESTARTS", 2))
# Timeout of one HTTP call from the control plane to a block service (mgmt, parameters).
SERVICE_HTTP_TIMEOUT_S = _float("AIOS_BLOCK_SERVICE_TIMEOUT_S", 10.0)
# Service tokens live in Redis (never in a workload row, which the API shows); the block
# controller refreshes this TTL while the block lives.
TOKEN_TTL_S = int(_float("AIOS_BLOCK_TOKEN_TTL_S", 7 * 24 * 3600))


def _json_env(name: str) -> dict[str, Any]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def controller_overrides() -> dict[str, Any]:
    """``AIOS_BLOCK_CONTROLLER_DEFAULTS``: JSON merged into every block controller's config
    (e.g. ``{"health_interval_s": 0.5}``); used by tests and small demos."""
    return _json_env("AIOS_BLOCK_CONTROLLER_DEFAULTS")


def instance_env_defaults() -> dict[str, str]:
    """``AIOS_BLOCK_INSTANCE_ENV``: extra environment of every instance process (e.g. faster
    heartbeats in tests)."""
    return {str(k): str(v) for k, v in _json_env("AIOS_BLOCK_INSTANCE_ENV").items()}


def executor_config_defaults() -> dict[str, Any]:
    """``AIOS_BLOCK_EXECUTOR_CONFIG``: ExecutorConfig fields merged into every executor's."""
    return _json_env("AIOS_BLOCK_EXECUTOR_CONFIG")
