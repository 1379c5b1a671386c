"""Tunables of the vdags app, read from the environment (defaults suit a laptop; tests
shorten the waits)."""

from __future__ import annotations

import json
import os
from typing import Any


def _float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


# vdag_controller_creation waits this long for a controller's gRPC port to answer.
CONTROLLER_START_TIMEOUT_S = _float("AIOS_VDAG_CONTROLLER_START_TIMEOUT_S", 90.0)
# A controller workload restarted this many times while starting fails the start.
CONTROLLER_START_MAX_RESTARTS = int(_float("AIOS_VDAG_CONTROLLER_START_MAX_RESTARTS", 3))
# Removal waits this long for the controller's processes to stop.
CONTROLLER_REMOVAL_WAIT_S = _float("AIOS_VDAG_CONTROLLER_REMOVAL_WAIT_S", 30.0)
# One TCP probe of a controller's gRPC port (status on read, readiness wait).
PROBE_TIMEOUT_S = _float("AIOS_VDAG_PROBE_TIMEOUT_S", 0.5)
# Default bound of one vDAG request inside the controller (its own deadline).
REQUEST_TIMEOUT_S = _float("AIOS_VDAG_REQUEST_TIMEOUT_S", 30.0)


def controller_overrides() -> dict[str, Any]:
    """``AIOS_VDAG_CONTROLLER_DEFAULTS``: JSON merged into every controller's process
    config (e.g. shorter health-check intervals in tests and demos)."""
    raw = os.environ.get("AIOS_VDAG_CONTROLLER_DEFAULTS", "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
