"""Tunables of the clusters app, read from the environment (with defaults that suit a laptop)."""

from __future__ import annotations

import os


def _float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


# A node whose agent has not heartbeated for this long is not ready (not placed on).
NODE_STALE_S = _float("AIOS_NODE_STALE_S", 20.0)
# How long teardown / node removal waits for workload processes to go before giving up.
REMOVAL_WAIT_S = _float("AIOS_REMOVAL_WAIT_S", 60.0)
# Redis list an agent blocks on between reconcile ticks; a driver pushes to wake it early.
AGENT_WAKE_KEY = "aios:clusters:agent-wake:{node_id}"
AGENT_WAKE_TTL_S = 60
