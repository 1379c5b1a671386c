"""Tunables of the inference app, read from the environment."""

from __future__ import annotations

import json
import os
from typing import Any


def _float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


SERVER_START_TIMEOUT_S = _float("AIOS_INFERENCE_SERVER_START_TIMEOUT_S", 90.0)
SERVER_START_MAX_RESTARTS = int(_float("AIOS_INFERENCE_SERVER_START_MAX_RESTARTS", 3))
SERVER_REMOVAL_WAIT_S = _float("AIOS_INFERENCE_SERVER_REMOVAL_WAIT_S", 30.0)
# The Redis hash block_id -> executor address that adhoc servers resolve blocks with.
EXECUTOR_MAP_KEY = os.environ.get("AIOS_EXECUTOR_MAP_KEY", "aios:block-executors")
# Refreshed by every write; only a map nobody maintains any more expires.
EXECUTOR_MAP_TTL_S = int(_float("AIOS_EXECUTOR_MAP_TTL_S", 24 * 3600))
# A DSN for the servers' request logging (ideally a role allowed to INSERT into
# inference_request_log only); empty: the control plane's own database settings.
REQUEST_LOG_DATABASE_URL = os.environ.get("AIOS_REQUEST_LOG_DATABASE_URL", "")


def server_overrides() -> dict[str, Any]:
    """``AIOS_INFERENCE_SERVER_DEFAULTS``: JSON merged into every server's process config."""
    raw = os.environ.get("AIOS_INFERENCE_SERVER_DEFAULTS", "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
